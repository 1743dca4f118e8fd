"""What the launcher knows about one replica of a node: its process and where it is in its life."""
from __future__ import annotations

from dataclasses import dataclass, field

from flujo.config import NodeConfig
from flujo.launch.metrics import Sample
from flujo.launch.process import NodeProcess
from flujo.launch.remote import RemoteProcess
from flujo.launch.restarts import RestartBudget


@dataclass
class Replica:
    """What the launcher knows about one replica of a node."""

    config: NodeConfig
    process: NodeProcess | RemoteProcess | None = None
    subscribed: bool = False
    ready: bool = False
    released_ports: set[str] = field(default_factory=set)
    finished: bool = False
    exit_code: int | None = None
    error: dict[str, str] | None = None
    sample: Sample = field(default_factory=Sample)
    restarts: int = 0
    budget: RestartBudget | None = None
    restarting: bool = False  # between a death and the respawn
    restart_requested: bool = False  # by `flujo-launch restart`: draining; respawn at once when it exits
    hold: int | None = None  # generation held for a graceful restart, until its successor runs
    drained: dict | None = None  # the held process's report: its stats and the readers it paused
    pause_seen: set[tuple[str, int, str]] = field(default_factory=set)  # readers (node, replica, port)
    # that confirmed the held process's pause marker
    dismissed: bool = False  # told to exit: every reader has its pause marker
    positions: dict[tuple[str, int, str], int] = field(default_factory=dict)  # a held zip replica:
    # (sender node, sender replica, port) -> highest sequence number that sender has sent it
    limit: int | None = None  # the pause limit announced to its senders

    @property
    def aligned(self) -> bool:
        """It zips several ports: its senders agree on where to pause before it drains."""
        return self.config.join == "zip" and len(self.config.inputs) > 1
    grace_started: bool = False  # the stop ladder runs for this process
    started_at: float | None = None  # wall clock: its first process started ...
    ended_at: float | None = None  # ... and its last one exited (for the closing summary)
    stopped: bool = False  # told to stop (its readers' inputs end)
    grace_reading: bool = False  # ... because its inputs ended; it may still be reading
    ladder: object | None = None  # the ladder in force (a later one supersedes it)
    escalated: str = ""  # the signal the ladder had to send, if any

    @property
    def state(self) -> str:
        if self.restarting:
            return "restarting"
        if self.restart_requested:
            return "draining"
        if self.exit_code is not None:
            return "exited" if self.exit_code == 0 else "failed"
        if self.finished:
            return "finished"
        if self.released:
            return "released"
        return "ready" if self.ready else "starting"

    @property
    def released(self) -> bool:
        return len(self.released_ports) == len(self.config.inputs) > 0

    @property
    def key(self) -> tuple[str, int]:
        return self.config.node, self.config.replica
