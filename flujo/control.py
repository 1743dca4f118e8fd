"""A node's side of the control plane: commands in (SUB), status out (PUSH).

The node subscribes to every topic, plus a topic naming itself: the launcher's XPUB sees
that second subscription arrive and so knows this node will not miss the start command
(the "slow joiner" handshake, without sleeps).
"""

from __future__ import annotations

import traceback
from typing import Any

import zmq

from flujo.config import NodeConfig
from flujo.control_state import ControlState, InvalidTransition
from flujo.protocol import ProtocolError, Status, identity_topic, parse_control, readable, status_frame
from flujo.wire_check import RefusalLog


class ControlChannel:
    """The sockets of the control plane; what the commands mean is :class:`ControlState`'s."""

    def __init__(self, context: zmq.Context, config: NodeConfig) -> None:
        self._config = config
        self.commands = context.socket(zmq.SUB)
        self.commands.linger = 0
        self.commands.maxmsgsize = config.max_control_message
        self._refusals = RefusalLog(f"flujo: {config.label}: control")
        self.commands.subscribe(b"")
        self.commands.subscribe(identity_topic(config.node, config.replica))
        self.commands.connect(config.control)
        self.reporter = context.socket(zmq.PUSH)
        self.reporter.linger = 2000  # status is small and the launcher always reads it
        self.reporter.connect(config.status)
        self.state = ControlState(config.node, config.replica, config.generation, self.report)

    def pending(self) -> bool:
        return readable(self.commands)

    def handle_pending(self) -> None:
        """Apply every command already received."""
        while True:
            try:
                frames = self.commands.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                return
            try:
                topic, payload = parse_control(frames)
                self.state.apply(topic, payload)
            except ProtocolError as refused:  # logged and ignored: a command is all or nothing
                self._refusals.refused(refused)
            except InvalidTransition as refused:  # out of order: logged and ignored, the phase stays
                self._refusals.refused(ProtocolError("order", str(refused)))

    def report(self, kind: Status, payload: Any = None) -> None:
        self.reporter.send(status_frame(kind, self._config.node, self._config.replica, payload))

    def report_error(self, error: BaseException) -> None:
        limit = self._config.max_control_message // 8  # the report must fit the status socket's limit (UTF-8)
        self.report(
            Status.ERROR,
            {
                "message": f"{type(error).__name__}: {error}"[: limit // 4],
                "traceback": "".join(traceback.format_exception(error))[-limit:],
            },
        )

    def close(self) -> None:
        self.commands.close(linger=0)
        self.reporter.close()
