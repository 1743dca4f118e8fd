"""What a node replica knows from the control channel, without the sockets (flujo/control.py has those).

Two parts:

* :class:`Lifecycle`, the replica's own phase as commands move it (start, stop, hold, dismiss):
  an explicit state machine, one method per event; an event its phase cannot take raises
  :class:`InvalidTransition`.
* :class:`ControlState`, every command applied in order (:meth:`ControlState.apply`): the
  lifecycle events addressed to this replica, and the facts about other replicas that the
  data path follows (released readers, senders gone, moved readers, graceful restarts).

The launcher replays its whole history to a new subscriber, so an event repeated (a second
start, a hold already being drained) is normal and changes nothing.
"""

from __future__ import annotations

from collections.abc import Callable
from enum import StrEnum
from typing import Any

from flujo.holds import Holds
from flujo.protocol import Control, Status

Key = tuple[str, int]  # (node, replica)
Reporter = Callable[[Status, Any], None]


class Phase(StrEnum):
    """Where one replica process is in its life, as far as commands decide it."""

    WAITING = "waiting"  # bound and opened, not started: producers wait here, readers read already
    RUNNING = "running"  # every node is ready: producers produce
    STOPPING = "stopping"  # told to stop: produce or read no more, end the stream
    DRAINING = "draining"  # held for a graceful restart: take what senders sent before pausing, hand over
    DISMISSED = "dismissed"  # drained, and every reader has its pause marker: exit now


class InvalidTransition(Exception):
    """An event the current phase cannot take (a command out of order)."""

    def __init__(self, phase: Phase, event: str) -> None:
        super().__init__(f"'{event}' while {phase}")
        self.phase, self.event = phase, event


class Lifecycle:
    """The phase of one replica process; one method per event.

    A graceful restart outranks a stop: a stopping replica that is then held hands over (its
    successor receives the stop in the replayed history and ends the stream), and a draining
    replica told to stop goes on draining. Only a drained replica is dismissed.
    """

    def __init__(self) -> None:
        self.phase = Phase.WAITING

    def start(self) -> None:
        if self.phase is Phase.WAITING:
            self.phase = Phase.RUNNING
        # otherwise a replayed or late start: the phase already says more

    def stop(self) -> None:
        if self.phase in (Phase.WAITING, Phase.RUNNING):
            self.phase = Phase.STOPPING

    def drain(self) -> None:
        if self.phase in (Phase.WAITING, Phase.RUNNING, Phase.STOPPING):
            self.phase = Phase.DRAINING

    def dismiss(self) -> None:
        if self.phase is Phase.DRAINING:
            self.phase = Phase.DISMISSED
        elif self.phase is not Phase.DISMISSED:
            raise InvalidTransition(self.phase, "dismiss")

    @property
    def started(self) -> bool:
        """No longer waiting for the start command (started, or told to end before)."""
        return self.phase is not Phase.WAITING

    @property
    def stop_requested(self) -> bool:
        return self.phase is Phase.STOPPING

    @property
    def drain_requested(self) -> bool:
        """This process is held: it takes what is queued, hands over and exits."""
        return self.phase is Phase.DRAINING or self.phase is Phase.DISMISSED

    @property
    def dismissed(self) -> bool:
        return self.phase is Phase.DISMISSED


class ControlState:
    """Every control command applied, for the replica ``(node, replica)`` of ``generation``."""

    def __init__(self, node: str, replica: int, generation: int, report: Reporter = lambda kind, payload: None) -> None:
        self._me = (node, replica)
        self._generation = generation
        self.lifecycle = Lifecycle()
        self.released: set[tuple[str, str, int]] = set()  # (node, port, replica) that reads no more
        self.gone: set[Key] = set()  # replicas that ended for good (a sender: count it as ended)
        # Replicas being restarted gracefully, shared with the output edges (they pause those
        # replicas); empty almost always.
        self.holds = Holds(lambda node, replica, port, seq: report(Status.POSITION, [node, replica, port, seq]))
        self.moved: dict[tuple[str, str, int], str] = {}  # (node, port, replica) -> where it binds now
        self.changes = 0  # bumped on every release, loss, move or hold, so readers can cache
        self.exited: list[Key] = []  # processes that ended since last looked at (shared memory)
        self.kept = -1  # the launcher keeps this process's snapshot through this item (section 9.6)

    def apply(self, topic: Control | None, payload: list[Any]) -> None:
        """Apply one checked command (flujo/wire_check.py checked its payload's shape).
        Raises InvalidTransition for a lifecycle event out of order (nothing changed)."""
        if topic is Control.START:
            self.lifecycle.start()
        elif topic is Control.STOP:
            if self._me[0] in payload:
                self.lifecycle.stop()
        elif topic is Control.RELEASED:
            self.released.add((payload[0], payload[2], payload[1]))
            self.changes += 1
        elif topic is Control.HOLD:
            node, replica, generation = payload[:3]
            if self._is_me(node, replica, generation):
                self.lifecycle.drain()
            self.holds.hold((node, replica), generation)
            self.changes += 1
        elif topic is Control.ALIGN:
            node, replica, generation, limit = payload[:4]
            self.holds.align((node, replica), generation, limit)
        elif topic is Control.RESUME:
            node, replica, generation = payload[:3]
            self.holds.resume((node, replica), generation)
        elif topic is Control.DISMISS:
            node, replica, generation = payload[:3]
            if self._is_me(node, replica, generation):
                self.lifecycle.dismiss()
            self.holds.dismissed((node, replica), generation)
        elif topic is Control.EXITED:
            self.exited.append((payload[0], payload[1]))
            self.changes += 1
        elif topic is Control.MOVED:
            node, replica, port, endpoint = payload[:4]
            self.moved[(node, port, replica)] = endpoint
            self.changes += 1
        elif topic is Control.KEPT:
            node, replica, generation, through = payload[:4]
            if self._is_me(node, replica, generation):
                self.kept = max(self.kept, through)
        elif topic is Control.GONE and (len(payload) < 4 or (payload[2], payload[3]) == self._me):
            self.gone.add((payload[0], payload[1]))  # for every reader, or for this one
            self.changes += 1

    def _is_me(self, node: str, replica: int, generation: int) -> bool:
        return (node, replica) == self._me and generation == self._generation

    def is_released(self, node: str, port: str, replica: int) -> bool:
        """That reader replica reads no more on that port: released, or ended for good."""
        return (node, port, replica) in self.released or (node, replica) in self.gone

    def reopen(self, node: str, port: str, replica: int) -> None:
        """A released reader replica died before it acknowledged everything a lossless sender
        kept for it: its successor reads again (a replay, then this sender's end of stream) and
        releases the port itself (section 9.3)."""
        self.released.discard((node, port, replica))
        self.changes += 1

    @property
    def drain_limit(self) -> int | None:
        """While this replica drains a zip: the sequence number its senders pause after, once agreed."""
        return self.holds.limit.get(self._me)
