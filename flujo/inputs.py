"""Input side of a node replica: one PULL socket per port, order restoring, and the joins.

Each port binds its own socket, so a zip join can wait on exactly the port it lacks:
the other ports stay unread and their senders feel the backpressure.
"""
from __future__ import annotations

import heapq
from collections import deque
from typing import Any, Callable, Iterable

import zmq

from flujo.config import InputConfig
from flujo.protocol import NOBLOCK, Codec, Message, MessageKind, ProtocolError
from flujo.wire_check import DataCheck, RefusalLog

#: Returned by a join for a sequence number that carries no item (filtered upstream).
SKIP = object()


class Drained(Exception):
    """Raised by a join of a held replica once every sender has paused (or ended) and every
    item they sent before pausing has been taken: the replica may hand over to its successor."""


Waiter = Callable[[Iterable[zmq.Socket]], None]
Flusher = Callable[[], None]  # sends the node's waiting output batches
#: A node waiting for one port blocks in the receive itself (GIL released) at most this long
#: before it looks at its commands: cheaper than a poll and a failed receive per item.
BLOCKING_RECEIVE_MS = 200


class InputPort:
    """One input port: receives, restores sequence order, counts end-of-stream markers.

    Order: every sender sends in increasing sequence order (each node restores order before
    it processes), so an item may go ahead of a gap once every live sender has gone past
    the gap: nothing can fill it any more (an item was lost with a crashed or restarted
    sender, or dropped). Without losses that never happens and the order is exact.
    """

    def __init__(self, context: zmq.Context, config: InputConfig, codec: Codec, reorder: bool,
                 on_ended: Callable[["InputPort"], None],
                 on_paused: Callable[["InputPort", Message], None] = lambda port, message: None,
                 refusals: RefusalLog | None = None) -> None:
        self.config = config
        self.name = config.port
        self.socket = context.socket(zmq.PULL)
        self.socket.rcvhwm = config.hwm
        self.socket.maxmsgsize = config.max_message  # a larger frame drops its connection, unread
        # Realtime ports read eagerly between items and keep at most `hwm` waiting: drop-oldest
        # keeps the newest, drop-newest the oldest. (Socket buffers alone would hold far more
        # small items than the high-water mark, in the kernel.)
        self._keep = config.hwm if config.policy != "block" else 0
        self._keep_newest = config.policy == "drop-oldest"
        self.dropped = 0
        self.socket.rcvtimeo = BLOCKING_RECEIVE_MS
        self.socket.linger = 0
        self.socket.bind(config.endpoint)
        self._codec = codec
        self._check = DataCheck(config.source, config.senders)  # what this port accepts (flujo/wire_check.py)
        self._refusals = refusals or RefusalLog("flujo")
        self.rejected = 0  # messages refused: malformed, or not from this port's senders in order
        self._reorder = reorder
        self._expected = 0  # next sequence number to deliver when reordering
        self._held: dict[int, Message] = {}  # arrived early, waiting for the gap before them
        self._held_order: list[int] = []  # heap of the held sequence numbers
        self._last_seen: dict[int, int] = {}  # sender replica -> highest sequence number from it
        self.late = 0  # items behind a gap already given up on (duplicates after a loss)
        self._ended_senders: set[int] = set()
        self._on_ended = on_ended  # told once, when the last sender has ended
        self._paused_senders: set[int] = set()  # sent a pause marker and nothing since
        self._on_paused = on_paused  # told of every pause marker (the reader confirms it)
        self.ready: deque[Message] = deque()  # in order, ready for the join
        self.received = 0

    def accept_shared_memory(self, reader: Any) -> None:
        """Descriptors of shared-memory arrays from this port's senders are mapped by ``reader``."""
        self._check.shm_reader = reader

    @property
    def senders_done(self) -> bool:
        return len(self._ended_senders) >= self.config.senders

    @property
    def quiet(self) -> bool:
        """Every sender has paused or ended: nothing more will come until a successor runs."""
        return len(self._ended_senders | self._paused_senders) >= self.config.senders

    def complete_through(self, seq: int) -> bool:
        """Every sequence number up to ``seq`` has arrived (or was given up on) and was delivered."""
        return self._expected > seq and not (self._held_order and self._held_order[0] <= seq)

    @property
    def exhausted(self) -> bool:
        """Every sender ended and every item was taken."""
        return not self.ready and self.senders_done

    def receive(self, flags: int = 0) -> bool:
        """Take one message (waiting up to the receive timeout); False when none came."""
        try:
            message = self._codec.receive(self.socket, self._check, flags)
        except zmq.Again:
            return False
        except ProtocolError as refused:  # dropped: counted and logged, the stream goes on
            self.rejected += 1
            self._refusals.refused(refused, f'port "{self.name}"')
            return True
        self._accept(message)
        return True

    def refresh(self) -> None:
        """For a realtime port: take what has arrived, so the queue policy can drop."""
        if self._keep:
            self.receive_available()

    def receive_available(self) -> bool:
        """Take every message already queued on the socket; True if any arrived."""
        got = False
        while self.receive(NOBLOCK):
            got = True
        return got

    def sender_ended(self, replica: int) -> None:
        """An upstream replica sent its end of stream, or died before it could."""
        if replica in self._ended_senders:
            return
        self._ended_senders.add(replica)
        self._release_held()  # an ended sender can no longer fill a gap
        if self.senders_done:
            self._on_ended(self)

    def take_held(self) -> None:
        """Deliver every held item, gaps or not: the replica is draining and its senders paused,
        so nothing more can reach this process (its readers keep their own order, section 8)."""
        while self._held_order:
            seq = heapq.heappop(self._held_order)
            self.ready.append(self._held.pop(seq))
            self._expected = seq + 1

    def _accept(self, message: Message) -> None:
        kind = message.kind
        if kind is MessageKind.EOS:
            self.sender_ended(message.replica)
            return
        if kind is MessageKind.PAUSE:
            self._pause(message)
            return
        if self._paused_senders:
            self._paused_senders.discard(message.replica)  # it sends again: a successor runs downstream
        if kind is MessageKind.BATCH:  # unpack: one message per item, numbered on from seq
            for offset, item in enumerate(message.item):
                self._accept(Message(MessageKind.DATA, message.seq + offset, message.sender, message.replica, item))
            return
        self.received += 1
        if self._keep and len(self.ready) >= self._keep:
            self.dropped += 1
            if not self._keep_newest:
                return  # drop-newest: the queue is full, this one goes
            self.ready.popleft()  # drop-oldest: the oldest waiting item makes room
        if not self._reorder:  # one sender: in order already
            self.ready.append(message)
            self._expected = message.seq + 1
            return
        seq = message.seq
        if seq > self._last_seen.get(message.replica, -1):
            self._last_seen[message.replica] = seq
        if seq == self._expected and not self._held:  # in order: the usual case
            self.ready.append(message)
            self._expected = seq + 1
        elif seq < self._expected:
            self.late += 1  # behind a gap given up on: delivering it now would break the order
        else:
            if seq not in self._held:
                heapq.heappush(self._held_order, seq)
            self._held[seq] = message
            self._release_held()

    def _pause(self, message: Message) -> None:
        """A sender pauses (it is draining, or it paused this replica): until it sends again,
        it is past nothing not yet delivered, so no gap is given up on because of it. Its
        successor's first items may be lower than what it sent last."""
        replica = message.replica
        self._paused_senders.add(replica)
        if self._reorder:
            self._last_seen[replica] = min(self._last_seen.get(replica, -1), self._expected - 1)
        self._on_paused(self, message)

    def _release_held(self) -> None:
        """Deliver held items that are next in order, or whose gap nobody can fill any more."""
        while self._held_order:
            seq = self._held_order[0]
            if seq != self._expected and not self._senders_past(seq - 1):
                return
            heapq.heappop(self._held_order)
            self.ready.append(self._held.pop(seq))
            self._expected = seq + 1

    def _senders_past(self, seq: int) -> bool:
        """True when no live sender can still send anything at or below ``seq``."""
        ended = self._ended_senders
        return all(replica in ended or self._last_seen.get(replica, -1) >= seq
                   for replica in range(self.config.senders))

    def close(self) -> None:
        self.socket.close(linger=0)


class Join:
    """Turns the ports' streams into calls: ``next()`` gives (seq, port, items) or None at the end.

    * one port: every message, in order;
    * zip: one call per sequence number present on every port, ends when any port ends;
    * merge: one call per message in arrival order, ends when all ports end.
    A held replica raises Drained instead once its ports are quiet (a zip: any port) and drained.
    ``items`` is the list of values (one per port for zip) or SKIP for a filtered item.
    """

    def __init__(self, ports: list[InputPort], mode: str, wait: Waiter, flush: Flusher = lambda: None,
                 holding: Callable[[], bool] = lambda: False, draining: Callable[[], bool] = lambda: False,
                 limit: Callable[[], int | None] = lambda: None) -> None:
        self.ports = ports
        self._draining = draining  # whether this replica is held: it ends (Drained) when its senders pause
        self._limit = limit  # a held zip: the sequence number its senders pause after, once agreed
        self._flush = flush  # before blocking on input, what the node holds back must go
        self._holding = holding  # whether it holds anything back
        self._zip = mode == "zip" and len(ports) > 1
        self._wait = wait
        self._merge_seq = 0
        self._turn = 0  # merge: which port to look at first, for fairness

    def next(self) -> tuple[int, str | None, Any] | None:
        if self._zip:
            return self._next_zip()
        return self._next_single() if len(self.ports) == 1 else self._next_merge()

    def _next_single(self) -> tuple[int, str | None, Any] | None:
        port = self.ports[0]
        port.refresh()
        while not port.ready:
            if port.senders_done:
                return None
            if self._quiet_and_empty(port):
                raise Drained
            if port.ready:
                continue  # held items were taken
            if self._holding():
                if port.receive(NOBLOCK):
                    continue
                self._flush()  # about to wait: what this node holds back must go now
            if not port.receive():
                self._wait([port.socket])  # timed out: look at the commands, then wait again
        message = port.ready.popleft()
        return message.seq, port.name, SKIP if message.kind is MessageKind.SKIP else [message.item]

    def _next_merge(self) -> tuple[int, str | None, Any] | None:
        ports = self.ports
        for port in ports:
            port.refresh()
        while True:
            count = len(ports)
            for offset in range(count):
                port = ports[(self._turn + offset) % count]
                if port.ready:
                    self._turn = (self._turn + offset + 1) % count
                    message = port.ready.popleft()
                    if message.kind is MessageKind.SKIP:
                        break  # the merged stream numbers its own items: a gap means nothing here
                    seq, self._merge_seq = self._merge_seq, self._merge_seq + 1
                    return seq, port.name, [message.item]
            else:
                if all(port.exhausted for port in ports):
                    return None
                if all(port.exhausted or self._quiet_and_empty(port) for port in ports):
                    raise Drained
                if any(port.ready for port in ports):
                    continue  # held items were taken
                # Look at every port (no short-circuit): a busy port must not hide another's end.
                if not any([port.receive_available() for port in ports if not port.senders_done]):
                    self._wait([port.socket for port in ports if not port.senders_done])

    def _next_zip(self) -> tuple[int, str | None, Any] | None:
        for port in self.ports:
            port.refresh()
        while True:
            for port in self.ports:
                while not port.ready:
                    if port.senders_done:
                        return None  # zip ends when any input ends and its items are drained
                    if self._quiet_and_empty(port):
                        raise Drained  # what waits on the other ports has no partner here (section 8)
                    if port.ready:
                        continue  # held items were taken
                    if self._holding():
                        if port.receive(NOBLOCK):
                            continue
                        self._flush()
                    if not port.receive():
                        self._wait([port.socket])  # only this port: the others feel backpressure
            heads = [port.ready[0] for port in self.ports]
            newest = max(message.seq for message in heads)
            if any(message.seq != newest for message in heads):
                # Misaligned only after a loss upstream: drop what has no partner.
                for port in self.ports:
                    if port.ready[0].seq < newest:
                        port.ready.popleft()
                continue
            for port in self.ports:
                port.ready.popleft()
            if any(message.kind is MessageKind.SKIP for message in heads):
                return newest, None, SKIP
            return newest, None, [message.item for message in heads]

    def _quiet_and_empty(self, port: InputPort) -> bool:
        """While draining: nothing more can come to this process on the port (every sender
        paused or ended, or, for a zip, everything up to the agreed limit is in), and
        nothing is left in it. A sender of a zip may get nothing past the limit for a long
        time (its replicated upstream deals elsewhere): the limit, not its pause, decides."""
        if not self._draining():
            return False
        limit = self._limit()
        if not port.quiet and (limit is None or not port.complete_through(limit)):
            return False
        port.take_held()
        return not port.ready
