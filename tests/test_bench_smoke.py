"""Smoke test of the benchmark harness: the raw pyzmq chain moves every item (no videoflow needed)."""

from __future__ import annotations

import sys
from pathlib import Path

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # `bench` lives at the repository root

from bench import harness, raw_zmq


def test_raw_pyzmq_chain_moves_every_small_item(tmp_path: Path) -> None:
    (tmp_path / "reports").mkdir()
    cfg = {
        "workload": "small",
        "n": 1000,
        "result": str(tmp_path / "result.json"),
        "report_dir": str(tmp_path / "reports"),
    }
    before = {p.pid for p in psutil.Process().children(recursive=True)}
    out = raw_zmq.run_chain(cfg, tmp_path, timeout=30)
    assert out.result["count"] == 1000
    assert harness.throughput(out.result) > 0
    assert sorted(r["role"] for r in out.reports) == ["consumer", "processor", "producer"]
    left = [
        p
        for p in psutil.Process().children(recursive=True)
        if p.pid not in before
        and p.is_running()
        and p.status() != psutil.STATUS_ZOMBIE
        # multiprocessing's own helper, shared by the whole test session, not a chain node
        and "resource_tracker" not in " ".join(p.cmdline())
    ]
    assert not left, f"benchmark processes left behind: {left}"


def test_max_in_flight_counts_items_between_send_and_arrival() -> None:
    assert harness.max_in_flight([0, 1, 2, 3], [10, 11, 12, 13]) == 4
    assert harness.max_in_flight([0, 10, 20], [5, 15, 25]) == 1


def test_latencies_are_kept_per_segment_so_a_size_can_come_at_two_rates() -> None:
    import numpy as np

    from bench import nodecore
    from bench.workloads import Latency

    cfg = {"workload": "latency", "sizes": [8, 4096, 8], "rates": [500, 500, 100], "counts": [2, 3, 2], "warmup": 1}
    recorder = nodecore.Recorder(cfg)
    sizes = [8] + [8] * 2 + [4096] * 3 + [8] * 2  # the warm-up item, then each segment's items
    for i, size in enumerate(sizes):
        item = {"i": i, "ts": 0, "payload": np.zeros(size, np.uint8)}
        if i == 0:
            item["warmup"] = True
        recorder.consume(item)
    assert {key: len(values) for key, values in recorder.latencies.items()} == {"8@500": 2, "4096@500": 3, "8@100": 2}

    # The workload names each segment's column after its size and, for the floor at 100/s, its rate.
    latency = Latency(quick=True)
    segments = {"8@500": [2000], "4096@500": [4000], "8@100": [6000], "4194304@100": [8000]}
    counts = latency.cfg()["counts"]
    out = harness.RunOutput(result={"count": sum(counts) + latency.cfg()["warmup"], "latencies": segments})
    metrics = latency.metrics(out, latency.cfg())
    assert (metrics["8 B p50"], metrics["4 KB p50"], metrics["8 B at 100/s p50"], metrics["4 MB p50"]) == (1, 2, 3, 4)
