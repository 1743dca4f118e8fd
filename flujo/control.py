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
from flujo.holds import Holds
from flujo.protocol import (EVENTS, POLLIN, Control, ProtocolError, Status, identity_topic, parse_control,
                            status_frame)
from flujo.wire_check import RefusalLog


class ControlChannel:
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
        self.started = False
        self.stop_requested = False
        self.released: set[tuple[str, str, int]] = set()  # (node, port, replica) that reads no more
        self.gone: set[tuple[str, int]] = set()  # replicas that died without end of stream
        # Replicas being restarted gracefully, shared with the output edges (they pause those
        # replicas); empty almost always.
        self.holds = Holds(lambda node, replica, port, seq: self.report(Status.POSITION, [node, replica, port, seq]))
        self.drain_requested = False  # this very process is held: take what is queued, hand over, exit
        self.dismissed = False  # every reader has this drained process's pause marker: exit now
        self.moved: dict[tuple[str, str, int], str] = {}  # (node, port, replica) -> where it binds now
        self.changes = 0  # bumped on every release, loss or move, so readers can cache
        self.exited: list[tuple[str, int]] = []  # processes that ended since last looked at (shared memory)

    def pending(self) -> bool:
        return bool(self.commands.getsockopt(EVENTS) & POLLIN)

    def handle_pending(self) -> None:
        """Apply every command already received."""
        while True:
            try:
                frames = self.commands.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                return
            try:
                topic, payload = parse_control(frames)
            except ProtocolError as refused:  # logged and ignored: a command is all or nothing
                self._refusals.refused(refused)
                continue
            self._apply(topic, payload)

    def _apply(self, topic: Control | None, payload: list[Any]) -> None:
        if topic is Control.START:
            self.started = True
        elif topic is Control.STOP:
            if self._config.node in payload:
                self.stop_requested = True
        elif topic is Control.RELEASED:
            self.released.add((payload[0], payload[2], payload[1]))
            self.changes += 1
        elif topic is Control.HOLD:
            node, replica, generation = payload[:3]
            self.holds.hold((node, replica), generation)
            if self._is_me(node, replica, generation):
                self.drain_requested = True
        elif topic is Control.ALIGN:
            node, replica, generation, limit = payload[:4]
            self.holds.align((node, replica), generation, limit)
        elif topic is Control.RESUME:
            node, replica, generation = payload[:3]
            self.holds.resume((node, replica), generation)
        elif topic is Control.DISMISS:
            node, replica, generation = payload[:3]
            self.holds.dismissed((node, replica), generation)
            if self._is_me(node, replica, generation):
                self.dismissed = True
        elif topic is Control.EXITED:
            self.exited.append((payload[0], payload[1]))
            self.changes += 1
        elif topic is Control.MOVED:
            node, replica, port, endpoint = payload[:4]
            self.moved[(node, port, replica)] = endpoint
            self.changes += 1
        elif topic is Control.GONE:
            if len(payload) < 4 or (payload[2], payload[3]) == (self._config.node, self._config.replica):
                self.gone.add((payload[0], payload[1]))
                self.changes += 1

    def _is_me(self, node: str, replica: int, generation: int) -> bool:
        config = self._config
        return (node, replica, generation) == (config.node, config.replica, config.generation)

    def is_released(self, node: str, port: str, replica: int) -> bool:
        return (node, port, replica) in self.released

    def report(self, kind: Status, payload: Any = None) -> None:
        self.reporter.send(status_frame(kind, self._config.node, self._config.replica, payload))

    def report_error(self, error: BaseException) -> None:
        limit = self._config.max_control_message // 8  # the report must fit the status socket's limit (UTF-8)
        self.report(Status.ERROR, {
            "message": f"{type(error).__name__}: {error}"[:limit // 4],
            "traceback": "".join(traceback.format_exception(error))[-limit:],
        })

    def close(self) -> None:
        self.commands.close(linger=0)
        self.reporter.close()
