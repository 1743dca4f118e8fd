"""The launcher's stand-in for a node process that a Ray actor runs (signal, join, pid, returncode,
as a local NodeProcess), and what each event its watcher thread reports does to it."""

from __future__ import annotations

import queue
import signal
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

from flujo.launch.linked_process import EXIT_HOST_LOST, LinkedProcess

if TYPE_CHECKING:
    from flujo.launch.process import OutputRelay

__all__ = ["EXIT_HOST_LOST", "ProcessLink", "RayProcess", "apply_event"]


class ProcessLink(Protocol):
    """What a RayProcess needs of the link that placed it (launch/ray_engine.RayLink)."""

    def abandon(self, process: RayProcess, code: int = EXIT_HOST_LOST, why: str = "") -> None: ...

    def pump_until(self, done: Callable[[], bool], timeout: float) -> None: ...


class RayProcess(LinkedProcess):
    """A node process that a Ray actor runs and watches."""

    def __init__(self, link: ProcessLink, label: str, on_exit: Callable[[int], None]) -> None:
        super().__init__(link, label, on_exit)
        self.machine: str | None = None  # the Ray node's address, once placed
        self.pending: str | None = None  # why it waits for a place, while it does
        self.actor: Any = None
        self.environment: queue.Queue[dict[str, str]] = queue.Queue()  # what to start it with, once known
        self.on_placed: Callable[[str, list[int]], dict[str, str]] = lambda address, ports: {}
        self._link = link

    def signal(self, signum: int) -> None:
        if self.returncode is not None:
            return
        if self.actor is None or self.pid is None:
            # Not started yet: it never will be. One still waiting for a place has nothing to
            # end gracefully either, so a stop ends it at once.
            if signum == signal.SIGKILL or (self.pending is not None and signum in (signal.SIGTERM, signal.SIGINT)):
                self._link.abandon(self)
            return
        self.actor.signal.remote(signum)

    def withdraw(self) -> None:
        """It is told to end before Ray ever placed it: it ends, with status 0 (it had nothing to do)."""
        if self.returncode is None:
            self._link.abandon(self, 0, "ended before a Ray node could hold it (it was pending)")


def apply_event(process: RayProcess, kind: str, payload: Any, relay: OutputRelay | None) -> None:
    """What one event of a watcher thread means for its process (in the launcher's loop)."""
    if kind == "pending":
        process.pending = payload
        if relay is not None:
            relay.line(process.label, f"pending: {payload}")
    elif kind == "placed":
        process.machine, process.pending = payload["address"], None
        if relay is not None:
            gpus = f" (GPUs {payload['gpus']})" if payload.get("gpus") else ""
            relay.line(process.label, f"placed on {payload['address']}{gpus}")
        process.environment.put(process.on_placed(payload["address"], payload["ports"]))
    elif kind == "started":
        process.pid = payload
    elif kind == "line":
        if relay is not None:
            relay.line(process.label, payload)
    elif kind == "failed":
        if relay is not None:
            relay.line(process.label, payload)
        process.exited(127)
    elif kind == "lost":
        if relay is not None:
            relay.line(process.label, f"its Ray actor or Ray node on {process.machine} was lost: {payload}")
        process.exited(EXIT_HOST_LOST)
    elif kind == "exit":
        process.exited(payload)
