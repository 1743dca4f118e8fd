"""Baseline: the same chain hand-written on pyzmq, the physical limit of Flujo's design.

Shape: producer -> stage 1 replicas -> ... -> consumer, one process each. Every node binds
one PULL socket for its input; upstream PUSH sockets connect to all replicas of the next
stage (PUSH round-robins among them). Messages are a msgpack header frame
``[kind, seq, n_arrays]``, a msgpack body frame, and one extra frame per numpy array
(msgpack ext type 1 refers to it). Arrays are sent with ``copy=False`` and received with
``copy=False`` + ``np.frombuffer``: no copy in user space. The small header and body
frames are received as bytes, which is faster than zmq.Frame objects at that size.
A processor decodes the item, calls the processor function and sends the result; an
unchanged array goes out as a view of the received frame, so forwarding it copies
nothing either.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import msgpack
import numpy as np
import zmq

from bench import nodecore
from bench.harness import MP_CONTEXT, ProcessSet, RunOutput, collect, free_tcp_port, with_barrier

DATA, EOS = 0, 2
ARRAY_EXT = 1


class Codec:
    """Header + body + array frames, as in Flujo's wire format (minus node identity)."""

    def __init__(self) -> None:
        self._buffers: list[np.ndarray] = []
        self._packer = msgpack.Packer(default=self._default, use_bin_type=True)
        self._frames: Sequence[Any] = ()

    def encode(self, seq: int, item: Any) -> list[Any]:
        self._buffers = []
        body = self._packer.pack(item)
        return [msgpack.packb((DATA, seq, len(self._buffers))), body, *self._buffers]

    def _default(self, value: Any) -> Any:
        if isinstance(value, np.ndarray):
            array = np.ascontiguousarray(value)
            self._buffers.append(array)
            return msgpack.ExtType(ARRAY_EXT, msgpack.packb((len(self._buffers) + 1, array.dtype.str, array.shape)))
        raise TypeError(f"cannot send {type(value).__name__}")

    def recv(self, sock: zmq.Socket) -> tuple[int, Any]:
        """Receive one message: header and body copied (small), array frames zero-copy."""
        kind, _seq, arrays = msgpack.unpackb(sock.recv())
        if kind != DATA:
            return kind, None
        body = sock.recv()
        self._frames = [None, None, *(sock.recv(copy=False) for _ in range(arrays))]
        item = msgpack.unpackb(body, ext_hook=self._ext_hook, strict_map_key=False)
        self._frames = ()
        return kind, item

    def _ext_hook(self, code: int, data: bytes) -> Any:
        index, dtype, shape = msgpack.unpackb(data)
        return np.frombuffer(self._frames[index].buffer, dtype=np.dtype(dtype)).reshape(shape)


def _socket(ctx: zmq.Context, kind: int, hwm: int) -> zmq.Socket:
    sock = ctx.socket(kind)
    sock.setsockopt(zmq.SNDHWM, hwm)
    sock.setsockopt(zmq.RCVHWM, hwm)
    return sock


def producer_main(cfg: dict[str, Any], out_eps: list[str], hwm: int, done: Any) -> None:
    """Send every item of the workload, then one end-of-stream per downstream replica.

    The sockets stay open until ``done`` is set (the consumer has everything): over ipc,
    libzmq drops messages still in the kernel buffer when a PUSH socket closes while its
    reader is throttled by its high-water mark, even with a linger period.
    """
    ctx = zmq.Context()
    push = _socket(ctx, zmq.PUSH, hwm)
    push.setsockopt(zmq.LINGER, 30_000)
    for ep in out_eps:
        push.connect(ep)
    report = nodecore.NodeReport(cfg, "producer")
    codec = Codec()
    for seq, item in enumerate(nodecore.tracked_items(cfg, report)):
        push.send_multipart(codec.encode(seq, item), copy=False)
    for _ in out_eps:
        push.send(msgpack.packb((EOS, 0, 0)))
    report.write()
    done.wait(60)
    push.close(0)
    ctx.term()


def processor_main(cfg: dict[str, Any], in_ep: str, out_eps: list[str], hwm: int, eos_needed: int, done: Any) -> None:
    """Receive, apply the processor function, send on; end after ``eos_needed`` end-of-streams."""
    ctx = zmq.Context()
    pull = _socket(ctx, zmq.PULL, hwm)
    pull.bind(in_ep)
    push = _socket(ctx, zmq.PUSH, hwm)
    push.setsockopt(zmq.LINGER, 30_000)
    for ep in out_eps:
        push.connect(ep)
    report = nodecore.NodeReport(cfg, "processor")
    nodecore.node_ready(cfg)
    codec = Codec()

    def process(item: Any) -> Any:
        return nodecore.process_item(cfg, item)

    seq, eos = 0, 0
    while eos < eos_needed:
        kind, item = codec.recv(pull)
        if kind == EOS:
            eos += 1
            continue
        push.send_multipart(codec.encode(seq, process(item)), copy=False)
        seq += 1
    # Every upstream replica has finished: pass the end of stream on.
    for _ in out_eps:
        push.send(msgpack.packb((EOS, 0, 0)))
    report.write()
    done.wait(60)  # see producer_main
    pull.close(0)
    push.close(0)
    ctx.term()


def consumer_main(cfg: dict[str, Any], in_ep: str, hwm: int, expected: int, eos_needed: int) -> None:
    """Record ``expected`` items (or stop at the end of stream) and write the result."""
    ctx = zmq.Context()
    pull = _socket(ctx, zmq.PULL, hwm)
    pull.bind(in_ep)
    report = nodecore.NodeReport(cfg, "consumer")
    nodecore.node_ready(cfg)
    recorder = nodecore.Recorder(cfg)
    codec = Codec()
    eos = 0
    while recorder.count < expected and eos < eos_needed:
        kind, item = codec.recv(pull)
        if kind == EOS:
            eos += 1
            continue
        recorder.consume(item)
    recorder.write()
    report.write()
    pull.close(0)
    ctx.term()


def run_chain(
    cfg: dict[str, Any],
    workdir: Path,
    timeout: float,
    transport: str = "ipc",
    stages: int = 1,
    replicas: int = 1,
    hwm: int = 16,
) -> RunOutput:
    """Run producer -> ``stages`` x ``replicas`` processors -> consumer once, in fresh processes."""

    def endpoint(name: str) -> str:
        if transport == "ipc":
            return f"ipc://{workdir}/{name}.sock"
        return f"tcp://127.0.0.1:{free_tcp_port()}"

    # layers[k] = endpoints of the nodes reading layer k's input (stage replicas, then the consumer)
    layers = [[endpoint(f"s{s}r{r}") for r in range(replicas)] for s in range(stages)]
    layers.append([endpoint("sink")])
    cfg = with_barrier(cfg, workdir, stages * replicas + 1)
    upstream_count = [1] + [replicas] * stages  # how many senders feed each layer
    launch = time.monotonic_ns()
    with ProcessSet() as procs:
        done = MP_CONTEXT.Event()
        consumer = procs.start(
            consumer_main, cfg, layers[-1][0], hwm, nodecore.expected_items(cfg), upstream_count[-1], name="consumer"
        )
        for s in range(stages):
            for r, ep in enumerate(layers[s]):
                procs.start(
                    processor_main, cfg, ep, layers[s + 1], hwm, upstream_count[s], done, name=f"processor{s}.{r}"
                )
        procs.start(producer_main, cfg, layers[0], hwm, done, name="producer")
        procs.wait(consumer, timeout)
        done.set()
        # Everything upstream has sent all it had; let them write their reports and exit.
        deadline = time.monotonic() + 3.0
        for proc in procs.procs:
            proc.join(max(0.0, deadline - time.monotonic()))
        wall = (time.monotonic_ns() - launch) / 1e9
    return collect(cfg, launch, wall)
