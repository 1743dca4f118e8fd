// Graceful restarts in progress, as a node's control channel learns of them (docs/PROTOCOL.md, section 8).
// Mirrors flujo/holds.py: a held replica gets nothing more from its senders after their pause
// marker; for a zip replica the senders first agree where to pause (report a position, then
// pause after the limit the launcher announces).

/** @typedef {string} Key  "node\u0000replica" */
export const key = (node, replica) => `${node}\u0000${replica}`;

export class Holds {
  /** @param {(node: string, replica: number, port: string, seq: number) => void} reportPosition */
  constructor(reportPosition = () => {}) {
    /** @type {Map<Key, number>} held replica -> generation of its draining process */
    this.generation = new Map();
    /** @type {Map<Key, number>} zip replicas: senders pause after this sequence number */
    this.limit = new Map();
    /** @type {Set<Key>} the draining process has everything: senders may block again */
    this.drained = new Set();
    /** @type {Map<Key, number>} the highest generation resumed, per replica */
    this.resumed = new Map();
    this.reportPosition = reportPosition;
  }

  hold(k, generation) {
    // The launcher replays its whole history to a new subscriber: a hold of a generation
    // already resumed is over (generations only grow) and must not pause the successor.
    if (generation <= (this.resumed.get(k) ?? -1)) return;
    if (this.generation.get(k) !== generation) {
      this.generation.set(k, generation);
      this.limit.delete(k);
      this.drained.delete(k);
    }
  }

  align(k, generation, limit) {
    if (this.generation.get(k) === generation) this.limit.set(k, limit);
  }

  dismissed(k, generation) {
    if (this.generation.get(k) === generation) this.drained.add(k);
  }

  resume(k, generation) {
    if (generation > (this.resumed.get(k) ?? -1)) this.resumed.set(k, generation);
    if (this.generation.get(k) === generation) {
      this.generation.delete(k);
      this.limit.delete(k);
      this.drained.delete(k);
    }
  }
}
