"""An identity processor written from docs/PROTOCOL.md alone (pyzmq and msgpack, no flujo import),
with one deliberate fault chosen on the command line, to prove the conformance kit fails it on
the right clause:

    --ignore-skip   a SKIP in gives nothing out
    --forget-eos    no end of stream on its output
    --ignore-hold   keeps sending to a held reader and never sends it PAUSE
    --early         sends a DATA message before it reports ready
    --exit-early    exits as soon as it has finished, without waiting for its readers' release
    --ack-early     acknowledges each item as it arrives (a processor must wait for its readers'
                    acknowledgements of the results, section 9.2)
    --ack-past      acknowledges each item as seq + 100: past what its sender sent

Without an --ack-* fault it does not acknowledge at all (at most once across a crash, 9.7).

Without a fault it passes the kit's lifecycle, stop and hold-reader scenarios. It assumes one
input port and output edges with one replica each, as those scenarios give it.
"""

import json
import os
import sys

import msgpack
import zmq

DATA, SKIP, EOS, BATCH, PAUSE = 0, 1, 2, 3, 4
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
(port,) = config["inputs"]
receiver = context.socket(zmq.PULL)
receiver.rcvhwm = port["hwm"]
receiver.bind(port["endpoint"])
outputs = []  # [(target, target_port, socket)]
for edge in config["outputs"]:
    (endpoint,) = edge["endpoints"]
    sender = context.socket(zmq.PUSH)
    sender.sndhwm = edge["hwm"]
    sender.linger = 0
    sender.reconnect_ivl = 10
    sender.connect(endpoint)
    outputs.append((edge["target"], edge["target_port"], sender))


acks = []  # one PUSH per sender replica's ack endpoint, with an --ack-* fault
if faults & {"ack-early", "ack-past"}:
    for endpoint in port.get("ack_endpoints", []):
        acks.append(context.socket(zmq.PUSH))
        acks[-1].linger = 0
        acks[-1].connect(endpoint)


def acknowledge(sender_replica, seq):
    if acks:
        seq += 100 if "ack-past" in faults else 0
        acks[sender_replica].send(msgpack.packb([1, "ack", node, replica, port["port"], seq]))


def report(kind, payload=None):
    reporter.send(msgpack.packb([kind, node, replica, payload]))


def header(kind, seq):
    return msgpack.packb([1, kind, seq, node, replica])


held = {}  # target -> generation: a graceful restart of that reader is in progress
resumed = {}  # target -> highest generation resumed (a replayed hold of it is over)
waiting = {}  # target -> messages kept for the held reader's successor
released = set()  # (target, port) that reads no more


def send(target, port_name, socket, frames):
    if target in held and "ignore-hold" not in faults:
        waiting.setdefault(target, []).append(frames)
    else:
        socket.send_multipart(frames)


def emit(frames):
    for target, port_name, socket in outputs:
        if (target, port_name) not in released:
            send(target, port_name, socket, frames)


def apply(topic, payload):
    if topic == b"released":
        released.add((payload[0], payload[2]))
    elif topic == b"stop" and node in payload:
        return True
    elif topic == b"gone" and payload[0] == port["source"]:
        ended.add(payload[1])
    elif topic == b"hold" and "ignore-hold" not in faults:
        target, _index, generation = payload[:3]
        if generation > resumed.get(target, -1) and held.get(target) != generation:
            held[target] = generation
            for name, _port_name, socket in outputs:
                if name == target:
                    socket.send_multipart([header(PAUSE, 0)])
    elif topic == b"resume":
        target, _index, generation = payload[:3]
        resumed[target] = max(generation, resumed.get(target, -1))
        if held.get(target) == generation:
            del held[target]
            for name, _port_name, socket in outputs:
                if name == target:
                    for frames in waiting.pop(target, []):
                        socket.send_multipart(frames)
    return False


def take_command():
    """Apply the next command; True when it stops this node."""
    topic, payload = commands.recv_multipart()
    return apply(topic, msgpack.unpackb(payload))


if "early" in faults:
    emit([header(DATA, 0), msgpack.packb("too early")])
report("ready")
ended = set()
poller = zmq.Poller()
poller.register(receiver, zmq.POLLIN)
poller.register(commands, zmq.POLLIN)
stopped = False
while len(ended) < port["senders"] and not stopped:
    events = dict(poller.poll())
    if commands in events:
        stopped = take_command()
    if receiver in events:
        head, *rest = receiver.recv_multipart()
        version, kind, seq, sender, sender_replica = msgpack.unpackb(head)[:5]
        if kind == EOS:
            ended.add(sender_replica)
        elif kind == DATA:
            emit([header(DATA, seq), *rest])
            acknowledge(sender_replica, seq)
        elif kind == SKIP and "ignore-skip" not in faults:
            emit([header(SKIP, seq)])
        elif kind == BATCH:
            for offset, item in enumerate(msgpack.unpackb(rest[0])):
                emit([header(DATA, seq + offset), msgpack.packb(item)])

report("released", [port["port"]])
report("ending")
# A held reader gets its end of stream from the sender once its successor runs.
while held:
    take_command()
if "forget-eos" not in faults:
    emit([header(EOS, 0)])
report("finished", {"items_in": 0, "items_out": 0})
while "exit-early" not in faults and any((target, port_name) not in released for target, port_name, _ in outputs):
    take_command()
if "exit-early" in faults:  # its items and EOS still go out: only clause 7.3 is to fail
    for _target, _port_name, sender in outputs:
        sender.close(linger=2000)
reporter.close(linger=2000)
context.destroy(linger=0)
