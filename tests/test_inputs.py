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
