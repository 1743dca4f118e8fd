"""Acknowledgements over real sockets (flujo/ack_channel.py): a reader's cumulative, batched
acknowledgements free its sender's retention; forged ones are refused without freeing anything."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import msgpack
import pytest
import zmq
from conftest import poll_for

from flujo.ack_channel import AckInbox, AckOutbox
from flujo.acks import Retention, ack_frame
from flujo.wire_check import RefusalLog

pytestmark = pytest.mark.timeout(20)


@pytest.fixture
def context() -> Iterator[zmq.Context]:
    context = zmq.Context()
    yield context
    context.destroy(linger=0)


def _inbox(context: zmq.Context, tmp_path: Path, sent: int) -> tuple[AckInbox, Retention, list[str]]:
    retention = Retention(window=1000)
    for seq in range(sent):
        retention.keep(seq, seq, [b"item %d" % seq])
    lines: list[str] = []
    inbox = AckInbox(
        context, f"ipc://{tmp_path}/acks", {("sink", 0, "in"): retention}, RefusalLog("test", write=lines.append)
    )
    return inbox, retention, lines


def test_batched_cumulative_acknowledgements_free_the_senders_retention(context: zmq.Context, tmp_path: Path) -> None:
    inbox, retention, _ = _inbox(context, tmp_path, sent=200)
    outbox = AckOutbox(context, "sink", 0, "in", [f"ipc://{tmp_path}/acks"])
    try:
        for seq in range(200):
            outbox.arrived(0, seq)
        for seq in range(150):
            outbox.done(seq, now=0.0)  # every 64 items: two acknowledgements (63 and 127)
        poll_for(lambda: (inbox.take(), retention.acked)[1] == 127, timeout=10)
        assert retention.items == 200 - 128 and inbox.taken == 2
        outbox.flush()  # before waiting: what is done goes
        poll_for(lambda: (inbox.take(), retention.acked)[1] == 149, timeout=10)
        assert retention.lowest_unacked == 150 and inbox.rejected == 0
    finally:
        outbox.close()
        inbox.close()


def test_a_reader_never_acknowledges_past_what_that_sender_sent(context: zmq.Context, tmp_path: Path) -> None:
    inbox, retention, _ = _inbox(context, tmp_path, sent=10)
    outbox = AckOutbox(context, "sink", 0, "in", [f"ipc://{tmp_path}/acks"])
    try:
        for seq in range(10):
            outbox.arrived(0, seq)
        outbox.done(40, now=0.0)  # items 10..40 came from other senders of the port
        outbox.flush()
        poll_for(lambda: (inbox.take(), retention.acked)[1] == 9, timeout=10)
        assert inbox.rejected == 0 and retention.items == 0
    finally:
        outbox.close()
        inbox.close()


def test_forged_and_malformed_acknowledgements_are_refused_and_free_nothing(
    context: zmq.Context, tmp_path: Path
) -> None:
    inbox, retention, lines = _inbox(context, tmp_path, sent=10)
    stranger = context.socket(zmq.PUSH)
    stranger.linger = 0
    stranger.connect(f"ipc://{tmp_path}/acks")
    try:
        forged = [
            [ack_frame("stranger", 0, "in", 5)],  # not a reader
            [ack_frame("sink", 3, "in", 5)],  # a replica that does not read from here
            [ack_frame("sink", 0, "in", 10)],  # never sent
            [msgpack.packb([1, "ack", "sink", 0, "in", -1])],
            [b"\xc1garbage"],
            [ack_frame("sink", 0, "in", 5), b"extra"],  # two frames
        ]
        for frames in forged:
            stranger.send_multipart(frames)
        stranger.send(ack_frame("sink", 0, "in", 2))  # a good one behind them
        stranger.send(b"x" * 4096)  # over the socket's size limit: dropped by libzmq with its connection
        poll_for(lambda: (inbox.take(), inbox.rejected + inbox.taken)[1] >= 7, timeout=10)
        assert inbox.rejected == 6 and inbox.taken == 1 and lines  # counted, and logged
        assert retention.acked == 2 and retention.items == 7  # only the good one freed anything
    finally:
        stranger.close()
        inbox.close()
