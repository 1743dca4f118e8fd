"""The launcher's side of other hosts: one link per host agent, and the processes it runs there.

A RemoteProcess stands in for a local NodeProcess (signal, join, pid, returncode), so the
launcher supervises, restarts and stops nodes the same way wherever they run. Messages
from agents are handled in the launcher's own loop (``AgentLink.handle``): no threads.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from typing import Any

import zmq

from flujo.config import CONTROL_MAX_MESSAGE
from flujo.curve import KeyPair, make_client
from flujo.launch.agent_wire import CONNECT_TIMEOUT, HEARTBEAT_INTERVAL, AgentReply, AgentRequest, pack
from flujo.launch.lifeline import Lifeline, new_token
from flujo.launch.manifest import HostSpec
from flujo.launch.process import OutputRelay
from flujo.launch.remote_keys import AgentError, agent_keys
from flujo.launch.remote_process import EXIT_HOST_LOST, RemoteProcess
from flujo.wire_check import ProtocolError, RefusalLog, check_agent_reply

__all__ = ["EXIT_HOST_LOST", "PARTITIONED_AFTER", "AgentError", "AgentLink", "RemoteProcess", "agent_keys"]

#: A host silent for this long is shown as partitioned (the flow waits for it, up to its timeout).
PARTITIONED_AFTER = 3 * HEARTBEAT_INTERVAL


class AgentLink:
    """A DEALER connected to one host's agent: over CURVE when ``keys`` (this launcher's key
    pair and the agent's public key) are given, in clear otherwise (an insecure flow)."""

    def __init__(
        self,
        context: zmq.Context,
        host: HostSpec,
        relay: Callable[[], OutputRelay | None],
        keys: tuple[KeyPair, bytes] | None,
        max_message: int = CONTROL_MAX_MESSAGE,
    ) -> None:
        self.host = host
        self.socket = context.socket(zmq.DEALER)
        self.socket.linger = 1000  # a last "bye" should reach a live agent
        self.socket.maxmsgsize = max_message
        self._refusals = RefusalLog(f"flujo-launch: host {host.name}")
        if keys is not None:
            make_client(self.socket, *keys)
        self._handshake = self.socket.get_monitor_socket(
            zmq.EVENT_HANDSHAKE_FAILED_AUTH | zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL | zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL
        )
        self._failure = 0  # the first failed handshake's event, if any
        self.socket.connect(host.agent)
        self._relay = relay
        self._processes: dict[int, RemoteProcess] = {}
        self._waiting: list[dict[str, Any]] = []  # spawn requests made while the host was lost
        self.flow = ""
        self.heard = time.monotonic()
        self.lost = False
        self.rtt: float | None = None  # seconds, from the last heartbeat the agent echoed
        self._lifeline_token = ""
        self._lifeline: Lifeline | None = None  # closed by our kernel if we die: the agent then ends our nodes

    # -- before the flow starts: blocking requests -------------------------------------------
    def introduce(self, flow: str) -> None:
        """Say hello; raises AgentError when no agent answers in time, or the secure handshake fails."""
        self.flow = flow
        self._hello()
        self._hold_lifeline(self._expect(AgentReply.WELCOME))

    def _hello(self) -> None:
        # The agent ends this flow's processes after ``timeout`` s without a word from us, or at
        # once when the lifeline announced here closes (this launcher died).
        self._lifeline_token = new_token()
        self._send(
            AgentRequest.HELLO, {"flow": self.flow, "timeout": self.host.timeout, "lifeline": self._lifeline_token}
        )

    def _hold_lifeline(self, welcome: Any) -> None:
        port = welcome.get("lifeline") if isinstance(welcome, dict) else None
        if self._lifeline is not None:
            self._lifeline.close()
            self._lifeline = None
        if isinstance(port, int):
            # Without a lifeline, the agent still ends our nodes after the host timeout.
            with contextlib.suppress(OSError):
                self._lifeline = Lifeline(self.host.address, port, self._lifeline_token)

    def free_ports(self, count: int) -> list[int]:
        self.send(AgentRequest.PORTS, {"address": self.host.address, "count": count})
        return list(self._expect(AgentReply.PORTS))

    def _expect(self, wanted: AgentReply) -> Any:
        deadline = time.monotonic() + CONNECT_TIMEOUT
        while (left := deadline - time.monotonic()) > 0:
            if self._handshake_failed():
                break
            if self.socket.poll(min(int(left * 1000) + 1, 50)):
                try:
                    reply = self._receive(zmq.NOBLOCK)
                except zmq.Again:
                    continue
                if reply is None:
                    continue
                kind, payload = reply
                if kind == wanted:
                    return payload
                if kind == AgentReply.REFUSED:
                    raise AgentError(f"the agent at {self.host.agent} refused: {payload['error']}")
        failure = self._handshake_failed()
        if failure == zmq.EVENT_HANDSHAKE_FAILED_AUTH:
            raise AgentError(
                f"the agent at {self.host.agent} does not know this launcher's key: add it "
                "(`flujo-launch keys` prints it) to that host's authorized_keys"
            )
        if failure:
            raise AgentError(
                f"the secure handshake with {self.host.agent} failed: the agent's key is not the "
                "one this launcher expects ([hosts] key or known_hosts), or the agent runs --insecure "
                "while the flow does not (or the reverse)"
            )
        raise AgentError(
            f"no agent answers at {self.host.agent} within {CONNECT_TIMEOUT:g} s "
            f'(start one on host "{self.host.name}": flujo-launch agent --bind {self.host.agent})'
        )

    def _handshake_failed(self) -> int:
        """The first handshake failure the connection has met (a zmq event), or 0."""
        # Here, not at the top: zmq.utils.monitor brings asyncio, and every launcher imports this module.
        from zmq.utils.monitor import recv_monitor_message

        while self._handshake.poll(0):
            event = recv_monitor_message(self._handshake)["event"]
            self._failure = self._failure or event
        return self._failure

    # -- while it runs: messages handled in the launcher's loop ------------------------------
    def spawn(
        self, label: str, argv: list[str] | None, env: dict[str, str], cwd: str, on_exit: Callable[[int], None]
    ) -> RemoteProcess:
        process = RemoteProcess(self, label, on_exit)
        self._processes[process.token] = process
        request = {"token": process.token, "label": label, "argv": argv, "env": env, "cwd": cwd}
        if self.lost:
            self._waiting.append(request)  # started there once the host is back
        else:
            self.send(AgentRequest.SPAWN, request)
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
            if kind == AgentReply.WELCOME and self.lost:
                self._hold_lifeline(payload)
                self._back()
            elif kind == AgentReply.HEARTBEAT and isinstance(payload, dict) and isinstance(payload.get("sent"), float):
                self.rtt = self.heard - payload["sent"]
            elif kind == AgentReply.LINE:
                relay = self._relay()
                if relay is not None:
                    relay.line(payload["label"], payload["text"])
            elif kind in (AgentReply.STARTED, AgentReply.EXIT, AgentReply.FAILED):
                process = self._processes.get(payload["token"])
                if process is None:
                    continue
                if kind == AgentReply.STARTED:
                    process.pid = payload["pid"]
                elif kind == AgentReply.FAILED:
                    relay = self._relay()
                    if relay is not None:
                        relay.line(process.label, f'could not start on host "{self.host.name}": {payload["error"]}')
                    process.exited(127)
                else:
                    process.exited(payload["code"])

    def _receive(self, flags: int = 0) -> tuple[AgentReply, Any] | None:
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

    def beat(self) -> None:
        """Every heartbeat interval: a heartbeat the agent echoes (round-trip time), or, while
        the host is lost, a new hello, so a returning agent takes this flow on again."""
        if self.lost:
            self._hello()
        else:
            self.send(AgentRequest.HEARTBEAT, {"sent": time.monotonic()})

    @property
    def state(self) -> str:
        """connected, partitioned (silent for a few heartbeats: the flow waits) or lost."""
        if self.lost:
            return "lost"
        return "partitioned" if time.monotonic() - self.heard > PARTITIONED_AFTER else "connected"

    def silent(self) -> bool:
        """True once the agent has sent nothing (not even a heartbeat) for the host's timeout."""
        return time.monotonic() - self.heard > self.host.timeout

    def lose(self) -> list[RemoteProcess]:
        """The host is gone: its processes count as crashed (the restart policy decides, and a
        restarted replica starts there when the host is back); returns those that were running."""
        self._send(AgentRequest.BYE)  # if the agent hears this later, it ends what it still runs for us
        self.lost = True
        running = [process for process in self._processes.values() if process.returncode is None]
        for process in running:
            process.exited(EXIT_HOST_LOST)
        return running

    def _back(self) -> None:
        """The agent answered a hello after the host was lost: start what waited for it."""
        self.lost = False
        waiting, self._waiting = self._waiting, []
        for request in waiting:
            if self._processes[request["token"]].returncode is None:
                self.send(AgentRequest.SPAWN, request)

    def repoint(self, host: HostSpec, agent_key: bytes | None) -> None:
        """Talk to a new agent for this host from now on (one started anew over ssh: another port
        and key, the same launcher key); the next hello introduces this flow to it."""
        self.socket.disconnect(self.host.agent)  # what was queued for the old one goes with it
        if agent_key is not None:
            self.socket.curve_serverkey = agent_key
        self.host = host
        self.socket.connect(host.agent)

    def send(self, kind: AgentRequest, payload: Any = None) -> None:
        if not self.lost:
            self._send(kind, payload)

    def _send(self, kind: AgentRequest, payload: Any = None) -> None:
        # zmq.Again: a thousand messages queued for an agent that does not read: it is being lost.
        with contextlib.suppress(zmq.Again):
            self.socket.send(pack(kind, payload), zmq.NOBLOCK)

    def close(self) -> None:
        self.send(AgentRequest.BYE)
        if self._lifeline is not None:
            self._lifeline.close()
        self.socket.disable_monitor()
        self._handshake.close(linger=0)
        self.socket.close()
