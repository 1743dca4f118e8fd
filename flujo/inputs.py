"""Input side of a node replica: one PULL socket per port in front of its queue.

Each port binds its own socket, so a zip join can wait on exactly the port it lacks:
the other ports stay unread and their senders feel the backpressure. What the port does
with a message (order, drops, ends and pauses) is flujo/port_queue.py's; how ports are
joined is flujo/joins.py's.

The socket is an edge attached explicitly: ``InputPort(...)`` builds the port's queue and
its checks without touching the network, ``bind(context)`` (called by the runtime) opens
the socket, so the port's checks and queue are testable without one (``deliver``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import zmq

from flujo.config import InputConfig
from flujo.joins import SKIP, WAIT, Drained, Join
from flujo.port_queue import PortQueue
from flujo.protocol import Codec, Message, ProtocolError
from flujo.wire_check import DataCheck, RefusalLog

__all__ = ["BLOCKING_RECEIVE_MS", "SKIP", "WAIT", "Drained", "InputPort", "Join"]

#: A node waiting for one port blocks in the receive itself (GIL released) at most this long
#: before it looks at its commands: cheaper than a poll and a failed receive per item.
BLOCKING_RECEIVE_MS = 200


class InputPort(PortQueue):
    """One input port: its PULL socket (once bound), checked and decoded messages into its queue."""

    def __init__(
        self,
        config: InputConfig,
        codec: Codec,
        reorder: bool,
        on_ended: Callable[[PortQueue], None],
        on_paused: Callable[[PortQueue, Message], None] = lambda port, message: None,
        refusals: RefusalLog | None = None,
    ) -> None:
        super().__init__(config, reorder, on_ended, on_paused)
        self._socket: zmq.Socket | None = None
        self._codec = codec
        self._check = DataCheck(config.source, config.senders)  # what this port accepts (flujo/wire_check.py)
        self._refusals = refusals or RefusalLog("flujo")
        self.rejected = 0  # messages refused: malformed, or not from this port's senders in order

    def bind(self, context: zmq.Context) -> InputPort:
        """Open this port's PULL socket on its endpoint (once); returns the port, ready to receive."""
        if self._socket is not None:
            raise RuntimeError(f'input port "{self.name}" is already bound')
        socket = context.socket(zmq.PULL)
        socket.rcvhwm = self.config.hwm
        socket.maxmsgsize = self.config.max_message  # a larger frame drops its connection, unread
        socket.rcvtimeo = BLOCKING_RECEIVE_MS
        socket.linger = 0
        try:
            socket.bind(self.config.endpoint)
        except zmq.ZMQError:
            socket.close(linger=0)
            raise
        self._socket = socket
        return self

    @property
    def socket(self) -> zmq.Socket:
        """The bound PULL socket (a join waits on it); an unbound port has none to wait on."""
        if self._socket is None:
            raise RuntimeError(f'input port "{self.name}" is not bound: call bind(context) first')
        return self._socket

    def accept_shared_memory(self, reader: Any) -> None:
        """Descriptors of shared-memory arrays from this port's senders are mapped by ``reader``."""
        self._check.shm_reader = reader

    def receive(self, flags: int = 0) -> bool:
        """Take one message (waiting up to the receive timeout; NOBLOCK: not at all); False when none came."""
        socket = self._socket
        if socket is None:
            raise RuntimeError(f'input port "{self.name}" is not bound: call bind(context) first')
        try:
            message = self._codec.receive(socket, self._check, flags)
        except zmq.Again:
            return False
        except ProtocolError as refused:
            self._refuse(refused)
            return True
        self.accept(message)
        return True

    def deliver(self, frames: Sequence[Any]) -> bool:
        """One message's frames from any transport, checked and decoded as ``receive`` does, with no
        socket; False when the message was refused (then counted and logged)."""
        try:
            message = self._codec.decode(frames, self._check)
        except ProtocolError as refused:
            self._refuse(refused)
            return False
        self.accept(message)
        return True

    def _refuse(self, refused: ProtocolError) -> None:
        """A refused message is dropped, counted and logged; the stream goes on."""
        self.rejected += 1
        self._refusals.refused(refused, f'port "{self.name}"')

    def close(self) -> None:
        """Close the socket, if bound (closing twice, or an unbound port, is harmless)."""
        if self._socket is not None:
            self._socket.close(linger=0)
            self._socket = None
