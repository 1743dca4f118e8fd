"""Scenarios of the acknowledging level (docs/PROTOCOL.md, sections 9.2-9.4): the node under test
acknowledges as a reader, keeps and replays as a sender, refuses forged acknowledgements, and a
producer resumes at ``resume_at``.

The bench binds one acknowledgement PULL per sender replica (the node's input ``ack_endpoints``)
and connects one PUSH per reader replica to the node's ``ack_endpoint``.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import msgpack
import zmq
from zmq.utils.monitor import recv_monitor_message

from flujo.conformance.checks import FAIL_ITEM, Checks, seq_list
from flujo.conformance.harness import INPUT_PORT, NODE, SOURCE, Bench, Reader, Sender, ack_endpoint
from flujo.conformance.steps import (
    DATA,
    SKIP,
    end_of_stream,
    exit_or,
    expect_exit,
    handshake,
    latest_stats,
    output_seqs,
    send_items,
    wait_outputs,
)
from flujo.protocol import Control, MessageKind
from flujo.vocab import NodeKind

REPLAY = MessageKind.REPLAY

#: Items a producer's reader takes before it holds back (backpressure instead of a flood).
PRODUCER_CAP = 20


class AckSink:
    """The acknowledgement socket of one bench sender replica: what the node acknowledged to it."""

    def __init__(self, bench: Bench, replica: int) -> None:
        self.bench, self.replica = bench, replica
        self.endpoint = ack_endpoint(bench.folder, SOURCE, replica)
        self.frames: list[Any] = []  # every frame decoded, in arrival order (this socket's life)
        self.socket = self._bind()

    def _bind(self) -> zmq.Socket:
        socket = self.bench.context.socket(zmq.PULL)
        socket.linger = 0
        socket.bind(self.endpoint)
        self.bench.extra_sockets[socket] = self.take
        return socket

    def take(self) -> None:
        while True:
            try:
                frames = self.socket.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                return
            try:
                self.frames.append(msgpack.unpackb(frames[0]) if len(frames) == 1 else ("frames", len(frames)))
            except Exception as error:  # untrusted bytes: recorded, judged by a clause
                self.frames.append(("undecodable", repr(error)))

    def seqs(self) -> list[int]:
        return [frame[5] for frame in self.frames if well_formed(frame)]

    @property
    def highest(self) -> int:
        return max(self.seqs(), default=-1)

    def rebind(self, timeout: float) -> bool:
        """A successor of this sender binds the same ack endpoint; True once the node reconnected."""
        del self.bench.extra_sockets[self.socket]
        self.socket.close(linger=0)
        self.frames = []
        self.socket = self.bench.context.socket(zmq.PULL)
        self.socket.linger = 0
        monitor = self.socket.get_monitor_socket(zmq.EVENT_ACCEPTED)
        try:
            self.socket.bind(self.endpoint)
            self.bench.extra_sockets[self.socket] = self.take
            if not monitor.poll(int(timeout * 1000)):
                return False
            recv_monitor_message(monitor)
            return True
        finally:
            self.socket.disable_monitor()
            monitor.close(linger=0)


def well_formed(frame: Any) -> bool:
    """``[1, "ack", node, replica, port, seq]`` from the node under test's input port."""
    return (
        isinstance(frame, list)
        and len(frame) == 6
        and frame[:2] == [1, "ack"]
        and frame[2] == NODE
        and isinstance(frame[3], int)
        and frame[4] == INPUT_PORT
        and isinstance(frame[5], int)
        and not isinstance(frame[5], bool)
    )


def acker(bench: Bench) -> zmq.Socket:
    """The bench's readers' acknowledgement PUSH, connected to the node's ack endpoint."""
    socket = bench.context.socket(zmq.PUSH)
    socket.linger = 0
    socket.sndtimeo = int(bench.timeout * 1000)
    socket.connect(bench.config["ack_endpoint"])
    return socket


def acknowledge(socket: zmq.Socket, reader: Reader, seq: int) -> None:
    node, replica, port = reader.key
    socket.send(msgpack.packb([1, "ack", node, replica, port, seq]))
    reader.acked = max(reader.acked, seq)


def covers(sinks: list[AckSink], sent: dict[int, list[int]], done: int) -> bool:
    """Each sender replica has an acknowledgement of everything it sent up to ``done``."""
    return all(sink.highest >= max((s for s in sent[sink.replica] if s <= done), default=-1) for sink in sinks)


def check_acks(checks: Checks, bench: Bench, sinks: list[AckSink], sent: dict[int, list[int]], done: int) -> None:
    """Wait for acknowledgements through ``done``; each well formed, cumulative, never past it."""
    bench.wait(lambda: covers(sinks, sent, done) or bench.exited())
    checks.clause(
        "9.2",
        "acknowledges cumulatively to each sender replica, on its ack endpoint, what is done",
        covers(sinks, sent, done),
        f"acknowledgements through {done} (per sender: the highest it sent up to there)",
        exit_or(
            bench,
            f"highest acknowledged per sender {[sink.highest for sink in sinks]}"
            if any(sink.frames for sink in sinks)
            else "no acknowledgement at all: the node does not acknowledge (at most once across a crash, 9.7)",
        ),
    )
    bad = [frame for sink in sinks for frame in sink.frames if not well_formed(frame) or frame[3] != bench.replica]
    checks.clause(
        "9.2",
        "an acknowledgement is one frame [1, 'ack', reader_node, reader_replica, reader_port, seq]",
        not bad,
        f"[1, 'ack', {NODE!r}, {bench.replica}, {INPUT_PORT!r}, seq]",
        f"{bad[:3]}",
    )
    beyond = [(sink.replica, seq) for sink in sinks for seq in sink.seqs() if seq > min(done, max(sent[sink.replica]))]
    backwards = [sink.replica for sink in sinks if sink.seqs() != sorted(sink.seqs())]
    checks.clause(
        "9.2",
        "never acknowledges past what that sender sent, nor what is not done (end to end); never goes back",
        not beyond and not backwards,
        f"per sender at most min({done}, the highest it sent), non-decreasing",
        f"(sender, seq) past it {beyond[:3]}, going back on {backwards}",
    )


def acknowledges(bench: Bench, checks: Checks, window: float) -> None:
    """As a reader: cumulative acknowledgements per sender replica, end to end, batched; a
    sender's successor replays: the duplicates are dropped and acknowledged again."""
    sinks = [AckSink(bench, replica) for replica in range(len(bench.senders))]
    handshake(bench, checks)
    reader = bench.readers[0] if bench.readers else None
    sent: dict[int, list[int]] = {0: [], 1: []}
    items: dict[int, Any] = {}
    for seq in range(20):
        items.update(send_items(bench, [seq], sender=seq % 2))
        sent[seq % 2].append(seq)
    if reader is not None:
        wait_outputs(bench, reader, 20)
        bench.idle(window)
        early = [(sink.replica, sink.highest) for sink in sinks if sink.frames]
        checks.clause(
            "9.2",
            "a processor acknowledges only once its readers acknowledged the results (end to end)",
            not early,
            "no acknowledgement before the bench, its reader, acknowledged anything",
            f"acknowledged (sender, seq) {early}",
        )
        ack = acker(bench)
        acknowledge(ack, reader, 9)
        check_acks(checks, bench, sinks, sent, 9)
        acknowledge(ack, reader, 19)
    check_acks(checks, bench, sinks, sent, 19)
    # Sender 0's process ends; its successor (9.3) replays what it "had not seen acknowledged"
    # and goes on: a new ack socket at the same endpoint, a new data connection.
    bench.publish(Control.EXITED, SOURCE, 0)
    reconnected = sinks[0].rebind(bench.timeout)
    checks.clause(
        "9.2",
        "connects its acknowledgements to a restarted sender's new socket",
        reconnected,
        f"a connection to the sender's new ack socket within {bench.timeout:g} s",
        "none",
    )
    bench.senders[0].socket.close(linger=0)
    bench.senders[0] = Sender(bench.context, 0, bench.config["inputs"][0]["endpoint"], bench.timeout)
    bench.senders[0].send(bench.senders[0].codec.marker(REPLAY, 0))  # a replacing sender's first message
    items.update(send_items(bench, [14, 16, 18, 20, 22], sender=0))  # 14..18 again, then new
    items.update(send_items(bench, [21, 23], sender=1))
    sent[0] += [20, 22]
    sent[1] += [21, 23]
    if reader is not None:
        wait_outputs(bench, reader, 24)
        bench.idle(window)
        checks.clause(
            "9.3",
            "drops the duplicates a sender's successor replays: every item passed on once, in order",
            output_seqs(reader) == list(range(24)),
            f"seqs {seq_list(list(range(24)))}",
            f"seqs {seq_list(output_seqs(reader))}",
        )
        acknowledge(ack, reader, 23)
    sinks[0].frames.clear()
    check_acks(checks, bench, sinks[:1], {0: [14, 16, 18, 20, 22]}, 23)
    bench.senders[0].eos()
    bench.senders[1].eos()
    end_of_stream(bench, checks)
    if reader is None:
        counters = bench.reports_of("finished")[0].payload
        checks.clause(
            "9.3",
            "drops the duplicates a sender's successor replays: every item consumed once",
            counters.get("items_in") == 24,
            "items_in 24",
            f"counters {counters}",
        )


def forged_acks(bench: Bench, reader: Reader) -> list[list[bytes]]:
    """Acknowledgements the node must refuse: malformed, another version, from strangers, past
    what it sent (it sent ``reader`` far less than 10**6)."""
    node, replica, port = reader.key
    pack = msgpack.packb
    return [
        [b"\xc1"],
        [pack([1, "ack", node, replica, port, 1]), b"more"],
        [pack([2, "ack", node, replica, port, 1])],
        [pack([1, "nack", node, replica, port, 1])],
        [pack({"seq": 1})],
        [pack([1, "ack", "stranger", replica, port, 1])],
        [pack([1, "ack", node, replica + 7, port, 1])],
        [pack([1, "ack", node, replica, port + "x", 1])],
        [pack([1, "ack", node, replica, port, 10**6])],
        [pack([1, "ack", node, replica, port, "5"])],
    ]


def replays(bench: Bench, checks: Checks, window: float) -> None:
    """As a sender: keeps what it sent until acknowledged, refuses forged acknowledgements, and
    re-sends what was not acknowledged, in order, to a reader's successor (same endpoint)."""
    producer = bench.kind == NodeKind.PRODUCER
    reader = bench.readers[0]
    if producer:
        reader.cap = PRODUCER_CAP
    upstream = [] if producer else [AckSink(bench, 0)]  # where a processor acknowledges what is done
    handshake(bench, checks)
    ack = acker(bench)
    if not producer:
        send_items(bench, range(20))
    wait_outputs(bench, reader, 20)
    acknowledge(ack, reader, 9)
    forged = forged_acks(bench, reader)
    for frames in forged:
        ack.send_multipart(frames)

    def rejected() -> int:
        value = latest_stats(bench).get("rejected_acks", 0)
        return value if isinstance(value, int) else 0

    bench.wait(lambda: rejected() >= len(forged) or bench.exited(), max(bench.timeout, 2.0))
    checks.clause(
        "9.2",
        "refuses forged acknowledgements (malformed, stranger, past what was sent), counted in rejected_acks",
        rejected() == len(forged) and not bench.exited(),
        f"running, stats rejected_acks {len(forged)}",
        exit_or(bench, f"rejected_acks {latest_stats(bench).get('rejected_acks')}"),
    )
    if producer:
        bench.wait(lambda: latest_stats(bench).get("acked") == 9 or bench.exited(), max(bench.timeout, 2.0))
        checks.clause(
            "9.4",
            "a producer reports acked, the highest acknowledged by all its readers, in stats",
            latest_stats(bench).get("acked") == 9,
            "stats acked 9",
            exit_or(bench, f"acked {latest_stats(bench).get('acked')}"),
        )
    # The reader's process ends (its socket with it), the launcher says so, its successor binds.
    wanted = 13 if not producer else PRODUCER_CAP
    after = successor_takes(bench, reader, wanted, None if producer else range(20, 23))
    expected = list(range(10, 10 + wanted))
    checks.clause(
        "9.3",
        "re-sends to a reader's successor, behind a REPLAY marker, in order and ahead of anything new, "
        "what it had not acknowledged (a forged acknowledgement freed nothing)",
        after is not None and after[:wanted] == expected,
        f"REPLAY, then seqs {seq_list(expected)}{', …' if producer else ''} after the restart",
        exit_or(bench, f"seqs {seq_list(after)}" if after is not None else "no REPLAY marker"),
    )
    assert after is not None  # else the clause above ended the scenario
    last = after[wanted - 1] if not producer else after[-1]
    acknowledge(ack, reader, last)

    def taken_in() -> bool:  # the node shows it applied that acknowledgement
        if producer:
            return latest_stats(bench).get("acked") == last
        return upstream[0].highest >= last

    bench.wait(lambda: taken_in() or bench.exited(), max(bench.timeout, 2.0))
    checks.clause(
        "9.2" if not producer else "9.4",
        "passes an acknowledgement on upstream (a processor) or reports it as acked (a producer)",
        taken_in(),
        f"acknowledgement through {last} upstream" if not producer else f"stats acked {last}",
        exit_or(
            bench,
            f"acked {latest_stats(bench).get('acked')}" if producer else f"upstream through {upstream[0].highest}",
        ),
    )
    # Once more: now everything was acknowledged, a new successor gets only what comes next.
    after = successor_takes(bench, reader, 1, None if producer else [23])
    checks.clause(
        "9.3",
        "frees what was acknowledged: a later successor gets only what was not",
        after is not None and after[:1] == [last + 1],
        f"REPLAY, then seqs from {last + 1}",
        exit_or(bench, f"seqs {seq_list(after)}" if after is not None else "no REPLAY marker"),
    )
    if producer:
        bench.publish(Control.STOP, NODE)
    else:
        bench.senders[0].eos()
    end_of_stream(bench, checks)


def successor_takes(bench: Bench, reader: Reader, count: int, send: Iterable[int] | None) -> list[int] | None:
    """The reader's process ends, its successor binds the same endpoint, the launcher publishes
    ``exited``, and the successor (9.3) takes nothing before the node's REPLAY marker; then ``send`` (for a
    processor) goes in. Returns the seqs that came behind the marker (at least ``count`` unless a
    clause timeout passed), None without a marker."""
    before = len(reader.messages)
    # A real reader's connections close when its process dies, before the launcher can say so.
    # The bench's socket closes in the background: only once the node has connected to the
    # successor's socket is the old connection surely gone, so "exited" goes out after that (else
    # what the node sends at once, its REPLAY marker included, could go into the closing one).
    reader.rebind(bench.context, bench.timeout)
    bench.publish(Control.EXITED, reader.edge.target, reader.index)
    reader.cap = None  # what the dead process's pipe still held may come first: taken, then ignored
    if send is not None:
        send_items(bench, send)

    def behind_marker() -> list[int] | None:
        kinds = [m.kind for m in reader.messages[before:]]
        if REPLAY not in kinds:
            return None
        return [m.seq for m in reader.messages[before + kinds.index(REPLAY) :] if m.kind in (DATA, SKIP)]

    bench.wait(lambda: len(behind_marker() or ()) >= count or bench.exited())
    if bench.kind == NodeKind.PRODUCER:
        reader.cap = len(reader.messages)  # hold back again: backpressure, not a flood
    return behind_marker()


def resumes(bench: Bench, checks: Checks, window: float) -> None:
    """A producer's successor after a crash is given resume_at: it numbers from there when it can
    resume (resume_from), or from seq_start when it cannot (9.4)."""
    reader = bench.readers[0]
    reader.cap = PRODUCER_CAP
    bench.config.update(seq_start=1000, resume_at=500, generation=1)
    handshake(bench, checks, generation=1)
    wait_outputs(bench, reader, 10)
    seqs = output_seqs(reader)
    resumed = seqs[:10] == list(range(500, 510))
    checks.clause(
        "9.4",
        "a producer given resume_at numbers from it (it can resume), or from seq_start (it cannot)",
        resumed or seqs[:10] == list(range(1000, 1010)),
        "500, 501, … (or 1000, 1001, … for a producer that cannot resume)",
        exit_or(bench, f"seqs {seq_list(seqs)}"),
    )
    checks.note("9.4", "resumes", "yes, from resume_at" if resumed else "no: at most once for its own crash")
    bench.publish(Control.STOP, NODE)
    end_of_stream(bench, checks)


def acknowledges_only_done(bench: Bench, checks: Checks, window: float) -> None:
    """An item whose user code failed is not done: under a restart policy the node acknowledges
    what came before it, never it nor what followed (its successor gets them again, 9.3)."""
    sink = AckSink(bench, 0)
    handshake(bench, checks)
    reader = bench.readers[0] if bench.readers else None
    send_items(bench, range(5))
    if reader is not None:
        wait_outputs(bench, reader, 5)
        ack = acker(bench)  # kept open until the bench closes: a closed socket drops what it queued
        acknowledge(ack, reader, 4)
    bench.wait(lambda: sink.highest >= 4 or bench.exited())
    checks.clause(
        "9.2",
        "acknowledges what is done",
        sink.highest == 4,
        "an acknowledgement through 4",
        exit_or(bench, f"through {sink.highest}"),
    )
    bench.senders[0].data(5, FAIL_ITEM)
    send_items(bench, [6, 7])
    bench.wait(lambda: bench.exited() or sink.highest > 4)
    checks.clause(
        "9.2",
        "acknowledges only after consume() returned (a consumer) or its reader acknowledged (a "
        "processor): never an item whose user code failed, nor what came after it",
        sink.highest == 4,
        "nothing past 4 acknowledged",
        exit_or(bench, f"acknowledged {sink.seqs()}"),
    )
    expect_exit(bench, checks, None, "5", "under a restart policy a failed node exits non-zero")
