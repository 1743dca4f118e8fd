"""The launcher's stand-in for a node process on another host (signal, join, pid, returncode, as a
local NodeProcess), so the launcher supervises, restarts and stops nodes the same way wherever
they run; its agent link (launch/remote.py) carries the signals and reports the exit."""

from __future__ import annotations

import itertools
from collections.abc import Callable
from typing import Any, Protocol

from flujo.launch.agent_wire import AgentRequest

#: The exit status a process on a lost host is given: it cannot be known.
EXIT_HOST_LOST = -1
_tokens = itertools.count(1)


class ProcessLink(Protocol):
    """What a RemoteProcess needs of the link to its host's agent (launch/remote.AgentLink)."""

    def send(self, kind: AgentRequest, payload: Any = None) -> None: ...

    def pump_until(self, done: Callable[[], bool], timeout: float) -> None: ...


class RemoteProcess:
    """A node process on another host, started by its agent."""

    def __init__(self, link: ProcessLink, label: str, on_exit: Callable[[int], None]) -> None:
        self.label = label
        self.token = next(_tokens)
        self.pid: int | None = None  # known once the agent says it started
        self.returncode: int | None = None
        self._link, self._on_exit = link, on_exit

    def signal(self, signum: int) -> None:
        if self.returncode is None:
            self._link.send(AgentRequest.SIGNAL, {"token": self.token, "signum": signum})

    def join(self, timeout: float = 5.0) -> None:
        """Wait until the agent reports the exit (every output line came before it)."""
        self._link.pump_until(lambda: self.returncode is not None, timeout)

    def exited(self, code: int) -> None:
        if self.returncode is None:
            self.returncode = code
            self._on_exit(code)
