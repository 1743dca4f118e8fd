// A node's side of the control plane: commands in (SUB), status out (PUSH). Mirrors flujo/control.py.
//
// Commands are received in the background but only queued: the runtime applies them at the
// same points as the Python runtime (between items, and while it waits), so state never
// changes under a send loop's feet.
import * as zmq from "zeromq";
import { Holds, key } from "./holds.js";
import { identityTopic, parseControl, statusFrame } from "./protocol.js";
import { clientOptions } from "./security.js";

export class ControlChannel {
  /**
   * @param {import("./config.js").NodeConfig} config
   * @param {import("./security.js").KeyPair | null} keys  the flow key of a secure flow
   */
  constructor(config, keys = null) {
    this.config = config;
    this.commands = new zmq.Subscriber({ linger: 0, ...clientOptions(keys, config.control) });
    this.commands.subscribe("");
    // The launcher's XPUB sees this second subscription arrive: this node will miss no command.
    this.commands.subscribe(identityTopic(config.node, config.replica));
    this.commands.connect(config.control);
    this.reporter = new zmq.Push({ linger: 2000, ...clientOptions(keys, config.status) });  // status is small and the launcher always reads it
    this.reporter.connect(config.status);
    this._reports = Promise.resolve();
    /** @type {Buffer[][]} received, not yet applied */
    this._queue = [];
    this._wake = null;
    this.woken = new Promise((resolve) => { this._wake = resolve; });
    this.started = false;
    this.stopRequested = false;
    /** @type {Set<string>} "node\0port\0replica" that reads no more */
    this.released = new Set();
    /** @type {Array<[string, number]>} replicas that died without end of stream */
    this.gone = [];
    this.holds = new Holds((node, replica, port, seq) => this.report("position", [node, replica, port, seq]));
    this.drainRequested = false;  // this very process is held: take what is queued, hand over, exit
    this.dismissed = false;  // every reader has this drained process's pause marker: exit now
    this.changes = 0;  // bumped on every release or loss, so readers can cache
    this.refused = 0;  // malformed commands
    this._receiving = this._receive();
  }

  async _receive() {
    try {
      for (;;) {
        const frames = await this.commands.receive();
        this._queue.push(frames);
        const wake = this._wake;
        this.woken = new Promise((resolve) => { this._wake = resolve; });
        wake();
      }
    } catch (error) {
      if (!this.commands.closed) throw error;
    }
  }

  /** Whether commands wait to be applied. */
  pending() {
    return this._queue.length > 0;
  }

  /** Apply every command received so far. */
  handlePending() {
    while (this._queue.length) {
      const [topic, payload] = parseControl(this._queue.shift());
      if (payload === null) {
        this.refused += 1;
        console.error(`flujo node ${this.config.node}: refused a malformed "${topic}" command`);
        continue;
      }
      try {
        this._apply(topic, payload);
      } catch (error) {
        this.refused += 1;
        console.error(`flujo node ${this.config.node}: refused a malformed "${topic}" command: ${error.message}`);
      }
    }
  }

  _apply(topic, payload) {
    const check = (count, ...types) => {
      if (payload.length < count || types.some((type, i) => typeof payload[i] !== type)) throw new Error("bad payload");
    };
    switch (topic) {
      case "start":
        this.started = true;
        break;
      case "stop":
        if (payload.includes(this.config.node)) this.stopRequested = true;
        break;
      case "released":
        check(3, "string", "number", "string");
        this.released.add(`${payload[0]}\u0000${payload[2]}\u0000${payload[1]}`);
        this.changes += 1;
        break;
      case "hold": {
        check(3, "string", "number", "number");
        const [node, replica, generation] = payload;
        this.holds.hold(key(node, replica), generation);
        if (this._isMe(node, replica, generation)) this.drainRequested = true;
        break;
      }
      case "align":
        check(4, "string", "number", "number", "number");
        this.holds.align(key(payload[0], payload[1]), payload[2], payload[3]);
        break;
      case "resume":
        check(3, "string", "number", "number");
        this.holds.resume(key(payload[0], payload[1]), payload[2]);
        break;
      case "dismiss": {
        check(3, "string", "number", "number");
        const [node, replica, generation] = payload;
        this.holds.dismissed(key(node, replica), generation);
        if (this._isMe(node, replica, generation)) this.dismissed = true;
        break;
      }
      case "gone":
        check(2, "string", "number");
        if (payload.length < 4 || (payload[2] === this.config.node && payload[3] === this.config.replica)) {
          this.gone.push([payload[0], payload[1]]);
          this.changes += 1;
        }
        break;
      default:  // unknown topics are ignored (later versions add some); so are identity topics
    }
  }

  _isMe(node, replica, generation) {
    const config = this.config;
    return node === config.node && replica === config.replica && generation === config.generation;
  }

  isReleased(node, port, replica) {
    return this.released.has(`${node}\u0000${port}\u0000${replica}`);
  }

  /** Queue one status report (sent in order). */
  report(kind, payload = null) {
    const frame = statusFrame(kind, this.config.node, this.config.replica, payload);
    this._reports = this._reports.then(() => this.reporter.send(frame)).catch(() => {});
    return this._reports;
  }

  reportError(error) {
    const message = error instanceof Error ? `${error.name}: ${error.message}` : String(error);
    const traceback = error instanceof Error && error.stack ? error.stack : message;
    return this.report("error", { message, traceback });
  }

  /** Send what is queued, then close both sockets. */
  async close() {
    await this._reports;
    this.commands.close();
    this.reporter.close();
    await this._receiving;
  }
}
