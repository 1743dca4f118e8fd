"""The launcher's stand-in for a node process on another host (signal, join, pid, returncode, as a
local NodeProcess), so the launcher supervises, restarts and stops nodes the same way wherever
they run; its agent link (launch/remote.py) carries the signals and reports the exit."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

from flujo.launch.agent_wire import AgentRequest
from flujo.launch.linked_process import EXIT_HOST_LOST, LinkedProcess

__all__ = ["EXIT_HOST_LOST", "ProcessLink", "RemoteProcess"]


class ProcessLink(Protocol):
    """What a RemoteProcess needs of the link to its host's agent (launch/remote.AgentLink)."""

    def send(self, kind: AgentRequest, payload: Any = None) -> None: ...

    def pump_until(self, done: Callable[[], bool], timeout: float) -> None: ...


class RemoteProcess(LinkedProcess):
    """A node process on another host, started by its agent."""

    def __init__(self, link: ProcessLink, label: str, on_exit: Callable[[int], None]) -> None:
        super().__init__(link, label, on_exit)
        self._link = link

    def signal(self, signum: int) -> None:
        if self.returncode is None:
            self._link.send(AgentRequest.SIGNAL, {"token": self.token, "signum": signum})
