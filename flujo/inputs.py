"""Input side of a node replica: one PULL socket per port in front of its queue.

Each port binds its own socket, so a zip join can wait on exactly the port it lacks:
the other ports stay unread and their senders feel the backpressure. What the port does
with a message (order, drops, ends and pauses) is flujo/port_queue.py's; how ports are
joined is flujo/joins.py's.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import zmq

from flujo.config import InputConfig
from flujo.joins import SKIP, WAIT, Drained, Join
from flujo.port_queue import PortQueue
from flujo.protocol import POLLIN, Codec, Message, MessageKind, ProtocolError, readable
from flujo.wire_check import PAUSE, DataCheck, RefusalLog, StaleMessage

__all__ = ["BLOCKING_RECEIVE_MS", "SKIP", "WAIT", "Drained", "InputPort", "Join", "bind_pull"]

#: A node waiting for one port blocks in the receive itself (GIL released) at most this long
#: before it looks at its commands: cheaper than a poll and a failed receive per item.
BLOCKING_RECEIVE_MS = 200


def bind_pull(context: zmq.Context, config: InputConfig) -> zmq.Socket:
    """The PULL socket of an input port, bound to ``config.endpoint`` (closed again if the bind fails)."""
    socket = context.socket(zmq.PULL)
    socket.rcvhwm = config.hwm
    socket.maxmsgsize = config.max_message  # a larger frame drops its connection, unread
    socket.rcvtimeo = BLOCKING_RECEIVE_MS
    socket.linger = 0
    try:
        socket.bind(config.endpoint)
    except zmq.ZMQError:
        socket.close(linger=0)
        raise
    return socket


class InputPort(PortQueue):
    """One input port: checked and decoded messages from its PULL socket into its queue.

    The constructor takes the socket (any object with pyzmq's receive methods), so what the port
    does with what arrives is testable without one; :func:`bind_pull` makes the real one.
    """

    def __init__(
        self,
        socket: zmq.Socket,
        config: InputConfig,
        codec: Codec,
        reorder: bool,
        on_ended: Callable[[PortQueue], None],
        on_paused: Callable[[PortQueue, Message], None] = lambda port, message: None,
        refusals: RefusalLog | None = None,
    ) -> None:
        super().__init__(config, reorder, on_ended, on_paused)
        self.socket = socket
        self._codec = codec
        self._check = DataCheck(config.source, config.senders)  # what this port accepts (flujo/wire_check.py)
        self._refusals = refusals or RefusalLog("flujo")
        self.rejected = 0  # messages refused: malformed, or not from this port's senders in order
        self.credits: Any = None  # a credited port: flujo.credit_channel.CreditOutbox (section 18)
        self._releases: Any = None  # the node's flujo.shm.SharedMemoryReader, on a shared-memory port

    def accept_shared_memory(self, reader: Any) -> None:
        """Descriptors of shared-memory arrays from this port's senders are mapped by ``reader``."""
        self._check.shm_reader = reader
        self._releases = reader

    def _before_blocking(self) -> None:
        """About to block in the receive: what this node owes upstream goes first, at a moment
        when no other node is waking up for an item this one has just sent."""
        credits = self.credits
        if credits is not None and credits.due_before_waiting and not readable(self.socket):
            # Only when the sender could be held back by what it has not heard (section 18), not
            # for every item taken since the last credit: a credit per item at a low rate woke the
            # sender's I/O thread and this node's while the next node was waking up for the item.
            credits.flush()
        # Shared-memory releases wait a little (flujo/shm.py, RELEASE_DELAY_S): block only until
        # they are due, and send them then if nothing came meanwhile (an item that came goes
        # first; the runtime sends them after it). Sent after the next item instead (as a receive
        # that blocked through the delay did), they woke the owner while the node after this one
        # was waking up for that item.
        releases = self._releases
        if (
            releases is not None
            and releases.pending
            and not zmq.zmq_poll([(self.socket, POLLIN)], math.ceil(releases.release_wait() * 1000))
        ):
            releases.flush()

    def sender_restarted(self, replica: int) -> None:
        """A sender replica's process ended and a successor may replay (a lossless port, section
        9.3): its numbers may go back; what was passed on already is dropped as a duplicate."""
        self._check.marker(PAUSE, -1, replica)
        if self.outbox is not None:
            self.outbox.restarted(replica)

    def receive(self, flags: int = 0) -> bool:
        """Take one message (waiting up to the receive timeout; NOBLOCK: not at all); False when none came."""
        if not flags:
            self._before_blocking()
        try:
            message = self._codec.receive(self.socket, self._check, flags)
        except zmq.Again:
            return False
        except StaleMessage:  # a dead process's leftovers, after its successor's first message
            self.stale += 1
            return True
        except ProtocolError as refused:  # dropped: counted and logged, the stream goes on
            self.rejected += 1
            self._refusals.refused(refused, f'port "{self.name}"')
            return True
        credits = self.credits
        if credits is not None:  # taken off the socket: tell its sender when due (section 18)
            kind = message.kind
            if kind is MessageKind.BATCH:
                credits.took(message.replica, len(message.item), self._check.generation(message.replica))
            elif kind is MessageKind.DATA or kind is MessageKind.SKIP:
                credits.took(message.replica, 1, self._check.generation(message.replica))
        self.accept(message)
        return True

    def close(self) -> None:
        self.socket.close(linger=0)
        if self.credits is not None:
            self.credits.close()
