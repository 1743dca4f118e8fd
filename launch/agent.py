"""`flujo-launch agent`: runs on another host and starts the node processes launchers ask for.

One agent serves any number of launchers (flows) at once. It starts each process as the
launcher would locally (own session and process group, killed with the agent by its reaper), relays its output lines and
exit status, and ends a launcher's processes when that launcher falls silent: a launcher
killed with SIGKILL leaves no orphan on other hosts either.

With ``--session`` it is one launcher's agent for the life of an ssh session (launch/ssh.py):
it makes a key pair for this run only and prints its public key, serves only the launcher keys
given with ``--authorize`` (read over the same session), and ends, with every process it
started, when its standard input closes (the session ended, whatever ended it).
"""

from __future__ import annotations

import functools
import os
import signal
import socket
import sys
import time
from pathlib import Path
from typing import IO, Any

import zmq

from flujo.config import CONTROL_MAX_MESSAGE
from flujo.launch.agent_keys import AgentSetupError, secure_router
from flujo.launch.agent_peers import INBOX, MAX_LINE, LineForwarder, Outbox, ServedLauncher, forward_all, free_ports
from flujo.launch.agent_wire import DEFAULT_HOST_TIMEOUT, HEARTBEAT_INTERVAL, AgentReply, AgentRequest, pack
from flujo.launch.fork_client import ForkServer
from flujo.launch.lifeline import TOKEN_BYTES, LifelineListener
from flujo.launch.process import NODE_ARGV, NodeProcess, local_argv
from flujo.launch.reaper import Reaper
from flujo.launch.timers import Timers
from flujo.wire_check import ProtocolError, RefusalLog, check_agent_request

__all__ = ["KILL_GRACE", "MAX_LINE", "REQUESTS_QUEUED", "Agent", "AgentSetupError", "free_ports"]

#: After SIGTERM, a silent launcher's processes get this long before SIGKILL.
KILL_GRACE = 2.0
#: Requests that may wait per peer (ZMQ_RCVHWM): with the frame limit, what a peer can make this hold.
REQUESTS_QUEUED = 64


class Agent:
    """Serves launchers on ``bind`` (a tcp endpoint) until SIGINT or SIGTERM.

    Closed by default: it speaks CURVE with its key pair from ``keys`` and serves only the
    launchers whose public keys are in ``keys``/authorized_keys or ``authorize``. ``insecure``
    serves anyone who reaches the port, in clear text (for flows with ``insecure = true``).
    ``session``: a fresh key pair instead of the one in ``keys``, only ``authorize`` served, and
    the agent ends when its standard input closes. ``forks``: the fork server its Python nodes
    start from (launch/fork_server.py; the caller closes it after run)."""

    def __init__(
        self,
        bind: str,
        keys: Path,
        insecure: bool = False,
        log: IO[str] | None = None,
        authorize: tuple[bytes, ...] = (),
        session: bool = False,
        max_message: int = CONTROL_MAX_MESSAGE,
        forks: ForkServer | None = None,
    ) -> None:
        self.bind = bind
        self._keys, self._insecure = keys, insecure
        self._authorize, self._session = set(authorize), session
        self._log = log or sys.stdout
        self._launchers: dict[bytes, ServedLauncher] = {}
        self._timers = Timers()
        self._stopping = False
        self._max_message = max_message
        self._refusals = RefusalLog("", self._say)
        self._forks = forks

    def run(self) -> int:
        context = zmq.Context()
        router = context.socket(zmq.ROUTER)
        router.linger = 0
        router.setsockopt(zmq.ROUTER_MANDATORY, 0)  # a launcher that went away: drop, never block
        # Anyone who reaches the port can try (an --insecure agent reads them all): a larger frame
        # drops its connection unread, and few wait per peer, so memory stays bounded.
        router.maxmsgsize = self._max_message
        router.rcvhwm = REQUESTS_QUEUED
        inbox = context.socket(zmq.PULL)
        inbox.bind(INBOX)
        outbox = Outbox(context)
        previous = {signum: signal.signal(signum, self._on_signal) for signum in (signal.SIGINT, signal.SIGTERM)}
        self._reaper = Reaper()  # kills every node's process group if this agent dies, however
        if self._forks is not None:
            self._reaper.watch(self._forks.pid)
        gatekeeper = None
        try:
            gatekeeper = secure_router(
                context,
                router,
                self._keys,
                insecure=self._insecure,
                session=self._session,
                authorize=self._authorize,
                say=self._say,
            )
            router.bind(self.bind)
            self._lifelines = LifelineListener(_host_of(self.bind), self._on_lifeline_closed)
            self._say(f"listening on {router.getsockopt_string(zmq.LAST_ENDPOINT)}")
            self._router, self._outbox = router, outbox
            self._timers.after(HEARTBEAT_INTERVAL, self._heartbeat)
            session_input = sys.stdin.fileno() if self._session else None  # --session: its end is ours
            while not self._stopping:
                poller = zmq.Poller()  # anew each time: lifelines come and go
                for source in (router, inbox, *self._lifelines.sockets()):
                    poller.register(source, zmq.POLLIN)
                if session_input is not None:
                    poller.register(session_input, zmq.POLLIN)
                events = dict(poller.poll(min(self._timers.timeout_ms() or 500, 500)))
                self._timers.run_due()
                if session_input is not None and session_input in events and not os.read(session_input, 4096):
                    self._say("the session's input closed: ending")
                    break
                if router in events:
                    self._receive(router)
                if inbox in events:
                    forward_all(inbox, router)
                for source in self._lifelines.sockets():
                    if source in events or source.fileno() in events:
                        self._lifelines.readable(source)
            return 0
        finally:
            for launcher in self._launchers.values():
                self._end(launcher, signal.SIGKILL)
            for launcher in self._launchers.values():
                for process in launcher.processes.values():
                    process.join()
            for signum, handler in previous.items():
                signal.signal(signum, handler)
            outbox.close()
            if hasattr(self, "_lifelines"):
                self._lifelines.close()
            if gatekeeper is not None:
                gatekeeper.stop()
            context.destroy(linger=0)
            self._reaper.close()

    def _receive(self, router: zmq.Socket) -> None:
        """One request, checked first (flujo/wire_check.py): a malformed one is logged and ignored."""
        try:
            frames = router.recv_multipart(zmq.NOBLOCK)
        except zmq.Again:
            return
        try:
            identity, kind, payload = check_agent_request(frames)
        except ProtocolError as refused:
            self._refusals.refused(refused)
            return
        self._on_request(identity, kind, payload)

    def _on_signal(self, signum: int, frame: Any) -> None:
        self._stopping = True

    def _on_request(self, identity: bytes, kind: AgentRequest, payload: Any) -> None:
        launcher = self._launchers.get(identity)
        if launcher is not None:
            launcher.heard = time.monotonic()
        if kind == AgentRequest.HELLO:  # only an authorized launcher gets this far: CURVE and ZAP checked its key
            timeout = payload.get("timeout")
            timeout = float(timeout) if isinstance(timeout, (int, float)) and timeout > 0 else DEFAULT_HOST_TIMEOUT
            lifeline = payload.get("lifeline")
            lifeline = lifeline if isinstance(lifeline, str) and len(lifeline) == 2 * TOKEN_BYTES else None
            self._launchers[identity] = ServedLauncher(identity, payload["flow"], time.monotonic(), timeout, lifeline)
            welcome = {"host": socket.gethostname(), "pid": os.getpid()}
            if lifeline:
                self._lifelines.expect(lifeline)
                welcome["lifeline"] = self._lifelines.port
            self._say(f'serving flow "{payload["flow"]}"')
            self._send(identity, AgentReply.WELCOME, welcome)
        elif launcher is None:
            return  # not introduced (or already ended): ignore
        elif kind == AgentRequest.PORTS:
            try:
                self._send(identity, AgentReply.PORTS, free_ports(payload["address"], payload["count"]))
            except OSError as error:  # an address this host does not have
                self._send(identity, AgentReply.REFUSED, {"error": f"no free ports on {payload['address']!r}: {error}"})
        elif kind == AgentRequest.SPAWN:
            self._spawn(launcher, payload)
        elif kind == AgentRequest.SIGNAL:
            process = launcher.processes.get(payload["token"])
            if process is not None:
                process.signal(payload["signum"])
        elif kind == AgentRequest.HEARTBEAT:
            self._send(identity, AgentReply.HEARTBEAT, payload)  # echoed: the launcher measures the round trip
        elif kind == AgentRequest.BYE:
            self._end(launcher, signal.SIGKILL)

    def _spawn(self, launcher: ServedLauncher, request: dict[str, Any]) -> None:
        token, label = request["token"], request["label"]
        # A command's python3 is the agent's own interpreter, as on the launcher's host.
        argv = local_argv(request["argv"]) if request["argv"] else NODE_ARGV
        outbox, identity = self._outbox, launcher.identity

        def exited(pid: int, code: int) -> None:
            outbox.send(identity, pack(AgentReply.EXIT, {"token": token, "code": code}))

        try:
            process = NodeProcess(
                label,
                argv,
                {**os.environ, **request["env"]},
                request["cwd"],
                LineForwarder(outbox, identity),  # type: ignore[arg-type]  # duck-typed: has the relay's methods
                on_exit=exited,
                reaper=self._reaper,
                forks=self._forks,
            )
        except OSError as error:
            self._send(identity, AgentReply.FAILED, {"token": token, "error": f"{type(error).__name__}: {error}"})
            return
        launcher.processes[token] = process
        self._send(identity, AgentReply.STARTED, {"token": token, "pid": process.pid})

    def _heartbeat(self) -> None:
        """End the processes of launchers gone silent; forget launchers whose processes all ended."""
        now = time.monotonic()
        for identity, launcher in list(self._launchers.items()):
            alive = [p for p in launcher.processes.values() if p.returncode is None]
            if launcher.ending and not alive:
                del self._launchers[identity]  # everything of it has ended: forget it
            elif not launcher.ending and now - launcher.heard > launcher.timeout:
                self._say(
                    f'the launcher of flow "{launcher.flow}" has been silent for {launcher.timeout:g} s: '
                    f"ending its {len(alive)} processes"
                )
                self._end(launcher, signal.SIGTERM)
                self._timers.after(KILL_GRACE, functools.partial(self._end, launcher, signal.SIGKILL))
        self._timers.after(HEARTBEAT_INTERVAL, self._heartbeat)

    def _on_lifeline_closed(self, token: str) -> None:
        """A launcher's lifeline closed: the launcher has died (a cut link closes nothing)."""
        for launcher in self._launchers.values():
            if launcher.lifeline == token and not launcher.ending:
                alive = sum(1 for p in launcher.processes.values() if p.returncode is None)
                self._say(
                    f'the launcher of flow "{launcher.flow}" has gone (its lifeline closed): '
                    f"ending its {alive} processes"
                )
                self._end(launcher, signal.SIGTERM)
                self._timers.after(KILL_GRACE, functools.partial(self._end, launcher, signal.SIGKILL))

    def _end(self, launcher: ServedLauncher, signum: int) -> None:
        launcher.ending = True
        for process in launcher.processes.values():
            if process.returncode is None:
                process.signal(signum)

    def _send(self, identity: bytes, kind: AgentReply, payload: Any = None) -> None:
        self._router.send_multipart([identity, pack(kind, payload)])

    def _say(self, text: str) -> None:
        try:
            self._log.write(f"flujo-agent: {text}\n")
            self._log.flush()
        except (OSError, ValueError):
            pass  # nobody reads any more (a session whose ssh ended): the agent ends on its input


def _host_of(endpoint: str) -> str:
    """The address part of ``tcp://ADDRESS:PORT``."""
    return endpoint.removeprefix("tcp://").rsplit(":", 1)[0].strip("[]")
