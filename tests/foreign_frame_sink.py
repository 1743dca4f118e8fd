"""A consumer in "another language" (pyzmq and msgpack only, no flujo): for every item it
writes [i, extension code of its frame, bytes that arrived for it, first byte] as a JSON line.
It does not declare shared-memory support, so arrays must reach it inline (ext type 1)."""

import json
import os
import sys

import msgpack
import zmq

DATA, EOS, PAUSE = 0, 2, 4
config = json.loads(os.environ["FLUJO_NODE_CONFIG"])
node, replica = config["node"], config["replica"]
context = zmq.Context()
commands = context.socket(zmq.SUB)
commands.subscribe(b"")
commands.subscribe(f"hello:{node}.{replica}".encode())
commands.connect(config["control"])
reporter = context.socket(zmq.PUSH)
reporter.connect(config["status"])
(port,) = config["inputs"]
receiver = context.socket(zmq.PULL)
receiver.bind(port["endpoint"])
reporter.send(msgpack.packb(["ready", node, replica, None]))
ended: set = set()
poller = zmq.Poller()
poller.register(receiver, zmq.POLLIN)
poller.register(commands, zmq.POLLIN)
with open(sys.argv[1], "a") as out:
    while len(ended) < port["senders"]:
        events = dict(poller.poll())
        if commands in events:
            topic, payload = commands.recv_multipart()
            if topic == b"stop" and node in msgpack.unpackb(payload):
                break
        if receiver in events:
            header, *rest = receiver.recv_multipart()
            kind, sender_replica = msgpack.unpackb(header)[1], msgpack.unpackb(header)[4]
            if kind == EOS:
                ended.add(sender_replica)
            elif kind == PAUSE:
                reporter.send(
                    msgpack.packb(
                        ["pause-seen", node, replica, [port["port"], msgpack.unpackb(header)[3], sender_replica]]
                    )
                )
            elif kind == DATA:
                item = msgpack.unpackb(rest[0], ext_hook=lambda code, data: (code, msgpack.unpackb(data)))
                code, meta = item["frame"]
                frame = rest[meta[0] - 1] if code == 1 else b""
                out.write(json.dumps([item["i"], code, len(frame), frame[0] if frame else None]) + "\n")
                out.flush()
reporter.send(msgpack.packb(["released", node, replica, [port["port"]]]))
reporter.send(msgpack.packb(["finished", node, replica, {"items_in": 0, "items_out": 0}]))
reporter.close(linger=2000)
