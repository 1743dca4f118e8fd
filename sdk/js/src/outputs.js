// Output side of a node replica: one PUSH socket per downstream replica, per edge.
// Mirrors flujo/outputs.py (docs/PROTOCOL.md, sections 1, 6-8).
//
// zeromq.js allows one send in flight per socket. A send that cannot go at once stays in
// flight; the edge waits for it racing the control channel, so a released reader or a
// command is seen while blocked, and no other send starts on that socket meanwhile.
import * as zmq from "zeromq";
import { Kind } from "./protocol.js";
import { Holds, key } from "./holds.js";
import { clientOptions } from "./security.js";

/** While a reader's queue is full, small items wait in a batch of at most this many items or bytes. */
export const BATCH_ITEMS = 16;
export const BATCH_BYTES = 16 * 1024;
/** While a zip replica drains, a sender past the agreed limit keeps at most this much in memory. */
export const HOLD_BACK_BYTES = 256 * 1024 * 1024;
/** The sequence number end of stream counts as: past any pause limit. */
const END_SEQ = Number.MAX_SAFE_INTEGER;
/** How often a sender all of whose replicas are full looks again (zeromq.js has no poll). */
const FULL_RETRY_MS = 1;

class Batch {
  constructor(seq, body) {
    this.firstSeq = seq;
    this.bodies = [body];
    this.size = body.length;
    this.since = performance.now();
  }
  accepts(seq) { return seq === this.firstSeq + this.bodies.length; }
  add(body) { this.bodies.push(body); this.size += body.length; }
  get full() { return this.bodies.length >= BATCH_ITEMS || this.size >= BATCH_BYTES; }
  get lastSeq() { return this.firstSeq + this.bodies.length - 1; }
}

const frameBytes = (frames) => frames.reduce((total, frame) => total + frame.byteLength, 0);

export class OutputEdge {
  /**
   * @param {import("./config.js").OutputConfig} config
   * @param {(node: string, port: string, replica: number) => boolean} isReleased
   * @param {import("./protocol.js").Codec} codec
   * @param {Holds} holds  the control channel's, updated in place
   * @param {import("./security.js").KeyPair | null} keys  the flow key of a secure flow
   */
  constructor(config, isReleased, codec, holds = new Holds(), keys = null) {
    this.config = config;
    this.port = config.port;
    this.target = config.target;
    this.sockets = config.endpoints.map((endpoint) => {
      const socket = new zmq.Push({
        sendHighWaterMark: config.hwm,
        linger: 0,  // the node waits for downstream's release instead of lingering
        reconnectInterval: 10,  // ms; a restarted replica is found again quickly
        ...clientOptions(keys, endpoint),
      });
      socket.connect(endpoint);
      return socket;
    });
    /** @type {(Promise<void> | null)[]} the send in flight on each socket */
    this._inFlight = this.sockets.map(() => null);
    this._isReleased = isReleased;
    this._next = 0;  // round-robin start for dealing
    this._drops = config.policy !== "block";  // a realtime reader: never wait, drop the newest
    this._codec = codec;
    this._holds = holds;
    this._held = holds.generation;  // the same map: "any hold?" is a size check on the per-item path
    /** @type {Map<number, number>} replica index -> generation its pause marker was sent for */
    this._paused = new Map();
    /** @type {Map<number, [number, number]>} replica index -> [generation, position reported] */
    this._reported = new Map();
    this._lastSeq = -1;  // single reader: the highest sequence number handed to it (sent or batched)
    /** @type {Array<[Buffer[], number]>} (frames, items) kept for a zip replica's successor */
    this._heldBack = [];
    this._heldBackBytes = 0;
    this._pauseMarker = codec.marker(Kind.PAUSE, 0);
    this.sending = false;  // inside one of this edge's send loops (a wait must not send a pause marker)
    /** @type {Batch | null} */
    this.batch = null;
    this.sent = 0;
    this.dropped = 0;
  }

  released_(index) {
    return this._isReleased(this.target, this.config.target_port, index);
  }

  liveReplicas() {
    const live = [];
    for (let index = 0; index < this.sockets.length; index++) if (!this.released_(index)) live.push(index);
    return live;
  }

  get released() {
    return this.liveReplicas().length === 0;
  }

  /** Whether a message can go to that replica now, without waiting. Never asked while a send is
   * in flight on it: the query would consume the edge-triggered wake-up that send waits for. */
  _writable(index) {
    return this._inFlight[index] === null && this.sockets[index].writable;
  }

  /**
   * Send the message numbered ``seq`` to one live replica, waiting while all are full.
   * ``batchable``: a small data item that may join a batch. False when every replica was released.
   * @param {{wait: (pending: Promise<unknown>[], ms?: number) => Promise<void>}} rt
   */
  async deal(frames, rt, seq, batchable = false) {
    this.sending = true;
    try {
      if (this._held.size) await this._sendPauses(rt);  // a graceful restart somewhere in the flow (rare)
      if (this._drops) return this._offer(frames, seq, rt);
      if (this.sockets.length === 1) return await this._dealSingle(frames, rt, seq, batchable);
      return await this._dealReplicas(frames, rt, seq);
    } finally {
      this.sending = false;
    }
  }

  async _busy(action) {
    const outer = this.sending;
    this.sending = true;
    try {
      return await action();
    } finally {
      this.sending = outer;
    }
  }

  // -- graceful restarts (docs/PROTOCOL.md, section 8) ---------------------------------------
  /** Between items, or while waiting: pause the held replicas due a marker, report positions. */
  async pauseHeld(rt) {
    if (!this._held.size) {
      if (this._heldBack.length && !this.sending) await this._busy(() => this._sendHeldBack(rt));
      return;
    }
    if (this.config.aligned) {
      for (let index = 0; index < this.sockets.length; index++) {
        const generation = this._holds.generation.get(key(this.target, index));
        if (generation !== undefined) this._limit(index, generation);  // reports, once per hold
      }
    }
    if (!this.sending) await this._busy(() => this._sendPauses(rt));
  }

  async _sendPauses(rt) {
    for (let index = 0; index < this.sockets.length; index++) {
      const generation = this._holds.generation.get(key(this.target, index));
      if (generation === undefined || this._paused.get(index) === generation) continue;
      if (!this.config.aligned) {
        await this._pause(index, generation, rt);
      } else if (this._limit(index, generation) <= this._lastSeq && this._holds.limit.has(key(this.target, index))) {
        await this._pause(index, generation, rt);  // sent everything up to the agreed limit
      }
    }
  }

  /** Whether the message numbered ``seq`` must wait for that replica's successor; pauses it first when due. */
  async _mustWait(index, seq, rt) {
    const k = key(this.target, index);
    const generation = this._holds.generation.get(k);
    if (generation === undefined) return false;
    if (this.config.aligned) {
      if (seq <= this._limit(index, generation)) return false;  // still for the draining process
      if (!this._holds.limit.has(k)) return true;  // past our position: wait for the agreed limit, unpaused
    }
    await this._pause(index, generation, rt);
    return true;
  }

  /** A zip replica's pause limit; until announced, this sender's own position, reported once per hold. */
  _limit(index, generation) {
    const limit = this._holds.limit.get(key(this.target, index));
    if (limit !== undefined) return limit;
    let reported = this._reported.get(index);
    if (reported === undefined || reported[0] !== generation) {
      reported = [generation, this._lastSeq];
      this._reported.set(index, reported);
      this._holds.reportPosition(this.target, index, this.config.target_port, this._lastSeq);
    }
    return reported[1];
  }

  /** A pause marker, once per hold, behind everything sent to that replica before. */
  async _pause(index, generation, rt) {
    if (this._paused.get(index) !== generation) {
      this._paused.set(index, generation);
      if (this.config.aligned) await this._sendBatchNow(rt);
      await this._sendTo(index, this._pauseMarker, rt);
    }
  }

  /** Keep a message for the held zip replica's successor instead of blocking. */
  _holdBack(frames, items) {
    const k = key(this.target, 0);
    if (!this.config.aligned || !this._holds.limit.has(k) || this._holds.drained.has(k) ||
        this._heldBackBytes >= HOLD_BACK_BYTES) return false;
    this._heldBack.push([frames, items]);
    this._heldBackBytes += frameBytes(frames);
    return true;
  }

  async _sendHeldBack(rt) {
    while (this._heldBack.length) {
      const [frames, items] = this._heldBack.shift();
      this._heldBackBytes -= frameBytes(frames);
      await this._sendTo(0, frames, rt, items);
    }
  }

  async _sendBatchNow(rt) {
    const batch = this.batch;
    this.batch = null;
    if (batch !== null) await this._sendTo(0, this._codec.batch(batch.firstSeq, batch.bodies), rt, batch.bodies.length);
  }

  /** This replica hands over: what it holds back, then a pause marker, to every replica that still reads. */
  async pauseAll(rt) {
    return this._busy(async () => {
      await this._sendHeldBack(rt);
      await this._sendBatchNow(rt);
      const readers = [];
      for (let index = 0; index < this.sockets.length; index++) {
        if (await this._sendTo(index, this._pauseMarker, rt)) readers.push(index);
      }
      return readers;
    });
  }

  /** Send to that replica, held or not, waiting while its queue is full; false when it was released. */
  async _sendTo(index, frames, rt, items = 0) {
    if (!(await this._afterInFlight(index, rt))) return false;
    if (await this._trySend(index, frames, items)) return true;
    return this._afterInFlight(index, rt);  // false: released meanwhile (the message stays unread)
  }

  /** Wait until nothing is in flight on that socket; false when its reader was released. */
  async _afterInFlight(index, rt) {
    for (;;) {
      if (this.released_(index)) return false;
      const inFlight = this._inFlight[index];
      if (inFlight === null) return true;
      await rt.wait([inFlight]);
    }
  }

  /**
   * Start sending on that socket (nothing may be in flight on it): true when the message went
   * at once; otherwise it stays in flight, queued behind nothing, and goes when there is room.
   * No readiness query before: on the per-item path a ZMQ_EVENTS call costs more than a send.
   */
  async _trySend(index, frames, items) {
    const socket = this.sockets[index];
    let done = false;
    this._inFlight[index] = socket.send(frames).then(() => {
      done = true;
      this._inFlight[index] = null;
      this.sent += items;
    }, (error) => {
      this._inFlight[index] = null;
      if (!socket.closed) throw error;
    });
    await null;  // a send that could go at once has resolved, and its callback run, by now
    return done;
  }

  // -- dealing ---------------------------------------------------------------------------------
  async _dealSingle(frames, rt, seq, batchable) {
    const batch = this.batch;
    if (batch !== null) {
      if (batchable && !this._held.size && batch.accepts(seq)) {
        batch.add(frames[1]);
        this._lastSeq = seq;
        if (batch.full) await this.flush(rt);
        return true;
      }
      await this.flush(rt);  // keep the order: what waits goes first
    } else if (batchable && !this._held.size && !this._heldBack.length && !this.released_(0)) {
      this._lastSeq = seq;
      if (this._inFlight[0] === null) {
        await this._trySend(0, frames, 1);  // gone, or in flight until the reader has room
      } else {
        this.batch = new Batch(seq, frames[1]);  // the reader is busy: start a batch
      }
      return true;
    }
    return this._sendBlocking(frames, rt, 1, seq);
  }

  /** Send the waiting batch, if any (waiting while the reader's queue is full). */
  async flush(rt) {
    const batch = this.batch;
    this.batch = null;
    if (batch !== null) {
      await this._busy(() => this._sendBlocking(this._codec.batch(batch.firstSeq, batch.bodies), rt,
        batch.bodies.length, batch.lastSeq));
    }
  }

  /** One reader: wait in the send itself; while the reader is held, wait until its successor runs. */
  async _sendBlocking(frames, rt, items, seq) {
    if (seq > this._lastSeq) this._lastSeq = seq;
    while (this._held.size && await this._mustWait(0, seq, rt)) {
      if (this.released_(0)) return false;
      if (this._holdBack(frames, items)) return true;
      await rt.wait([]);  // only commands: the limit, or the resume
    }
    if (this._heldBack.length) await this._sendHeldBack(rt);
    return this._sendTo(0, frames, rt, items);
  }

  async _dealReplicas(frames, rt, seq) {
    for (;;) {
      let live = this.liveReplicas();
      if (!live.length) return false;
      if (this._held.size) {
        const free = [];
        for (const index of live) if (!(await this._mustWait(index, seq, rt))) free.push(index);
        live = free;
        if (!live.length) {
          await rt.wait([]);  // every live replica is held: wait for a resume
          continue;
        }
      }
      const count = live.length;
      for (let offset = 0; offset < count; offset++) {
        const index = live[(this._next + offset) % count];
        if (!this._writable(index)) continue;
        this._next = (this._next + offset + 1) % count;
        await this._trySend(index, frames, 1);  // room for it: goes at once
        return true;
      }
      await rt.wait(live.map((index) => this._inFlight[index]).filter(Boolean), FULL_RETRY_MS);
    }
  }

  /** Send to a live replica with room, or drop the item (counted): a realtime reader never waits. */
  async _offer(frames, seq, rt) {
    for (const index of this.liveReplicas()) {
      if (this._held.size && await this._mustWait(index, seq, rt)) continue;  // a held realtime reader misses these
      if (this._writable(index)) {
        await this._trySend(index, frames, 1);
        return true;
      }
    }
    this.dropped += 1;
    return true;
  }

  /** Send to every live replica (end of stream); a held one gets it from its successor. */
  async broadcast(frames, rt) {
    await this._busy(async () => {
      for (let index = 0; index < this.sockets.length; index++) {
        while (this._held.size && await this._mustWait(index, END_SEQ, rt) && !this.released_(index)) {
          await rt.wait([]);
        }
        if (this._heldBack.length) await this._sendHeldBack(rt);
        await this._sendTo(index, frames, rt);
      }
    });
  }

  /** Close the sockets; ``lingerMs`` lets what is queued leave first (at most once). */
  close(lingerMs = 0) {
    for (const socket of this.sockets) {
      if (socket.closed) continue;
      socket.linger = lingerMs;
      socket.close();
    }
  }
}
