"""What the launcher's stand-ins for node processes it does not start itself have in common: a
process on another host (its agent's link, launch/remote_process.py) or on a Ray cluster (an
actor, launch/ray_process.py). Each acts like a local NodeProcess (signal, join, pid, returncode),
so the launcher supervises, restarts and stops nodes the same way wherever they run; its link
reports the exit, in the launcher's loop."""

from __future__ import annotations

import itertools
from collections.abc import Callable
from typing import Protocol

#: The exit status of a process whose host, actor or Ray node was lost: it cannot be known.
EXIT_HOST_LOST = -1
_tokens = itertools.count(1)


class Pump(Protocol):
    """A link that applies what its peers reported, in the launcher's loop, until ``done``."""

    def pump_until(self, done: Callable[[], bool], timeout: float) -> None: ...


class LinkedProcess:
    """A node process whose exit a link reports: ``exited`` is called once it is known."""

    def __init__(self, link: Pump, label: str, on_exit: Callable[[int], None]) -> None:
        self.label = label
        self.token = next(_tokens)  # how its link's messages name it
        self.pid: int | None = None  # known once its link says it started
        self.returncode: int | None = None
        self._pump, self._on_exit = link, on_exit

    def join(self, timeout: float = 5.0) -> None:
        """Wait until the link reports the exit (every output line came before it)."""
        self._pump.pump_until(lambda: self.returncode is not None, timeout)

    def exited(self, code: int) -> None:
        if self.returncode is None:
            self.returncode = code
            self._on_exit(code)
