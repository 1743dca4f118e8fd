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
