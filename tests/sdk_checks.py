"""Checks the C and the JavaScript node libraries must both pass, run against either.

Each takes the node to check (a command line, or a manifest node) and asserts what every Flujo
node library must do; tests/test_sdk_c.py and tests/test_sdk_js.py each call them with their own
language's nodes, so a failure names the language in the test's name.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket as socket_module
import subprocess
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import msgpack
import zmq
from conftest import FlowRunner, poll_for
from flow_nodes import line_count, read_lines
from manifests import Node, collect, count, node, nodes_toml, pipeline
from netns import Host
from restarting import gated, restart_mid_stream
from test_hosts import Agent
from test_hosts import _body as hosts_body


def processor_config(
    flow: str, control: str, status: str, input_endpoint: str, output_endpoint: str, hwm: int = 100, **fields: object
) -> dict[str, Any]:
    """The FLUJO_NODE_CONFIG of processor "work" (replica 0 of 1), reading port "in" from "up"
    and sending port "out" to "down": what the launcher would give it, for driving it by hand."""
    return {
        "protocol": 1,
        "flow": flow,
        "node": "work",
        "replica": 0,
        "replicas": 1,
        "kind": "processor",
        "control": control,
        "status": status,
        **fields,
        "inputs": [
            {
                "port": "in",
                "endpoint": input_endpoint,
                "hwm": hwm,
                "source": "up",
                "source_port": "out",
                "senders": 1,
            }
        ],
        "outputs": [{"port": "out", "target": "down", "target_port": "in", "hwm": hwm, "endpoints": [output_endpoint]}],
    }


def passes_the_conformance_kit(kind: str, command: Sequence[str], args: dict[str, object]) -> None:
    """``python -m flujo.conformance`` drives the node (a ``kind``) up to the restartable level."""
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "flujo.conformance",
            "--level",
            "restartable",
            "--kind",
            kind,
            "--args",
            json.dumps(args),
            "--",
            *command,
        ],
        capture_output=True,
        text=True,
        timeout=280,
    )
    failed = [line for line in done.stdout.splitlines() if line.startswith("FAIL")]
    assert done.returncode == 0 and not failed, done.stdout[-3000:] + done.stderr[-2000:]
    assert "Level reached: restartable" in done.stdout


def admits_only_the_flow_key(command: Sequence[str], env: dict[str, str]) -> None:
    """Over tcp the node's input takes only CURVE clients presenting the flow key: a plain
    client and one with another key never get an item in. ``command`` runs an identity
    processor; ``env`` is its environment, to which the configuration is added."""
    public, secret = zmq.curve_keypair()
    context = zmq.Context()
    ports = []

    def server(kind: int) -> zmq.Socket:  # the launcher's side: CURVE servers with the flow key
        socket = context.socket(kind)
        socket.curve_server, socket.curve_secretkey = True, secret
        ports.append(socket.bind_to_random_port("tcp://127.0.0.1"))
        return socket

    control, status, reader = server(zmq.XPUB), server(zmq.PULL), server(zmq.PULL)
    with socket_module.socket() as probe:  # a free port for the node's input
        probe.bind(("127.0.0.1", 0))
        input_port = probe.getsockname()[1]
    endpoint = f"tcp://127.0.0.1:{input_port}"
    config = processor_config(
        "secure",
        control=f"tcp://127.0.0.1:{ports[0]}",
        status=f"tcp://127.0.0.1:{ports[1]}",
        input_endpoint=endpoint,
        output_endpoint=f"tcp://127.0.0.1:{ports[2]}",
        curve={"public": public.decode(), "secret": secret.decode()},
    )
    process = subprocess.Popen(command, env={**env, "FLUJO_NODE_CONFIG": json.dumps(config)})
    try:
        assert status.poll(10_000) and msgpack.unpackb(status.recv())[0] == "ready"

        def sender(keys: tuple[bytes, bytes] | None) -> zmq.Socket:
            socket = context.socket(zmq.PUSH)
            socket.linger = 0
            if keys:
                socket.curve_serverkey, (socket.curve_publickey, socket.curve_secretkey) = public, keys
            socket.connect(endpoint)
            return socket

        forged = msgpack.packb([1, 0, 0, "up", 0]), msgpack.packb("forged")
        for intruder in (sender(None), sender(zmq.curve_keypair())):
            with contextlib.suppress(zmq.Again):  # no handshake, no pipe: nothing could even be queued
                intruder.send_multipart(forged, zmq.NOBLOCK)
        member = sender((public, secret))
        member.send_multipart([msgpack.packb([1, 0, 0, "up", 0]), msgpack.packb("good")])
        member.send_multipart([msgpack.packb([1, 2, 0, "up", 0])])
        assert reader.poll(10_000)
        assert msgpack.unpackb(reader.recv_multipart()[1]) == "good"
        assert reader.poll(10_000)
        assert msgpack.unpackb(reader.recv_multipart()[0])[1] == 2  # EOS next: nothing forged came through
        control.send_multipart([b"released", msgpack.packb(["down", 0, "in"])])
        assert process.wait(timeout=10) == 0
    finally:
        process.kill()
        process.wait()
        context.destroy(linger=0)


def _header(kind: int, seq: int, version: int = 1) -> bytes:
    return msgpack.packb([version, kind, seq, "up", 0])


def _array_ref(frame: int, dtype: str, shape: list[int]) -> msgpack.ExtType:
    return msgpack.ExtType(1, msgpack.packb([frame, dtype, shape]))


FORGED: dict[str, list[bytes]] = {
    "not msgpack": [b"\xc1"],
    "a header too short": [msgpack.packb([1, 0])],
    "another protocol version": [_header(0, 0, version=2), msgpack.packb(1)],
    "an unknown kind": [_header(9, 0), msgpack.packb(1)],
    "DATA without a body": [_header(0, 0)],
    "a body that is not msgpack": [_header(0, 0), b"\xc1"],
    "no frame 5": [_header(0, 0), msgpack.packb(_array_ref(5, "<i4", [3])), bytes(12)],
    "16 bytes announced, 12 sent": [_header(0, 0), msgpack.packb(_array_ref(2, "<i4", [4])), bytes(12)],
    "dtype <q9: no such kind nor size": [_header(0, 0), msgpack.packb(_array_ref(2, "<q9", [3])), bytes(12)],
    "dtype <q4: no such kind": [_header(0, 0), msgpack.packb(_array_ref(2, "<q4", [3])), bytes(12)],
    "a sender replica that does not exist": [msgpack.packb([1, 0, 0, "up", 7]), msgpack.packb(1)],
    "a node that does not feed this port": [msgpack.packb([1, 0, 0, "elsewhere", 0]), msgpack.packb(1)],
    "an array in a BATCH": [_header(3, 0), msgpack.packb([1, _array_ref(2, "<i4", [3])]), bytes(12)],
    "a BATCH whose body is not a list": [_header(3, 0), msgpack.packb(5)],
}
"""Messages every node must refuse on an input fed by replica 0 of node "up", by what is wrong
with them: malformed headers, bodies and array references, and senders that do not feed the port."""


def refuses_forged_messages(
    tmp_path: Path, command: Sequence[str], env: dict[str, str], refusal: str, forgeries: Iterable[str] = FORGED
) -> None:
    """The identity processor run by ``command`` refuses and counts each of the ``forgeries``
    (names of FORGED messages), never hands one on, and still passes the good item sent after
    them (its array whole) and the end of stream. ``refusal`` is the text its log writes once a
    refused message."""
    forged = [FORGED[name] for name in forgeries]

    def endpoint(name: str) -> str:
        return f"ipc://{tmp_path}/{name}"

    context = zmq.Context()
    control, status = context.socket(zmq.XPUB), context.socket(zmq.PULL)
    control.bind(endpoint("control"))
    status.bind(endpoint("status"))
    reader = context.socket(zmq.PULL)
    reader.bind(endpoint("reader"))
    config = processor_config(
        "forged", endpoint("control"), endpoint("status"), endpoint("in"), endpoint("reader"), generation=0
    )
    config["outputs"][0]["aligned"] = False
    process = subprocess.Popen(
        command, env={**env, "FLUJO_NODE_CONFIG": json.dumps(config)}, stderr=subprocess.PIPE, text=True
    )
    try:

        def report() -> list:
            assert status.poll(10_000), "no report from the node"
            return msgpack.unpackb(status.recv())

        assert report()[0] == "ready"
        sender = context.socket(zmq.PUSH)
        sender.connect(endpoint("in"))
        for frames in forged:
            sender.send_multipart(frames)
        good = msgpack.packb({"a": _array_ref(2, "<i4", [3])})
        sender.send_multipart([_header(0, 0), good, (7).to_bytes(4, "little") * 3])
        sender.send_multipart([_header(2, 0)])  # end of stream
        assert reader.poll(10_000)
        first = reader.recv_multipart()
        head = msgpack.unpackb(first[0])
        assert head[:3] == [1, 0, 0] and head[3:5] == ["work", 0]
        assert msgpack.unpackb(first[1]) == {"a": _array_ref(2, "<i4", [3])}, "not the good item: a forged one?"
        assert first[2] == (7).to_bytes(4, "little") * 3  # the array went back whole
        assert reader.poll(10_000)
        assert msgpack.unpackb(reader.recv_multipart()[0])[1] == 2  # then EOS: the forged ones never came out
        reports = {}
        while "finished" not in reports:
            kind, _, _, payload = report()
            reports[kind] = payload
        assert reports["released"] == ["in"]
        assert reports["finished"]["refused"] == len(forged)
        assert reports["finished"]["items_in"] == 1 and reports["finished"]["sent"] == {"down/in": 1}
        control.send_multipart([b"released", msgpack.packb(["down", 0, "in"])])
        assert process.wait(timeout=10) == 0
        assert process.communicate(timeout=10)[1].count(refusal) == len(forged)
    finally:
        process.kill()
        process.wait()
        context.destroy(linger=0)


def drops_rather_than_waits(flow: FlowRunner, sender: Node, reader: Node, out: str) -> None:
    """``reader`` (writing what it takes to ``out``) reads "drop-oldest" behind ``sender``, an
    identity processor: the sender never blocks (an item finding the queue full is dropped,
    counted) and the reader drops its oldest waiting items. What arrives is in order and never
    twice, and the flow ends cleanly."""
    n = 3000
    reader = {**reader, "policy": "drop-oldest", "queue": 2}
    result = flow.run(flow.manifest(pipeline(numbers=count(n), work=sender, sink=reader)), timeout=60)
    assert result.returncode == 0, result.stderr
    values = read_lines(out)
    assert values == sorted(set(values)) and set(values) <= set(range(n)) and values


def restarts_by_policy_after_a_kill(flow: FlowRunner, victim: str, identity: Node, sink: Node, out: str) -> int:
    """SIGKILL ``victim`` ("work.1", the second of two ``identity`` replicas, or "sink", writing
    to ``out``), both restarted on failure. At most once across a crash: the items queued in the
    killed process may be lost, but nothing comes twice or out of order, and the stream reaches
    its end. Returns how many items were lost."""
    n = 1500
    nodes = pipeline(
        numbers=node("{nodes}:Paced", args={"n": n, "pause": 0.001}),
        work={**identity, "replicas": 2, "restart": "on-failure"},
        sink={**sink, "restart": "on-failure"},
    )
    launcher = flow.start(flow.manifest(nodes, flow="queue = 4"))
    poll_for(lambda: line_count(out) >= 300, timeout=30)
    pid = flow.replicas()[victim]["pid"]
    os.kill(pid, signal.SIGKILL)
    poll_for(lambda: flow.replicas().get(victim, {}).get("restarts") == 1, timeout=20)
    _, stderr = launcher.communicate(timeout=60)
    assert launcher.returncode == 0, stderr
    assert f'node "{victim}" exited with status -9; restarting' in stderr
    values = read_lines(out)
    assert values == sorted(set(values)) and values[-1] == n - 1
    return n - len(values)


def restart_on_another_host(
    flow: FlowRunner, hosts: tuple[Host, Host], agent: Agent, work: Node, n: int, out: str
) -> list[Any]:
    """Host B runs two replicas of ``work`` through its agent, between a gated Count of ``n`` and
    a Collect into ``out`` on host A: a secure tcp flow (CURVE with the flow key, the node's ZAP
    handler admitting its Python senders), ``work`` restarted gracefully mid-stream. Returns
    what the sink wrote."""
    nodes = pipeline(numbers=gated(n, 0.0005), work={**work, "replicas": 2, "host": "b"}, sink=collect("work", out))
    body = hosts_body(hosts, nodes_toml(nodes), agent.key.public.decode())
    values, _, _ = restart_mid_stream(flow, body, "work", out, on=hosts[0])
    return values
