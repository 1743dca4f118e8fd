"""Credits in items, without sockets or clock (docs/PROTOCOL.md, section 18).

ZeroMQ's high-water marks count messages, and the kernel's socket buffers and libzmq's batches
hold far more behind them (bench/RESULTS.md, "where the items wait"): a hop behind a slow reader
holds hundreds or thousands of small items whatever the edge's ``queue`` says. Credits bound a
hop in items instead: each reader port tells each sender replica how many items it has taken,
and a sender sends a message of n items only while ``sent + n - taken <= window``.

* :class:`CreditWindow`, on a sender, one per reader replica: the window, what was sent and
  taken, and the checks of the credits that come in (untrusted: a malformed, impossible or
  backward credit is a :class:`~flujo.wire_check.ProtocolError`, nothing changes).
* :class:`CreditCounter`, on a reader port, one per sender replica: how many items it took
  and when that is worth a credit.
* :func:`credit_frame` and :func:`parse_credit`: the frame on the wire.
* :func:`window_items`, :func:`credit_every`, :func:`batch_items`: the sizes that follow from
  a reader's queue (a window's floor) and from a window.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import msgpack

from flujo.wire_check import PROTOCOL_VERSION, ProtocolError, check_reply_frame

#: The second field of a credit frame.
CREDIT = "credit"
#: Counts and generations are unsigned 63-bit integers on the wire (section 6).
MAX_COUNT = (1 << 63) - 1
#: A window grows past its floor (two queues) to what the reader takes in this long ...
PACE_SECONDS = 0.05
#: ... measured over at least this long (credits come in bursts: a batch at a time) ...
RATE_PERIOD = 0.05
#: ... and at most to this many items (a batch is also at most BATCH_BYTES, flujo/batching.py).
MAX_WINDOW = 1024

ReaderKey = tuple[str, int, str]  # (reader node, reader replica, reader input port)


def window_items(queue: int) -> int:
    """The floor of a hop's window towards one reader replica: twice the edge's ``queue`` (above
    it, the window follows the reader's pace, :meth:`CreditWindow._pace`).

    Twice, because a reader credits every ``queue / 2`` items: with a window of two queues a
    sender that waits for a credit still has a full queue in flight, so a busy reader never runs
    dry waiting for the credit's round trip, and a batch of up to one queue can go while the
    reader still holds another queue's worth (at queue 16: 32 items, 64 ms behind a reader
    taking 2 ms per item)."""
    return 2 * max(1, queue)


def credit_every(queue: int) -> int:
    """A reader credits each sender after this many items taken (and before it waits)."""
    return max(1, queue // 2)


def batch_items(window: int) -> int:
    """The most items a batch may carry on a credited edge: half the window, so a batch can go
    while the reader still has as much again to work through."""
    return max(1, window // 2)


class CreditWindow:
    """What one sender replica may still send to one reader replica, in items.

    ``sent`` counts every item this sender sent there; ``taken`` the items the reader has said
    it took (never more than ``sent``). A reader process counts from its own start, and says
    which process it is (its generation): the first credit of a newer process (sent when it
    starts, before it waits for anything) resets the count, as its predecessor took what it took
    and the rest is lost or about to reach the newcomer. Items the sender had in flight then, or
    at any earlier reset (``allowance``: a dead process's queue waits in the sender's pipe for
    the next one), may still be counted by the newcomer, so its counts may exceed what was sent
    since by as much.
    """

    __slots__ = (
        "_allowance",
        "_base",
        "_count",
        "_since",
        "_taken_since",
        "floor",
        "generation",
        "rate",
        "sent",
        "stale",
        "taken",
        "window",
    )

    def __init__(self, floor: int) -> None:
        if floor < 1:
            raise ValueError(f"a credit window of {floor} items: it must be at least 1")
        self.floor = self.window = floor
        self.rate = 0.0  # items a second the reader took, over the last RATE_PERIOD or more
        self._since: float | None = None  # when that measure started
        self._taken_since = 0
        self.sent = 0
        self.taken = 0
        self.generation = -1  # the reader process whose counts apply (-1: none heard from yet)
        self._base = 0  # ``sent`` when that process started counting
        self._allowance = 0  # items in flight then, which it may count too
        self._count = 0  # its last count
        self.stale = 0  # credits of an older reader process or another sender process: ignored

    @property
    def in_flight(self) -> int:
        """Items sent and not yet taken, as far as this sender knows."""
        return self.sent - self.taken

    def allows(self, items: int) -> bool:
        """Whether a message of ``items`` items may go now: within the window, or alone in flight
        (a batch begun while the window was larger than it is now must not wait forever)."""
        in_flight = self.sent - self.taken
        return in_flight + items <= self.window or not in_flight

    @property
    def busy(self) -> bool:
        """The reader has at least a credit's worth (a quarter of the window) still to take:
        small items wait in a batch rather than go alone (one message each costs more than
        the item); below that, whatever waits goes, so the reader never runs dry."""
        return self.sent - self.taken >= max(1, self.window // 4)

    def sent_items(self, items: int) -> None:
        """A message of ``items`` items went to this reader."""
        self.sent += items

    def credit(self, generation: int, count: int, now: float | None = None) -> None:
        """The reader process ``generation`` has taken ``count`` items since it started (``now``:
        when the credit arrived, for the reader's pace). Raises ProtocolError (nothing changes)
        for a count that goes back, or that exceeds what it could have been sent."""
        if generation < self.generation:
            self.stale += 1  # a dead process's last credits, still queued: nothing to learn
            return
        if generation > self.generation:
            if generation > 0 or self.generation >= 0:  # a successor: its count starts here
                # What its predecessors were sent and did not take may still wait in the pipe
                # (libzmq keeps a connection's queue for the next process that binds there).
                self._allowance += self.sent - self.taken
                self._base = self.taken = self.sent
                self._since, self.window = None, self.floor  # its pace is not known yet
            self.generation, self._count = generation, 0
        if count < self._count:
            raise ProtocolError("credit", f"counts {count} items taken after {self._count}")
        if count > self.sent - self._base + self._allowance:
            raise ProtocolError(
                "credit", f"counts {count} items taken, more than the {self.sent - self._base} sent to it"
            )
        self._count = count
        self.taken = min(self.sent, self._base + count)
        if now is not None:
            self._pace(now)

    def _pace(self, now: float) -> None:
        """Size the window by the reader's pace: what it takes in PACE_SECONDS, never below the
        floor (two queues) nor above MAX_WINDOW. A fast reader gets room for large batches; a
        slow one keeps a window it works through in a few tens of milliseconds, so a stop
        behind it drains that, not what ZeroMQ and the kernel could hold."""
        if self._since is None:
            self._since, self._taken_since = now, self.taken
            return
        elapsed = now - self._since
        if elapsed < RATE_PERIOD:
            return
        self.rate = (self.taken - self._taken_since) / elapsed
        self._since, self._taken_since = now, self.taken
        # At most twice as large each period: a reader whose first moments are fast (its own
        # outputs not full yet) does not get a window its later pace takes long to work through.
        paced = min(MAX_WINDOW, 2 * self.window, int(self.rate * PACE_SECONDS))
        self.window = max(self.floor, paced)


class CreditCounter:
    """A reader port's count of the items it took from one sender replica (one sender process:
    a successor's first message starts a new count)."""

    __slots__ = ("credited", "every", "sender_generation", "taken")

    def __init__(self, every: int) -> None:
        self.every = every
        self.taken = 0
        self.credited = -1  # the count last sent (-1: nothing yet, not even the first credit)
        self.sender_generation = 0

    def took(self, items: int, sender_generation: int) -> bool:
        """``items`` arrived from that sender (a BATCH: all its items); True when a credit is due."""
        if sender_generation != self.sender_generation:
            self.sender_generation, self.taken, self.credited = sender_generation, 0, -1
        self.taken += items
        return self.taken - self.credited >= self.every

    @property
    def pending(self) -> bool:
        """Something taken (or nothing said yet) that the sender has not been told."""
        return self.taken != self.credited

    @property
    def due_before_waiting(self) -> bool:
        """Whether to credit before this reader waits for input: nothing said yet to this sender
        process, or ``every - 1`` items (at least 1) uncredited. Fewer never matter: with one
        more item on its way the sender still sees under a quarter of its window in flight (its
        floor is four times ``every``), so it neither waits for room nor holds small items back
        in a batch (:attr:`CreditWindow.busy`). A credit that was due and could not go is
        covered too."""
        return self.credited < 0 or self.taken - self.credited >= max(1, self.every - 1)


def credit_frame(node: str, replica: int, port: str, generation: int, sender_generation: int, taken: int) -> bytes:
    """The credit a reader sends: process ``generation`` of that reader replica has taken
    ``taken`` items on ``port`` from process ``sender_generation`` of the sender replica."""
    return msgpack.packb([PROTOCOL_VERSION, CREDIT, node, replica, port, generation, sender_generation, taken])


def parse_credit(
    frame: bytes, windows: Mapping[ReaderKey, Any], sender_generation: int
) -> tuple[ReaderKey, int, int] | None:
    """Check one credit frame ``[version, "credit", node, replica, port, generation,
    sender_generation, taken]`` against this sender's readers; returns (reader, generation,
    taken), or None for a credit meant for another process of this sender replica (its
    predecessor: stale, not refused). Raises ProtocolError when it is malformed or from a
    reader this sender does not have."""
    _version, _kind, node, replica, port, generation, sender, taken = check_reply_frame(frame, CREDIT, 8, "credit")
    if any(type(field) is not int or not 0 <= field <= MAX_COUNT for field in (replica, generation, sender, taken)):
        raise ProtocolError("credit", "replica, generations and count must be whole numbers from 0 to 2**63 - 1")
    if type(node) is not str or type(port) is not str:
        raise ProtocolError("credit", "node and port must be strings")
    key = (node, replica, port)
    if key not in windows:
        raise ProtocolError("credit", f"from {node}.{replica} port {port!r}, not a reader of this sender")
    if sender != sender_generation and taken:
        return None  # counts what an older (or newer) process of this sender sent
    return key, generation, taken
