"""Baseline: the same chain hand-written on pyzmq, the physical limit of Flujo's design.

Shape: producer -> stage 1 replicas -> ... -> consumer, one process each. Every node binds
one PULL socket for its input; upstream PUSH sockets connect to all replicas of the next
stage (PUSH round-robins among them). Messages are a msgpack header frame ``[kind, seq]``,
a msgpack body frame, and one extra frame per numpy array (msgpack ext type 1 refers to
it). Arrays are sent with ``copy=False`` and received with ``copy=False`` +
``np.frombuffer``: no copy in user space. A processor decodes the item, calls the
processor function and sends the result; an unchanged array goes out as a view of the
received frame, so forwarding it copies nothing either.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Callable, Sequence

import msgpack
import numpy as np
import zmq

from bench import nodecore
from bench.harness import ProcessSet, RunOutput, collect, free_tcp_port

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
        return [msgpack.packb((DATA, seq)), body, *self._buffers]

    def _default(self, value: Any) -> Any:
        if isinstance(value, np.ndarray):
            array = np.ascontiguousarray(value)
            self._buffers.append(array)
            return msgpack.ExtType(ARRAY_EXT, msgpack.packb((len(self._buffers) + 1, array.dtype.str, array.shape)))
        raise TypeError(f"cannot send {type(value).__name__}")

    def decode(self, frames: Sequence[Any]) -> tuple[int, Any]:
        kind, _seq = msgpack.unpackb(frames[0].buffer)
        if kind != DATA:
            return kind, None
        self._frames = frames
        item = msgpack.unpackb(frames[1].buffer, ext_hook=self._ext_hook, strict_map_key=False)
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


def producer_main(cfg: dict[str, Any], out_eps: list[str], hwm: int) -> None:
    """Send every item of the workload, then one end-of-stream per downstream replica."""
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
        push.send(msgpack.packb((EOS, 0)))
    report.write()
    push.close()
    ctx.term()


def processor_main(cfg: dict[str, Any], in_ep: str, out_eps: list[str], hwm: int, eos_needed: int) -> None:
    """Receive, apply the processor function, send on; end after ``eos_needed`` end-of-streams."""
    ctx = zmq.Context()
    pull = _socket(ctx, zmq.PULL, hwm)
    pull.bind(in_ep)
    push = _socket(ctx, zmq.PUSH, hwm)
    push.setsockopt(zmq.LINGER, 30_000)
    for ep in out_eps:
        push.connect(ep)
    report = nodecore.NodeReport(cfg, "processor")
    codec = Codec()
    process: Callable[[Any], Any] = lambda item: nodecore.process_item(cfg, item)
    seq, eos = 0, 0
    while eos < eos_needed:
        frames = pull.recv_multipart(copy=False)
        kind, item = codec.decode(frames)
        if kind == EOS:
            eos += 1
            continue
        push.send_multipart(codec.encode(seq, process(item)), copy=False)
        seq += 1
    # Every upstream replica has finished: pass the end of stream on.
    for _ in out_eps:
        push.send(msgpack.packb((EOS, 0)))
    report.write()
    pull.close(0)
    push.close()
    ctx.term()


def consumer_main(cfg: dict[str, Any], in_ep: str, hwm: int, expected: int, eos_needed: int) -> None:
    """Record ``expected`` items (or stop at the end of stream) and write the result."""
    ctx = zmq.Context()
    pull = _socket(ctx, zmq.PULL, hwm)
    pull.bind(in_ep)
    report = nodecore.NodeReport(cfg, "consumer")
    recorder = nodecore.Recorder(cfg)
    codec = Codec()
    eos = 0
    while recorder.count < expected and eos < eos_needed:
        kind, item = codec.decode(pull.recv_multipart(copy=False))
        if kind == EOS:
            eos += 1
            continue
        recorder.consume(item)
    recorder.write()
    report.write()
    pull.close(0)
    ctx.term()


def expected_items(cfg: dict[str, Any]) -> int:
    """How many items the consumer of a run should see."""
    return int(cfg["n"]) * (len(cfg["sizes"]) if cfg["workload"] == "latency" else 1)


def run_chain(cfg: dict[str, Any], workdir: Path, timeout: float, transport: str = "ipc",
              stages: int = 1, replicas: int = 1, hwm: int = 16) -> RunOutput:
    """Run producer -> ``stages`` x ``replicas`` processors -> consumer once, in fresh processes."""

    def endpoint(name: str) -> str:
        if transport == "ipc":
            return f"ipc://{workdir}/{name}.sock"
        return f"tcp://127.0.0.1:{free_tcp_port()}"

    # layers[k] = endpoints of the nodes reading layer k's input (stage replicas, then the consumer)
    layers = [[endpoint(f"s{s}r{r}") for r in range(replicas)] for s in range(stages)]
    layers.append([endpoint("sink")])
    upstream_count = [1] + [replicas] * stages  # how many senders feed each layer
    launch = time.monotonic_ns()
    with ProcessSet() as procs:
        consumer = procs.start(consumer_main, cfg, layers[-1][0], hwm, expected_items(cfg), upstream_count[-1],
                               name="consumer")
        for s in range(stages):
            for r, ep in enumerate(layers[s]):
                procs.start(processor_main, cfg, ep, layers[s + 1], hwm, upstream_count[s], name=f"processor{s}.{r}")
        producer = procs.start(producer_main, cfg, layers[0], hwm, name="producer")
        procs.wait(consumer, timeout)
        # Everything upstream has sent all it had; let them write their reports and exit.
        deadline = time.monotonic() + 3.0
        for proc in procs.procs:
            proc.join(max(0.0, deadline - time.monotonic()))
        wall = (time.monotonic_ns() - launch) / 1e9
        del producer
    return collect(cfg, launch, wall)
