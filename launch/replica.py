"""What the launcher knows about one replica of a node: an explicit life-cycle state machine.

A replica lives through one or more processes. Its state (``ReplicaState``) changes only by the
event methods of ``Replica`` (spawned, ready, released, finished, drain, exited, restart
scheduled); an event that makes no sense in the current state raises ``InvalidTransition``.
What belongs to one process (the process itself, its reports, its stop ladder, its exit) is a
``ProcessRecord`` that ``spawned`` replaces whole, so nothing of a dead process leaks into its
successor. What outlives processes (config, counters, restart budget, a graceful hand-over
in progress) stays on the replica.

    STARTING --ready--> READY --released--> RELEASED --finished--> FINISHED --exited--> EXITED | FAILED
       (STARTING may be released or finished directly; each live state may exit)
    STARTING | READY | RELEASED --drain--> DRAINING --exited--> RESTARTING (not finished: respawn at once)
                                                      \\--exited--> EXITED | FAILED (it ended its stream)
    EXITED | FAILED --restart_scheduled--> RESTARTING --spawned--> STARTING
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from flujo.config import NodeConfig
from flujo.launch.metrics import Sample
from flujo.launch.restarts import RestartBudget
from flujo.vocab import zips_several

Key = tuple[str, int]
#: A reader's input port: (reader node, reader replica, port).
PortKey = tuple[str, int, str]


class ReplicaState(StrEnum):
    """Where a replica is in its life (the spellings `flujo-launch status` shows)."""

    STARTING = "starting"  # its process is spawned (or about to be) and not ready yet
    READY = "ready"  # it reported ready; it runs once the flow has started
    RELEASED = "released"  # every input port of it was released (its inputs ended)
    FINISHED = "finished"  # it reported the end of its stream; its process exits next
    DRAINING = "draining"  # a graceful restart: it drains, then a successor replaces it
    RESTARTING = "restarting"  # between the death of a process and the start of the next
    EXITED = "exited"  # its last process ended with status 0, no restart follows
    FAILED = "failed"  # its last process ended with another status, no restart follows
    # Shown by the status snapshot only, never a state of the machine:
    PENDING = "pending"  # a Ray placement waiting for room
    RUNNING = "running"  # ready, and the flow has started


LIVE = frozenset(
    {ReplicaState.STARTING, ReplicaState.READY, ReplicaState.RELEASED, ReplicaState.FINISHED, ReplicaState.DRAINING}
)
ENDED = frozenset({ReplicaState.EXITED, ReplicaState.FAILED})


class InvalidTransition(RuntimeError):
    """An event that cannot happen in the replica's current state (a launcher bug, not bad input)."""

    def __init__(self, label: str, state: ReplicaState, event: str) -> None:
        super().__init__(f'replica "{label}": event "{event}" is not valid in state "{state}"')
        self.label, self.state, self.event = label, state, event


@dataclass
class ProcessRecord:
    """Everything about one process of a replica: replaced whole when the replica respawns."""

    process: Any = None  # NodeProcess | RemoteProcess | RayProcess; None before the first spawn
    subscribed: bool = False  # its control subscription arrived
    ready: bool = False  # it reported ready
    finished: bool = False  # it reported the end of its stream (also while draining)
    released_ports: set[str] = field(default_factory=set)
    exit_code: int | None = None
    error: dict[str, Any] | None = None  # its error report, or the launcher's reason
    drained: dict[str, Any] | None = None  # a draining process's report: its stats and the readers it paused
    dismissed: bool = False  # told to exit: every reader has its pause marker
    grace_started: bool = False  # the stop ladder runs for this process
    grace_reading: bool = False  # ... because its inputs ended; it may still be reading
    ladder: object | None = None  # the ladder in force (a later one supersedes it)
    escalated: str = ""  # the signal the ladder had to send, if any


@dataclass
class Hold:
    """A graceful restart of one replica, from HOLD until its successor runs (docs/PROTOCOL.md, 8)."""

    generation: int  # the generation held
    positions: dict[PortKey, int] = field(default_factory=dict)  # a held zip replica: (sender node,
    # sender replica, port) -> the highest sequence number that sender has sent it
    limit: int | None = None  # the pause limit announced to its senders
    pause_seen: set[PortKey] = field(default_factory=set)  # readers that confirmed the held process's pause


class Replica:
    """One replica of a node: its configuration, its current process, and its life-cycle state."""

    def __init__(self, config: NodeConfig, budget: RestartBudget | None = None) -> None:
        self.config = config
        self.budget = budget
        self.sample = Sample()  # counters, summed over every process it has had
        self.snapshot: tuple[int, bytes] | None = None  # user state after an item (PROTOCOL 9.6): survives
        # its processes, given to the next one
        self.restarts = 0
        self.stopped = False  # told to stop (its readers' inputs end)
        self.started_at: float | None = None  # wall clock: its first process started ...
        self.ended_at: float | None = None  # ... and its last one exited (for the closing summary)
        self.hold: Hold | None = None  # a graceful restart in progress
        self._state = ReplicaState.STARTING
        self._record = ProcessRecord()

    # -- reading -------------------------------------------------------------------------------
    @property
    def state(self) -> ReplicaState:
        return self._state

    @property
    def key(self) -> Key:
        return self.config.node, self.config.replica

    @property
    def current(self) -> ProcessRecord:
        """The facts of its current (or last) process: read them here, change them by events."""
        return self._record

    @property
    def process(self) -> Any:
        return self._record.process

    @property
    def exit_code(self) -> int | None:
        return self._record.exit_code

    @property
    def error(self) -> dict[str, Any] | None:
        return self._record.error

    @property
    def finished(self) -> bool:
        return self._record.finished

    @property
    def released_ports(self) -> frozenset[str]:
        return frozenset(self._record.released_ports)

    @property
    def released(self) -> bool:
        return len(self._record.released_ports) == len(self.config.inputs) > 0

    @property
    def restarting(self) -> bool:
        """Between a death and the respawn."""
        return self._state is ReplicaState.RESTARTING

    @property
    def draining(self) -> bool:
        """Held for a graceful restart: it drains, and is respawned at once when it exits."""
        return self._state is ReplicaState.DRAINING

    @property
    def alive(self) -> bool:
        """A process of it runs (or is about to)."""
        return self._state in LIVE

    @property
    def ended_for_good(self) -> bool:
        """Its last process exited and no restart follows."""
        return self._state in ENDED

    @property
    def listening(self) -> bool:
        """Its current process reported ready and its control subscription arrived."""
        return self._record.ready and self._record.subscribed

    @property
    def started(self) -> bool:
        """It counts as started: ready and listening, or ended for good."""
        return self.listening or self.ended_for_good

    @property
    def sends(self) -> bool:
        """It can still send: not at the end of its stream, nor dead for good."""
        return not self._record.finished and not self.ended_for_good

    @property
    def aligned(self) -> bool:
        """It zips several ports: its senders agree on where to pause before it drains."""
        return zips_several(self.config.join, len(self.config.inputs))

    # -- events of the life cycle --------------------------------------------------------------
    def _move(self, event: str, allowed: frozenset[ReplicaState] | set[ReplicaState], to: ReplicaState) -> None:
        if self._state not in allowed:
            raise InvalidTransition(self.config.label, self._state, event)
        self._state = to

    def spawned(self, process: Any, at: float) -> None:
        """A new process runs for it since ``at`` (wall clock): the first one, or a successor
        (a fresh record either way)."""
        first = self._state is ReplicaState.STARTING and self._record.process is None
        if not first and self._state is not ReplicaState.RESTARTING:
            raise InvalidTransition(self.config.label, self._state, "spawned")
        self._state = ReplicaState.STARTING
        self._record = ProcessRecord(process=process)
        if self.started_at is None:
            self.started_at = at

    def respawning(self, config: NodeConfig) -> None:
        """Its next process is about to start with ``config``: the counters of a restart move on."""
        if self._state is not ReplicaState.RESTARTING:
            raise InvalidTransition(self.config.label, self._state, "respawning")
        self.config = config
        self.restarts += 1
        self._record = ProcessRecord()

    def subscribed(self) -> None:
        """Its control subscription arrived (order against its reports is not guaranteed)."""
        self._record.subscribed = True

    def became_ready(self) -> None:
        self._record.ready = True
        if self._state is ReplicaState.STARTING:
            self._state = ReplicaState.READY

    def released_port(self, port: str) -> bool:
        """One of its input ports is released; False when it already was."""
        if port in self._record.released_ports:
            return False
        self._record.released_ports.add(port)
        if self.released and self._state in (ReplicaState.STARTING, ReplicaState.READY):
            self._state = ReplicaState.RELEASED
        return True

    def finished_stream(self) -> None:
        """It reported the end of its stream (a draining replica stays draining until it exits)."""
        self._record.finished = True
        if self._state in (ReplicaState.STARTING, ReplicaState.READY, ReplicaState.RELEASED):
            self._state = ReplicaState.FINISHED

    def drain(self) -> Hold:
        """A graceful restart takes it: it is held and drains, and is replaced when its process exits."""
        if self._record.process is None or self._record.finished:
            raise InvalidTransition(self.config.label, self._state, "drain")
        self._move("drain", {ReplicaState.STARTING, ReplicaState.READY, ReplicaState.RELEASED}, ReplicaState.DRAINING)
        self.hold = Hold(self.config.generation)
        return self.hold

    def resumed(self) -> int:
        """Its successor runs (or it ended instead of draining): the hold ends; returns the generation held."""
        if self.hold is None:
            raise InvalidTransition(self.config.label, self._state, "resumed")
        generation, self.hold = self.hold.generation, None
        return generation

    def exited(self, code: int, at: float) -> ReplicaState:
        """Its process ended with ``code`` at ``at`` (wall clock); returns the state it was in. A
        draining process that had not finished its stream goes straight to RESTARTING (its
        successor starts at once)."""
        before = self._state
        if before not in LIVE:
            raise InvalidTransition(self.config.label, before, "exited")
        self._record.exit_code = code
        self.ended_at = at
        if before is ReplicaState.DRAINING and not self._record.finished:
            self._state = ReplicaState.RESTARTING
        else:
            self._state = ReplicaState.EXITED if code == 0 else ReplicaState.FAILED
        return before

    def restart_scheduled(self) -> None:
        """Its restart policy starts it again after a delay."""
        self._move("restart_scheduled", ENDED, ReplicaState.RESTARTING)

    # -- facts of the current process (no change of state) ------------------------------------
    def failed_with(self, error: dict[str, Any]) -> None:
        """Its error report arrived, or the launcher knows why it ends (a host lost)."""
        self._record.error = error

    def keep_snapshot(self, through: int, packed: bytes) -> None:
        """Keep the newest snapshot (one of an earlier process arriving late is older: ignored)."""
        if self.snapshot is None or through >= self.snapshot[0]:
            self.snapshot = (through, packed)

    def drained(self, report: dict[str, Any]) -> None:
        self._record.drained = report

    def dismissed(self) -> None:
        self._record.dismissed = True

    def grace_started(self, reading: bool) -> object:
        """Its stop ladder starts (again); returns the ladder's token (a later one supersedes it)."""
        record = self._record
        record.grace_started, record.grace_reading = True, reading
        record.ladder = object()
        return record.ladder

    def escalated(self, signal_name: str) -> None:
        self._record.escalated = signal_name

    def stop_requested(self) -> None:
        self.stopped = True
