"""The launcher's side of graceful restarts (docs/PROTOCOL.md, section 8).

`flujo-launch restart NODE` queues the node's replicas; each in turn is held (its senders
pause it), drains, and hands over: a zip's senders first agree where to pause (align),
the drained process exits once its readers have its pause marker (dismiss), and its
senders resume once the successor runs. The launcher respawns the process; this class
decides when each step may go.
"""
from __future__ import annotations

from typing import Any, Callable

from flujo.launch.replica import Replica
from flujo.protocol import Control

Key = tuple[str, int]


class Handovers:
    """Graceful restarts in progress, one replica at a time."""

    def __init__(self, replicas: dict[Key, Replica], publish: Callable[..., None], say: Callable[[str], None],
                 start_grace: Callable[[Replica], None]) -> None:
        self._replicas = replicas
        self._publish, self._say, self._start_grace = publish, say, start_grace
        self._queue: list[Replica] = []

    def restart(self, node: str) -> list[str]:
        """Queue the node's live replicas; returns their labels. A request that arrives while a
        restart of the same node runs merges into it: each replica is replaced once, by a
        process started after every one of those requests."""
        replicas = [r for r in self._replicas.values() if r.config.node == node and r.exit_code is None]
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
            if replica.exit_code is None and replica.process is not None and not replica.finished:
                self._say(f'restarting node "{replica.config.label}": draining it first')
                replica.restart_requested = True
                replica.hold = replica.config.generation
                replica.pause_seen.clear()
                replica.positions.clear()
                replica.limit = None
                self._publish(Control.HOLD, *replica.key, replica.hold)
                self.progress()
                self._start_grace(replica)
                return
            self._queue.pop(0)

    # -- reports from nodes ------------------------------------------------------------------
    def on_position(self, sender: Key, payload: list[Any]) -> None:
        target, target_replica, port, seq = payload[:4]
        held = self._replicas.get((target, target_replica))
        if held is not None and held.hold is not None:
            held.positions[(*sender, port)] = seq
            self.progress()

    def on_pause_seen(self, reader: Key, payload: list[Any]) -> None:
        port, sender, sender_replica = payload[:3]
        if (sender, sender_replica) in self._replicas:
            self._replicas[(sender, sender_replica)].pause_seen.add((*reader, port))
            self.progress()

    def progress(self) -> None:
        """Take every step that has become possible (after any report, release or exit)."""
        self._align()
        self._dismiss()

    def back(self, replica: Replica, ended: bool = False) -> None:
        """The replica's successor is subscribed and ready, or the replica ended instead of
        draining: its senders resume, and the next replica's turn comes."""
        if not ended and (replica.restart_requested or not (replica.ready and replica.subscribed)):
            return  # still the draining process (its subscription may show up again), or not back yet
        if replica.hold is not None:
            self._publish(Control.RESUME, *replica.key, replica.hold)
            replica.hold = None
        if self._queue and self._queue[0] is replica:
            self._queue.pop(0)
            self._hold_next()

    # -- steps ---------------------------------------------------------------------------------
    def _align(self) -> None:
        """Once every live sender of a held zip replica has said how far it has sent, tell them
        all to pause after the highest of those: no sequence number is split by the restart."""
        for replica in self._replicas.values():
            if replica.hold is None or replica.limit is not None or not replica.aligned:
                continue
            senders = [(port.source, index, port.port) for port in replica.config.inputs
                       for index in range(port.senders)]
            if all(key in replica.positions or not self._sends(*key[:2]) for key in senders):
                replica.limit = max(replica.positions.values(), default=-1)
                self._publish(Control.ALIGN, *replica.key, replica.hold, replica.limit)

    def _sends(self, node: str, index: int) -> bool:
        """That replica can still send: not ended, nor dead for good."""
        sender = self._replicas[(node, index)]
        return not sender.finished and (sender.exit_code is None or sender.restarting)

    def _dismiss(self) -> None:
        """Let each drained process exit once every reader it paused has confirmed (or stopped reading)."""
        for replica in self._replicas.values():
            if replica.drained is not None and not replica.dismissed and replica.exit_code is None and all(
                    self._has_pause(replica, *reader) for reader in replica.drained["readers"]):
                replica.dismissed = True
                self._publish(Control.DISMISS, *replica.key, replica.config.generation)

    def _has_pause(self, sender: Replica, node: str, index: int, port: str) -> bool:
        if (node, index, port) in sender.pause_seen:
            return True
        reader = self._replicas.get((node, index))
        return (reader is None or port in reader.released_ports
                or (reader.exit_code is not None and not reader.restarting))
