"""The launcher's sockets: bound here, nodes and tools connect. Whatever arrives is untrusted:
checked (flujo/wire_check.py), and a bad frame is logged and ignored, never applied.

    control   XPUB  commands to nodes; its subscription messages tell which nodes listen
    status    PULL  reports from nodes: ready, released, finished, error, ...
    exits     PULL  (inproc) exit statuses from the threads that wait on each local child
    commands  REP   requests from `flujo-launch stop/status/restart` and Flow (launch/command_table.py)

Every command that changes the flow's state (start, stop, released, gone, ...) is also kept and
replayed to a replica when its subscription arrives, so a node that connects late, or is
restarted, sees the same flow as everyone else. That replaces any sleep for slow joiners.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import msgpack
import zmq

from flujo.protocol import Control, ProtocolError, Status, control_frames
from flujo.wire_check import RefusalLog, check_command, check_status

EXITS_ENDPOINT = "inproc://exits"
#: Applies one checked status report: (kind, node, replica index, payload).
StatusHandler = Callable[[Status, str, int, Any], None]


class Channels:
    """The control, status, exits and command sockets of one flow run."""

    def __init__(
        self,
        context: zmq.Context,
        control: str,
        status: str,
        commands: str,
        max_message: int,
        say: Callable[[str], None],
    ) -> None:
        self._context = context
        self.control = context.socket(zmq.XPUB)
        self.control.setsockopt(zmq.XPUB_VERBOSE, 1)
        self.control.linger = 0
        self.control.maxmsgsize = max_message
        self.control.bind(control)
        self.status = context.socket(zmq.PULL)
        self.status.linger = 0
        self.status.maxmsgsize = max_message
        self.status.bind(status)
        self.exits = context.socket(zmq.PULL)
        self.exits.bind(EXITS_ENDPOINT)
        self.commands = context.socket(zmq.REP)
        self.commands.linger = 0
        self.commands.maxmsgsize = max_message
        self.commands.bind(commands)
        # State-changing commands, replayed to late subscribers: (topic, payload, frames).
        self._history: list[tuple[Control, tuple[Any, ...], list[bytes]]] = []
        self._refusals = RefusalLog("", say)  # malformed or forged messages on these sockets

    @property
    def sockets(self) -> tuple[zmq.Socket, ...]:
        return self.control, self.status, self.exits, self.commands

    # -- control ---------------------------------------------------------------------------------
    def publish(self, topic: Control, *payload: Any) -> None:
        """Send a command to every node, and keep it for late subscribers; ``exited`` and ``kept``
        are events, not states: a node that subscribes later never sent to that process, and one
        that takes it again would replay again; ``kept`` answers a process already subscribed
        (and comes every few dozen milliseconds from a busy stateful node)."""
        frames = control_frames(topic, *payload)
        if topic is not Control.EXITED and topic is not Control.KEPT:
            self._history.append((topic, payload, frames))
        self.control.send_multipart(frames)

    def forget_released(self, node: str, replica: int) -> None:
        """That replica's process ended: what it released is no longer replayed to late
        subscribers (its successor releases for itself; one ended for good is ``gone``)."""
        self._history = [
            entry for entry in self._history if not (entry[0] is Control.RELEASED and entry[1][:2] == (node, replica))
        ]

    def subscription(self) -> bytes | None:
        """The topic a node subscribed to, or None for an unsubscription."""
        message = self.control.recv()
        return message[1:] if message and message[0] == 1 else None

    def replay(self) -> None:
        """Bring a new subscriber up to date: every state-changing command so far."""
        for _topic, _payload, frames in self._history:
            self.control.send_multipart(frames)

    # -- exits -----------------------------------------------------------------------------------
    def notify_exit(self, key: tuple[str, int], pid: int, code: int) -> None:
        """Called from a watcher thread: hand the exit to the loop through its own socket."""
        try:
            sender = self._context.socket(zmq.PUSH)
        except zmq.ZMQError:
            return  # the launcher is already gone
        try:
            sender.connect(EXITS_ENDPOINT)
            sender.send(msgpack.packb([key[0], key[1], pid, code]))
        finally:
            sender.close(linger=-1)

    def next_exit(self) -> tuple[str, int, int, int]:
        """(node, replica, pid, exit status): sent by this process's own threads, so trusted."""
        node, index, pid, code = msgpack.unpackb(self.exits.recv())
        return node, index, pid, code

    # -- status ----------------------------------------------------------------------------------
    def receive_status(self, apply: StatusHandler) -> None:
        """Apply the next status report, if one is waiting; a bad one is refused and logged."""
        try:
            frames = self.status.recv_multipart(zmq.NOBLOCK)
        except zmq.Again:
            return
        try:
            kind, node, index, payload = check_status(frames)
            apply(Status(kind), node, index, payload)
        except ProtocolError as refused:
            self._refusals.refused(refused, "the status socket")
        except (KeyError, IndexError, TypeError, ValueError, AttributeError) as error:
            # Well-formed but impossible here (a forged report): ignored, like a malformed one.
            self._refusals.refused(
                ProtocolError("status", f"report could not be applied ({type(error).__name__}: {str(error)[:80]})"),
                "the status socket",
            )

    def wait_for_status(self, seconds: float) -> bool:
        return bool(self.status.poll(int(seconds * 1000) + 1))

    # -- commands --------------------------------------------------------------------------------
    def serve_command(self, answer: Callable[[dict[str, Any]], dict[str, Any]]) -> None:
        """Every request gets exactly one reply (a REP socket), an error for a malformed one."""
        try:  # a REP socket may have signalled a request it then discarded (no envelope): never block
            frames = self.commands.recv_multipart(zmq.NOBLOCK)
        except zmq.Again:
            return
        try:
            reply = answer(check_command(frames))
        except ProtocolError as refused:
            self._refusals.refused(refused, "the command socket")
            reply = {"ok": False, "code": "malformed", "error": f"malformed command: {refused.reason}"}
        self.commands.send(msgpack.packb(reply))
