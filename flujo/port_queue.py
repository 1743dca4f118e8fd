"""One input port's queue, without its socket: order restoring, the drop policies, senders' ends and pauses.

:class:`PortQueue` takes decoded messages (:meth:`PortQueue.accept`) and keeps, in ``ready``,
the items a join may take, in sequence order. flujo/inputs.py puts a socket in front of it.

Order: every sender sends in increasing sequence order (each node restores order before
it processes), so an item may go ahead of a gap once every live sender has gone past
the gap: nothing can fill it any more (an item was lost with a crashed or restarted
sender, or dropped). Without losses that never happens and the order is exact.
"""

from __future__ import annotations

import heapq
from collections import deque
from collections.abc import Callable
from typing import Any

from flujo.config import InputConfig
from flujo.protocol import NOBLOCK, Message, MessageKind
from flujo.vocab import QueuePolicy


class PortQueue:
    """Messages of one input port, in order, ready for the join; counts what it drops and gives up on."""

    def __init__(
        self,
        config: InputConfig,
        reorder: bool,
        on_ended: Callable[[PortQueue], None] = lambda port: None,
        on_paused: Callable[[PortQueue, Message], None] = lambda port, message: None,
    ) -> None:
        self.config = config
        self.name = config.port
        # Realtime ports read eagerly between items and keep at most `hwm` waiting: drop-oldest
        # keeps the newest, drop-newest the oldest. (Socket buffers alone would hold far more
        # small items than the high-water mark, in the kernel.)
        self._keep = config.hwm if config.policy != QueuePolicy.BLOCK else 0
        self._keep_newest = config.policy == QueuePolicy.DROP_OLDEST
        self.dropped = 0
        self._reorder = reorder  # several senders: their items interleave
        self._expected = 0  # next sequence number to deliver when reordering
        # Dealt by number (a lossless edge into replicas, section 9.3): this replica gets the
        # numbers equal to its index modulo the replicas, and waits for no other.
        self._stride, self._residue = 1, 0
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
        self.rejected = 0  # messages refused by the source in front of the queue
        # A lossless port (section 9.3): told of every arrival (to acknowledge, per sender, no more
        # than it sent) and drops what it already passed on (a replay brings it again).
        self.outbox: Any = None  # flujo.ack_channel.AckOutbox
        self.duplicates = 0
        # A new process of a reader on a lossless port: what its senders sent to the process it
        # replaces may still come, ahead of their replay. Each sender's messages are dropped
        # (counted in ``stale``; the replay brings them again) until its REPLAY marker.
        self._awaiting_replay: set[int] = set()
        self.stale = 0
        self.peers: list[PortQueue] = [self]  # ports numbered alike: this one, or a zip's (flujo/joins.py)

    # -- the source in front of the queue (flujo/inputs.py: a socket) ---------------------
    def receive(self, flags: int = 0) -> bool:
        """Take one message from the source into the queue, waiting up to the source's own
        timeout (``flags`` NOBLOCK: not at all); False when none came. A bare queue has none."""
        return False

    def receive_available(self) -> bool:
        """Take every message the source already has; True if any arrived."""
        got = False
        while self.receive(NOBLOCK):
            got = True
        return got

    def refresh(self) -> None:
        """For a realtime port: take what has arrived, so the queue policy can drop."""
        if self._keep:
            self.receive_available()

    @property
    def realtime(self) -> bool:
        """A drop policy: what has arrived is taken eagerly, so the policy (not the socket) decides."""
        return self._keep > 0

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
    def buffered(self) -> int:
        """Messages taken off the source and not yet delivered: ready, or held to restore order."""
        return len(self.ready) + len(self._held)

    @property
    def exhausted(self) -> bool:
        """Every sender ended and every item was taken."""
        return not self.ready and self.senders_done

    def passed_through(self, seq: int) -> None:
        """Items through ``seq`` were passed on by this process's predecessor (a restored
        snapshot, section 9.6, or what a replay says was acknowledged, 9.3): dropped as
        duplicates when they come (again), here or already waiting."""
        expected = self._after(seq)
        if expected <= self._expected:
            return
        self._expected = expected
        ready, held, order = self.ready, self._held, self._held_order
        while ready and ready[0].seq < expected:
            ready.popleft()
            self.duplicates += 1
        while order and order[0] < expected:
            del held[heapq.heappop(order)]
            self.duplicates += 1
        self._release_held()

    def sender_ended(self, replica: int) -> None:
        """An upstream replica sent its end of stream, or died before it could."""
        if replica in self._ended_senders:
            return
        self._ended_senders.add(replica)
        self._awaiting_replay.discard(replica)  # gone: no replay will come
        self._release_held()  # an ended sender can no longer fill a gap
        if self.senders_done:
            self._on_ended(self)

    def take_held(self) -> None:
        """Deliver every held item, gaps or not: the replica is draining and its senders paused,
        so nothing more can reach this process (its readers keep their own order, section 8)."""
        while self._held_order:
            seq = heapq.heappop(self._held_order)
            self.ready.append(self._held.pop(seq))
            self._expected = self._after(seq)

    def dealt_by_number(self, residue: int, stride: int) -> None:
        """Its senders deal item ``s`` to replica ``s % stride``: this is replica ``residue``."""
        self._stride, self._residue, self._expected = stride, residue, residue

    def _after(self, seq: int) -> int:
        """The next number this replica is dealt after ``seq``."""
        stride = self._stride
        return seq + 1 if stride == 1 else seq + 1 + (self._residue - seq - 1) % stride

    def await_replays(self) -> None:
        """This process replaces one that died: take nothing from a sender before its replay."""
        self._awaiting_replay = set(range(self.config.senders)) - self._ended_senders

    def accept(self, message: Message) -> None:
        """Take one checked message from a sender of this port."""
        kind = message.kind
        if self._awaiting_replay and message.replica in self._awaiting_replay:
            if kind is not MessageKind.REPLAY:
                self.stale += 1  # sent to the process this one replaces: its replay follows
                return
            self._awaiting_replay.discard(message.replica)
        if kind is MessageKind.REPLAY:
            # The first number the sender still keeps for this replica: the ones before were
            # acknowledged, so this process's predecessor passed them on, and for every port
            # numbered alike (a zip's): a replay on another port must not wait for partners here.
            # Only on a lossless port, where a replay is what it says: elsewhere a REPLAY's
            # number is not trusted to drop anything (a forged one would cost items).
            if message.seq and self.outbox is not None:
                for peer in self.peers:
                    peer.passed_through(message.seq - 1)
            return
        if kind is MessageKind.EOS:
            self.sender_ended(message.replica)
            return
        if kind is MessageKind.PAUSE:
            self._pause(message)
            return
        if self._paused_senders:
            self._paused_senders.discard(message.replica)  # it sends again: a successor runs downstream
        outbox = self.outbox
        if kind is MessageKind.BATCH:  # unpack: one message per item, numbered on from seq
            first, sender, replica, items = message.seq, message.sender, message.replica, message.item
            if outbox is not None:
                outbox.arrived(replica, first + len(items) - 1)
            for offset, item in enumerate(items):
                self._take(Message(MessageKind.DATA, first + offset, sender, replica, item))
            return
        if outbox is not None:
            outbox.arrived(message.replica, message.seq)
        self._take(message)

    def _take(self, message: Message) -> None:
        """One item (DATA or SKIP) from a sender: in order, held for a gap, or dropped."""
        if self.outbox is not None and message.seq < self._expected:
            self.duplicates += 1  # passed on already: replayed after a crash
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
            self._expected = seq + self._stride
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
            self._expected = self._after(seq)

    def _senders_past(self, seq: int) -> bool:
        """True when no live sender can still send anything at or below ``seq``."""
        ended = self._ended_senders
        return all(
            replica in ended or self._last_seen.get(replica, -1) >= seq for replica in range(self.config.senders)
        )
