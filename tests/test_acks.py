"""The socket-free cores of lossless edges (flujo/acks.py, docs/PROTOCOL.md section 9): retention
bounded in items, cumulative acknowledgements, forged ones refused, replay, dedup, merge numbering."""

from __future__ import annotations

import msgpack
import pytest

from flujo.acks import (
    ACK_EVERY_ITEMS,
    ACK_SPACED_BATCHES,
    ACK_SPACING_SECONDS,
    AckBatcher,
    DuplicateFilter,
    MergeNumbering,
    Retention,
    ack_every,
    ack_frame,
    ack_spacing,
    done_through,
    parse_ack,
)
from flujo.wire_check import ProtocolError

pytestmark = pytest.mark.timeout(10)


def _sent(retention: Retention, *ranges: tuple[int, int]) -> None:
    for first, last in ranges:
        retention.keep(first, last, [f"{first}..{last}".encode()])


def test_retention_counts_items_not_messages_and_fills() -> None:
    retention = Retention(window=20)
    _sent(retention, (0, 15))  # a BATCH of 16
    assert retention.items == 16 and not retention.full
    _sent(retention, (16, 16), (17, 17), (18, 18))
    assert not retention.full
    _sent(retention, (19, 19))
    assert retention.full  # 20 items in 5 messages: the sender waits
    assert retention.lowest_unacked == 0


def test_cumulative_acknowledgement_frees_a_prefix_and_counts_it() -> None:
    retention = Retention(window=100)
    _sent(retention, (0, 0), (1, 1), (2, 4), (5, 5))
    assert retention.acknowledge(1) == 2  # items 0 and 1
    assert retention.items == 4 and retention.lowest_unacked == 2
    assert retention.acknowledge(3) == 0  # a batch acknowledged in part stays whole
    assert retention.lowest_unacked == 2
    assert [(kept.first, kept.last) for kept in retention.replay()] == [(2, 4), (5, 5)]
    assert retention.acknowledge(5) == 4
    assert retention.items == 0 and retention.lowest_unacked is None and not retention.full


def test_stale_acknowledgement_frees_nothing() -> None:
    retention = Retention(window=10)
    _sent(retention, (0, 0), (1, 1), (2, 2))
    retention.acknowledge(1)
    assert retention.acknowledge(0) == 0 and retention.acknowledge(1) == 0
    assert retention.items == 1


def test_acknowledgement_past_what_was_sent_is_refused_and_frees_nothing() -> None:
    retention = Retention(window=10)
    _sent(retention, (0, 0), (1, 1))
    with pytest.raises(ProtocolError):
        retention.acknowledge(2)
    assert retention.items == 2 and retention.acked == -1


def test_replay_gives_the_unacknowledged_messages_in_order_and_keeps_them() -> None:
    retention = Retention(window=10)
    _sent(retention, (3, 3), (4, 6), (9, 9))  # a replica gets a subsequence: gaps are fine
    retention.acknowledge(3)
    assert [kept.frames for kept in retention.replay()] == [[b"4..6"], [b"9..9"]]
    assert retention.items == 4  # still kept until the successor acknowledges
    retention.acknowledge(9)
    assert retention.replay() == []


def test_keeping_out_of_order_is_a_programming_error() -> None:
    retention = Retention(window=10)
    _sent(retention, (5, 5))
    with pytest.raises(ValueError):
        retention.keep(5, 5, [])
    with pytest.raises(ValueError):
        Retention(window=0)


def _readers() -> dict[tuple[str, int, str], Retention]:
    retention = Retention(window=10)
    _sent(retention, (0, 0), (1, 1), (2, 2))
    return {("sink", 0, "in"): retention}


def test_parse_ack_takes_a_good_one() -> None:
    assert parse_ack(ack_frame("sink", 0, "in", 2), _readers()) == (("sink", 0, "in"), 2)
    later = msgpack.packb([1, "ack", "sink", 0, "in", 1, "a field of a later version"])
    assert parse_ack(later, _readers()) == (("sink", 0, "in"), 1)


@pytest.mark.parametrize(
    "frame",
    [
        b"\xc1",  # not msgpack
        msgpack.packb({"ack": 1}),
        msgpack.packb([1, "ack", "sink", 0, "in"]),  # too short
        msgpack.packb([2, "ack", "sink", 0, "in", 1]),  # another version
        msgpack.packb([1, "nack", "sink", 0, "in", 1]),
        msgpack.packb([1, "ack", "sink", "0", "in", 1]),  # wrong types
        msgpack.packb([1, "ack", "sink", 0, "in", 1.0]),
        msgpack.packb([1, "ack", "stranger", 0, "in", 1]),  # not a reader
        msgpack.packb([1, "ack", "sink", 1, "in", 1]),  # a replica that does not read from here
        msgpack.packb([1, "ack", "sink", 0, "other", 1]),
        msgpack.packb([1, "ack", "sink", 0, "in", 3]),  # never sent
        msgpack.packb([1, "ack", "sink", 0, "in", -5]),
        msgpack.packb([1, "ack", "sink", 0, "in", 2**64 - 1]),
    ],
)
def test_parse_ack_refuses_malformed_and_forged_frames(frame: bytes) -> None:
    readers = _readers()
    with pytest.raises(ProtocolError):
        parse_ack(frame, readers)
    assert readers[("sink", 0, "in")].items == 3  # nothing freed


def test_batcher_acknowledges_every_n_items_or_after_t_seconds() -> None:
    batcher = AckBatcher(items=3, seconds=0.02)
    assert batcher.mark_done(0, now=0.0) is None
    assert batcher.mark_done(1, now=0.001) is None
    assert batcher.mark_done(2, now=0.002) == 2  # three items
    assert batcher.mark_done(3, now=0.003) is None
    assert batcher.due(now=0.01) is None
    assert batcher.due(now=0.024) == 3  # 20 ms after the first one became done
    assert batcher.mark_done(3, now=0.05) is None  # nothing new
    assert batcher.flush() is None
    assert batcher.mark_done(4, now=0.06) is None
    assert batcher.flush() == 4  # before the node waits
    assert batcher.mark_done(8, now=0.07) == 8  # items, not calls: a processor's done jumps
    assert batcher.flush() is None


def test_batcher_default_rate_is_one_ack_per_batch() -> None:
    batcher = AckBatcher()
    acks = [seq for seq in range(10 * ACK_EVERY_ITEMS) if batcher.mark_done(seq, now=0.0) is not None]
    assert len(acks) == 10


def test_heavy_messages_are_bounded_in_messages_and_freed_by_acknowledgement() -> None:
    retention = Retention(window=100, messages=2)
    retention.keep(0, 0, [b"h", b"b", b"array"], heavy=True)
    retention.keep(1, 1, [b"h", b"b"])
    assert retention.heavy == 1 and not retention.full
    retention.keep(2, 2, [b"h", b"b", b"array"], heavy=True)
    assert retention.full  # two arrays kept: the sender's safety bound
    assert retention.forget_oldest() == 1 and retention.heavy == 1 and retention.items == 2
    assert retention.acknowledge(2) == 2 and retention.heavy == 0 and not retention.full


def test_ack_every_is_a_queue_with_shared_memory_and_a_few_inline() -> None:
    assert ack_every(16, shared_memory=True) == 16  # pinned slots: the pool is sized for a queue more
    assert ack_every(16, shared_memory=False) == ACK_EVERY_ITEMS == 4 * 16
    assert ack_every(4, shared_memory=False) == 16  # a small queue: a few queues' worth
    assert ack_every(1000, shared_memory=False) == ACK_EVERY_ITEMS
    assert ack_every(0, shared_memory=True) == 1


def test_done_through_is_end_to_end() -> None:
    assert done_through(10, []) == 10  # a consumer: what it consumed
    assert done_through(10, [None, None]) == 10  # readers acknowledged everything
    assert done_through(10, [7, None]) == 6  # a reader has not acknowledged 7 yet
    assert done_through(10, [7, 4]) == 3
    assert done_through(10, [12]) == 10


def test_duplicate_filter_drops_what_was_passed_on() -> None:
    dedup = DuplicateFilter()
    assert [seq for seq in [0, 1, 2, 1, 2, 3, 0, 4, 2**24] if dedup.fresh(seq)] == [0, 1, 2, 3, 4, 2**24]
    assert dedup.duplicates == 3


def test_merge_numbering_is_recovered_by_a_successor() -> None:
    merge = MergeNumbering()
    arrivals = [("a", 0), ("b", 0), ("a", 1), ("b", 1), ("b", 2), ("a", 2)]
    numbered = {arrival: merge.number(*arrival) for arrival in arrivals}
    assert list(numbered.values()) == [0, 1, 2, 3, 4, 5]
    assert merge.acknowledge(2) == {"a": 1, "b": 0}  # outputs 0-2 acknowledged downstream
    successor = MergeNumbering(*merge.state())
    # The replay arrives in another interleaving, with an input acknowledged downstream but
    # not yet upstream (b 0): the same numbers as before, and b 0 is done already.
    replay = [("b", 0), ("b", 1), ("a", 2), ("b", 2), ("a", 3)]
    assert [successor.number(*arrival) for arrival in replay] == [None, 3, 5, 4, 6]
    assert successor.acknowledge(6) == {"a": 3, "b": 2}


def test_a_merge_successor_that_restored_a_snapshot_emits_only_what_came_after_it() -> None:
    merge = MergeNumbering()
    for arrival in [("a", 0), ("b", 0), ("a", 1), ("b", 1), ("a", 2)]:
        merge.number(*arrival)  # outputs 0-4, none acknowledged downstream yet
    successor = MergeNumbering(*merge.state())
    successor.restored_through(2)  # its state is the one after output 2 (a 0, b 0, a 1)
    # Replayed: what output 2 and before came from is done (dropped, acknowledged again);
    # b 1 and a 2 are emitted again in their logged order, with their numbers; then new ones.
    assert successor.replaying and successor.next_logged() == ("b", 1)
    replay = [("a", 0), ("a", 1), ("a", 2), ("b", 0), ("b", 1), ("a", 3)]
    assert [successor.number(*arrival) for arrival in replay] == [None, None, 4, None, 3, 5]
    assert successor.acknowledge(5) == {"a": 3, "b": 1}
    fresh = MergeNumbering()
    fresh.restored_through(6)  # a log lost or refused: numbers still go on past the snapshot
    assert fresh.number("a", 9) == 7


def test_a_reader_that_stops_acknowledging_costs_the_oldest_items_not_memory() -> None:
    retention = Retention(window=4)
    for seq in range(4):
        retention.keep(seq, seq, [b"frame"])
    assert retention.full
    assert retention.forget_oldest() == 1  # no longer replayable
    assert not retention.full and retention.lowest_unacked == 1 and retention.items == 3
    assert [kept.first for kept in retention.replay()] == [1, 2, 3]
    # A successor must not wait for item 0: the replay starts after it (a loss, said on stderr).
    assert retention.replay_from == 1 and retention.acked == -1
    retention.acknowledge(2)
    assert retention.replay_from == 3


def test_a_spaced_batcher_waits_for_the_previous_acknowledgement_to_age() -> None:
    clock = [0.0]
    reads = 0

    def read() -> float:
        nonlocal reads
        reads += 1
        return clock[0]

    batcher = AckBatcher(items=4, spacing=0.005, clock=read)
    assert [batcher.mark_done(seq) for seq in range(4)] == [None, None, None, 3]  # the first goes at once
    clock[0] = 0.001
    reads = 0
    assert [batcher.mark_done(seq) for seq in range(4, 12)] == [None] * 8  # two batches, 1 ms after it
    assert reads == 2  # the clock is read once a batch, not once an item
    assert batcher.due(0.004) is None  # still within the spacing
    assert batcher.due(0.006) == 11  # spaced: everything done goes in one
    clock[0] = 0.007
    done = [batcher.mark_done(seq) for seq in range(12, 12 + 4 * ACK_SPACED_BATCHES)]
    assert done[-1] == 12 + 4 * ACK_SPACED_BATCHES - 1 and not any(done[:-1])  # at most this many batches wait
    clock[0] = 0.008
    assert [batcher.mark_done(seq) for seq in range(44, 47)] == [None] * 3
    assert batcher.flush() == 46  # before the node waits: whatever the spacing


def test_without_spacing_every_full_batch_goes_and_the_clock_is_not_read() -> None:
    def no_clock() -> float:
        raise AssertionError("the per-item path read the clock")

    batcher = AckBatcher(items=4, clock=no_clock)
    assert [batcher.mark_done(seq) for seq in range(12)] == [None, None, None, 3, None, None, None, 7] + [None] * 3 + [
        11
    ]
    assert ack_spacing(shared_memory=True) == 0.0  # a sender's slots wait for it
    assert ack_spacing(shared_memory=False) == ACK_SPACING_SECONDS
