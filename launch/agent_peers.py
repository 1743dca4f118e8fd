"""What an agent keeps of the launchers it serves, and how its watcher threads reach them: each
served launcher with its processes, the outbox through which those threads send (zmq sockets are
not thread-safe, so everything goes through the loop's thread), node output lines forwarded to
their launcher, and the free ports an agent offers for inputs bound on its host."""

from __future__ import annotations

import random
import socket
import threading
from dataclasses import dataclass, field

import zmq

from flujo.launch.agent_wire import AgentReply, pack
from flujo.launch.process import NodeProcess

#: Where watcher threads hand messages to the agent's loop.
INBOX = "inproc://agent-inbox"
#: A node's output line longer than this (characters) is cut before it goes to the launcher.
MAX_LINE = 64 * 1024


@dataclass
class ServedLauncher:
    """One launcher this agent serves: its identity on the ROUTER, and its processes."""

    identity: bytes
    flow: str
    heard: float
    timeout: float  # silent this long, it is gone: its processes would be orphans
    lifeline: str | None = None  # the token of its lifeline: when that connection closes, it died
    processes: dict[int, NodeProcess] = field(default_factory=dict)  # token -> process
    ending: bool = False


class Outbox:
    """Lets watcher threads hand messages to the loop's thread (zmq sockets are not thread-safe)."""

    def __init__(self, context: zmq.Context) -> None:
        self._socket = context.socket(zmq.PUSH)
        self._socket.connect(INBOX)
        self._lock = threading.Lock()

    def send(self, identity: bytes, message: bytes) -> None:
        with self._lock:
            self._socket.send_multipart([identity, message])

    def close(self) -> None:
        self._socket.close(linger=0)


class LineForwarder:
    """Stands in for the launcher's OutputRelay: each output line goes to the launcher."""

    def __init__(self, outbox: Outbox, identity: bytes) -> None:
        self._outbox, self._identity = outbox, identity

    def line(self, label: str, text: str) -> None:
        if len(text) > MAX_LINE:  # every message must fit the launcher's frame limit
            text = text[:MAX_LINE] + f" [... {len(text) - MAX_LINE} more characters]"
        self._outbox.send(self._identity, pack(AgentReply.LINE, {"label": label, "text": text}))


def forward_all(inbox: zmq.Socket, router: zmq.Socket) -> None:
    """Send on everything the watcher threads queued (output lines come in bursts)."""
    while True:
        try:
            router.send_multipart(inbox.recv_multipart(zmq.NOBLOCK))
        except zmq.Again:
            return


#: Below the kernel's ephemeral range, above Ray's worker ports (10002-19999 by default): a
#: port found free here stays free until the node binds it. One taken from port 0 is in the
#: ephemeral range, where any outgoing connection (Ray's gRPC makes many) may take it first.
PORT_FLOOR = 20000
#: Linux's default ephemeral range starts here; /proc says what this machine uses.
EPHEMERAL_RANGE = "/proc/sys/net/ipv4/ip_local_port_range"


def assignable_ports() -> range:
    """The ports free_ports chooses from: PORT_FLOOR up to the kernel's ephemeral range."""
    try:
        with open(EPHEMERAL_RANGE) as text:
            first_ephemeral = int(text.read().split()[0])
    except (OSError, ValueError, IndexError):
        first_ephemeral = 32768
    if first_ephemeral - PORT_FLOOR < 1000:  # an unusual kernel setting: use what is above it
        return range(61000, 65536)
    return range(PORT_FLOOR, first_ephemeral)


def free_ports(address: str, count: int, chance: random.Random | None = None) -> list[int]:
    """Ports free on ``address`` right now, all different (held open until all are found),
    chosen at random outside the kernel's ephemeral range (see PORT_FLOOR)."""
    chance = chance or random.SystemRandom()
    candidates = assignable_ports()
    probes: list[socket.socket] = []
    try:
        tries = 50 * count + 50  # taken ports are skipped; a range that full is an error
        while len(probes) < count:
            tries -= 1
            if tries < 0:
                raise OSError(f"no {count} free ports on {address} in {candidates.start}-{candidates.stop - 1}")
            probe = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            try:
                probe.bind((address, chance.choice(candidates)))
            except OSError:
                probe.close()
                continue
            probes.append(probe)
        return [probe.getsockname()[1] for probe in probes]
    finally:
        for probe in probes:
            probe.close()
