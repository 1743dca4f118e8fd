"""A consumer written from docs/PROTOCOL.md alone, with pyzmq and msgpack but no flujo import.

It shows what a node in any ZeroMQ-capable language does: read the JSON configuration,
bind the input, subscribe to control, report ready, read until every sender's end of
stream (confirming the pause marker of a sender being restarted), report released and
finished, exit 0.
"""

import json
import os

import msgpack
import zmq

DATA, SKIP, EOS, BATCH, PAUSE = 0, 1, 2, 3, 4

config = json.loads(os.environ["FLUJO_NODE_CONFIG"])
node, replica = config["node"], config["replica"]
context = zmq.Context()

commands = context.socket(zmq.SUB)  # launcher -> nodes
commands.subscribe(b"")
commands.subscribe(f"hello:{node}.{replica}".encode())
commands.connect(config["control"])
reporter = context.socket(zmq.PUSH)  # nodes -> launcher
reporter.connect(config["status"])


def report(kind, payload=None):
    reporter.send(msgpack.packb([kind, node, replica, payload]))


(port,) = config["inputs"]  # this sink has one input port
receiver = context.socket(zmq.PULL)
receiver.rcvhwm = port["hwm"]
receiver.bind(port["endpoint"])
report("ready")

ended = set()  # upstream replicas whose stream has ended
poller = zmq.Poller()
poller.register(receiver, zmq.POLLIN)
poller.register(commands, zmq.POLLIN)
count = 0
while len(ended) < port["senders"]:
    events = dict(poller.poll())
    if commands in events:
        topic, payload = commands.recv_multipart()
        if topic == b"gone" and msgpack.unpackb(payload)[0] == port["source"]:
            ended.add(msgpack.unpackb(payload)[1])  # a sender died: count it as ended
        if topic == b"stop" and node in msgpack.unpackb(payload):
            break
    if receiver in events:
        header, *rest = receiver.recv_multipart()
        version, kind, seq, sender, sender_replica = msgpack.unpackb(header)[:5]
        if kind == EOS:
            ended.add(sender_replica)
        elif kind == DATA:
            count += 1
            print(f"#{seq}: {msgpack.unpackb(rest[0])}", flush=True)
        elif kind == BATCH:  # several items, numbered on from seq
            for offset, item in enumerate(msgpack.unpackb(rest[0])):
                count += 1
                print(f"#{seq + offset}: {item}", flush=True)
        elif kind == PAUSE:  # a sender is being restarted: confirm, so it may exit
            report("pause-seen", [port["port"], sender, sender_replica])

report("released", [port["port"]])
report("finished", {"items_in": count, "items_out": 0})
reporter.close(linger=2000)
commands.close()
receiver.close(linger=0)
context.term()
