"""Acknowledgements, retention, replay and deduplication, without sockets (docs/PROTOCOL.md, section 9).

The pieces of a lossless edge, each a small socket-free class the runtime drives:

* :class:`Retention`: what a sender keeps for one reader replica until that replica
  acknowledges it; bounded at ``window`` items (the sender waits when it is full); replayed,
  in order, to the replica's successor after a crash.
* :func:`parse_ack`: an acknowledgement frame, checked against the readers the sender has
  and what it sent them; anything else is a :class:`~flujo.wire_check.ProtocolError`.
* :class:`AckBatcher`: when a reader sends its cumulative acknowledgement (every so many
  items or so many seconds, whichever first).
* :func:`done_through`: end to end, the highest sequence number a processor may acknowledge.
* :class:`DuplicateFilter`: a reader drops what it already passed on.
* :class:`MergeNumbering`: a merge's renumbering, logged so that its successor numbers the
  replayed inputs exactly as before.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Hashable, Iterable
from dataclasses import dataclass
from typing import Any

import msgpack

from flujo.wire_check import PROTOCOL_VERSION, ProtocolError, check_reply_frame

#: The second field of an acknowledgement frame.
ACK = "ack"
#: A reader acknowledges after this many items became done since its last acknowledgement ...
ACK_EVERY_ITEMS = 64
#: ... but on a port whose arrays come inline (no shared-memory slots to give back) after at most
#: this many queues' worth (of the RETAINED_QUEUES its senders keep, flujo/outputs.py): each
#: acknowledgement costs a send and a wake-up in three processes, so fewer is faster.
ACK_EVERY_QUEUES = 4
#: ... or this many seconds after the first of them, whichever comes first.
ACK_EVERY_SECONDS = 0.02
#: On an inline port, a full batch waits until this long after the last acknowledgement (up to
#: ACK_SPACED_BATCHES batches): each acknowledgement costs a send and a wake-up in three
#: processes, so a fast stream acknowledges a few hundred times a second whatever its rate
#: rather than once per batch (at 100,000 items/s: every ~500 items instead of every 64).
ACK_SPACING_SECONDS = 0.005
ACK_SPACED_BATCHES = 8
#: Sequence numbers are unsigned 63-bit integers on the wire (section 6).
MAX_SEQ = (1 << 63) - 1

ReaderKey = tuple[str, int, str]  # (reader node, reader replica, reader input port)


@dataclass(slots=True)
class Kept:
    """One message kept for a reader replica: items ``first``..``last`` (a BATCH: several)."""

    first: int
    last: int
    frames: list[Any]  # (shared-memory slots they name are kept apart: flujo/slot_pins.py)
    heavy: bool = False  # it carries array frames: counted against the window in messages

    @property
    def items(self) -> int:
        return self.last - self.first + 1


class Retention:
    """What one sender keeps for one reader replica until it acknowledges (section 9.3).

    Messages go to a replica in increasing sequence order and the replica finishes them in
    order, so one cumulative number acknowledges a prefix. A message counts as many items
    as it carries (a BATCH of 16 counts 16): the window bounds items, not messages.
    """

    def __init__(self, window: int, messages: int | None = None) -> None:
        if window < 1:
            raise ValueError(f"a retention window of {window} items: it must be at least 1")
        self.window = window
        self.messages = messages if messages is not None else window  # and at most this many heavy messages
        self.heavy = 0  # kept messages that carry array frames
        self._kept: deque[tuple[int, int, list[Any], bool]] = deque()  # Kept's fields, in order
        self.items = 0  # unacknowledged items kept
        self.acked = -1  # the highest sequence number acknowledged
        self.forgotten_through = -1  # the last item forgotten unacknowledged (forget_oldest)
        self.highest_sent = -1  # the highest sequence number sent: nothing above may be acknowledged

    @property
    def full(self) -> bool:
        """The window is full: more than the sender will keep for this reader."""
        return self.items >= self.window or self.heavy >= self.messages

    @property
    def lowest_unacked(self) -> int | None:
        """The first sequence number not yet acknowledged, or None when nothing is kept."""
        return self._kept[0][0] if self._kept else None

    def keep(self, first: int, last: int, frames: list[Any], heavy: bool = False) -> None:
        """Keep a message just sent (items ``first``..``last``); the frames are kept, not copied.
        ``heavy``: it carries arrays (memory): at most ``messages`` of those are kept."""
        if last < first or first <= self.highest_sent:
            raise ValueError(
                f"items {first}..{last} kept after {self.highest_sent}: a sender sends in increasing order"
            )
        # A plain tuple, not a Kept: this runs once per message sent, Kept only on a replay.
        self._kept.append((first, last, frames, heavy))
        self.items += last - first + 1
        if heavy:
            self.heavy += 1
        self.highest_sent = last

    def acknowledge(self, seq: int) -> int:
        """Everything up to ``seq`` is done: drop it; returns how many items were dropped. A
        stale acknowledgement (not past the last one) drops nothing. Raises ProtocolError for
        one past anything sent: nothing is freed for it."""
        if seq > self.highest_sent:
            raise ProtocolError("ack", f"acknowledges {seq}, past {self.highest_sent}, the last item sent")
        if seq <= self.acked:
            return 0
        self.acked = seq
        kept, items, heavy = self._kept, self.items, self.heavy
        while kept and kept[0][1] <= seq:  # a BATCH acknowledged in part stays whole: replayed, deduplicated
            first, last, _frames, is_heavy = kept.popleft()
            items -= last - first + 1
            if is_heavy:
                heavy -= 1
        freed, self.items, self.heavy = self.items - items, items, heavy
        return freed

    def forget_oldest(self) -> int:
        """Drop the oldest kept message unacknowledged (the reader is not acknowledging): its
        items are no longer replayable. Returns how many items it carried."""
        first, last, _frames, heavy = self._kept.popleft()
        self.items -= last - first + 1
        if heavy:
            self.heavy -= 1
        self.forgotten_through = last
        return last - first + 1

    @property
    def replay_from(self) -> int:
        """The first number a replay can bring: everything before was acknowledged (passed on
        by the reader) or forgotten (lost: a successor that waited for it would wait forever)."""
        return max(self.acked, self.forgotten_through) + 1

    def replay(self) -> list[Kept]:
        """The reader's process ended: what it had not acknowledged, in order, for its successor
        (kept until that one acknowledges it)."""
        return [Kept(*kept) for kept in self._kept]


def parse_ack(frame: bytes, retentions: dict[ReaderKey, Retention]) -> tuple[ReaderKey, int]:
    """Check one acknowledgement frame ``[version, "ack", node, replica, port, seq]`` against
    this sender's readers; returns (reader, seq). Raises ProtocolError (the frame is refused,
    nothing is freed) when it is malformed, from a reader this sender does not have, or of a
    number this sender never sent to that reader."""
    _version, _kind, node, replica, port, seq = check_reply_frame(frame, ACK, 6, "acknowledgement")
    if type(node) is not str or type(replica) is not int or type(port) is not str or type(seq) is not int:
        raise ProtocolError("ack", "fields of the wrong types (node str, replica int, port str, seq int)")
    key = (node, replica, port)
    retention = retentions.get(key)
    if retention is None:
        raise ProtocolError("ack", f"from {node}.{replica} port {port!r}, not a reader of this sender")
    if not 0 <= seq <= MAX_SEQ or seq > retention.highest_sent:
        raise ProtocolError("ack", f"from {node}.{replica}: {seq}, never sent (last sent {retention.highest_sent})")
    return key, seq


def ack_frame(node: str, replica: int, port: str, seq: int) -> bytes:
    """The acknowledgement a reader sends: everything up to ``seq`` on that port is done."""
    return msgpack.packb([PROTOCOL_VERSION, ACK, node, replica, port, seq])


class AckBatcher:
    """When a reader acknowledges: every ``items`` done items or ``seconds`` after the first
    unacknowledged one became done, whichever comes first, and before it waits (:meth:`flush`).

    With ``spacing`` (an inline port, where nothing waits for the acknowledgement but memory), a
    full batch also waits until ``spacing`` seconds after the previous acknowledgement, up to
    ACK_SPACED_BATCHES batches: fast streams send fewer, larger acknowledgements."""

    def __init__(
        self,
        items: int = ACK_EVERY_ITEMS,
        seconds: float = ACK_EVERY_SECONDS,
        spacing: float = 0.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._items, self._seconds, self._spacing, self._clock = items, seconds, spacing, clock
        self._most = items * ACK_SPACED_BATCHES if spacing else items  # a full batch waits no longer
        self.done = -1  # the highest sequence number done
        self.sent = -1  # the highest acknowledged so far
        self._pending = 0
        self._check_at = items  # pending items at which the per-item path looks (at the clock) next
        self._since: float | None = None
        self._last_sent = float("-inf")  # when the last acknowledgement went (spacing only)

    def mark_done(self, seq: int, now: float | None = None) -> int | None:
        """Everything up to ``seq`` is done; returns the number to acknowledge now, or None.
        Without ``now`` (the per-item path, no clock read), the age of the batch counts from
        the next :meth:`due`."""
        if seq <= self.done:
            return None
        # Items, not calls: a processor's done jumps by a whole acknowledgement of its readers.
        self._pending += seq - self.done if self.done >= 0 else 1
        self.done = seq
        if now is None:
            if self._pending < self._check_at:
                return None
            if self._pending >= self._most or self._spaced(self._clock()):
                return self.flush()
            self._check_at = self._pending + self._items  # too soon: look again a batch later
            return None
        if self._since is None:
            self._since = now
        return self.due(now)

    def due(self, now: float) -> int | None:
        """The number to acknowledge now (a batch is full or old enough), or None."""
        if self._since is None:
            if self._pending:
                self._since = now  # marked without a clock: its age counts from now
            return None
        if (self._pending >= self._items and self._spaced(now)) or now - self._since >= self._seconds:
            return self.flush(now)
        return None

    def _spaced(self, now: float) -> bool:
        """Long enough since the last acknowledgement (always, without spacing)."""
        return now - self._last_sent >= self._spacing

    def flush(self, now: float | None = None) -> int | None:
        """Acknowledge what is done, if anything is new (``now``: the clock, if already read)."""
        if self.done <= self.sent:
            return None
        self.sent = self.done
        self._pending, self._since, self._check_at = 0, None, self._items
        if self._spacing:
            self._last_sent = self._clock() if now is None else now
        return self.sent


def ack_every(hwm: int, shared_memory: bool) -> int:
    """How many done items a reader port acknowledges at once (its queue holds ``hwm`` messages).

    A port taking shared-memory arrays: a queue's worth at most, since every slot stays pinned
    at its sender until acknowledged and the sender's pool is sized for that many more
    (flujo/runtime.py, ``_slots_per_reader``). Inline: ``ACK_EVERY_QUEUES`` queues' worth at
    most, well within what its senders keep (RETAINED_QUEUES, flujo/outputs.py) even a few hops
    up; an inline array's memory is bounded by the time trigger too (``ACK_EVERY_SECONDS``)."""
    queues = 1 if shared_memory else ACK_EVERY_QUEUES
    return max(1, min(ACK_EVERY_ITEMS, queues * hwm))


def ack_spacing(shared_memory: bool) -> float:
    """How long a reader port's full batch of acknowledgements may wait for the previous one to
    age (:class:`AckBatcher`): not at all where a sender's shared-memory slots wait for it."""
    return 0.0 if shared_memory else ACK_SPACING_SECONDS


def done_through(processed: int, lowest_unacked: Iterable[int | None]) -> int:
    """End to end (section 9.2): a node that processed every item up to ``processed`` may
    acknowledge up to the item before the lowest one its readers have not acknowledged yet
    (``lowest_unacked``, one per output retention: None when it keeps nothing)."""
    through = processed
    for lowest in lowest_unacked:
        if lowest is not None and lowest - 1 < through:
            through = lowest - 1
    return through


class DuplicateFilter:
    """A reader's port with one sender drops every sequence number not past the last it
    passed on: a replay brings again what may already have been taken (section 9.3)."""

    def __init__(self) -> None:
        self.last = -1
        self.duplicates = 0

    def fresh(self, seq: int) -> bool:
        if seq <= self.last:
            self.duplicates += 1
            return False
        self.last = seq
        return True


class MergeNumbering:
    """A merge numbers its output anew in arrival order; a replay would arrive in another
    order, so the numbering is logged (section 9.5): :class:`flujo.merge_log.MergeLog` keeps
    the entries not yet acknowledged downstream in a file, and a successor given them numbers
    those inputs as before.
    """

    def __init__(
        self,
        next_out: int = 0,
        log: Iterable[tuple[int, Hashable, int]] = (),
        acked_in: dict[Hashable, int] | None = None,
    ) -> None:
        self._log: deque[tuple[int, Hashable, int]] = deque()  # (output seq, port, input seq), in order
        self._logged: dict[tuple[Hashable, int], int] = {}  # restored entries: (port, input seq) -> output seq
        self._restored: deque[tuple[int, Hashable, int]] = deque()  # restored entries still to come, in order
        self.next_out = next_out
        # Per port, the highest input whose output was acknowledged downstream: a replay of it
        # (its sender had not heard the merge's own acknowledgement yet) is done already.
        self._acked_in: dict[Hashable, int] = dict(acked_in or {})
        for out, port, seq in log:
            self.next_out = max(self.next_out, out + 1)
            if seq <= self._acked_in.get(port, -1):
                continue  # done: its sender was told so and will not replay it
            self._log.append((out, port, seq))
            self._logged[(port, seq)] = out
            self._restored.append((out, port, seq))

    @property
    def replaying(self) -> bool:
        """Restored entries wait for their inputs: outputs must go in their logged order."""
        restored = self._restored
        while restored and (restored[0][1], restored[0][2]) not in self._logged:
            restored.popleft()
        return bool(restored)

    def next_logged(self) -> tuple[Hashable, int]:
        """The (port, input seq) whose logged output comes next (while :attr:`replaying`)."""
        _out, port, seq = self._restored[0]
        return port, seq

    def skip_logged(self) -> None:
        """The next logged input will not come (flujo/merge_replay.py): give up its number."""
        _out, port, seq = self._restored.popleft()
        self._logged.pop((port, seq), None)

    def acked_through(self, port: Hashable) -> int:
        """The highest input of ``port`` whose output is done downstream (-1: none)."""
        return self._acked_in.get(port, -1)

    def numbered_through(self) -> dict[Hashable, int]:
        """Per port, the highest input numbered (or done): a graceful hand-over passed them all on."""
        through = dict(self._acked_in)
        for _out, port, seq in self._log:
            if seq > through.get(port, -1):
                through[port] = seq
        return through

    def number(self, port: Hashable, seq: int) -> int | None:
        """The output sequence number of input ``seq`` of ``port``: as logged, or the next one;
        None when its output was already acknowledged downstream (acknowledge it again, no more)."""
        if seq <= self._acked_in.get(port, -1):
            return None
        out = self._logged.pop((port, seq), None)
        if out is not None:
            if self._restored and self._restored[0][1:] == (port, seq):
                self._restored.popleft()
            return out
        out = self.next_out
        self.next_out += 1
        self._log.append((out, port, seq))
        return out

    def acknowledge(self, out_seq: int) -> dict[Hashable, int]:
        """Outputs up to ``out_seq`` are acknowledged downstream: forget them; returns, per port,
        the highest input sequence number that may now be acknowledged upstream."""
        log = self._log
        while log and log[0][0] <= out_seq:
            _out, port, seq = log.popleft()
            if seq > self._acked_in.get(port, -1):
                self._acked_in[port] = seq
        return dict(self._acked_in)

    def restored_through(self, out_seq: int) -> None:
        """The successor restored its predecessor's snapshot taken after output ``out_seq``
        (section 9.6): the inputs of outputs up to it are in that state, so they count as done
        (their replay is dropped) and are not emitted again; the later ones still are."""
        self.acknowledge(out_seq)
        restored = self._restored
        while restored and restored[0][0] <= out_seq:
            _out, port, seq = restored.popleft()
            self._logged.pop((port, seq), None)
        self.next_out = max(self.next_out, out_seq + 1)

    @property
    def pending(self) -> int:
        """Outputs numbered and not yet acknowledged downstream."""
        return len(self._log)

    def state(self) -> tuple[int, list[tuple[int, Hashable, int]], dict[Hashable, int]]:
        """What a successor needs (``MergeNumbering(*state)``): the next number, every output
        not yet acknowledged downstream, and per port the last input acknowledged."""
        return self.next_out, list(self._log), dict(self._acked_in)
