"""Graceful restarts in progress, as a node's control channel learns of them (docs/PROTOCOL.md, section 8).

A held replica gets nothing more from its senders after their pause marker. For a replica
that zips several ports, the senders first agree on where to pause, so that every
sequence number is whole on one side of the restart: each reports how far it has sent
(its position), keeps back anything further, and pauses after the limit the launcher
then announces, the highest position reported. A sender that has paused keeps what comes
next in memory, without blocking, until the draining process has everything: blocking
would stop a shared upstream from feeding the senders that still lag behind the limit.
"""

from __future__ import annotations

from collections.abc import Callable

Key = tuple[str, int]  # (node, replica)
#: Reports a sender's position towards a held zip replica: (node, replica, port, last sequence number).
PositionReporter = Callable[[str, int, str, int], None]


class Holds:
    """Which replicas are held (generation of their draining process), and their pause limits."""

    def __init__(self, report_position: PositionReporter = lambda node, replica, port, seq: None) -> None:
        self.generation: dict[Key, int] = {}  # only ever changed in place: output edges keep a reference
        self.limit: dict[Key, int] = {}  # zip replicas: senders pause after this sequence number
        self.drained: set[Key] = set()  # the draining process has everything: senders may block again
        self.resumed: dict[Key, int] = {}  # the highest generation resumed, per replica
        self.report_position = report_position

    def hold(self, key: Key, generation: int) -> None:
        # The launcher replays its whole history to a new subscriber: a hold of a generation
        # already resumed is over (generations only grow) and must not pause the successor.
        if generation <= self.resumed.get(key, -1):
            return
        if self.generation.get(key) != generation:
            self.generation[key] = generation
            self.limit.pop(key, None)
            self.drained.discard(key)

    def align(self, key: Key, generation: int, limit: int) -> None:
        if self.generation.get(key) == generation:
            self.limit[key] = limit

    def dismissed(self, key: Key, generation: int) -> None:
        if self.generation.get(key) == generation:
            self.drained.add(key)

    def resume(self, key: Key, generation: int) -> None:
        if generation > self.resumed.get(key, -1):
            self.resumed[key] = generation
        if self.generation.get(key) == generation:
            del self.generation[key]
            self.limit.pop(key, None)
            self.drained.discard(key)
