// Input side of a node replica: one PULL socket per port, order restoring, and the joins.
// Mirrors flujo/inputs.py (docs/PROTOCOL.md, sections 6-8).
//
// Each port has at most one receive in flight. A wait races it against the control channel,
// and the next wait picks up the same receive: nothing is read that the join did not ask for,
// so a zip waiting for one port leaves the others unread and their senders feel backpressure.
import * as zmq from "zeromq";
import { Kind, ProtocolError } from "./protocol.js";
import { serverOptions } from "./security.js";

/** Returned by a join for a sequence number that carries no item (filtered upstream). */
export const SKIP = Symbol("skip");

/** A held replica's senders have all paused (or ended) and it took everything: hand over. */
export class Drained extends Error {}

/** A min-heap of sequence numbers (items that arrived early, waiting for a gap). */
class Heap {
  constructor() { this.items = []; }
  get size() { return this.items.length; }
  peek() { return this.items[0]; }
  push(value) {
    const items = this.items;
    items.push(value);
    for (let i = items.length - 1; i > 0;) {
      const parent = (i - 1) >> 1;
      if (items[parent] <= items[i]) break;
      [items[parent], items[i]] = [items[i], items[parent]];
      i = parent;
    }
  }
  pop() {
    const items = this.items;
    const top = items[0];
    const last = items.pop();
    if (items.length) {
      items[0] = last;
      for (let i = 0; ;) {
        const left = 2 * i + 1, right = left + 1;
        let smallest = i;
        if (left < items.length && items[left] < items[smallest]) smallest = left;
        if (right < items.length && items[right] < items[smallest]) smallest = right;
        if (smallest === i) break;
        [items[smallest], items[i]] = [items[i], items[smallest]];
        i = smallest;
      }
    }
    return top;
  }
}

/** A FIFO queue with O(1) shift. */
class Queue {
  constructor() { this.items = []; this.head = 0; }
  get length() { return this.items.length - this.head; }
  push(value) { this.items.push(value); }
  first() { return this.items[this.head]; }
  shift() {
    const value = this.items[this.head];
    this.items[this.head++] = undefined;
    if (this.head > 1024 && this.head * 2 > this.items.length) {
      this.items = this.items.slice(this.head);
      this.head = 0;
    }
    return value;
  }
}

export class InputPort {
  /**
   * @param {import("./config.js").InputConfig} config
   * @param {import("./protocol.js").Codec} codec
   * @param {(port: InputPort) => void} onEnded  told once, when the last sender has ended
   * @param {(port: InputPort, message: object) => void} onPaused  told of every pause marker
   * @param {import("./security.js").KeyPair | null} keys  the flow key of a secure flow
   */
  constructor(config, codec, onEnded, onPaused, keys = null) {
    this.config = config;
    this.name = config.port;
    this.socket = new zmq.Pull({ receiveHighWaterMark: config.hwm, linger: 0, ...serverOptions(keys, config.endpoint) });
    // Realtime ports read eagerly and keep at most `hwm` waiting (see flujo/inputs.py).
    this._keep = config.policy !== "block" ? config.hwm : 0;
    this._keepNewest = config.policy === "drop-oldest";
    this.dropped = 0;
    this._codec = codec;
    this._reorder = config.senders > 1;
    this._expected = 0;  // next sequence number to deliver when reordering
    /** @type {Map<number, object>} arrived early, waiting for the gap before them */
    this._held = new Map();
    this._heldOrder = new Heap();
    /** @type {Map<number, number>} sender replica -> highest sequence number from it */
    this._lastSeen = new Map();
    this.late = 0;  // items behind a gap already given up on
    this._endedSenders = new Set();
    this._pausedSenders = new Set();  // sent a pause marker and nothing since
    this._onEnded = onEnded;
    this._onPaused = onPaused;
    this.ready = new Queue();  // in order, ready for the join
    this.received = 0;
    this.refused = 0;  // malformed or forged messages, dropped
    this._pending = null;  // the receive in flight
  }

  async bind() {
    await this.socket.bind(this.config.endpoint);
  }

  get sendersDone() {
    return this._endedSenders.size >= this.config.senders;
  }

  /** Every sender has paused or ended: nothing more will come until a successor runs. */
  get quiet() {
    let count = this._endedSenders.size;
    for (const replica of this._pausedSenders) if (!this._endedSenders.has(replica)) count += 1;
    return count >= this.config.senders;
  }

  /** Every sequence number up to ``seq`` has arrived (or was given up on) and was delivered. */
  completeThrough(seq) {
    return this._expected > seq && !(this._heldOrder.size && this._heldOrder.peek() <= seq);
  }

  get exhausted() {
    return !this.ready.length && this.sendersDone;
  }

  /** The receive in flight (started if none): resolves true once a message was taken. */
  pull() {
    if (this._pending === null) {
      this._pending = this.socket.receive().then((frames) => {
        this._pending = null;
        this._accept(frames);
        return true;
      }, (error) => {
        this._pending = null;
        if (this.socket.closed) return false;
        throw error;
      });
    }
    return this._pending;
  }

  /** Take one message if one is waiting, without waiting; false when none was (a receive then
   * stays in flight). No readiness query: on this path a ZMQ_EVENTS call costs more than a receive. */
  async receiveNow() {
    if (this._pending !== null) return false;
    this.pull();
    await null;  // a receive that found a message has resolved, and its callback run, by now
    return this._pending === null;
  }

  /** Take every message already queued on the socket; true if any arrived. */
  async receiveAvailable() {
    let got = false;
    while (await this.receiveNow()) got = true;
    return got;
  }

  /** For a realtime port: take what has arrived, so the queue policy can drop. */
  async refresh() {
    if (this._keep) await this.receiveAvailable();
  }

  /** An upstream replica sent its end of stream, or died before it could. */
  senderEnded(replica) {
    if (this._endedSenders.has(replica)) return;
    this._endedSenders.add(replica);
    this._releaseHeld();  // an ended sender can no longer fill a gap
    if (this.sendersDone) this._onEnded(this);
  }

  /** Deliver every held item, gaps or not: the replica drains and its senders paused. */
  takeHeld() {
    while (this._heldOrder.size) {
      const seq = this._heldOrder.pop();
      this.ready.push(this._held.get(seq));
      this._held.delete(seq);
      this._expected = seq + 1;
    }
  }

  _accept(frames) {
    let message;
    try {
      message = this._codec.decode(frames);
      if (message.sender !== this.config.source || message.replica >= this.config.senders) {
        throw new ProtocolError(`a message from ${message.sender}.${message.replica}, ` +
          `which does not send to this port (${this.config.source}, ${this.config.senders} replicas)`);
      }
    } catch (error) {
      if (!(error instanceof ProtocolError)) throw error;
      this.refused += 1;
      if (this.refused <= 100 || this.refused % 1000 === 0) {  // a flood is not logged line by line
        console.error(`flujo: port "${this.name}" refused message ${this.refused}: ${error.message}`);
      }
      return;
    }
    this._acceptMessage(message);
  }

  _acceptMessage(message) {
    const kind = message.kind;
    if (kind === Kind.EOS) {
      this.senderEnded(message.replica);
      return;
    }
    if (kind === Kind.PAUSE) {
      this._pause(message);
      return;
    }
    if (this._pausedSenders.size) this._pausedSenders.delete(message.replica);  // a successor runs downstream
    if (kind === Kind.BATCH) {  // one message per item, numbered on from seq
      message.item.forEach((item, offset) => this._acceptMessage(
        { kind: Kind.DATA, seq: message.seq + offset, sender: message.sender, replica: message.replica, item }));
      return;
    }
    this.received += 1;
    if (this._keep && this.ready.length >= this._keep) {
      this.dropped += 1;
      if (!this._keepNewest) return;  // drop-newest: the queue is full, this one goes
      this.ready.shift();  // drop-oldest: the oldest waiting item makes room
    }
    const seq = message.seq;
    if (!this._reorder) {  // one sender: in order already
      this.ready.push(message);
      this._expected = seq + 1;
      return;
    }
    if (seq > (this._lastSeen.get(message.replica) ?? -1)) this._lastSeen.set(message.replica, seq);
    if (seq === this._expected && !this._held.size) {
      this.ready.push(message);
      this._expected = seq + 1;
    } else if (seq < this._expected) {
      this.late += 1;  // behind a gap given up on: delivering it now would break the order
    } else {
      if (!this._held.has(seq)) this._heldOrder.push(seq);
      this._held.set(seq, message);
      this._releaseHeld();
    }
  }

  /** A sender pauses: until it sends again it is past nothing not yet delivered. */
  _pause(message) {
    const replica = message.replica;
    this._pausedSenders.add(replica);
    if (this._reorder) this._lastSeen.set(replica, Math.min(this._lastSeen.get(replica) ?? -1, this._expected - 1));
    this._onPaused(this, message);
  }

  /** Deliver held items that are next in order, or whose gap nobody can fill any more. */
  _releaseHeld() {
    while (this._heldOrder.size) {
      const seq = this._heldOrder.peek();
      if (seq !== this._expected && !this._sendersPast(seq - 1)) return;
      this._heldOrder.pop();
      this.ready.push(this._held.get(seq));
      this._held.delete(seq);
      this._expected = seq + 1;
    }
  }

  /** True when no live sender can still send anything at or below ``seq``. */
  _sendersPast(seq) {
    for (let replica = 0; replica < this.config.senders; replica++) {
      if (!this._endedSenders.has(replica) && (this._lastSeen.get(replica) ?? -1) < seq) return false;
    }
    return true;
  }

  close() {
    this.socket.close();
  }
}

/**
 * Turns the ports' streams into calls: ``next()`` gives [seq, port, items] or null at the end.
 *   one port: every message, in order;
 *   zip: one call per sequence number present on every port, ends when any port ends;
 *   merge: one call per message in arrival order, ends when all ports end.
 * A held replica throws Drained instead once its ports are quiet (a zip: any port) and drained.
 * ``items`` is the list of values (one per port for zip) or SKIP.
 */
export class Join {
  /**
   * @param {InputPort[]} ports
   * @param {string} mode  "zip" | "merge"
   * @param {{wait: (pending: Promise<unknown>[]) => Promise<void>, flush: () => Promise<void>,
   *          holding: () => boolean, draining: () => boolean, limit: () => number | undefined}} runtime
   */
  constructor(ports, mode, runtime) {
    this.ports = ports;
    this._zip = mode === "zip" && ports.length > 1;
    this._rt = runtime;
    this._mergeSeq = 0;
    this._turn = 0;
  }

  next() {
    if (this._zip) return this._nextZip();
    return this.ports.length === 1 ? this._nextSingle() : this._nextMerge();
  }

  /** Wait for this port to have a message ready (true), or its end (false). */
  async _fill(port) {
    const rt = this._rt;
    while (!port.ready.length) {
      if (port.sendersDone) return false;
      if (this._quietAndEmpty(port)) throw new Drained();
      if (port.ready.length) continue;  // held items were taken
      if (rt.holding()) {
        if (await port.receiveNow()) continue;
        await rt.flush();  // about to wait: what this node holds back must go now
      }
      if (await port.receiveNow()) continue;
      await rt.wait([port.pull()]);  // only this port: the others feel backpressure
    }
    return true;
  }

  async _nextSingle() {
    const port = this.ports[0];
    await port.refresh();
    if (!port.ready.length && !(await this._fill(port))) return null;
    const message = port.ready.shift();
    return [message.seq, port.name, message.kind === Kind.SKIP ? SKIP : [message.item]];
  }

  async _nextMerge() {
    const ports = this.ports;
    for (const port of ports) await port.refresh();
    for (;;) {
      const count = ports.length;
      let skipped = false;
      for (let offset = 0; offset < count; offset++) {
        const port = ports[(this._turn + offset) % count];
        if (!port.ready.length) continue;
        this._turn = (this._turn + offset + 1) % count;
        const message = port.ready.shift();
        if (message.kind === Kind.SKIP) {
          skipped = true;  // the merged stream numbers its own items: a gap means nothing here
          break;
        }
        return [this._mergeSeq++, port.name, [message.item]];
      }
      if (skipped) continue;
      if (ports.every((port) => port.exhausted)) return null;
      if (ports.every((port) => port.exhausted || this._quietAndEmpty(port))) throw new Drained();
      if (ports.some((port) => port.ready.length)) continue;  // held items were taken
      let got = false;
      for (const port of ports) if (!port.sendersDone && await port.receiveAvailable()) got = true;
      if (!got) await this._rt.wait(ports.filter((port) => !port.sendersDone).map((port) => port.pull()));
    }
  }

  async _nextZip() {
    for (const port of this.ports) await port.refresh();
    for (;;) {
      for (const port of this.ports) {
        if (!(await this._fill(port))) return null;  // zip ends when any input ends and is drained
      }
      const heads = this.ports.map((port) => port.ready.first());
      const newest = Math.max(...heads.map((message) => message.seq));
      if (heads.some((message) => message.seq !== newest)) {
        // Misaligned only after a loss upstream: drop what has no partner.
        for (const port of this.ports) if (port.ready.first().seq < newest) port.ready.shift();
        continue;
      }
      for (const port of this.ports) port.ready.shift();
      if (heads.some((message) => message.kind === Kind.SKIP)) return [newest, null, SKIP];
      return [newest, null, heads.map((message) => message.item)];
    }
  }

  /** While draining: nothing more can come to this process on the port, and nothing is left in it. */
  _quietAndEmpty(port) {
    if (!this._rt.draining()) return false;
    const limit = this._rt.limit();
    if (!port.quiet && (limit === undefined || !port.completeThrough(limit))) return false;
    port.takeHeld();
    return !port.ready.length;
  }
}
