"""A watchdog that outlives its parent: when the launcher (or an agent) dies, it kills every node.

Each node runs in a process group of its own. The parent starts one reaper, in a session of its
own (a signal to the parent's group does not reach it), and tells it through a pipe which process
groups to kill: ``+PGID`` when a node starts, ``-PGID`` when its group is gone. The reaper reads
nothing else; when the pipe closes (the parent exited, however it died, even by SIGKILL) it
sends SIGKILL to every group it still knows, which reaches a node that ignores SIGTERM and every
child a node started, and exits.

This file runs as a script with only the standard library (``python -I -S reaper.py``), so it
starts in a few milliseconds and depends on nothing that could fail to import.
"""
from __future__ import annotations

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
                [sys.executable, "-I", "-S", os.path.abspath(__file__)], stdin=read_end,
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        finally:
            os.close(read_end)
        self._lock = threading.Lock()  # exit watcher threads forget groups

    def watch(self, pgid: int) -> None:
        """Kill this process group when the parent dies."""
        self._send(f"+{pgid}\n")

    def forget(self, pgid: int) -> None:
        """The group has ended: never signal that number again (it may be reused)."""
        self._send(f"-{pgid}\n")

    def _send(self, line: str) -> None:
        with self._lock:
            if self._write_end >= 0:
                try:
                    os.write(self._write_end, line.encode())
                except BrokenPipeError:  # the reaper is gone: the kernel's parent-death signal remains
                    pass

    def close(self, timeout: float = 5.0) -> None:
        """Kill whatever is still registered (the parent is done with every node) and end the reaper."""
        with self._lock:
            if self._write_end >= 0:
                os.close(self._write_end)
                self._write_end = -1
        try:
            self._process.wait(timeout)
        except subprocess.TimeoutExpired:
            pass


def _serve(stream: int) -> None:
    groups: set[int] = set()
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
            try:
                pgid = int(line[1:])
            except ValueError:
                continue
            if line[:1] == b"+" and pgid > 1:
                groups.add(pgid)
            elif line[:1] == b"-":
                groups.discard(pgid)
    for pgid in groups:
        try:
            os.killpg(pgid, signal.SIGKILL)
        except OSError:  # already gone
            pass


if __name__ == "__main__":
    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGPIPE):
        signal.signal(signum, signal.SIG_IGN)  # only the closing pipe ends the reaper
    _serve(sys.stdin.fileno())
