"""An output edge over in-process sockets: batching while the reader is busy, pause markers
offered while another edge waits (never blocking, behind what was batched). Milliseconds."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import zmq

from flujo.config import OutputConfig
from flujo.holds import Holds
from flujo.outputs import OutputEdge
from flujo.protocol import Codec, MessageKind
from flujo.wire_check import DataCheck


@pytest.fixture
def context() -> Iterator[zmq.Context]:
    context = zmq.Context()
    yield context
    context.destroy(linger=0)


def reader(context: zmq.Context, name: str) -> zmq.Socket:
    socket = context.socket(zmq.PULL)
    socket.rcvhwm = 1
    socket.bind(f"inproc://{name}")
    return socket


def received(socket: zmq.Socket) -> list[tuple[MessageKind, int, int]]:
    """(kind, seq, items) of every message waiting on the reader."""
    codec, check, got = Codec("me", 0), DataCheck("me", 1), []
    while socket.poll(50):
        message = codec.receive(socket, check)
        got.append((message.kind, message.seq, len(message.item) if message.kind is MessageKind.BATCH else 1))
    return got


def edge(context: zmq.Context, name: str, holds: Holds, aligned: bool = False) -> OutputEdge:
    config = OutputConfig(
        port="out", target="down", target_port="in", endpoints=(f"inproc://{name}",), hwm=1, aligned=aligned
    )
    return OutputEdge(context, config, lambda node, port, replica: False, Codec("me", 0), holds)


def fill(out: OutputEdge, codec: Codec, count: int) -> None:
    for seq in range(count):
        out.deal(codec.encode(seq, {"i": seq}), seq, batchable=True)


@pytest.mark.timeout(10)
def test_small_items_wait_in_a_batch_while_the_reader_is_busy(context: zmq.Context) -> None:
    socket, codec = reader(context, "a"), Codec("me", 0)
    out = edge(context, "a", Holds())
    fill(out, codec, 10)
    assert out.batch is not None and out.sent < 10  # the pipe is full: the rest waits in a batch
    got = received(socket)
    out.flush()
    got += received(socket)
    assert sum(items for _, _, items in got) == 10 and out.sent == 10
    assert [seq for _, seq, _ in got] == sorted(seq for _, seq, _ in got)


@pytest.mark.timeout(10)
def test_a_pause_offered_while_another_edge_waits_never_blocks_and_follows_the_batch(context: zmq.Context) -> None:
    socket, codec, holds = reader(context, "b"), Codec("me", 0), Holds()
    out = edge(context, "b", holds, aligned=True)
    fill(out, codec, 10)
    batched = out.batch
    assert batched is not None
    holds.hold(("down", 0), 1)
    holds.align(("down", 0), 1, 9)  # everything sent or batched is within the limit
    assert out.pauses.pause_due(0) == 1
    while not out.offer_pauses():  # the reader is full: nothing may block, the pause stays due
        assert out.pauses.pause_due(0) == 1
        received(socket)  # the reader takes what is queued; the offer is made again
    assert out.pauses.pause_due(0) is None and out.batch is None
    got = received(socket)
    assert got[-1][0] is MessageKind.PAUSE  # behind the batch
    assert out.sent == 10
