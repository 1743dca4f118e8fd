"""The launcher's side of other hosts: one link per host agent, and the processes it runs there.

A RemoteProcess stands in for a local NodeProcess (signal, join, pid, returncode), so the
launcher supervises, restarts and stops nodes the same way wherever they run. Messages
from agents are handled in the launcher's own loop (``AgentLink.handle``): no threads.
"""
from __future__ import annotations

import itertools
import os
import time
from typing import Any, Callable

import zmq

from flujo.config import CONTROL_MAX_MESSAGE
from flujo.launch.agent_wire import CONNECT_TIMEOUT, HEARTBEAT_TIMEOUT, TOKEN_ENV, pack
from flujo.wire_check import ProtocolError, RefusalLog, check_agent_reply
from flujo.launch.manifest import HostSpec
from flujo.launch.process import OutputRelay

#: The exit status a process on a lost host is given: it cannot be known.
EXIT_HOST_LOST = -1
_tokens = itertools.count(1)


class AgentError(Exception):
    """An agent cannot be reached or refused: the flow does not start."""


class RemoteProcess:
    """A node process on another host, started by its agent."""

    def __init__(self, link: "AgentLink", label: str, on_exit: Callable[[int], None]) -> None:
        self.label = label
        self.token = next(_tokens)
        self.pid: int | None = None  # known once the agent says it started
        self.returncode: int | None = None
        self._link, self._on_exit = link, on_exit

    def signal(self, signum: int) -> None:
        if self.returncode is None:
            self._link.send("signal", {"token": self.token, "signum": signum})

    def join(self, timeout: float = 5.0) -> None:
        """Wait until the agent reports the exit (every output line came before it)."""
        self._link.pump_until(lambda: self.returncode is not None, timeout)

    def exited(self, code: int) -> None:
        if self.returncode is None:
            self.returncode = code
            self._on_exit(code)


class AgentLink:
    """A DEALER connected to one host's agent."""

    def __init__(self, context: zmq.Context, host: HostSpec, relay: Callable[[], OutputRelay | None],
                 max_message: int = CONTROL_MAX_MESSAGE) -> None:
        self.host = host
        self.socket = context.socket(zmq.DEALER)
        self.socket.linger = 1000  # a last "bye" should reach a live agent
        self.socket.maxmsgsize = max_message
        self._refusals = RefusalLog(f"flujo-launch: host {host.name}")
        self.socket.connect(host.agent)
        self._relay = relay
        self._processes: dict[int, RemoteProcess] = {}
        self.heard = time.monotonic()
        self.lost = False

    # -- before the flow starts: blocking requests -------------------------------------------
    def introduce(self, flow: str) -> None:
        """Say hello (with this environment's token); raises AgentError when no agent answers
        in time, or it refuses."""
        self.send("hello", {"flow": flow, "token": os.environ.get(TOKEN_ENV, "")})
        self._expect("welcome")

    def free_ports(self, count: int) -> list[int]:
        self.send("ports", {"address": self.host.address, "count": count})
        return list(self._expect("ports"))

    def _expect(self, wanted: str) -> Any:
        deadline = time.monotonic() + CONNECT_TIMEOUT
        while (left := deadline - time.monotonic()) > 0:
            if self.socket.poll(int(left * 1000) + 1):
                try:
                    reply = self._receive(zmq.NOBLOCK)
                except zmq.Again:
                    continue
                if reply is None:
                    continue
                kind, payload = reply
                if kind == wanted:
                    return payload
                if kind == "refused":
                    raise AgentError(f'the agent at {self.host.agent} refused: {payload["error"]}')
        raise AgentError(f'no agent answers at {self.host.agent} within {CONNECT_TIMEOUT:g} s '
                         f'(start one on host "{self.host.name}": flujo-launch agent --bind {self.host.agent})')

    # -- while it runs: messages handled in the launcher's loop ------------------------------
    def spawn(self, label: str, argv: list[str] | None, env: dict[str, str], cwd: str,
              on_exit: Callable[[int], None]) -> RemoteProcess:
        process = RemoteProcess(self, label, on_exit)
        self._processes[process.token] = process
        self.send("spawn", {"token": process.token, "label": label, "argv": argv, "env": env, "cwd": cwd})
        return process

    def handle(self) -> None:
        """Apply every message the agent has sent."""
        while True:
            try:
                reply = self._receive(zmq.NOBLOCK)
            except zmq.Again:
                return
            if reply is None:
                continue
            kind, payload = reply
            if kind == "line":
                relay = self._relay()
                if relay is not None:
                    relay.line(payload["label"], payload["text"])
            elif kind in ("started", "exit", "failed"):
                process = self._processes.get(payload["token"])
                if process is None:
                    continue
                if kind == "started":
                    process.pid = payload["pid"]
                elif kind == "failed":
                    relay = self._relay()
                    if relay is not None:
                        relay.line(process.label, f'could not start on host "{self.host.name}": {payload["error"]}')
                    process.exited(127)
                else:
                    process.exited(payload["code"])

    def _receive(self, flags: int = 0) -> tuple[str, Any] | None:
        """One message from the agent, checked; None for a malformed one (logged, ignored)."""
        frames = self.socket.recv_multipart(flags)
        self.heard = time.monotonic()
        try:
            if len(frames) != 1:
                raise ProtocolError("frames", f"message of {len(frames)} frames (1 expected)", self.host.agent)
            return check_agent_reply(frames[0], self.host.agent)
        except ProtocolError as refused:
            self._refusals.refused(refused)
            return None

    def pump_until(self, done: Callable[[], bool], timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while not done() and not self.lost and (left := deadline - time.monotonic()) > 0:
            if self.socket.poll(int(left * 1000) + 1):
                self.handle()

    def silent(self) -> bool:
        """True once the agent has sent nothing (not even a heartbeat) for too long."""
        return time.monotonic() - self.heard > HEARTBEAT_TIMEOUT

    def lose(self) -> list[RemoteProcess]:
        """The host is gone: its processes count as exited; returns those that were running."""
        self.lost = True
        running = [process for process in self._processes.values() if process.returncode is None]
        for process in running:
            process.exited(EXIT_HOST_LOST)
        return running

    def send(self, kind: str, payload: Any = None) -> None:
        if self.lost:
            return
        try:
            self.socket.send(pack(kind, payload), zmq.NOBLOCK)
        except zmq.Again:
            pass  # a thousand messages queued for an agent that does not read: it is being lost

    def close(self) -> None:
        self.send("bye")
        self.socket.close()
