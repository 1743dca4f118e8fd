"""Order restoring on an input port: exact without losses, never stalled by a loss."""

from __future__ import annotations

import pytest
from conftest import FlowRunner
from flow_nodes import read_lines

from flujo.config import InputConfig
from flujo.port_queue import PortQueue
from flujo.protocol import Message, MessageKind


@pytest.fixture
def port() -> PortQueue:
    """A port's queue with two senders, without a socket (flujo/port_queue.py)."""
    config = InputConfig(port="in", endpoint="ipc://unused", hwm=10, source="up", source_port="out", senders=2)
    ended: list[PortQueue] = []
    port = PortQueue(config, reorder=True, on_ended=ended.append)
    port.ended_calls = ended  # type: ignore[attr-defined]
    return port


def feed(port: PortQueue, *messages: tuple[int, int]) -> list[int]:
    """Give the port (sender replica, seq) data messages; return the sequence numbers now ready."""
    for replica, seq in messages:
        port.accept(Message(MessageKind.DATA, seq, "up", replica, seq))
    ready = [message.seq for message in port.ready]
    port.ready.clear()
    return ready


def test_interleaved_senders_come_out_in_order(port: PortQueue) -> None:
    assert feed(port, (1, 1), (1, 3)) == []  # 0 and 2 still to come from sender 0
    assert feed(port, (0, 0)) == [0, 1]
    assert feed(port, (0, 2), (0, 4)) == [2, 3, 4]


def test_a_lost_item_does_not_stall_the_stream(port: PortQueue) -> None:
    assert feed(port, (0, 0), (1, 2)) == [0]  # 1 may still come from sender 0
    assert feed(port, (0, 3)) == [2, 3]  # both senders are past 1: it was lost
    assert feed(port, (0, 1)) == [] and port.late == 1  # too late to keep the order


def test_an_ended_sender_releases_what_waited_for_it(port: PortQueue) -> None:
    assert feed(port, (1, 1), (1, 2)) == []
    port.sender_ended(0)
    assert feed(port) == [1, 2] and port.ended_calls == []  # type: ignore[attr-defined]
    port.sender_ended(1)
    assert port.ended_calls == [port]  # type: ignore[attr-defined]


def test_replicated_node_feeding_a_replicated_node_keeps_order(flow: FlowRunner) -> None:
    out = flow.path("out.jsonl")
    manifest = flow.manifest(
        f"""
        [nodes.numbers]
        run = "flujo.nodes.basic:Count"
        args = {{ n = 400 }}
        [nodes.first]
        run = "{{nodes}}:jitter"
        inputs = ["numbers"]
        replicas = 2
        [nodes.second]
        run = "{{nodes}}:square"
        inputs = ["first"]
        replicas = 2
        [nodes.sink]
        run = "{{nodes}}:Collect"
        inputs = ["second"]
        args = {{ path = "{out}" }}
    """,
        flow="queue = 4",
    )
    result = flow.run(manifest)
    assert result.returncode == 0, result.stderr
    assert read_lines(out) == [n * n for n in range(400)]


def test_a_batch_counts_as_that_many_items_in_order(port: PortQueue) -> None:
    port.accept(Message(MessageKind.BATCH, 1, "up", 1, ["b", "c", "d"]))
    assert [m.seq for m in port.ready] == []  # 0 may still come from sender 0
    port.accept(Message(MessageKind.DATA, 0, "up", 0, "a"))
    assert [(m.kind, m.seq, m.item) for m in port.ready] == [
        (MessageKind.DATA, seq, item) for seq, item in enumerate("abcd")
    ]


def pause(port: PortQueue, replica: int) -> None:
    port.accept(Message(MessageKind.PAUSE, 0, "up", replica))


def test_a_paused_sender_is_past_nothing_not_yet_delivered(port: PortQueue) -> None:
    # Sender 1 drains and pauses after 5: its successor may send 2 next, so the gap at 2 is
    # not given up on although sender 1 once sent something past it.
    assert feed(port, (0, 0), (1, 1), (1, 5)) == [0, 1]
    pause(port, 1)
    assert feed(port, (0, 3), (0, 4)) == []  # without the pause, 2 would count as lost here
    assert feed(port, (1, 2)) == [2, 3, 4, 5]  # the successor's first item fills the gap
    assert port.late == 0


def test_a_draining_port_is_quiet_once_every_sender_paused_or_ended(port: PortQueue) -> None:
    assert feed(port, (1, 1), (1, 3)) == []  # waiting for 0 and 2 from sender 0
    pause(port, 0)
    assert not port.quiet
    port.sender_ended(1)
    assert port.quiet
    port.take_held()  # the replica drains: what waited for a gap goes, in order
    assert [message.seq for message in port.ready] == [1, 3]


def test_a_sender_that_sends_again_is_no_longer_paused(port: PortQueue) -> None:
    pause(port, 0)
    pause(port, 1)
    assert port.quiet
    feed(port, (0, 0))
    assert not port.quiet
