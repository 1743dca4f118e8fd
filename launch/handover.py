"""The launcher's side of graceful restarts (docs/PROTOCOL.md, section 8).

`flujo-launch restart NODE` queues the node's replicas; each in turn is held (its senders
pause it), drains, and hands over: a zip's senders first agree where to pause (align),
the drained process exits once its readers have its pause marker (dismiss), and its
senders resume once the successor runs. The launcher respawns the process; this class
decides when each step may go.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from flujo.launch.replica import Key, Replica, ReplicaState
from flujo.protocol import Control

#: The states in which a replica's process can be held for a graceful restart.
HOLDABLE = frozenset({ReplicaState.STARTING, ReplicaState.READY, ReplicaState.RELEASED})


class Handovers:
    """Graceful restarts in progress, one replica at a time."""

    def __init__(
        self,
        replicas: dict[Key, Replica],
        publish: Callable[..., None],
        say: Callable[[str], None],
        start_grace: Callable[[Replica], None],
    ) -> None:
        self._replicas = replicas
        self._publish, self._say, self._start_grace = publish, say, start_grace
        self._queue: list[Replica] = []

    def restart(self, node: str) -> list[str]:
        """Queue the node's live replicas; returns their labels. A request that arrives while a
        restart of the same node runs merges into it: each replica is replaced once, by a
        process started after every one of those requests."""
        replicas = [r for r in self._replicas.values() if r.config.node == node and r.alive]
        if any(replica.config.node == node for replica in self._queue):
            return [replica.config.label for replica in replicas]  # merged into the restart under way
        first = not self._queue
        self._queue.extend(replicas)
        if first and self._queue:
            self._hold_next()
        return [replica.config.label for replica in replicas]

    def _hold_next(self) -> None:
        """Hold the next replica in the queue; past its stop_timeout the stop ladder ends it."""
        while self._queue:
            replica = self._queue[0]
            if replica.state in HOLDABLE and replica.process is not None and not replica.finished:
                self._say(f'restarting node "{replica.config.label}": draining it first')
                hold = replica.drain()
                self._publish(Control.HOLD, *replica.key, hold.generation)
                self.progress()
                self._start_grace(replica)
                return
            self._queue.pop(0)

    # -- reports from nodes ------------------------------------------------------------------
    def on_position(self, sender: Key, payload: list[Any]) -> None:
        target, target_replica, port, seq = payload[:4]
        held = self._replicas.get((target, target_replica))
        if held is not None and held.hold is not None:
            held.hold.positions[(*sender, port)] = seq
            self.progress()

    def on_pause_seen(self, reader: Key, payload: list[Any]) -> None:
        port, sender, sender_replica = payload[:3]
        held = self._replicas.get((sender, sender_replica))
        if held is not None:
            if held.hold is not None:  # only a held process sends pause markers
                held.hold.pause_seen.add((*reader, port))
            self.progress()

    def progress(self) -> None:
        """Take every step that has become possible (after any report, release or exit)."""
        self._align()
        self._dismiss()

    def back(self, replica: Replica, ended: bool = False) -> None:
        """The replica's successor is subscribed and ready, or the replica ended instead of
        draining: its senders resume, and the next replica's turn comes."""
        if not ended and (replica.draining or not replica.listening):
            return  # still the draining process (its subscription may show up again), or not back yet
        if replica.hold is not None:
            self._publish(Control.RESUME, *replica.key, replica.resumed())
        if self._queue and self._queue[0] is replica:
            self._queue.pop(0)
            self._hold_next()

    # -- steps ---------------------------------------------------------------------------------
    def _align(self) -> None:
        """Once every live sender of a held zip replica has said how far it has sent, tell them
        all to pause after the highest of those: no sequence number is split by the restart."""
        for replica in self._replicas.values():
            hold = replica.hold
            if hold is None or hold.limit is not None or not replica.aligned:
                continue
            senders = [
                (port.source, index, port.port) for port in replica.config.inputs for index in range(port.senders)
            ]
            if all(key in hold.positions or not self._replicas[key[:2]].sends for key in senders):
                hold.limit = max(hold.positions.values(), default=-1)
                self._publish(Control.ALIGN, *replica.key, hold.generation, hold.limit)

    def _dismiss(self) -> None:
        """Let each drained process exit once every reader it paused has confirmed (or stopped reading)."""
        for replica in self._replicas.values():
            process = replica.current
            if (
                process.drained is not None
                and not process.dismissed
                and process.exit_code is None
                and all(self._has_pause(replica, *reader) for reader in process.drained["readers"])
            ):
                replica.dismissed()
                self._publish(Control.DISMISS, *replica.key, replica.config.generation)

    def _has_pause(self, sender: Replica, node: str, index: int, port: str) -> bool:
        if sender.hold is not None and (node, index, port) in sender.hold.pause_seen:
            return True
        reader = self._replicas.get((node, index))
        return reader is None or port in reader.released_ports or reader.ended_for_good
