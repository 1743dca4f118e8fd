"""The merge numbering log on disk (PROTOCOL 9.5): a successor numbers replayed inputs as
its predecessor did, whatever their new arrival order; no sockets, milliseconds."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from test_core_ports import EOS, ScriptedPort, View, data, drain, marker

from flujo.joins import Join
from flujo.merge_log import ENTRY_SIZE, MergeLog, decode, encode_entry, encode_header
from flujo.merge_replay import ReplayAction, replay_action
from flujo.protocol import Message
from flujo.vocab import Join as JoinMode

pytestmark = pytest.mark.timeout(10)

PORTS = ["a", "b"]


def crash(log: MergeLog) -> None:
    """A SIGKILL: what was flushed stays in the page cache, the write buffer is lost."""
    log._file.close()


def test_a_successor_numbers_the_replay_as_logged_and_goes_on(tmp_path: Path) -> None:
    path = tmp_path / "merge.0.log"
    merge = MergeLog(path, PORTS)
    arrivals = [("a", 0), ("b", 0), ("a", 1), ("b", 1), ("b", 2), ("a", 2)]
    assert [merge.number(*arrival) for arrival in arrivals] == [0, 1, 2, 3, 4, 5]
    merge.flush()  # outputs 0-5 go out after this
    assert merge.acknowledge(2) == {"a": 1, "b": 0}
    merge.record("a", 1)  # acknowledged upstream (b 0 not yet: its acknowledgement was not due)
    crash(merge)

    successor = MergeLog(path, PORTS)
    assert successor.refused is None
    # Another interleaving: the same numbers, none dropped, new inputs go on after the log's
    # end. b 0's output (1) was acknowledged downstream, not recorded: it gets 1 again (the
    # reader drops it); a 0 and a 1 were recorded as acknowledged upstream: not waited for.
    assert successor.numbering.replaying and successor.numbering.next_logged() == ("b", 0)
    replay = [("b", 0), ("b", 1), ("b", 2), ("a", 2), ("a", 3), ("b", 3)]
    assert [successor.number(*arrival) for arrival in replay] == [1, 3, 4, 5, 6, 7]
    assert not successor.numbering.replaying
    successor.flush()
    crash(successor)

    third = MergeLog(path, PORTS)  # a second crash: the successor's own numbers are kept too
    replay = [("a", 3), ("a", 2), ("b", 3), ("b", 1), ("b", 2)]
    assert [third.number(*arrival) for arrival in sorted(replay, key=lambda r: (r[0], r[1]))] == [5, 6, 3, 4, 7]
    assert third.acknowledge(7) == {"a": 3, "b": 3}


def test_numbers_not_flushed_were_never_sent_and_are_given_anew(tmp_path: Path) -> None:
    path = tmp_path / "merge.log"
    merge = MergeLog(path, PORTS)
    merge.number("a", 0)
    merge.flush()
    merge.number("a", 1)  # numbered, crashed before its batch was flushed and sent
    crash(merge)
    successor = MergeLog(path, PORTS)
    assert successor.number("b", 0) == 1 and successor.number("a", 0) == 0 and successor.number("a", 1) == 2


def test_a_torn_or_damaged_tail_ends_the_log_there(tmp_path: Path) -> None:
    data = encode_header(2, 0, [-1, -1]) + encode_entry(0, 0, 0) + encode_entry(1, 1, 0)
    torn = decode(data + encode_entry(2, 0, 1)[:7], 2)
    assert [e[0] for e in torn.entries] == [0, 1] and torn.discarded_bytes == 7
    flipped = bytearray(data)
    flipped[-ENTRY_SIZE] ^= 0xFF
    assert [e[0] for e in decode(bytes(flipped), 2).entries] == [0]
    bad_port = decode(data + encode_entry(2, 5, 0), 2)  # a port this merge does not have
    assert len(bad_port.entries) == 2
    backwards = decode(data + encode_entry(1, 0, 1), 2)  # outputs are logged in order
    assert len(backwards.entries) == 2


def test_a_log_of_another_merge_is_refused_and_the_successor_starts_afresh(tmp_path: Path) -> None:
    path = tmp_path / "merge.log"
    path.write_bytes(encode_header(3, 9, [1, 2, 3]))
    merge = MergeLog(path, PORTS)
    assert merge.refused is not None and "3 ports, this merge has 2" in merge.refused
    assert merge.number("a", 0) == 0
    path.write_bytes(b"garbage")
    assert "shorter than its header" in (MergeLog(path, PORTS).refused or "")


def test_the_file_is_rewritten_once_its_acknowledged_part_grows(tmp_path: Path) -> None:
    path = tmp_path / "merge.log"
    merge = MergeLog(path, PORTS, rotate_after=100)
    header = len(encode_header(2, 0, [-1, -1]))
    for seq in range(1000):
        merge.number(PORTS[seq % 2], seq // 2)
        merge.flush()
        acked = merge.acknowledge(seq - 10)  # ten in flight below the merge
        if seq % 16 == 0:  # acknowledged upstream now and then (batched), recorded first
            for port, through in acked.items():
                merge.record(port, through)  # type: ignore[arg-type]
    # Entries in flight, and acknowledgement records since the last rewrite (one per port a batch).
    assert path.stat().st_size <= header + (110 + 2 * 110 // 16 + 2) * ENTRY_SIZE
    crash(merge)
    successor = MergeLog(path, PORTS)
    assert successor.number("a", 444) is None  # acknowledged at the last rewrite: done
    assert successor.number("a", 490) is None  # acknowledged upstream since, and recorded: done
    assert successor.number("a", 494) == 988  # acknowledged downstream only: as logged, the reader drops it
    assert successor.number("a", 495) == 990 and successor.number("b", 499) == 999
    assert successor.number("a", 500) == 1000


def test_cost_per_merged_item_is_small(tmp_path: Path) -> None:
    """Not a benchmark, a bound: number + flush per item + acknowledge stays far below an item's
    wire cost (measured about 2-3 us per item on the CI machine, see PROTOCOL 9.5)."""
    merge = MergeLog(tmp_path / "merge.log", PORTS)
    n = 20_000
    start = time.perf_counter()
    for seq in range(n):
        merge.number(PORTS[seq & 1], seq >> 1)
        if seq % 16 == 15:
            merge.flush()
            merge.acknowledge(seq - 64)
    per_item = (time.perf_counter() - start) / n
    assert per_item < 100e-6


# -- a successor's replay, in logged order (flujo/merge_replay.py, flujo/joins.py) -------------


@pytest.mark.parametrize(
    ("head", "ended", "expected"),
    [
        (None, False, ReplayAction.WAIT),  # it may still come
        (None, True, ReplayAction.GIVE_UP),  # the port ended: it will not
        (7, False, ReplayAction.TAKE),
        (9, False, ReplayAction.GIVE_UP),  # its senders went past it (freed at a hand-over, overflowed)
        (3, False, ReplayAction.DONE),  # done downstream: acknowledged again, no more
        (5, False, ReplayAction.DEFER),  # never numbered, below a logged one: after the replay
    ],
)
def test_what_a_successor_does_with_a_port_head_while_it_replays(
    head: int | None, ended: bool, expected: ReplayAction
) -> None:
    assert replay_action(7, head, ended, acked_through=4) is expected
    # A port whose senders do not replay (not a lossless edge): nothing is waited for.
    assert replay_action(7, head, ended, acked_through=4, replays=False) is ReplayAction.GIVE_UP


def _predecessor(path: Path, arrivals: list[tuple[str, int]], acked: int = -1) -> None:
    merge = MergeLog(path, PORTS)
    for arrival in arrivals:
        merge.number(*arrival)
    merge.flush()
    for port, through in merge.acknowledge(acked).items():
        merge.record(port, through)  # type: ignore[arg-type]
    crash(merge)


class Outbox:
    """A lossless port's acknowledgements (flujo/ack_channel.py), of which these tests need none."""

    def arrived(self, sender: int, seq: int) -> None:
        pass


def _successor(path: Path, a: list[Message], b: list[Message]) -> tuple[Join, ScriptedPort, ScriptedPort]:
    left, right = ScriptedPort("a", a), ScriptedPort("b", b)
    left.outbox = right.outbox = Outbox()  # lossless ports: their senders replay
    join = Join([left, right], JoinMode.MERGE, View())
    join.numbering = MergeLog(path, PORTS)
    return join, left, right


def test_a_successor_emits_logged_outputs_in_logged_order_whatever_order_the_replays_come_in(tmp_path: Path) -> None:
    path = tmp_path / "merge.log"
    _predecessor(path, [("a", 0), ("b", 0), ("a", 1), ("b", 1), ("b", 2)], acked=0)  # a 0 done
    # b's replay comes first, a's not yet: emitting b 0 (logged 1) now and a 1 (logged 2)
    # later would make its reader drop 2. It waits for a.
    join, left, right = _successor(path, [], [data(0, "b0"), data(1, "b1"), data(2, "b2"), data(3, "b3")])
    assert drain(join) == [(1, "b", ["b0"]), "wait"]
    assert join.waiting_on == [left]
    left.inbox = [data(0, "a0"), data(1, "a1"), data(2, "a2"), marker(EOS)]  # a 0: done already
    right.inbox.append(marker(EOS))
    steps = drain(join)
    assert steps[:3] == [(2, "a", ["a1"]), (3, "b", ["b1"]), (4, "b", ["b2"])]  # as logged, in order
    # then new inputs, numbered on from the log's end
    assert [step[0] for step in steps[3:5]] == [5, 6] and {step[2][0] for step in steps[3:5]} == {"a2", "b3"}
    assert steps[5:] == ["end"]


def test_a_logged_input_that_will_not_come_again_is_given_up_not_waited_for(tmp_path: Path) -> None:
    path = tmp_path / "merge.log"
    _predecessor(path, [("a", 0), ("b", 0), ("a", 1), ("b", 1)])
    # a's sender went past a 0 and a 1 (a hand-over freed them, or its retention overflowed);
    # b ended after replaying b 0 only.
    join, _, _ = _successor(path, [data(4, "a4"), marker(EOS)], [data(0, "b0"), marker(EOS)])
    assert drain(join) == [(1, "b", ["b0"]), (4, "a", ["a4"]), "end"]


def test_an_input_never_numbered_below_a_logged_one_goes_after_the_replay(tmp_path: Path) -> None:
    path = tmp_path / "merge.log"
    _predecessor(path, [("a", 1), ("b", 0)])  # a 0 was a gap the predecessor gave up on
    join, _, _ = _successor(path, [data(0, "a0"), data(1, "a1"), marker(EOS)], [data(0, "b0"), marker(EOS)])
    assert drain(join) == [(0, "a", ["a1"]), (1, "b", ["b0"]), (2, "a", ["a0"]), "end"]


def test_a_port_that_does_not_replay_is_not_waited_for(tmp_path: Path) -> None:
    path = tmp_path / "merge.log"
    _predecessor(path, [("a", 0), ("b", 0), ("a", 1)])
    join, left, _ = _successor(path, [], [data(0, "b0")])
    left.outbox = None  # a's sender does not acknowledge (a node in another language): at most once
    assert drain(join) == [(1, "b", ["b0"]), "wait"]
    assert not join.numbering.replaying  # a 0 and a 1 given up, not waited for: new input is


def test_after_a_graceful_hand_over_the_successor_waits_for_nothing(tmp_path: Path) -> None:
    path = tmp_path / "merge.log"
    merge = MergeLog(path, PORTS)
    for arrival in [("a", 0), ("b", 0), ("a", 1)]:
        merge.number(*arrival)
    merge.flush()
    merge.hand_over()  # its senders freed everything it took at their pause markers
    merge.close()
    successor = MergeLog(path, PORTS)
    assert not successor.numbering.replaying
    assert successor.number("b", 1) == 3  # numbers go on from the log's end
