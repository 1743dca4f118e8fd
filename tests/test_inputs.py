"""An input port (flujo/inputs.py) on a real PULL socket made by ``bind_pull``: the real
checks and codec restore order across senders and refuse replays and strangers, counted and logged.
(tests/test_core_ports.py drives the receive path with a scripted codec, without a socket.)
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import zmq

from flujo.config import InputConfig
from flujo.inputs import InputPort, bind_pull
from flujo.protocol import Codec, MessageKind
from flujo.wire_check import RefusalLog

pytestmark = pytest.mark.timeout(10)


@pytest.fixture
def context() -> Iterator[zmq.Context]:
    context = zmq.Context()
    yield context
    context.destroy(linger=0)


def bound(context: zmq.Context, endpoint: str, senders: int = 1, lines: list[str] | None = None) -> InputPort:
    config = InputConfig("in", endpoint, 8, "up", "out", senders)
    log = RefusalLog("test", write=(lines if lines is not None else []).append)
    return InputPort(bind_pull(context, config), config, Codec("me", 0), senders > 1, lambda port: None, refusals=log)


def frames(seq: int, item: Any, replica: int = 0, sender: str = "up") -> list[Any]:
    return Codec(sender, replica).encode(seq, item)


def test_order_is_restored_across_senders(context: zmq.Context, tmp_path: Path) -> None:
    endpoint = f"ipc://{tmp_path / 'in'}"
    port = bound(context, endpoint, senders=2)
    pushes = [context.socket(zmq.PUSH) for _ in range(2)]
    try:
        for push in pushes:
            push.connect(endpoint)
        for seq, replica in ((1, 1), (3, 1), (0, 0), (2, 0)):
            pushes[replica].send_multipart(frames(seq, f"item {seq}", replica))
            assert port.receive()
        assert [(message.seq, message.item) for message in port.ready] == [(n, f"item {n}") for n in range(4)]
        assert port.received == 4 and port.rejected == 0
    finally:
        for push in pushes:
            push.close(linger=0)
        port.close()


def test_replays_and_strangers_are_refused_counted_and_logged(context: zmq.Context, tmp_path: Path) -> None:
    endpoint, lines = f"ipc://{tmp_path / 'in'}", []
    port = bound(context, endpoint, lines=lines)
    push = context.socket(zmq.PUSH)
    try:
        push.connect(endpoint)
        sent = [frames(0, "a"), frames(0, "a again"), frames(1, "forged", sender="intruder"), frames(1, "b")]
        for message in sent:
            push.send_multipart(message)
        push.send(Codec("up", 0).header(MessageKind.EOS, 2))
        assert all(port.receive() for _ in range(5))
        assert [message.item for message in port.ready] == ["a", "b"]  # the stream went on
        assert port.rejected == 2 and port.senders_done
        assert port._refusals.counts == {"order": 1, "sender": 1}
        assert len(lines) == 2 and all('port "in"' in line for line in lines)
    finally:
        push.close(linger=0)
        port.close()


def test_a_taken_endpoint_fails_the_bind(context: zmq.Context) -> None:
    taken = context.socket(zmq.PULL)
    try:
        taken.bind("tcp://127.0.0.1:*")  # a port chosen at run time, then taken
        with pytest.raises(zmq.ZMQError):
            bound(context, taken.last_endpoint.decode())  # address in use: the new socket is closed
    finally:
        taken.close(linger=0)


def test_a_port_credits_every_half_queue_and_not_before_each_wait(context: zmq.Context, tmp_path: Path) -> None:
    """Credits go every ``queue / 2`` items taken, and before the port waits only once ``queue / 2
    - 1`` are uncredited, not each time: at a low rate that was a credit per item, which woke the
    sender while the next node was waking up for the item just sent (section 18). A credit that
    was due and could not go goes before the next wait."""
    from flujo.credit_channel import CreditOutbox
    from flujo.credits import credit_every, parse_credit

    endpoint = f"ipc://{tmp_path / 'in'}"
    port = bound(context, endpoint)  # queue 8: a credit every 4 items, before a wait from 3
    port.socket.rcvtimeo = 20  # a wait that finds nothing ends soon
    senders_credits = context.socket(zmq.PULL)
    senders_credits.bind(f"ipc://{tmp_path / 'credits'}")
    port.credits = CreditOutbox(context, "me", 0, 0, "in", [f"ipc://{tmp_path / 'credits'}"], credit_every(8))
    push = context.socket(zmq.PUSH)
    windows = {("me", 0, "in"): object()}

    def credited() -> list[int]:
        counts = []
        while senders_credits.poll(100):
            counts.append(parse_credit(senders_credits.recv(), windows, 0)[2])
        return counts

    def take(seq: int) -> None:  # without waiting: the item is there
        push.send_multipart(frames(seq, seq))
        assert port.socket.poll(5000) and port.receive(zmq.NOBLOCK)

    try:
        port.credits.flush()  # at the start: the sender learns this process counts from 0
        assert credited() == [0]
        push.connect(endpoint)
        for seq in range(3):
            take(seq)
            assert not port.receive()  # waited, and found nothing
            assert credited() == ([3] if seq == 2 else [])  # 1 and 2 uncredited do not matter
        for seq in range(3, 7):
            take(seq)
        assert credited() == [7]  # every 4 taken
        sockets, port.credits.sockets = port.credits.sockets, [_Full()]
        for seq in range(7, 11):
            take(seq)  # the credit of 11 is due and cannot go
        port.credits.sockets = sockets
        assert credited() == []
        assert not port.receive()  # before it waits, it goes
        assert credited() == [11]
    finally:
        push.close(linger=0)
        senders_credits.close(linger=0)
        port.close()


class _Full:
    """A credit socket with no room."""

    def send(self, frame: bytes, flags: int = 0) -> None:
        raise zmq.Again()


def test_shared_memory_releases_go_when_due_while_the_port_waits(context: zmq.Context, tmp_path: Path) -> None:
    """A reader's releases wait RELEASE_DELAY_S; a port about to block sends them once they are
    due if nothing came meanwhile, instead of after the next item (when the owner's wake-up
    competed with the next node's). An item already there is taken first."""
    import os

    import numpy as np

    from flujo.shm import SharedMemoryReader, SlotPool

    run, owner_endpoint = f"t{os.getpid()}", f"ipc://{tmp_path / 'owner'}"
    owner = SlotPool(context, run, "up", 0, owner_endpoint, 4)
    reader = SharedMemoryReader(context, run, "me", 0, {"up"}, {"up.0": owner_endpoint})
    endpoint = f"ipc://{tmp_path / 'in'}"
    port = bound(context, endpoint)
    port.accept_shared_memory(reader)
    push = context.socket(zmq.PUSH)
    try:
        push.connect(endpoint)
        frame = owner.frame_buffer(1 << 17, np.uint8)
        owner.start_message()
        descriptor = owner.pack(frame)
        assert descriptor is not None
        owner.dealt(owner.take_packed(), ("me", 0))
        reader.view(descriptor.data, ("up", 0))  # dropped at once: its release is pending
        push.send_multipart(frames(0, "here already"))
        assert port.socket.poll(5000)
        assert port.receive() and reader.pending  # the item first; the release is not due yet
        assert not port.receive()  # nothing more came: the release went when due, within the wait
        assert not reader.pending and owner.release_socket.poll(1000)
        owner.collect_releases()
        assert owner.held == 0
    finally:
        push.close(linger=0)
        port.close()
        reader.close()
        owner.close()
    assert not [name for name in os.listdir("/dev/shm") if name.startswith(f"flujo.{run}.")]
