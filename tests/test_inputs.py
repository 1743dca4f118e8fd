"""An input port (flujo/inputs.py) without a socket, and the socket attached by ``bind``.

Built without a context, a port checks, decodes, restores order and refuses duplicates for frames
handed to ``deliver``; only ``bind(context)`` opens its PULL socket.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import zmq

from flujo.config import InputConfig
from flujo.inputs import InputPort
from flujo.protocol import Codec, MessageKind
from flujo.wire_check import RefusalLog


def port_of(senders: int = 1, endpoint: str = "ipc://unused", lines: list[str] | None = None) -> InputPort:
    config = InputConfig("in", endpoint, 8, "up", "out", senders)
    log = RefusalLog("test", write=(lines if lines is not None else []).append)
    return InputPort(config, Codec("me", 0), senders > 1, lambda port: None, refusals=log)


def frames(seq: int, item: Any, replica: int = 0, sender: str = "up") -> list[Any]:
    return Codec(sender, replica).encode(seq, item)


def test_an_unbound_port_has_no_socket_and_says_so() -> None:
    port = port_of()  # no context: nothing is opened
    with pytest.raises(RuntimeError, match='input port "in" is not bound'):
        port.receive()
    with pytest.raises(RuntimeError, match="not bound"):
        port.socket  # noqa: B018 (the property raises)
    port.close()  # harmless when unbound
    port.close()


def test_deliver_restores_order_across_senders_without_a_socket() -> None:
    port = port_of(senders=2)
    for seq, replica in ((1, 1), (3, 1), (0, 0), (2, 0)):
        assert port.deliver(frames(seq, f"item {seq}", replica))
    assert [(message.seq, message.item) for message in port.ready] == [(n, f"item {n}") for n in range(4)]
    assert port.received == 4 and port.rejected == 0


def test_deliver_refuses_duplicates_and_strangers_counts_and_logs_them() -> None:
    lines: list[str] = []
    port = port_of(lines=lines)
    assert port.deliver(frames(0, "a"))
    assert not port.deliver(frames(0, "a again"))  # a replayed sequence number
    assert not port.deliver(frames(1, "forged", sender="intruder"))  # not this port's upstream node
    assert port.deliver(frames(1, "b"))  # the stream goes on
    assert [message.item for message in port.ready] == ["a", "b"]
    assert port.rejected == 2
    assert port._refusals.counts == {"order": 1, "sender": 1}
    assert len(lines) == 2 and all('port "in"' in line for line in lines)


def test_bind_opens_the_socket_once_and_receives(tmp_path: Path) -> None:
    context = zmq.Context()
    endpoint = f"ipc://{tmp_path / 'in'}"
    port = port_of(endpoint=endpoint)
    sender = context.socket(zmq.PUSH)
    try:
        assert port.bind(context) is port
        with pytest.raises(RuntimeError, match="already bound"):
            port.bind(context)
        sender.connect(endpoint)
        sender.send_multipart(frames(0, {"n": 1}))
        sender.send(Codec("up", 0).header(MessageKind.EOS, 1))
        assert port.receive() and port.receive()
        assert [message.item for message in port.ready] == [{"n": 1}]
        assert port.senders_done
    finally:
        sender.close(linger=0)
        port.close()
        context.destroy(linger=0)


def test_a_failed_bind_leaves_the_port_unbound() -> None:
    context = zmq.Context()
    taken = context.socket(zmq.PULL)
    try:
        taken.bind("tcp://127.0.0.1:*")  # a port chosen at run time, then taken
        port = port_of(endpoint=taken.last_endpoint.decode())
        with pytest.raises(zmq.ZMQError):
            port.bind(context)  # address in use
        with pytest.raises(RuntimeError, match="not bound"):
            port.receive()
        port.close()
    finally:
        taken.close(linger=0)
        context.destroy(linger=0)
