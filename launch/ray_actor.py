"""The Ray actor that runs one node process on the machine Ray placed it on (launch/ray_engine.py
explains why an actor supervises a subprocess): it starts the node, keeps its output lines and
exit status for the launcher to fetch, and forwards signals."""

from __future__ import annotations

import os
import socket
import sys
import threading
from typing import Any

#: How long an actor's ``follow`` waits for news before it answers anyway.
FOLLOW_WAIT = 1.0
#: Output lines an actor keeps for a launcher that has not fetched them (older ones are dropped, counted).
MAX_UNREAD_LINES = 10_000


class NodeHost:
    """The Ray actor that runs one node process on its machine (a threaded actor: ``follow``
    blocks while ``signal`` must still get through)."""

    def __init__(self) -> None:
        from flujo.launch.reaper import Reaper

        self._lines: list[str] = []  # not yet fetched by ``follow``
        self._dropped = 0  # lines dropped since the last ``follow``
        self._code: int | None = None
        self._changed = threading.Condition()
        self._process: Any = None
        self._reaper = Reaper()  # the node's process group dies with this actor, however it dies

    def where(self) -> dict[str, Any]:
        """This machine: the Ray node's address (nodes bind there), its name, its process id."""
        import ray

        return {
            "address": ray.util.get_node_ip_address(),
            "hostname": socket.gethostname(),
            "pid": os.getpid(),
            "gpus": os.environ.get("CUDA_VISIBLE_DEVICES"),
        }

    def free_ports(self, count: int) -> list[int]:
        import ray

        from flujo.launch.agent_peers import free_ports

        return free_ports(ray.util.get_node_ip_address(), count)

    def start(self, label: str, argv: list[str] | None, env: dict[str, str], cwd: str) -> dict[str, Any]:
        from flujo.launch.process import NodeProcess, local_argv

        command = local_argv(argv) if argv else [sys.executable, "-m", "flujo.node"]
        # The actor's environment carries what Ray set for it (CUDA_VISIBLE_DEVICES: its own GPUs).
        try:
            self._process = NodeProcess(
                label,
                command,
                {**os.environ, **env},
                cwd,
                self,  # type: ignore[arg-type]
                on_exit=self._exited,
                reaper=self._reaper,
            )
        except OSError as error:
            return {"error": f"{type(error).__name__}: {error}"}
        return {"pid": self._process.pid}

    def line(self, label: str, text: str) -> None:  # the NodeProcess relay interface
        with self._changed:
            self._lines.append(text)
            if len(self._lines) > MAX_UNREAD_LINES:  # a launcher that cannot keep up: keep the newest
                dropped = len(self._lines) - MAX_UNREAD_LINES // 2
                del self._lines[:dropped]
                self._dropped += dropped
            self._changed.notify_all()

    def _exited(self, pid: int, code: int) -> None:
        with self._changed:
            self._code = code
            self._changed.notify_all()

    def follow(self) -> tuple[list[str], int | None]:
        """The output lines not fetched yet, and the exit status once known (after every
        line); waits up to FOLLOW_WAIT for news."""
        with self._changed:
            if not self._lines and self._code is None:
                self._changed.wait(FOLLOW_WAIT)
            lines, self._lines = self._lines, []
            if self._dropped:
                lines.insert(0, f"({self._dropped} output lines dropped here: the launcher fell behind)")
                self._dropped = 0
            return lines, self._code

    def signal(self, signum: int) -> None:
        if self._process is not None and self._process.returncode is None:
            self._process.signal(signum)
