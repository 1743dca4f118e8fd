"""The bench a node under test runs on: the launcher's sockets and its neighbours' sockets.

The bench binds what the launcher binds (control XPUB, status PULL) and what downstream
replicas bind (one PULL per output endpoint), connects one PUSH per upstream sender replica
to the node's input port, and starts the node's program with its configuration in
``FLUJO_NODE_CONFIG``, exactly as ``flujo-launch`` would. Everything the node does is
recorded as it arrives (``pump``); a scenario waits for events with a deadline and never
sleeps for synchronisation: a broken node fails a clause after its timeout, never hangs.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgpack
import zmq
from zmq.utils.monitor import recv_monitor_message

from flujo.protocol import (
    CONFIG_ENV,
    Codec,
    Control,
    MessageKind,
    ProtocolError,
    control_frames,
    identity_topic,
    send_message,
)
from flujo.vocab import ErrorPolicy, Join, NodeKind, QueuePolicy, RestartPolicy

NODE = "under_test"  # the node under test, replica 0
SOURCE = "up"  # its upstream node (the bench's senders are replicas 0..senders-1 of it)
INPUT_PORT = "in"
OUTPUT_PORT = "out"
#: A field no version defines, in the configuration and each of its inputs and outputs: nodes ignore it.
UNKNOWN_FIELD = "x-conformance-unknown"
FLOW = f"conformance-{os.getpid()}"  # unique: several kits may run on one machine


#: After a node's exit is first seen, how long its last reports get to arrive.
EXIT_SETTLE = 0.1


def ack_endpoint(folder: Path, node: str, replica: int) -> str:
    """Where a sender replica binds its acknowledgement socket (section 9.2)."""
    return f"ipc://{folder}/ack.{node}.r{replica}"


@dataclass(frozen=True)
class Edge:
    """One output edge of the node under test: a downstream node with some replicas."""

    target: str = "down"
    replicas: int = 1
    aligned: bool = False
    target_port: str = "in"


@dataclass
class Received:
    """One message a reader took from the node under test (a BATCH is recorded item by item)."""

    kind: MessageKind
    seq: int
    sender: str
    sender_replica: int
    item: Any = None
    batched: bool = False
    at: float = 0.0


class Reader:
    """A downstream replica: a bound PULL socket and what arrived on it, in arrival order."""

    def __init__(
        self, context: zmq.Context, edge: Edge, index: int, endpoint: str, hwm: int, sender_replica: int = 0
    ) -> None:
        self.edge, self.index, self.endpoint = edge, index, endpoint
        self.sender_replica = sender_replica  # the replica number the node under test must send as
        self.socket = context.socket(zmq.PULL)
        self.socket.linger = 0
        self.socket.rcvhwm = hwm
        self.socket.bind(endpoint)
        self.messages: list[Received] = []
        self.violations: list[str] = []  # malformed messages, as the decoder described them
        self.codec = Codec("bench", 0)
        self.cap: int | None = None  # take no more than this many messages for now (backpressure)
        self.acked = -1  # the highest item acknowledged to the node under test (a lossless edge)

    def rebind(self, context: zmq.Context, timeout: float) -> float | None:
        """A successor process of this reader: a new socket bound at the same endpoint. Returns
        the seconds until the node's PUSH connected to it again, None when it did not within
        ``timeout``. (Messages sent before that could go into the pipe to the closed socket,
        which a real successor, started only after its predecessor exited, never meets.)"""
        hwm = self.socket.rcvhwm
        closed = time.monotonic()
        self.socket.close(linger=0)
        self.socket = context.socket(zmq.PULL)
        self.socket.linger = 0
        self.socket.rcvhwm = hwm
        monitor = self.socket.get_monitor_socket(zmq.EVENT_ACCEPTED)
        try:
            self.socket.bind(self.endpoint)
            if not monitor.poll(int(timeout * 1000)):
                return None
            recv_monitor_message(monitor)
            return time.monotonic() - closed
        finally:
            self.socket.disable_monitor()
            monitor.close(linger=0)

    @property
    def highest_taken(self) -> int:
        """The highest item taken (-1: none)."""
        return max((m.seq for m in self.messages if m.kind in (MessageKind.DATA, MessageKind.SKIP)), default=-1)

    @property
    def key(self) -> tuple[str, int, str]:
        return (self.edge.target, self.index, self.edge.target_port)

    @property
    def taking(self) -> bool:
        return self.cap is None or len(self.messages) < self.cap

    def take(self) -> None:
        while self.taking:
            try:
                frames = self.socket.recv_multipart(zmq.NOBLOCK, copy=False)
            except zmq.Again:
                return
            now = time.monotonic()
            try:
                message = self.codec.decode(frames)
            except (ProtocolError, ValueError, TypeError, msgpack.UnpackException) as error:
                self.violations.append(f"{type(error).__name__}: {error}")
                continue
            if message.kind is MessageKind.BATCH:
                if not isinstance(message.item, list):
                    self.violations.append(f"BATCH body is not an array: {message.item!r}")
                    continue
                for offset, item in enumerate(message.item):
                    self.messages.append(
                        Received(
                            MessageKind.DATA, message.seq + offset, message.sender, message.replica, item, True, now
                        )
                    )
            else:
                self.messages.append(
                    Received(message.kind, message.seq, message.sender, message.replica, message.item, False, now)
                )

    def of_kind(self, *kinds: MessageKind) -> list[Received]:
        return [message for message in self.messages if message.kind in kinds]

    def items(self) -> list[Received]:
        """DATA and SKIP, the messages that carry a sequence number."""
        return self.of_kind(MessageKind.DATA, MessageKind.SKIP)

    def has(self, kind: MessageKind) -> bool:
        return any(message.kind is kind for message in self.messages)


class Sender:
    """An upstream replica: a PUSH socket connected to the node's input port."""

    def __init__(self, context: zmq.Context, replica: int, endpoint: str, timeout: float) -> None:
        self.replica = replica
        self.codec = Codec(SOURCE, replica)
        self.socket = context.socket(zmq.PUSH)
        self.socket.linger = 0
        self.socket.sndhwm = 10_000
        self.socket.reconnect_ivl = 10  # ms: a restarted node is found again at once
        self.socket.sndtimeo = int(timeout * 1000)
        self.socket.connect(endpoint)

    def send(self, frames: Sequence[Any]) -> None:
        send_message(self.socket, frames)

    def data(self, seq: int, item: Any) -> None:
        self.send(self.codec.encode(seq, item))

    def skip(self, seq: int) -> None:
        self.send(self.codec.marker(MessageKind.SKIP, seq))

    def batch(self, first_seq: int, items: list[Any]) -> None:
        self.send(self.codec.batch(first_seq, [msgpack.packb(item, use_bin_type=True) for item in items]))

    def eos(self) -> None:
        self.send(self.codec.marker(MessageKind.EOS, 0))

    def pause(self) -> None:
        self.send(self.codec.marker(MessageKind.PAUSE, 0))


@dataclass
class Report:
    """One status report from the node under test."""

    kind: str
    payload: Any
    generation: int
    at: float = field(default_factory=time.monotonic)


class Bench:
    """The launcher and the neighbours of one node under test, for one scenario."""

    def __init__(
        self,
        command: Sequence[str],
        folder: Path,
        kind: NodeKind,
        timeout: float,
        *,
        window: float = 0.3,
        senders: int = 1,
        edges: Sequence[Edge] = (Edge(),),
        restart: RestartPolicy = RestartPolicy.NO,
        hwm: int = 16,
        replica: int = 0,
        extra: dict[str, Any] | None = None,
        acks: bool = False,
    ) -> None:
        self.command = list(command)
        self.folder = folder
        self.kind = kind
        self.timeout = timeout
        self.window = window  # how long a clause watches for something that must NOT happen
        self._exit_settled = False  # the reports sent just before the exit have been taken
        self.replica = replica  # the node under test is this replica of `replica + 1`
        self.context = zmq.Context()
        self.control = self.context.socket(zmq.XPUB)
        self.control.setsockopt(zmq.XPUB_VERBOSE, 1)  # every subscription, also repeated ones
        self.control.linger = 0
        self.control.bind(f"ipc://{folder}/control")
        self.status = self.context.socket(zmq.PULL)
        self.status.linger = 0
        self.status.bind(f"ipc://{folder}/status")
        input_endpoint = f"ipc://{folder}/{NODE}.{INPUT_PORT}.r{replica}"
        edges = edges if kind != NodeKind.CONSUMER else ()
        senders = senders if kind != NodeKind.PRODUCER else 0
        self.readers: list[Reader] = []
        outputs = []
        for edge in edges:
            endpoints = [f"ipc://{folder}/{edge.target}.{edge.target_port}.r{index}" for index in range(edge.replicas)]
            self.readers += [
                Reader(self.context, edge, index, endpoint, hwm, replica) for index, endpoint in enumerate(endpoints)
            ]
            outputs.append(
                {
                    "port": OUTPUT_PORT,
                    "target": edge.target,
                    "target_port": edge.target_port,
                    "hwm": hwm,
                    "policy": QueuePolicy.BLOCK,
                    "aligned": edge.aligned,
                    "endpoints": endpoints,
                    **({"lossless": True} if acks else {}),
                    UNKNOWN_FIELD: 1,
                }
            )
        self.config: dict[str, Any] = {
            "protocol": 1,
            "flow": FLOW,
            "node": NODE,
            "replica": replica,
            "replicas": replica + 1,
            "kind": kind,
            "control": f"ipc://{folder}/control",
            "status": f"ipc://{folder}/status",
            "inputs": [
                {
                    "port": INPUT_PORT,
                    "endpoint": input_endpoint,
                    "hwm": hwm,
                    "source": SOURCE,
                    "source_port": OUTPUT_PORT,
                    "senders": senders,
                    "policy": QueuePolicy.BLOCK,
                    **({"ack_endpoints": [ack_endpoint(folder, SOURCE, r) for r in range(senders)]} if acks else {}),
                    UNKNOWN_FIELD: 1,
                }
            ]
            if kind != NodeKind.PRODUCER
            else [],
            "outputs": outputs,
            "join": Join.ZIP,
            "keyword_ports": False,
            "on_error": ErrorPolicy.FAIL,
            "restart": restart,
            "seq_start": 0,
            "generation": 0,
            "run": None,
            "base_dir": os.getcwd(),
            "args": {},
            UNKNOWN_FIELD: {"from": "a later protocol version"},
            **({"ack_endpoint": ack_endpoint(folder, NODE, replica)} if acks and outputs else {}),
            **(extra or {}),
        }
        self.senders = [Sender(self.context, replica, input_endpoint, timeout) for replica in range(senders)]
        self.reports: list[Report] = []
        self.subscriptions: list[bytes] = []  # topics the node subscribed to, in order
        self.history: list[list[bytes]] = []  # published commands, replayed to a new subscriber
        self.process: subprocess.Popen | None = None
        #: Readable once the node's process has exited (a pidfd): the pump wakes for the exit as it
        #: does for a message, instead of noticing it at its next turn.
        self._exit_fd: int | None = None
        self.generation = 0
        self.log_path = folder / "node.log"
        self._log = open(self.log_path, "ab")  # noqa: SIM115 - the node's log for the bench's life; close() closes it
        self.exit_codes: list[int] = []
        #: More sockets the pump takes from (the acknowledging level's), each with what takes them.
        self.extra_sockets: dict[zmq.Socket, Callable[[], None]] = {}

    # -- the node's process ----------------------------------------------------------------
    def spawn(self, generation: int = 0) -> None:
        """Start (or restart, with a higher generation) the node under test."""
        self.generation = generation
        self.config["generation"] = generation
        self.subscriptions.clear()
        self._exit_settled = False  # this process's exit, too, is settled when seen
        env = {**os.environ, CONFIG_ENV: json.dumps(self.config), "PYTHONUNBUFFERED": "1"}
        self._log.write(f"--- generation {generation}: {' '.join(self.command)}\n".encode())
        self._log.flush()
        self.process = subprocess.Popen(
            self.command,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self._forget_exit_fd()
        self._exit_fd = os.pidfd_open(self.process.pid)

    def exit_code(self) -> int | None:
        return None if self.process is None else self.process.poll()

    def _forget_exit_fd(self) -> None:
        if self._exit_fd is not None:
            os.close(self._exit_fd)
            self._exit_fd = None

    def kill(self) -> None:
        """End the node's process group (the program and anything it started)."""
        process = self.process
        if process is not None and process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
        if process is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(timeout=10)

    def close(self) -> None:
        self.kill()
        self._forget_exit_fd()
        self._log.close()
        self.context.destroy(linger=0)

    def log_tail(self, lines: int = 8) -> list[str]:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return []
        return text.rstrip("\n").splitlines()[-lines:]

    # -- launcher's side -------------------------------------------------------------------
    def publish(self, topic: Control, *payload: Any, keep: bool = True) -> None:
        """Publish a command; ``keep`` also replays it to a later subscriber, as the launcher does."""
        frames = control_frames(topic, *payload)
        if keep:
            self.history.append(frames)
        self.control.send_multipart(frames)

    @property
    def identity(self) -> bytes:
        return identity_topic(NODE, self.replica)

    def subscribed(self) -> bool:
        return self.identity in self.subscriptions

    def report_kinds(self, generation: int | None = None) -> list[str]:
        generation = self.generation if generation is None else generation
        return [report.kind for report in self.reports if report.generation == generation]

    def reports_of(self, kind: str, generation: int | None = None) -> list[Report]:
        generation = self.generation if generation is None else generation
        return [report for report in self.reports if report.kind == kind and report.generation == generation]

    def has_report(self, kind: str) -> bool:
        return bool(self.reports_of(kind))

    # -- event pump --------------------------------------------------------------------------
    def pump(self, timeout_ms: int) -> None:
        """Take everything that arrives within ``timeout_ms`` (returns at the first event)."""
        poller = zmq.Poller()
        poller.register(self.control, zmq.POLLIN)
        poller.register(self.status, zmq.POLLIN)
        for reader in self.readers:
            if reader.taking:
                poller.register(reader.socket, zmq.POLLIN)
        for socket in self.extra_sockets:
            poller.register(socket, zmq.POLLIN)
        if self._exit_fd is not None:
            poller.register(self._exit_fd, zmq.POLLIN)
        events = dict(poller.poll(timeout_ms))
        if self._exit_fd in events:  # exited: reap it, and stop watching (it stays readable)
            self.exit_code()
            self._forget_exit_fd()
        for socket, take in list(self.extra_sockets.items()):
            if socket in events:
                take()
        if self.control in events:
            self._take_subscriptions()
        if self.status in events:
            self._take_reports()
        for reader in self.readers:
            if reader.socket in events:
                reader.take()

    def _take_subscriptions(self) -> None:
        while True:
            try:
                message = self.control.recv(zmq.NOBLOCK)
            except zmq.Again:
                return
            if message[:1] != b"\x01":
                continue  # an unsubscription
            topic = message[1:]
            self.subscriptions.append(topic)
            if topic == self.identity:
                for frames in self.history:  # bring it up to date, as the launcher does
                    self.control.send_multipart(frames)

    def _take_reports(self) -> None:
        while True:
            try:
                frame = self.status.recv(zmq.NOBLOCK)
            except zmq.Again:
                return
            try:
                kind, node, replica, payload = msgpack.unpackb(frame, strict_map_key=False)[:4]
            except Exception as error:  # untrusted bytes: record, never crash
                self.reports.append(Report("<malformed>", f"{type(error).__name__}: {error}", self.generation))
                continue
            self.reports.append(Report(str(kind), payload, self.generation))
            if (node, replica) != (NODE, self.replica):
                self.reports.append(Report("<misaddressed>", [kind, node, replica], self.generation))
            if kind == "released" and isinstance(payload, list):
                for port in payload:  # the launcher publishes every release
                    self.publish(Control.RELEASED, NODE, self.replica, port)

    def wait(self, condition: Callable[[], object], timeout: float | None = None) -> bool:
        """Pump events until ``condition()`` holds; False after ``timeout`` (default: the clause timeout)."""
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        while True:
            if condition():
                if not self._exit_settled and self.exit_code() is not None:
                    # A report or message sent just before the exit may still be in flight when
                    # the exit is seen: take it before the caller judges.
                    self._exit_settled = True
                    self.idle(EXIT_SETTLE)
                return True
            left = deadline - time.monotonic()
            if left <= 0:
                return bool(condition())
            self.pump(max(1, min(50, int(left * 1000))))

    def idle(self, seconds: float) -> None:
        """Keep taking events for ``seconds``: the window in which something must NOT happen."""
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            self.pump(max(1, int(left * 1000)))

    def exited(self) -> bool:
        return self.exit_code() is not None
