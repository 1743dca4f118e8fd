"""A sender's graceful-restart decisions towards the replicas of one output edge, without sockets.

While a downstream replica is held (flujo/holds.py; docs/PROTOCOL.md, section 8), its
senders pause it: a pause marker behind everything sent to it before. For a replica that
zips several ports (an *aligned* edge), the senders first agree on where: each reports its
position once per hold, sends nothing past it until the launcher announces the limit, then
pauses after the limit and keeps what comes next back for the successor (in memory, up to a
bound) instead of blocking. flujo/outputs.py does the sending; this class decides.
"""

from __future__ import annotations

from flujo.holds import Holds

#: While a zip replica drains, a sender already past the agreed limit keeps at most this
#: much in memory, then blocks.
HOLD_BACK_BYTES = 256 * 1024 * 1024


class PauseDecisions:
    """What one sender owes the held replicas of ``target`` (``replicas`` of them)."""

    def __init__(self, holds: Holds, target: str, port: str, replicas: int, aligned: bool) -> None:
        self.holds = holds  # the control state's, updated in place as commands arrive
        self.target, self.port, self.replicas, self.aligned = target, port, replicas, aligned
        self.last_seq = -1  # single reader: the highest sequence number handed to it (sent or batched)
        self._paused: dict[int, int] = {}  # replica index -> generation its pause marker was sent for
        self._reported: dict[int, tuple[int, int]] = {}  # replica index -> (generation, position reported)

    def generation(self, index: int) -> int | None:
        """The generation of that replica's draining process, or None when it is not held."""
        return self.holds.generation.get((self.target, index))

    def position(self, index: int, generation: int) -> int:
        """A zip replica's pause limit; until the launcher announces it, this sender's own
        position, reported once per hold."""
        limit = self.holds.limit.get((self.target, index))
        if limit is not None:
            return limit
        reported = self._reported.get(index)
        if reported is None or reported[0] != generation:
            reported = self._reported[index] = (generation, self.last_seq)
            self.holds.report_position(self.target, index, self.port, self.last_seq)
        return reported[1]

    def report_positions(self) -> None:
        """An aligned edge reports its position to every held replica (once per hold)."""
        if self.aligned:
            for index in range(self.replicas):
                generation = self.generation(index)
                if generation is not None:
                    self.position(index, generation)

    def pause_due(self, index: int) -> int | None:
        """The generation a pause marker is due to that replica for, now; None: none is due.
        An aligned edge pauses once it has sent everything up to the agreed limit."""
        generation = self.generation(index)
        if generation is None or self._paused.get(index) == generation:
            return None
        if not self.aligned:
            return generation
        if self.position(index, generation) <= self.last_seq and (self.target, index) in self.holds.limit:
            return generation
        return None

    def must_wait(self, index: int, seq: int) -> tuple[bool, int | None]:
        """Whether the message numbered ``seq`` must wait for that replica's successor, and the
        generation to pause it for first (None: no pause marker due before waiting)."""
        generation = self.generation(index)
        if generation is None:
            return False, None
        if self.aligned:
            if seq <= self.position(index, generation):
                return False, None  # still for the draining process: its zip gets whole sequence numbers
            if (self.target, index) not in self.holds.limit:
                return True, None  # past our position: wait for the agreed limit, unpaused
        return True, (generation if self._paused.get(index) != generation else None)

    def paused(self, index: int, generation: int) -> None:
        """A pause marker for that hold went out."""
        self._paused[index] = generation

    def may_hold_back(self, held_bytes: int) -> bool:
        """Keep a message for the held zip replica's successor instead of blocking: while its
        draining process may still need other senders to catch up (the limit is agreed, the
        process is not yet dismissed), up to HOLD_BACK_BYTES."""
        key = (self.target, 0)
        return (
            self.aligned and key in self.holds.limit and key not in self.holds.drained and held_bytes < HOLD_BACK_BYTES
        )
