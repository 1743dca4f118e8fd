"""An input port's queue and the joins, without sockets (flujo/port_queue.py, flujo/joins.py).

A scripted port stands in for the socket: each receive takes the next message of its inbox.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, cast

import pytest
import zmq

from flujo.config import InputConfig
from flujo.inputs import InputPort
from flujo.joins import SKIP, WAIT, Drained, Join, Step
from flujo.port_queue import PortQueue
from flujo.protocol import NOBLOCK, Codec, Message, MessageKind
from flujo.vocab import Join as JoinMode
from flujo.vocab import QueuePolicy
from flujo.wire_check import ProtocolError, RefusalLog

DATA, SKIPPED, EOS, PAUSE, BATCH = (
    MessageKind.DATA,
    MessageKind.SKIP,
    MessageKind.EOS,
    MessageKind.PAUSE,
    MessageKind.BATCH,
)


def config(name: str = "in", senders: int = 1, hwm: int = 10, policy: str = QueuePolicy.BLOCK) -> InputConfig:
    return InputConfig(
        port=name, endpoint="ipc://unused", hwm=hwm, source="up", source_port="out", senders=senders, policy=policy
    )


class ScriptedPort(PortQueue):
    """A port whose source is a list of messages; it records how it was asked to receive."""

    def __init__(self, name: str = "in", inbox: list[Message] | None = None, senders: int = 1, **options: Any) -> None:
        super().__init__(config(name, senders, **options), reorder=senders > 1)
        self.inbox = list(inbox or [])
        self.receives: list[str] = []
        self.socket = name

    def receive(self, flags: int = 0) -> bool:
        self.receives.append("noblock" if flags & NOBLOCK else "block")
        if not self.inbox:
            return False
        self.accept(self.inbox.pop(0))
        return True


def data(seq: int, item: Any = None, replica: int = 0) -> Message:
    return Message(DATA, seq, "up", replica, seq if item is None else item)


def marker(kind: MessageKind, replica: int = 0, seq: int = 0) -> Message:
    return Message(kind, seq, "up", replica)


# -- drop policies ----------------------------------------------------------------------------
# policy, hwm 3, items 0..5 arrive before any is taken -> kept, dropped
POLICIES = [
    (QueuePolicy.BLOCK, [0, 1, 2, 3, 4, 5], 0),
    (QueuePolicy.DROP_NEWEST, [0, 1, 2], 3),
    (QueuePolicy.DROP_OLDEST, [3, 4, 5], 3),
]


@pytest.mark.parametrize(("policy", "kept", "dropped"), POLICIES)
def test_drop_policies(policy: QueuePolicy, kept: list[int], dropped: int) -> None:
    port = PortQueue(config(hwm=3, policy=policy), reorder=False)
    for seq in range(6):
        port.accept(data(seq))
    assert [message.seq for message in port.ready] == kept
    assert (port.dropped, port.received, port.realtime) == (dropped, 6, policy != QueuePolicy.BLOCK)


def test_a_realtime_port_takes_what_arrived_when_refreshed_and_a_blocking_one_does_not() -> None:
    for policy, taken in ((QueuePolicy.DROP_NEWEST, 3), (QueuePolicy.BLOCK, 0)):
        port = ScriptedPort(inbox=[data(0), data(1), data(2)], policy=policy)
        port.refresh()
        assert len(port.ready) == taken


# -- order, ends and pauses ----------------------------------------------------------------------
def test_one_sender_is_in_order_already() -> None:
    port = PortQueue(config(), reorder=False)
    for seq in (0, 2, 1):  # never happens from one sender; the queue does not reorder it
        port.accept(data(seq))
    assert [message.seq for message in port.ready] == [0, 2, 1]
    assert port.complete_through(0)


def test_a_late_item_behind_a_gap_given_up_on_is_counted_not_delivered() -> None:
    port = PortQueue(config(senders=2), reorder=True)
    for replica, seq in ((0, 1), (1, 2)):  # both senders are past 0: it is lost
        port.accept(data(seq, replica=replica))
    port.accept(data(0, replica=0))
    assert [message.seq for message in port.ready] == [1, 2]
    assert port.late == 1


def test_complete_through_sees_held_items_and_gaps() -> None:
    port = PortQueue(config(senders=2), reorder=True)
    port.accept(data(0, replica=0))
    port.accept(data(2, replica=1))
    assert port.complete_through(0) and not port.complete_through(1) and not port.complete_through(2)


def test_ends_are_told_once_and_exhaust_the_port() -> None:
    ended: list[PortQueue] = []
    port = PortQueue(config(senders=2), reorder=True, on_ended=ended.append)
    port.accept(data(0, replica=0))
    port.accept(marker(EOS, replica=0))
    port.accept(marker(EOS, replica=0))  # a second end from the same sender counts once
    assert not port.senders_done and ended == []
    port.sender_ended(1)  # the launcher says it died
    assert port.senders_done and ended == [port] and not port.exhausted
    port.ready.clear()
    assert port.exhausted


def test_pause_markers_are_confirmed_and_make_the_port_quiet() -> None:
    seen: list[tuple[str, int]] = []
    port = PortQueue(config(senders=1), reorder=False, on_paused=lambda p, m: seen.append((p.name, m.replica)))
    port.accept(marker(PAUSE))
    assert port.quiet and seen == [("in", 0)]
    port.accept(data(0))  # its successor sends: no longer paused
    assert not port.quiet


def test_a_batch_is_that_many_items() -> None:
    port = PortQueue(config(), reorder=False)
    port.accept(Message(BATCH, 4, "up", 0, ["a", "b"]))
    assert [(m.seq, m.item) for m in port.ready] == [(4, "a"), (5, "b")] and port.received == 2


# -- joins ---------------------------------------------------------------------------------------
@dataclass
class View:
    """The node as a join sees it (flujo/joins.py, JoinView)."""

    holding_output: bool = False
    draining: bool = False
    drain_limit: int | None = None


def drain(join: Join, limit: int = 20) -> list[Any]:
    """Every step until the end (None), a WAIT or Drained, as a list of results."""
    steps: list[Any] = []
    for _ in range(limit):
        try:
            step = join.next()
        except Drained:
            steps.append("drained")
            return steps
        if step is None or step is WAIT:
            steps.append("end" if step is None else "wait")
            return steps
        seq, port, items = cast(Step, step)
        steps.append((seq, port, "skip" if items is SKIP else items))
    return steps


def test_one_port_gives_every_item_then_ends() -> None:
    port = ScriptedPort(inbox=[data(0, "a"), Message(SKIPPED, 1, "up", 0), data(2, "c"), marker(EOS)])
    assert drain(Join([port], JoinMode.ZIP, View())) == [(0, "in", ["a"]), (1, "in", "skip"), (2, "in", ["c"]), "end"]


def test_one_port_waits_when_its_blocking_receive_times_out() -> None:
    port = ScriptedPort(inbox=[data(0)])
    join = Join([port], JoinMode.MERGE, View())
    assert drain(join) == [(0, "in", [0]), "wait"]
    assert join.waiting_on == [port] and port.receives == ["block", "block"]
    port.inbox = [data(1)]
    assert drain(join)[0] == (1, "in", [1])  # asked again after the wait: goes on


def test_a_node_holding_output_never_blocks_in_a_receive() -> None:
    port = ScriptedPort(inbox=[data(0)])
    join = Join([port], JoinMode.ZIP, View(holding_output=True))
    assert drain(join) == [(0, "in", [0]), "wait"]
    assert port.receives == ["noblock", "noblock"]  # the loop flushes its batch before it waits


def test_zip_pairs_by_sequence_number_and_drops_what_has_no_partner() -> None:
    left = ScriptedPort("a", [data(0, "a0"), data(1, "a1"), data(2, "a2"), marker(EOS)])
    right = ScriptedPort("b", [data(0, "b0"), data(2, "b2"), Message(SKIPPED, 3, "up", 0), marker(EOS)])
    left.inbox.insert(3, data(3, "a3"))
    assert drain(Join([left, right], JoinMode.ZIP, View())) == [
        (0, None, ["a0", "b0"]),
        (2, None, ["a2", "b2"]),
        (3, None, "skip"),
        "end",
    ]


def test_zip_waits_on_the_port_it_lacks_and_takes_a_queue_at_most_from_the_others() -> None:
    left, right = ScriptedPort("a", [data(seq) for seq in range(5)], hwm=3), ScriptedPort("b", [])
    join = Join([left, right], JoinMode.ZIP, View())
    assert drain(join) == ["wait"]
    # A queue's worth taken (no more than its socket would hold), none waiting for more of it.
    assert join.waiting_on == [right] and left.buffered == 3 and len(left.inbox) == 2
    assert left.receives == ["block", "noblock", "noblock"]  # the head blocking, the rest never


def test_zip_ends_when_any_port_ends() -> None:
    left, right = ScriptedPort("a", [data(0), data(1)]), ScriptedPort("b", [data(0), marker(EOS)])
    assert drain(Join([left, right], JoinMode.ZIP, View())) == [(0, None, [0, 0]), "end"]


def test_merge_takes_ports_in_turn_renumbers_and_ends_when_all_end() -> None:
    left = ScriptedPort("a", [data(0, "a0"), data(1, "a1"), marker(EOS)])
    right = ScriptedPort("b", [data(5, "b5"), Message(SKIPPED, 6, "up", 0), marker(EOS)])
    join = Join([left, right], JoinMode.MERGE, View())
    steps = drain(join)
    assert steps[-1] == "end"
    assert [step[0] for step in steps[:-1]] == [0, 1, 2]  # the merged stream numbers its own items
    assert sorted(step[2][0] for step in steps[:-1]) == ["a0", "a1", "b5"]
    assert [step[1] for step in steps[:2]] == ["a", "b"]  # fair: one port after the other


def test_merge_waits_on_every_port_still_open() -> None:
    left, right = ScriptedPort("a", [marker(EOS)]), ScriptedPort("b", [])
    join = Join([left, right], JoinMode.MERGE, View())
    assert drain(join) == ["wait"]
    assert join.waiting_on == [right]


# draining: port contents, view -> result of the join
DRAINS = [
    ("not draining: waits", [data(0), marker(PAUSE)], View(), [(0, "in", [0]), "wait"]),
    (
        "draining, sender paused: drained after the items",
        [data(0), marker(PAUSE)],
        View(draining=True),
        [(0, "in", [0]), "drained"],
    ),
    ("draining, sender not paused: waits", [data(0)], View(draining=True), [(0, "in", [0]), "wait"]),
    (
        "draining, sender ended: the end, not a drain",
        [data(0), marker(EOS)],
        View(draining=True),
        [(0, "in", [0]), "end"],
    ),
]


@pytest.mark.parametrize(("name", "inbox", "view", "steps"), DRAINS, ids=[row[0] for row in DRAINS])
def test_a_single_port_drains(name: str, inbox: list[Message], view: View, steps: list[Any]) -> None:
    assert drain(Join([ScriptedPort(inbox=inbox)], JoinMode.ZIP, view)) == steps


def test_a_draining_port_delivers_what_waited_for_a_gap_then_drains() -> None:
    port = ScriptedPort(inbox=[data(1, replica=1), marker(PAUSE, replica=0), marker(PAUSE, replica=1)], senders=2)
    assert drain(Join([port], JoinMode.ZIP, View(draining=True))) == [(1, "in", [1]), "drained"]


# zip draining: a sender of one port may pause late; the agreed limit decides
ZIP_DRAINS = [
    ("no limit, nobody paused: waits", None, [data(0)], [data(0)], [(0, None, [0, 0]), "wait"]),
    ("limit reached on a port: drained", 0, [data(0)], [data(0)], [(0, None, [0, 0]), "drained"]),
    ("limit not reached: waits", 1, [data(0)], [data(0)], [(0, None, [0, 0]), "wait"]),
    ("one port paused: drained", None, [data(0), marker(PAUSE)], [data(0), data(1)], [(0, None, [0, 0]), "drained"]),
]


@pytest.mark.parametrize(("name", "limit", "left", "right", "steps"), ZIP_DRAINS, ids=[r[0] for r in ZIP_DRAINS])
def test_a_zip_drains(
    name: str, limit: int | None, left: list[Message], right: list[Message], steps: list[Any]
) -> None:
    join = Join(
        [ScriptedPort("a", left), ScriptedPort("b", right)], JoinMode.ZIP, View(draining=True, drain_limit=limit)
    )
    assert drain(join) == steps


def test_merge_drains_once_every_port_is_quiet_or_exhausted() -> None:
    left = ScriptedPort("a", [data(0), marker(EOS)])
    right = ScriptedPort("b", [data(0), marker(PAUSE)])
    steps = drain(Join([left, right], JoinMode.MERGE, View(draining=True)))
    assert steps[-1] == "drained" and len(steps) == 3
    still = ScriptedPort("c", [data(0)])
    assert drain(Join([ScriptedPort("a", [marker(EOS)]), still], JoinMode.MERGE, View(draining=True)))[-1] == "wait"


def test_a_bare_queue_has_no_source() -> None:
    port = PortQueue(config(), reorder=False)
    assert not port.receive() and not port.receive_available()


def test_an_item_sent_twice_while_held_is_kept_once() -> None:
    port = PortQueue(config(senders=2), reorder=True)
    port.accept(data(2, replica=1))
    port.accept(data(2, replica=1))  # (a duplicate; a sender never does this, the queue copes)
    port.accept(data(0, replica=0))
    port.accept(data(1, replica=0))
    assert [message.seq for message in port.ready] == [0, 1, 2]


def test_a_realtime_port_gives_what_it_took_without_receiving_again() -> None:
    port = ScriptedPort(inbox=[data(0), data(1)], policy=QueuePolicy.DROP_NEWEST)
    assert drain(Join([port], JoinMode.ZIP, View()))[:2] == [(0, "in", [0]), (1, "in", [1])]
    assert port.receives[:3] == ["noblock", "noblock", "noblock"]  # all taken by the first refresh


def test_a_draining_merge_delivers_what_waited_for_a_gap_before_it_waits() -> None:
    gap = ScriptedPort("a", [data(1, replica=1), marker(PAUSE, replica=0), marker(PAUSE, replica=1)], senders=2)
    gap.receive_available()
    open_port = ScriptedPort("b", [])
    assert drain(Join([gap, open_port], JoinMode.MERGE, View(draining=True))) == [(0, "a", [1]), "wait"]


# -- the input port in front of the queue, with its socket and codec scripted ----------------
class ScriptedCodec:
    """Stands in for the codec's receive: each call takes the next message, refusal or Again."""

    def __init__(self, script: list[Message | ProtocolError | type[zmq.Again]]) -> None:
        self.script = script

    def receive(self, socket: object, check: object, flags: int = 0) -> Message:
        step = self.script.pop(0)
        if isinstance(step, Message):
            return step
        raise step() if step is zmq.Again else step  # type: ignore[misc]


def test_an_input_port_queues_what_its_codec_accepts_and_counts_what_it_refuses() -> None:
    lines: list[str] = []
    refused = ProtocolError("seq", "sequence number went back", "up.0")
    codec = ScriptedCodec([data(0), refused, zmq.Again, data(1)])
    port = InputPort(
        cast(zmq.Socket, None),
        config(),
        cast(Codec, codec),
        False,
        lambda p: None,
        refusals=RefusalLog("", lines.append),
    )
    assert [port.receive(), port.receive(), port.receive(), port.receive()] == [True, True, False, True]
    assert [message.item for message in port.ready] == [0, 1]  # the refused message never reaches the queue
    assert port.rejected == 1 and port.received == 2
    assert len(lines) == 1 and "sequence number went back" in lines[0] and 'port "in"' in lines[0]


@pytest.mark.parametrize(("residue", "arrivals"), [(0, [(0, 0), (2, 1), (6, 0), (4, 1)]), (1, [(3, 1), (1, 0)])])
def test_a_replica_dealt_by_number_waits_only_for_its_own_numbers(residue: int, arrivals: list) -> None:
    # Lossless edges into two replicas deal item s to replica s % 2: replica 0 gets the even
    # numbers, from either sender, and waits for no odd one (it would wait for ever).
    port = ScriptedPort(senders=2)
    port.dealt_by_number(residue, 2)
    for seq, sender in arrivals:
        port.accept(data(seq, replica=sender))
    assert [message.seq for message in port.ready] == sorted(seq for seq, _ in arrivals)


def test_a_new_reader_process_takes_nothing_from_a_sender_before_its_replay() -> None:
    port = ScriptedPort(senders=2)
    port.await_replays()
    port.accept(data(7, replica=0))  # sent to the process this one replaces: its replay brings it again
    port.accept(marker(MessageKind.REPLAY, replica=0))
    port.accept(data(5, replica=0))
    port.accept(data(6, replica=0))
    port.sender_ended(1)  # gone: no replay will come from it
    port.accept(marker(MessageKind.REPLAY, replica=0))  # a sender's successor announcing itself: ignored
    port.accept(data(7, replica=0))
    assert [message.seq for message in port.ready] == [5, 6, 7] and port.stale == 1


class Outbox:
    """A lossless port's acknowledgement side, as far as the queue uses it."""

    def arrived(self, replica: int, seq: int) -> None:
        pass


def lossless_port(name: str, inbox: list[Message], senders: int = 1) -> ScriptedPort:
    port = ScriptedPort(name, inbox, senders)
    port.outbox = Outbox()
    port.await_replays()  # a successor
    return port


def test_a_replay_marker_says_what_the_predecessor_passed_on_and_it_is_dropped_when_it_comes() -> None:
    port = lossless_port("in", [])
    for message in [data(3), marker(MessageKind.REPLAY, seq=5), data(4), data(5), data(6)]:
        port.accept(message)
    assert [message.seq for message in port.ready] == [5, 6]
    assert port.stale == 1 and port.duplicates == 1


def test_a_zip_successor_drains_the_stale_side_while_it_waits_for_the_other() -> None:
    # After kills, one input's sender (a) had everything through 9 acknowledged, while the
    # other's (b) replays from 4: the predecessor passed 4..9 on already. Waiting for a's next
    # item, the zip takes b's stale items as they come (dropped): b's sender, stuck behind
    # them, may be what a's next item waits for, upstream.
    a = lossless_port("a", [marker(MessageKind.REPLAY, seq=10)])
    b = lossless_port("b", [marker(MessageKind.REPLAY), *[data(seq) for seq in range(4, 10)]])
    join = Join([a, b], JoinMode.ZIP, View())
    assert drain(join) == ["wait"]
    assert b.inbox == [] and b.duplicates == 6 and join.waiting_on == [a, b]
    a.inbox, b.inbox = [data(10, "a10"), marker(EOS)], [data(10, "b10"), data(11, "b11")]
    assert drain(join) == [(10, None, ["a10", "b10"]), "end"]
    assert [message.seq for message in b.inbox] == [11]  # read for a head, no further


def test_a_zip_drops_stale_items_waiting_behind_a_head_so_their_sender_gets_credits() -> None:
    # Port a has two senders: replica 1's REPLAY says everything before 10 was passed on, and
    # its item 10 is a's head; replica 0, restarted, replays 4, 6, 8 behind it. Waiting for b,
    # the zip must take those (dropped): unread, they got replica 0 no credit, replica 0 held
    # up the producer both inputs share, and b's next item never came (a chaos run stalled so).
    a = lossless_port(
        "a",
        [
            marker(MessageKind.REPLAY, replica=1, seq=10),
            data(10, "a10", replica=1),
            marker(MessageKind.REPLAY, replica=0, seq=4),
            *[data(seq, replica=0) for seq in (4, 6, 8)],
        ],
        senders=2,
    )
    b = lossless_port("b", [marker(MessageKind.REPLAY, seq=4)])
    join = Join([a, b], JoinMode.ZIP, View())
    assert drain(join) == ["wait"]
    assert a.inbox == [] and a.duplicates == 3 and [message.seq for message in a.ready] == [10]
    b.inbox = [*[data(seq) for seq in range(4, 10)], data(10, "b10")]
    assert drain(join) == [(10, None, ["a10", "b10"]), "wait"]
    assert b.duplicates == 6


def test_a_replay_marker_drops_nothing_on_a_port_that_is_not_lossless() -> None:
    # Only a lossless port's senders replay; elsewhere a REPLAY (forged, or from a confused
    # sender) must not make the port drop the items that follow as done already.
    port = ScriptedPort(senders=2)
    for message in [marker(MessageKind.REPLAY, seq=50), data(0), data(1, replica=1), data(2)]:
        port.accept(message)
    assert [message.seq for message in port.ready] == [0, 1, 2] and port.late == 0
