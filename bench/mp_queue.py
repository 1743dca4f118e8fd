"""Baseline: the same chain on ``multiprocessing.Queue`` (pickling, bounded queues).

producer -> q1 -> processor replica(s) -> q2 -> consumer; every queue has ``maxsize``
items at most. The end of stream is one ``None`` per reader of a queue.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from bench import nodecore
from bench.harness import MP_CONTEXT, ProcessSet, RunOutput, collect, with_barrier


def producer_main(cfg: dict[str, Any], out_q: Any, readers: int) -> None:
    report = nodecore.NodeReport(cfg, "producer")
    for item in nodecore.tracked_items(cfg, report):
        out_q.put(item)
    for _ in range(readers):
        out_q.put(None)
    report.write()
    out_q.close()
    out_q.join_thread()  # the feeder thread has handed every item to the pipe


def processor_main(cfg: dict[str, Any], in_q: Any, out_q: Any) -> None:
    """Process items until an end marker; then send one end marker on.

    Every stage has the same number of replicas R, and R markers reach each queue: each
    reader takes exactly one, so no replica stops while data is still coming.
    """
    report = nodecore.NodeReport(cfg, "processor")
    nodecore.node_ready(cfg)
    while (item := in_q.get()) is not None:
        out_q.put(nodecore.process_item(cfg, item))
    out_q.put(None)
    report.write()
    out_q.close()
    out_q.join_thread()


def consumer_main(cfg: dict[str, Any], in_q: Any, expected: int, writers: int) -> None:
    report = nodecore.NodeReport(cfg, "consumer")
    nodecore.node_ready(cfg)
    recorder = nodecore.Recorder(cfg)
    ended = 0
    while recorder.count < expected and ended < writers:
        item = in_q.get()
        if item is None:
            ended += 1
            continue
        recorder.consume(item)
    recorder.write()
    report.write()


def run_chain(
    cfg: dict[str, Any], workdir: Path, timeout: float, stages: int = 1, replicas: int = 1, maxsize: int = 16
) -> RunOutput:
    """Run producer -> ``stages`` x ``replicas`` processors -> consumer once, in fresh processes."""
    cfg = with_barrier(cfg, workdir, stages * replicas + 1)
    queues = [MP_CONTEXT.Queue(maxsize) for _ in range(stages + 1)]
    launch = time.monotonic_ns()
    with ProcessSet() as procs:
        consumer = procs.start(consumer_main, cfg, queues[-1], nodecore.expected_items(cfg), replicas, name="consumer")
        for s in range(stages):
            for r in range(replicas):
                procs.start(processor_main, cfg, queues[s], queues[s + 1], name=f"processor{s}.{r}")
        procs.start(producer_main, cfg, queues[0], replicas, name="producer")
        procs.wait(consumer, timeout)
        deadline = time.monotonic() + 3.0
        for proc in procs.procs:
            proc.join(max(0.0, deadline - time.monotonic()))
        wall = (time.monotonic_ns() - launch) / 1e9
    return collect(cfg, launch, wall)
