"""A producer written from docs/PROTOCOL.md alone (pyzmq and msgpack, no flujo import), with one
deliberate fault chosen on the command line, to prove the kit's producer scenarios can fail:

    --no-start      produces at once, without waiting for `start`
    --from-zero     numbers its items from 0 whatever `seq_start` says

Without a fault it passes the kit's "produce and stop" and "producer fan-out and stats"
scenarios. It deals items round robin over each edge's replicas (blocking on a full one).
"""

import json
import os
import sys
import time

import msgpack
import zmq

DATA, EOS = 0, 2
faults = {arg.lstrip("-") for arg in sys.argv[1:]}
config = json.loads(os.environ["FLUJO_NODE_CONFIG"])
node, replica = config["node"], config["replica"]
context = zmq.Context()
commands = context.socket(zmq.SUB)
commands.subscribe(b"")
commands.subscribe(f"hello:{node}.{replica}".encode())
commands.connect(config["control"])
reporter = context.socket(zmq.PUSH)
reporter.connect(config["status"])
edges = []  # (target, target_port, [socket per replica])
for edge in config["outputs"]:
    sockets = []
    for endpoint in edge["endpoints"]:
        sender = context.socket(zmq.PUSH)
        sender.sndhwm = edge["hwm"]
        sender.linger = 0
        sender.reconnect_ivl = 10
        sender.connect(endpoint)
        sockets.append(sender)
    edges.append((edge["target"], edge["target_port"], sockets))
released = set()  # (target, replica, port)
state = {"started": "no-start" in faults, "stopped": False, "last_stats": time.monotonic(), "produced": 0}


def report(kind, payload=None):
    reporter.send(msgpack.packb([kind, node, replica, payload]))


def take_commands(timeout_ms):
    if not commands.poll(timeout_ms):
        return
    while True:
        try:
            topic, payload = commands.recv_multipart(zmq.NOBLOCK)
        except zmq.Again:
            return
        payload = msgpack.unpackb(payload)
        if topic == b"start":
            state["started"] = True
        elif topic == b"stop" and node in payload:
            state["stopped"] = True
        elif topic == b"released":
            released.add((payload[0], payload[1], payload[2]))


def counters():
    return {"items_in": 0, "items_out": state["produced"], "sent": dict(sent), "next_seq": seq}


def report_stats():
    """Every 0.5 s, also while blocked on a full queue."""
    if time.monotonic() - state["last_stats"] >= 0.5:
        state["last_stats"] = time.monotonic()
        report("stats", counters())


def send(target, port, index, socket, frames):
    """Blocks while that reader's queue is full, reading commands meanwhile."""
    while (target, index, port) not in released:
        try:
            socket.send_multipart(frames, zmq.NOBLOCK)
            return
        except zmq.Again:
            take_commands(10)
            report_stats()


report("ready")
while not state["started"] and not state["stopped"]:
    take_commands(100)
seq = 0 if "from-zero" in faults else config["seq_start"]
sent = {f"{target}/{port}": 0 for target, port, _ in edges}
while not state["stopped"]:
    frames = [msgpack.packb([1, DATA, seq, node, replica]), msgpack.packb(seq)]
    for target, port, sockets in edges:
        index = seq % len(sockets)
        send(target, port, index, sockets[index], frames)
        sent[f"{target}/{port}"] += 1
    seq += 1
    state["produced"] += 1
    take_commands(0)
    report_stats()
report("ending")
for target, port, sockets in edges:
    for index, socket in enumerate(sockets):
        send(target, port, index, socket, [msgpack.packb([1, EOS, 0, node, replica])])
report("finished", counters())
while any((target, index, port) not in released for target, port, sockets in edges for index in range(len(sockets))):
    take_commands(100)
    report_stats()
reporter.close(linger=2000)
context.destroy(linger=0)
