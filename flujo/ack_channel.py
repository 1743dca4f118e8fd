"""The sockets of acknowledgements (docs/PROTOCOL.md, section 9.2); what they mean is flujo/acks.py's.

* :class:`AckInbox`, on a sender replica: one PULL socket bound at its ack endpoint; every
  frame is checked (:func:`flujo.acks.parse_ack`) against the retentions of its readers, and a
  refused one is counted and logged, never frees anything and never raises.
* :class:`AckOutbox`, on a reader replica: one PUSH per sender replica of a port, connected to
  that sender's ack endpoint; cumulative, batched (:class:`flujo.acks.AckBatcher`), and never
  past what that sender sent here.

Both are created in the node's context, so on tcp they use CURVE with the flow key, as data
sockets do (section 11).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import zmq

from flujo.acks import ACK_EVERY_ITEMS, AckBatcher, ReaderKey, Retention, ack_frame, parse_ack
from flujo.protocol import NOBLOCK
from flujo.wire_check import ProtocolError, RefusalLog

#: Acknowledgements are a few dozen bytes: anything larger is refused by the socket itself.
ACK_MAX_MESSAGE = 1024


class AckInbox:
    """A sender's acknowledgement socket and the retentions it frees."""

    def __init__(
        self,
        context: zmq.Context,
        endpoint: str,
        retentions: dict[ReaderKey, Retention],
        refusals: RefusalLog | None = None,
    ) -> None:
        self.socket = context.socket(zmq.PULL)
        self.socket.linger = 0
        self.socket.maxmsgsize = ACK_MAX_MESSAGE
        self.socket.bind(endpoint)
        self.retentions = retentions  # (reader node, replica, port) -> what is kept for it
        self._refusals = refusals or RefusalLog("flujo: acknowledgements")
        self.rejected = 0
        self.taken = 0

    def take(self) -> int:
        """Apply every acknowledgement already received; returns how many items they freed
        (shared-memory slots follow the retentions' floors, flujo/slot_pins.py). A malformed or
        forged one is refused: counted, logged, nothing freed."""
        freed = 0
        while True:
            try:
                frames = self.socket.recv_multipart(NOBLOCK)
            except zmq.Again:
                return freed
            try:
                if len(frames) != 1:
                    raise ProtocolError("ack", f"{len(frames)} frames, expected 1")
                reader, seq = parse_ack(frames[0], self.retentions)
                freed += self.retentions[reader].acknowledge(seq)
                self.taken += 1
            except ProtocolError as refused:
                self.rejected += 1
                self._refusals.refused(refused, "acknowledgements")

    def close(self) -> None:
        self.socket.close(linger=0)


class AckOutbox:
    """A reader port's acknowledgements to each of its sender replicas."""

    def __init__(
        self,
        context: zmq.Context,
        node: str,
        replica: int,
        port: str,
        endpoints: Sequence[str],
        every: int = ACK_EVERY_ITEMS,
        spacing: float = 0.0,
    ) -> None:
        self._node, self._replica, self._port = node, replica, port
        self.sockets: list[zmq.Socket] = []
        for endpoint in endpoints:  # one per sender replica 0 ... senders-1
            socket = context.socket(zmq.PUSH)
            socket.linger = 0  # an acknowledgement lost with this process only means a replay
            socket.sndhwm = 64  # cumulative: when one cannot go, the next says as much and more
            socket.reconnect_ivl = 10  # a restarted sender binds again: find it quickly
            socket.connect(endpoint)
            self.sockets.append(socket)
        self.received = [-1] * len(self.sockets)  # per sender replica: the highest seq it sent here
        self._acked = [-1] * len(self.sockets)
        # ``every`` items at most: a sender's window (2 x hwm) must not fill before an acknowledgement.
        self.batcher = AckBatcher(every, spacing=spacing)
        self._restarted = False  # a sender's successor: acknowledge again what it replays
        # Called with the number about to be acknowledged, before it goes (a lossless merge
        # logs it first, flujo/merge_log.py).
        self.before_send: Callable[[int], None] | None = None

    def arrived(self, sender: int, seq: int) -> None:
        """A message numbered ``seq`` (a BATCH: its last item) came from that sender replica."""
        if seq > self.received[sender]:
            self.received[sender] = seq

    def done(self, seq: int, now: float | None = None) -> None:
        """Every item up to ``seq`` on this port is done (end to end): acknowledge when due."""
        through = self.batcher.mark_done(seq, now)
        if through is not None:
            self._send(through)

    @property
    def pending(self) -> bool:
        """Something is done that was not acknowledged yet."""
        return self.batcher.done > self.batcher.sent

    def restarted(self, sender: int) -> None:
        """That sender replica's process ended: its successor knows nothing of what was
        acknowledged to it, and sends again from there (acknowledged again as it arrives)."""
        self.received[sender] = -1
        self._acked[sender] = -1
        self._restarted = True

    def tick(self, now: float) -> None:
        """Between items: acknowledge what is old enough (to a restarted sender: what it replayed)."""
        through = self.batcher.due(now)
        if through is not None:
            self._send(through)
        elif self._restarted:
            self._send(self.batcher.done)

    def flush(self) -> None:
        """Before the node waits: acknowledge everything done."""
        self.batcher.flush()
        self._send(self.batcher.done)

    def _send(self, through: int) -> None:
        """To each sender, never past what it sent here (it would refuse that)."""
        if self.before_send is not None:
            self.before_send(through)
        for index, socket in enumerate(self.sockets):
            seq = min(through, self.received[index])
            if seq > self._acked[index]:
                try:
                    socket.send(ack_frame(self._node, self._replica, self._port, seq), NOBLOCK)
                    self._acked[index] = seq
                except zmq.Again:  # that sender is gone or slow: a later acknowledgement covers this one
                    pass

    def close(self, linger_ms: int = 0) -> None:
        """``linger_ms``: how long what is still queued may take to leave (the last acknowledgement)."""
        for socket in self.sockets:
            socket.close(linger=linger_ms)
