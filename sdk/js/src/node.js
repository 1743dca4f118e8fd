// The life of one node replica, as an async iterator of events. Mirrors flujo/runtime.py.
//
//   1. connect(): bind input ports, connect outputs and control, report ready
//   2. producers wait for the start command; then events: "item" (an input, in order),
//      "produce" (a producer's turn to send), and last "stop" with its cause
//   3. after "stop" (or a break out of the loop) the library ends the stream: reports the
//      ports released, sends end of stream on every output to every downstream replica, waits
//      until each has released it (a PUSH socket closed at once can lose its tail), closes
//   4. a graceful restart ("stop" with cause "restart") replaces step 3: a pause marker instead
//      of end of stream, then wait to be dismissed (docs/PROTOCOL.md, section 8)
//   5. an error thrown out of the loop (or node.fail(error)) is reported with its stack; the
//      stream still ends (what was sent is delivered) and the process exits 1. Under a restart
//      policy no end of stream is sent: the successor continues the stream.
import { configFromEnvironment } from "./config.js";
import { ControlChannel } from "./control.js";
import { Drained, InputPort, Join, SKIP } from "./inputs.js";
import { OutputEdge } from "./outputs.js";
import { key } from "./holds.js";
import { Codec, Kind } from "./protocol.js";
import { flowKeys, Gatekeeper } from "./security.js";

const POLL_INTERVAL_MS = 500;  // upper bound on a wait; every wait also wakes on control
const STATS_INTERVAL_MS = 500;  // between two stats reports to the launcher
const CONTROL_INTERVAL_MS = 2;  // a busy node looks at commands this often, not after every item
const BATCH_WAIT_MS = 5;  // a batch of small items may wait this long for more while the reader is busy

/** This replica must read no more: told to stop, or nobody downstream reads any more. */
class StopReading extends Error {}

const yieldToEventLoop = () => new Promise((resolve) => setImmediate(resolve));

/**
 * @typedef {{type: "item", seq: number, port: string | null, item: any, items: Record<string, any>}} ItemEvent
 *   One input: ``item`` the value (for a zip of several ports, the values by port in ``items``).
 * @typedef {{type: "produce", seq: number}} ProduceEvent
 *   A producer's turn: send one item (or none: nothing this time, no sequence number used).
 * @typedef {{type: "stop", cause: "end" | "stop" | "released" | "restart"}} StopEvent
 *   The last event. end: every input ended; stop: the launcher said stop; released: nobody
 *   reads this node's outputs any more; restart: a graceful restart, a successor continues.
 * @typedef {ItemEvent | ProduceEvent | StopEvent} NodeEvent
 */

export class FlujoNode {
  /**
   * Read the configuration the launcher set, bind and connect everything, report ready.
   * Open your own resources before: ready tells the launcher this node can take items.
   * @param {{config?: import("./config.js").NodeConfig, catchErrors?: boolean}} [options]
   *   catchErrors (default true): an error thrown out of the event loop is reported as the node's failure
   * @returns {Promise<FlujoNode>}
   */
  static async connect(options = {}) {
    const node = new FlujoNode(options.config ?? configFromEnvironment());
    await node._open(options.catchErrors ?? true);
    return node;
  }

  /** @param {import("./config.js").NodeConfig} config */
  constructor(config) {
    this.config = config;
    /** The manifest's ``args`` for this node. */
    this.args = config.args ?? {};
    this.itemsIn = 0;
    this.itemsOut = 0;
    this.errors = 0;
    this.busy = 0;  // seconds in user code (between an event and the next call)
    this.nextSeq = config.seq_start;  // producers: the next item's sequence number
    this._phase = "new";  // new -> running -> stopping -> finishing -> finished
    this._gatekeeper = null;  // the ZAP handler of a secure flow with tcp inputs
    this._current = null;  // {seq, ports: Set} of the event being handled
    this._yieldedAt = 0;
    this._sendTime = 0;
    this._drained = false;
    this._error = null;
    this._nobodyReads = false;
    this._seenChanges = 0;
    this._releasedPorts = new Set();
    this._nextReport = performance.now() + STATS_INTERVAL_MS;
    this._nextControl = 0;
    /** Resolves with the exit status once the node has ended (sockets closed). */
    this.done = new Promise((resolve) => { this._resolveDone = resolve; });
  }

  get name() { return this.config.node; }
  get replica() { return this.config.replica; }
  get kind() { return this.config.kind; }

  async _open(catchErrors) {
    const config = this.config;
    const keys = flowKeys(config);  // a secure flow: CURVE on every tcp socket (PROTOCOL.md section 11)
    if (keys !== null && config.inputs.some((port) => port.endpoint.startsWith("tcp://"))) {
      this._gatekeeper = new Gatekeeper(keys);  // admits only the flow key, before any input binds
      await this._gatekeeper.start();
    }
    this.control = new ControlChannel(config, keys);
    this.codec = new Codec(config.node, config.replica);
    this.ports = config.inputs.map((port) => new InputPort(port, this.codec, (p) => this._releasePorts(p.name),
      (p, message) => this.control.report("pause-seen", [p.name, message.sender, message.replica]), keys));
    for (const port of this.ports) await port.bind();
    this.edges = config.outputs.map((edge) => new OutputEdge(edge, (node, port, replica) =>
      this.control.isReleased(node, port, replica), this.codec, this.control.holds, keys));
    // What the join and the output edges call to wait, flush and learn about restarts.
    this._in = {
      wait: (pending) => this._waitReadable(pending),
      flush: () => this._flushBatches(),
      holding: () => this.edges.some((edge) => edge.batch !== null),
      draining: () => this.control.drainRequested,
      limit: () => this.control.holds.limit.get(key(config.node, config.replica)),
    };
    this._out = { wait: (pending, ms) => this._poll(pending, ms) };
    this._join = new Join(this.ports, config.join, this._in);
    if (catchErrors) {
      this._onError = (error) => this.fail(error);
      process.on("uncaughtException", this._onError);
      process.on("unhandledRejection", this._onError);
    }
    this.control.report("ready");
    this._phase = "running";
  }

  [Symbol.asyncIterator]() {
    return this;
  }

  /** @returns {Promise<IteratorResult<NodeEvent>>} */
  async next() {
    if (this._phase === "stopping") {
      await this._finish();
    }
    if (this._phase !== "running") return { done: true, value: undefined };
    if (this._yieldedAt) this.busy += (performance.now() - this._yieldedAt - this._sendTime) / 1000;
    this._yieldedAt = 0;
    let event;
    try {
      event = this.kind === "producer" ? await this._nextProduce() : await this._nextInput();
    } catch (error) {
      if (error instanceof Drained) {
        event = this._stop("restart");
      } else if (error instanceof StopReading) {
        if (this._phase !== "running") return { done: true, value: undefined };  // failed meanwhile: ended
        event = this._stop(this.control.stopRequested ? "stop" : "released");
      } else {
        throw error;
      }
    }
    this._sendTime = 0;
    this._yieldedAt = performance.now();
    return { done: false, value: event };
  }

  /** A break (or an error) out of the loop: the stream ends, unless the node failed. */
  async return() {
    if (this._phase === "running" || this._phase === "stopping") {
      this._phase = this._phase === "running" ? "leaving" : this._phase;
      // An error thrown out of the loop arrives after this returns: give it two turns to be seen.
      setImmediate(() => setImmediate(() => {
        if (this._phase === "leaving") {
          this._phase = "running";
          this._completeCurrent().then(() => {
            this._stop("stop");
            return this._finish();
          }).catch((error) => this.fail(error));
        } else if (this._phase === "stopping") {
          this._finish().catch((error) => this.fail(error));
        }
      }));
    }
    return { done: true, value: undefined };
  }

  /**
   * Send one item on an output port, for the event being handled. A processor sends at most
   * one item per port and input; ports it sends nothing on get a SKIP marker (one message per
   * sequence number, docs/PROTOCOL.md section 6). null or undefined sends nothing.
   * Arrays: an NDArray, or a typed array other than Uint8Array (a one-dimensional array);
   * their bytes go without a copy. Buffers and Uint8Arrays are msgpack bytes.
   * @param {string} port
   * @param {any} item
   */
  async send(port, item) {
    const current = this._current;
    if (this.kind === "consumer") throw new Error(`node "${this.name}" is a consumer: it has no outputs to send to`);
    if (current === null) throw new Error("send() belongs to the handling of an item or produce event");
    if (item === null || item === undefined) return;
    if (current.ports.has(port)) {
      throw new Error(`node "${this.name}" already sent on port "${port}" for item ${current.seq}: ` +
        "one message per port and input");
    }
    current.ports.add(port);
    const started = performance.now();
    const frames = this.codec.encode(current.seq, item);
    const batchable = frames.length === 2;  // small: no array frames
    for (const edge of this.edges) {
      if (edge.port === port) await edge.deal(frames, this._out, current.seq, batchable);
    }
    this._sendTime += performance.now() - started;
  }

  /**
   * User code failed. With the manifest's ``on_error = "skip"`` and an item being handled, the
   * item is skipped (counted, logged; downstream gets a SKIP for it) and the loop goes on:
   * call this from a catch inside the loop. Otherwise the error is reported, the node ends as
   * docs/PROTOCOL.md section 7.5 says, and the process exits 1.
   * @returns {Promise<boolean>} true when the item was skipped and the loop may go on
   */
  async fail(error) {
    if (this.config.on_error === "skip" && this._current !== null && this._phase === "running" &&
        this.kind !== "producer") {
      this.errors += 1;
      console.error(`skipped item ${this._current.seq}:`, error);
      return true;
    }
    if (this._error !== null || this._phase === "finished") return false;
    this._error = error;
    this.errors += 1;
    console.error(`node "${this.name}" failed:`, error);
    if (this._phase === "running" || this._phase === "leaving") this._stop("stop");
    await this._finish();
    return false;
  }

  // -- events --------------------------------------------------------------------------------
  async _nextInput() {
    await this._completeCurrent();
    const control = this.control;
    const emits = this.kind === "processor";
    for (;;) {
      await this._afterItem();
      if (control.stopRequested) return this._stop("stop");
      const step = await this._join.next();
      if (step === null) return this._stop("end");
      const [seq, port, items] = step;
      this.itemsIn += 1;
      if (items === SKIP) {
        if (emits) await this._emitSkips(seq, new Set());
        continue;
      }
      this._current = { seq, ports: new Set() };
      if (port !== null) return { type: "item", seq, port, item: items[0], items: { [port]: items[0] } };
      const byPort = {};
      this.ports.forEach((p, i) => { byPort[p.name] = items[i]; });
      return { type: "item", seq, port: null, item: items, items: byPort };
    }
  }

  async _nextProduce() {
    const control = this.control;
    if (this._current === null && !control.started) {
      while (!control.started && !control.stopRequested && !control.drainRequested) await this._poll([]);
    }
    await this._completeCurrent();
    await this._afterItem();
    if (control.drainRequested) return this._stop("restart");
    if (control.stopRequested) return this._stop("stop");
    if (this._nobodyReads) return this._stop("released");
    this._current = { seq: this.nextSeq, ports: new Set() };
    return { type: "produce", seq: this.nextSeq };
  }

  /** The event handled: SKIP on the edges that got nothing (a producer that sent nothing used no number). */
  async _completeCurrent() {
    const current = this._current;
    this._current = null;
    if (current === null) return;
    if (this.kind === "producer") {
      if (!current.ports.size) return;
      this.nextSeq += 1;
    }
    if (this.kind !== "consumer") await this._emitSkips(current.seq, current.ports);
  }

  async _emitSkips(seq, sentPorts) {
    if (!this.edges.length) return;
    let skip = null;
    for (const edge of this.edges) {
      if (sentPorts.has(edge.port)) continue;
      skip ??= this.codec.marker(Kind.SKIP, seq);
      await edge.deal(skip, this._out, seq);
    }
    this.itemsOut += 1;
  }

  _stop(cause) {
    this._phase = "stopping";
    this._drained = cause === "restart";
    this.control.report("ending");
    return { type: "stop", cause };
  }

  // -- the end ---------------------------------------------------------------------------------
  async _finish() {
    if (this._phase === "finishing" || this._phase === "finished") return this.done;
    this._phase = "finishing";
    this._current = null;
    const control = this.control;
    const error = this._error;
    let status = error === null ? 0 : 1;
    try {
      if (error !== null) control.reportError(error);
      if (this._drained) {
        await this._handOver();  // a successor continues this stream from where this process hands over
      } else if (error !== null && this.config.restart !== "no") {
        // A successor continues this stream: no end of stream. What is queued gets a moment to leave.
        for (const edge of this.edges) edge.close(1000);
      } else {
        this._releasePorts(...this.ports.map((port) => port.name));
        await this._endOutputs();  // also after a failure: what this node sent must reach its readers
      }
    } catch (failure) {
      console.error(`node "${this.name}" could not end its stream:`, failure);
      status = 1;
    }
    for (const port of this.ports) port.close();
    for (const edge of this.edges) edge.close();
    await control.close();
    this._gatekeeper?.close();
    if (this._onError) {
      process.off("uncaughtException", this._onError);
      process.off("unhandledRejection", this._onError);
    }
    this._phase = "finished";
    process.exitCode = status;
    this._resolveDone(status);
    return status;
  }

  async _endOutputs() {
    if (this.edges.length) {
      const end = this.codec.marker(Kind.EOS, 0);
      for (const edge of this.edges) {
        await edge.flush(this._out);
        await edge.broadcast(end, this._out);
      }
    }
    this.control.report("finished", this._stats());
    while (!this.edges.every((edge) => edge.released)) await this._poll([]);
  }

  async _handOver() {
    const readers = [];
    for (const edge of this.edges) {
      for (const index of await edge.pauseAll(this._out)) readers.push([edge.target, index, edge.config.target_port]);
    }
    this.control.report("drained", { stats: this._stats(), readers });
    while (!this.control.dismissed) await this._poll([]);
  }

  _releasePorts(...names) {
    const fresh = names.filter((name) => !this._releasedPorts.has(name));
    if (fresh.length) {
      fresh.forEach((name) => this._releasedPorts.add(name));
      this.control.report("released", fresh);
    }
  }

  // -- between items and while waiting -----------------------------------------------------------
  async _afterItem() {
    const now = performance.now();
    if (now < this._nextControl) return;
    this._nextControl = now + CONTROL_INTERVAL_MS;
    // Ready sockets resolve promises without ever returning to the event loop: let it turn,
    // so commands and timers are seen.
    await yieldToEventLoop();
    if (this.control.pending()) this._applyControl();
    if (now >= this._nextReport) this._reportStats();
    for (const edge of this.edges) {
      if (edge.batch !== null && now - edge.batch.since >= BATCH_WAIT_MS) await edge.flush(this._out);
      await edge.pauseHeld(this._out);
    }
  }

  _applyControl() {
    const control = this.control;
    control.handlePending();
    if (control.changes !== this._seenChanges) {
      this._seenChanges = control.changes;
      this._nobodyReads = this.edges.length > 0 && this.edges.every((edge) => edge.released);
      for (const [node, replica] of control.gone) {
        for (const port of this.ports) if (port.config.source === node) port.senderEnded(replica);
      }
    }
  }

  /** Wait until one of ``pending`` settles, a command arrives, or ``ms`` pass; then apply commands. */
  async _poll(pending, ms = POLL_INTERVAL_MS) {
    const timeout = Math.max(0, Math.min(ms, this._nextReport - performance.now()));
    let timer;
    const elapsed = new Promise((resolve) => { timer = setTimeout(resolve, timeout); });
    try {
      await Promise.race([...pending, this.control.woken, elapsed]);
    } finally {
      clearTimeout(timer);
    }
    if (this.control.pending()) this._applyControl();
    if (performance.now() >= this._nextReport) this._reportStats();
    for (const edge of this.edges) await edge.pauseHeld(this._out);  // a held reader gets its marker while this waits
  }

  async _waitReadable(pending) {
    // The node failed (an error thrown from a callback of yours) while the loop waited for input:
    // it has ended, and the loop must too.
    if (this._phase !== "running") throw new StopReading();
    await this._flushBatches();
    if (this.control.stopRequested || this._nobodyReads) throw new StopReading();
    await this._poll(pending);
  }

  async _flushBatches() {
    for (const edge of this.edges) await edge.flush(this._out);
  }

  _reportStats() {
    this._nextReport = performance.now() + STATS_INTERVAL_MS;
    this.control.report("stats", this._stats());
  }

  _stats() {
    const byEdge = (f) => Object.fromEntries(this.edges.map((edge) => [`${edge.target}/${edge.config.target_port}`, f(edge)]));
    return {
      items_in: this.itemsIn, items_out: this.itemsOut, busy: this.busy, errors: this.errors,
      late: this.ports.reduce((n, port) => n + port.late, 0), next_seq: this.nextSeq,
      dropped: this.ports.reduce((n, port) => n + port.dropped, 0),
      refused: this.ports.reduce((n, port) => n + port.refused, 0) + this.control.refused,
      dropped_sent: byEdge((edge) => edge.dropped),
      received: Object.fromEntries(this.ports.map((port) => [port.name, port.received])),
      sent: byEdge((edge) => edge.sent),
    };
  }
}

/** Shorthand for ``FlujoNode.connect(options)``. */
export function connect(options) {
  return FlujoNode.connect(options);
}
