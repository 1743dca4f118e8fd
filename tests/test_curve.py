"""CURVE on tcp: flow members talk, strangers are refused, and nothing crosses the wire in clear."""

from __future__ import annotations

import contextlib
import socket
import threading
import uuid
from pathlib import Path

import pytest
import zmq
from conftest import FlowRunner
from flow_nodes import read_lines

from flujo.curve import FlowContext, KeyPair, is_public_key
from flujo.launch.fork_client import SWITCH


def test_key_pairs_round_trip_through_a_configuration_and_bad_ones_are_refused() -> None:
    keys = KeyPair.generate()
    assert KeyPair.from_config(keys.to_config()) == keys
    assert KeyPair.from_config(None) is None
    assert is_public_key(keys.public.decode()) and not is_public_key("~" * 40) and not is_public_key("short")
    other = KeyPair.generate()
    for bad, reason in [
        ({"public": keys.public.decode()}, "public and a secret"),
        ({"public": "~" * 40, "secret": keys.secret.decode()}, "40 characters"),
        ({"public": other.public.decode(), "secret": keys.secret.decode()}, "does not belong"),
    ]:
        with pytest.raises(ValueError, match=reason):
            KeyPair.from_config(bad)


def _pull_on_tcp(context: zmq.Context) -> tuple[zmq.Socket, str]:
    reader = context.socket(zmq.PULL)
    reader.linger = 0
    port = reader.bind_to_random_port("tcp://127.0.0.1")
    return reader, f"tcp://127.0.0.1:{port}"


def test_members_talk_and_strangers_are_refused_and_counted() -> None:
    keys = KeyPair.generate()
    member_context, stranger_context = FlowContext(keys), zmq.Context()
    try:
        reader, endpoint = _pull_on_tcp(member_context)
        # A stranger that knows the server's public key but holds another key pair, and a plain peer.
        wrong = stranger_context.socket(zmq.PUSH)
        impostor = KeyPair.generate()
        wrong.curve_secretkey, wrong.curve_publickey = impostor.secret, impostor.public
        wrong.curve_serverkey = keys.public
        plain = stranger_context.socket(zmq.PUSH)
        for peer, text in ((wrong, b"forged"), (plain, b"plain")):
            peer.linger = 0
            peer.connect(endpoint)
            _offer(peer, text)  # may find no pipe if the handshake already failed
        member = member_context.socket(zmq.PUSH)
        member.linger = 0
        member.connect(endpoint)
        member.send(b"legitimate")
        assert reader.poll(5000) and reader.recv() == b"legitimate"
        assert member.mechanism == zmq.CURVE and reader.curve_server
        assert not reader.poll(500)  # neither the forged nor the plain message ever arrives
        assert member_context.gatekeeper.refused >= 1  # the wrong key was seen and refused by ZAP
    finally:
        stranger_context.destroy(linger=0)
        member_context.destroy(linger=0)


def test_ipc_and_keyless_contexts_stay_plain(tmp_path) -> None:
    context = FlowContext(KeyPair.generate())
    plain_context = FlowContext(None)
    try:
        ipc = context.socket(zmq.PULL)
        ipc.bind(f"ipc://{tmp_path / 'socket'}")
        tcp = plain_context.socket(zmq.PULL)
        tcp.bind_to_random_port("tcp://127.0.0.1")
        assert ipc.mechanism == zmq.NULL and tcp.mechanism == zmq.NULL
    finally:
        context.destroy(linger=0)
        plain_context.destroy(linger=0)


class LoopbackCapture:
    """Every byte crossing the loopback interface while it runs (a raw packet socket: root only)."""

    def __init__(self) -> None:
        self._socket = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.ntohs(0x0003))
        self._socket.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16 * 1024 * 1024)  # busy machines: drop nothing
        self._socket.bind(("lo", 0))
        self._socket.settimeout(0.2)
        self.data = bytearray()
        self._running = True
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        while self._running:
            try:
                self.data += self._socket.recv(65536)
            except TimeoutError:
                continue

    def stop(self) -> bytes:
        self._running = False
        self._thread.join()
        self._socket.close()
        return bytes(self.data)


def _tagged_flow(flow: FlowRunner, extra: str) -> tuple:
    """A tcp flow whose items carry a marker of this test's own: the capture sees every flow on
    the loopback interface (other tests', running alongside), and only this one may carry it."""
    out, marker = flow.path("out.jsonl"), f"plaintext-marker-{uuid.uuid4().hex}"
    manifest = flow.manifest(
        f"""
        [nodes.words]
        run = "{{nodes}}:Tagged"
        args = {{ tag = "{marker}", n = 200 }}
        [nodes.sink]
        run = "{{nodes}}:Collect"
        inputs = ["words"]
        args = {{ path = "{out}" }}
    """,
        flow=f'transport = "tcp"\n{extra}',
    )
    return manifest, out, marker.encode()


@pytest.mark.timeout(60)
@pytest.mark.parametrize("insecure", [False, True])
def test_a_tcp_flow_shows_no_item_in_clear_on_the_wire(flow: FlowRunner, insecure: bool) -> None:
    manifest, out, marker = _tagged_flow(flow, "insecure = true" if insecure else "")
    capture = LoopbackCapture()
    try:
        result = flow.run(manifest)
    finally:
        wire = capture.stop()
    assert result.returncode == 0, result.stderr
    assert len(read_lines(out)) == 200
    assert len(wire) > 20_000  # the capture saw the flow's traffic
    if insecure:
        # The same capture reads the items when the flow opts out: the check above can fail.
        assert marker in wire
        assert "insecure = true" in result.stderr and "neither encrypted nor authenticated" in result.stderr
    else:
        assert marker not in wire
        assert "warning" not in result.stderr


def _node_configs(flow: FlowRunner) -> list[dict]:
    import json

    from conftest import flow_processes

    configs = []
    for process in flow_processes(flow.name):
        text = process.environ().get("FLUJO_NODE_CONFIG")
        if text:
            configs.append(json.loads(text))
    return configs


def _offer(socket: zmq.Socket, frame: bytes) -> None:
    """Send `frame` if the socket has a pipe to queue it on; a refused stranger has none."""
    with contextlib.suppress(zmq.Again):
        socket.send(frame, zmq.NOBLOCK)


@pytest.mark.timeout(60)
@pytest.mark.parametrize("insecure", [False, True])
def test_strangers_reach_no_socket_of_a_running_tcp_flow(flow: FlowRunner, insecure: bool) -> None:
    """Forged EOS into a data port, a forged error report into the status channel, and a
    listener on the control channel: with the wrong key or none, none of it gets anywhere.
    (The insecure run shows the same attacks do land without CURVE.)"""
    import msgpack
    from conftest import poll_for
    from flow_nodes import line_count

    out, gate, n = flow.path("out.jsonl"), Path(flow.path("gate")), 2000
    manifest = flow.manifest(
        f"""
        [nodes.numbers]
        run = "{{nodes}}:Gated"
        args = {{ n = {n}, gate = "{gate}", pause = 0.0002 }}
        [nodes.sink]
        run = "{{nodes}}:Collect"
        inputs = ["numbers"]
        args = {{ path = "{out}" }}
    """,
        flow='transport = "tcp"' + ("\ninsecure = true" if insecure else ""),
    )
    flow.env[SWITCH] = "0"  # no fork server: the sink's configuration shows in its /proc/PID/environ
    launcher = flow.start(manifest)
    poll_for(lambda: line_count(out) >= 100, timeout=30)
    sink = next(config for config in _node_configs(flow) if config["node"] == "sink")
    public = KeyPair.generate().public if insecure else KeyPair.from_config(sink["curve"]).public
    context = zmq.Context()
    try:
        impostor = KeyPair.generate()
        listeners = []
        for keyed in (False, True):
            data, status, control = (context.socket(kind) for kind in (zmq.PUSH, zmq.PUSH, zmq.SUB))
            for peer in (data, status, control):
                peer.linger = 0
                if keyed and not insecure:  # knows the flow's public key, but not its secret
                    peer.curve_secretkey, peer.curve_publickey = impostor.secret, impostor.public
                    peer.curve_serverkey = public
            control.subscribe(b"")
            data.connect(sink["inputs"][0]["endpoint"])
            status.connect(sink["status"])
            control.connect(sink["control"])
            # An EOS that would end the stream, and a forged failure. Without a noblock send a
            # stranger whose handshake failed blocks here: the refused pipe is gone, nothing queues.
            _offer(data, msgpack.packb([1, 2, 0, "numbers", 0]))
            _offer(status, msgpack.packb(["error", "sink", 0, {"message": "forged failure"}]))
            listeners.append(control)
        gate.touch()  # the stream may end: its last commands (released, gone) are published
        _, stderr = launcher.communicate(timeout=30)
        overheard = sum(1 for control in listeners if control.poll(100))
    finally:
        context.destroy(linger=0)
    items = read_lines(out)
    landed = launcher.returncode != 0 or "forged failure" in stderr or len(items) < n or overheard
    if insecure:
        assert landed, "without CURVE, at least one of the attacks should have landed"
    else:
        assert launcher.returncode == 0, stderr
        assert "forged failure" not in stderr
        assert items == list(range(n))  # not cut short by the forged EOS
        assert overheard == 0  # the flow's commands never reached the strangers
