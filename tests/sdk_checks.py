"""Checks the C and the JavaScript node libraries must both pass, run against either."""

from __future__ import annotations

import contextlib
import json
import socket as socket_module
import subprocess
from collections.abc import Sequence

import msgpack
import zmq


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
    config = {
        "protocol": 1,
        "flow": "secure",
        "node": "work",
        "replica": 0,
        "replicas": 1,
        "kind": "processor",
        "control": f"tcp://127.0.0.1:{ports[0]}",
        "status": f"tcp://127.0.0.1:{ports[1]}",
        "curve": {"public": public.decode(), "secret": secret.decode()},
        "inputs": [
            {"port": "in", "endpoint": endpoint, "hwm": 100, "source": "up", "source_port": "out", "senders": 1}
        ],
        "outputs": [
            {
                "port": "out",
                "target": "down",
                "target_port": "in",
                "hwm": 100,
                "endpoints": [f"tcp://127.0.0.1:{ports[2]}"],
            }
        ],
    }
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
