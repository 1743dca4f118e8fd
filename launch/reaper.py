"""A watchdog that outlives its parent: when the launcher (or an agent) dies, it kills every node.

Each node runs in a process group of its own. The parent starts one reaper, in a session of its
own (a signal to the parent's group does not reach it), and tells it through a pipe which process
groups to kill: ``+PGID`` when a node starts, ``-PGID`` when its group is gone (and ``uPREFIX``:
shared-memory segments to unlink afterwards). The reaper reads nothing else; when the pipe closes
(the parent exited, however it died, even by SIGKILL) it sends SIGKILL to every group it still
knows, which reaches a node that ignores SIGTERM and every child a node started, and exits.

The reaper itself is a POSIX shell script (reaper.sh, next to this file): it depends on nothing
that could fail to import, and starts in about a millisecond of CPU where an interpreter, even
``python -I -S``, took 20-30 (there is one per launcher, agent and Ray actor).
"""

from __future__ import annotations

import contextlib
import os
import re
import subprocess
import threading
from pathlib import Path

#: The reaper's program, run by the system's POSIX shell.
SCRIPT = Path(__file__).with_name("reaper.sh")
SHELL = "/bin/sh"
#: What the reaper takes as a segment prefix (reaper.sh checks the same).
SEGMENT_PREFIX = re.compile(r"[A-Za-z0-9._-]+")


class Reaper:
    """The parent's handle on its reaper process."""

    def __init__(self) -> None:
        read_end, self._write_end = os.pipe()  # both close-on-exec: no node inherits them
        try:
            self._process = subprocess.Popen(
                [SHELL, str(SCRIPT)],
                stdin=read_end,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                start_new_session=True,
            )
        finally:
            os.close(read_end)
        self._lock = threading.Lock()  # exit watcher threads forget groups

    def watch(self, pgid: int) -> None:
        """Kill this process group when the parent dies."""
        self._send(f"+{pgid}\n")

    def unlink_on_exit(self, prefix: str) -> None:
        """Unlink every ``/dev/shm/<prefix>*`` after killing the nodes: the flow's shared-memory
        segments (flujo/shm_wire.py), which a SIGKILLed node cannot remove itself. A prefix is
        letters, digits, ``.``, ``_`` and ``-`` (a flow's run id): anything else, which could
        name a path or a pattern, is refused here and by the reaper."""
        if not SEGMENT_PREFIX.fullmatch(prefix):
            raise ValueError(f"not a segment prefix: {prefix!r}")
        self._send(f"u{prefix}\n")

    def forget(self, pgid: int) -> None:
        """The group has ended: never signal that number again (it may be reused)."""
        self._send(f"-{pgid}\n")

    def _send(self, line: str) -> None:
        with self._lock:
            if self._write_end >= 0:
                # BrokenPipeError: the reaper is gone; the kernel's parent-death signal remains.
                with contextlib.suppress(BrokenPipeError):
                    os.write(self._write_end, line.encode())

    def close(self, timeout: float = 5.0) -> None:
        """Kill whatever is still registered (the parent is done with every node) and end the reaper."""
        with self._lock:
            if self._write_end >= 0:
                os.close(self._write_end)
                self._write_end = -1
        with contextlib.suppress(subprocess.TimeoutExpired):
            self._process.wait(timeout)
