"""A watchdog that outlives its parent: when the launcher (or an agent) dies, it kills every node.

Each node runs in a process group of its own. The parent starts one reaper, in a session of its
own (a signal to the parent's group does not reach it), and tells it through a pipe which process
groups to kill: ``+PGID`` when a node starts, ``-PGID`` when its group is gone (and ``uPREFIX``:
shared-memory segments to unlink afterwards). The reaper reads nothing else; when the pipe closes
(the parent exited, however it died, even by SIGKILL) it sends SIGKILL to every group it still
knows, which reaches a node that ignores SIGTERM and every child a node started, and exits.

This file runs as a script with only the standard library (``python -I -S reaper.py``), so it
starts in a few milliseconds and depends on nothing that could fail to import.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading


class Reaper:
    """The parent's handle on its reaper process."""

    def __init__(self) -> None:
        read_end, self._write_end = os.pipe()  # both close-on-exec: no node inherits them
        try:
            self._process = subprocess.Popen(
                [sys.executable, "-I", "-S", os.path.abspath(__file__)],
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
        segments (flujo/shm_wire.py), which a SIGKILLed node cannot remove itself."""
        if "/" not in prefix and "\n" not in prefix and prefix:
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


def _serve(stream: int) -> None:
    groups: set[int] = set()
    prefixes: set[str] = set()
    pending = b""
    while True:
        try:
            chunk = os.read(stream, 4096)
        except InterruptedError:
            continue
        if not chunk:  # the parent is gone
            break
        pending += chunk
        *lines, pending = pending.split(b"\n")
        for line in lines:
            if line[:1] == b"u":
                prefixes.add(line[1:].decode(errors="replace"))
                continue
            try:
                pgid = int(line[1:])
            except ValueError:
                continue
            if line[:1] == b"+" and pgid > 1:
                groups.add(pgid)
            elif line[:1] == b"-":
                groups.discard(pgid)
    for pgid in groups:
        with contextlib.suppress(OSError):  # already gone
            os.killpg(pgid, signal.SIGKILL)
    _unlink_segments(prefixes)


def _unlink_segments(prefixes: set[str]) -> None:
    """(The same as flujo.shm_wire.cleanup_flow_segments: this script imports nothing of Flujo.)"""
    if not prefixes:
        return
    try:
        names = os.listdir("/dev/shm")
    except OSError:
        return
    for name in names:
        if any(name.startswith(prefix) for prefix in prefixes):
            with contextlib.suppress(OSError):
                os.unlink(os.path.join("/dev/shm", name))


if __name__ == "__main__":
    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGPIPE):
        signal.signal(signum, signal.SIG_IGN)  # only the closing pipe ends the reaper
    _serve(sys.stdin.fileno())
