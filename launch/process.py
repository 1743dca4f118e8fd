"""One OS process of a node replica: spawn it, relay its output with a prefix, report its exit.

Each child runs in its own session (so a terminal's Ctrl-C reaches only the launcher, which
then stops the flow in order), so its process group holds it and every process it starts.
Nothing of a node outlives it, nor the launcher: when the node exits, whatever is left of its
group is killed; when the launcher dies, its reaper (launch/reaper.py) kills every group, and
the kernel's parent-death signal ends the node itself even if the reaper were gone too.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from logging.handlers import RotatingFileHandler
from pathlib import Path
from typing import IO

from flujo.launch.fork_client import ForkServer
from flujo.launch.logstore import stamp
from flujo.launch.parent_death import end_with_parent
from flujo.launch.reaper import Reaper
from flujo.launch.runs import private_folder
from flujo.protocol import CONFIG_ENV

#: A node's log file is rotated at this size; the last LOG_BACKUPS rotated files are kept
#: (``<label>.log.1`` is the newest): a flow that runs for weeks does not fill the disk.
LOG_MAX_BYTES = 10 * 1024 * 1024
LOG_BACKUPS = 3


class _PrivateLog(RotatingFileHandler):
    """A rotated log file only its owner may read (mode 0600), never opened through a symlink."""

    def _open(self) -> io.TextIOWrapper:
        descriptor = os.open(
            self.baseFilename, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600
        )
        return os.fdopen(descriptor, "a", encoding=self.encoding, errors=self.errors)


class OutputRelay:
    """Shows every child's output lines, prefixed with its label, and keeps them in one log
    file per label (``<logs>/<label>.log``, rotated) for `flujo-launch logs`, each line
    stamped with the time it was relayed (launch/logstore.py)."""

    def __init__(self, show: Callable[[str, str], None], logs: Path, max_bytes: int = LOG_MAX_BYTES) -> None:
        self._show, self._logs, self._max_bytes = show, logs, max_bytes
        self._files: dict[str, RotatingFileHandler] = {}
        self._lock = threading.Lock()
        private_folder(logs)

    def line(self, label: str, text: str) -> None:
        with self._lock:
            log = self._files.get(label)
            if log is None:
                log = self._files[label] = _PrivateLog(
                    self._logs / f"{label}.log", maxBytes=self._max_bytes, backupCount=LOG_BACKUPS, encoding="utf-8"
                )
            log.emit(logging.makeLogRecord({"msg": f"{stamp(time.time())} {text}"}))  # flushed
            self._show(label, text)

    def close(self) -> None:
        with self._lock:
            for log in self._files.values():
                log.close()
            self._files.clear()


#: Interpreter names that, as the first word of a command node, mean the launcher's own Python
#: (the one that has flujo installed), not whichever one comes first on PATH.
OWN_PYTHON = ("python", "python3", f"python3.{sys.version_info.minor}")


def local_argv(command: list[str]) -> list[str]:
    """A command node's argv as run on the launcher's host: ``python3`` is this interpreter."""
    return [sys.executable, *command[1:]] if command and command[0] in OWN_PYTHON else list(command)


#: How a Python node is started without a fork server: the runtime's entry point, in this Python.
NODE_ARGV = [sys.executable, "-m", "flujo.node"]


def node_title(label: str, env: dict[str, str]) -> str:
    """What ps shows for a forked node: its label and its flow (from its configuration)."""
    flow = ""
    with contextlib.suppress(ValueError, TypeError, AttributeError):
        flow = str(json.loads(env.get(CONFIG_ENV, "{}")).get("flow", ""))
    return f"flujo-node {label} flow={flow}"


def plain_lines(stream: IO[str], width: int) -> Callable[[str, str], None]:
    """Output for pipes and logs: ``label | text``, one line each."""

    def show(label: str, text: str) -> None:
        stream.write(f"{label:<{width}} | {text}\n")
        stream.flush()

    return show


class NodeProcess:
    """A running child; ``on_exit(pid, returncode)`` is called from a watcher thread, possibly
    before the constructor has returned (a child may exit at once)."""

    def __init__(
        self,
        label: str,
        argv: list[str],
        env: dict[str, str],
        cwd: str,
        relay: OutputRelay,
        on_exit: Callable[[int, int], None],
        reaper: Reaper | None = None,
        forks: ForkServer | None = None,
    ) -> None:
        self.label = label
        self._reaper = reaper
        self.returncode: int | None = None
        self._exited = threading.Event()
        forked = None
        if forks is not None and argv == NODE_ARGV:
            forked = forks.fork(cwd, env, node_title(label, env), self._forked_exit)
        if forked is not None:  # a fork of the server: a few ms instead of a new interpreter
            self.pid, output = forked
            self._popen: subprocess.Popen[bytes] | None = None
            self._output: IO[bytes] = os.fdopen(output, "rb")
        else:
            self._popen = subprocess.Popen(
                argv,
                cwd=cwd,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=end_with_parent,
            )
            self.pid = self._popen.pid
            assert self._popen.stdout is not None
            self._output = self._popen.stdout
        if reaper is not None:
            reaper.watch(self.pid)  # its process group has the child's pid as its number
        self._reader = threading.Thread(target=self._relay, args=(relay,), daemon=True, name=f"output {label}")
        self._watcher = threading.Thread(target=self._watch, args=(on_exit,), daemon=True, name=f"exit {label}")
        self._reader.start()
        self._watcher.start()

    def _forked_exit(self, pid: int, code: int) -> None:
        self.returncode = code
        self._exited.set()

    def _relay(self, relay: OutputRelay) -> None:
        with self._output:
            for raw in self._output:
                relay.line(self.label, raw.decode(errors="replace").rstrip("\n"))

    def _watch(self, on_exit: Callable[[int, int], None]) -> None:
        if self._popen is not None:
            self.returncode = code = self._popen.wait()
        else:
            self._exited.wait()
            code = self.returncode  # type: ignore[assignment]  # set with the event
        # What the node started and left behind goes with it. The group's number cannot have
        # been reused while any of its processes lives, so this reaches only the node's own.
        self.signal(signal.SIGKILL)
        if self._reaper is not None:
            self._reaper.forget(self.pid)
        on_exit(self.pid, code)

    def signal(self, signum: int) -> None:
        """Signal the child's whole process group (a command node may have children)."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.pid, signum)

    def join(self, timeout: float = 5.0) -> None:
        """Wait until the child is reaped and every output line has been relayed."""
        self._watcher.join(timeout)
        self._reader.join(timeout)
