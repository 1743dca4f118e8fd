"""Stopping, failing and bounding memory: the flow's life beyond the happy path."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import psutil
from conftest import FlowRunner, flow_processes, poll_for
from flow_nodes import line_count, read_lines
from manifests import collect, count, node


def test_interrupt_mid_stream_drains_everything_produced(flow: FlowRunner) -> None:
    out, report = flow.path("out.jsonl"), flow.path("produced.json")
    manifest = flow.manifest(
        {
            "numbers": node("{nodes}:CountingProducer", args={"report": report}),
            "square": node("{nodes}:square", "numbers", replicas=2),
            "sink": collect("square", out, delay=0.001),
        },
        flow="queue = 8",
    )
    launcher = flow.start(manifest)
    poll_for(lambda: line_count(out) >= 200, timeout=20)
    launcher.send_signal(signal.SIGINT)
    _, stderr = launcher.communicate(timeout=20)
    assert launcher.returncode == 0, stderr
    assert "stopping" in stderr
    produced = json.loads(Path(report).read_text())["produced"]
    assert produced >= 200
    assert read_lines(out) == [n * n for n in range(produced)]


def test_second_interrupt_kills_at_once(flow: FlowRunner) -> None:
    out = flow.path("out.jsonl")
    manifest = flow.manifest({"numbers": count(), "sink": collect("numbers", out, delay=1.0)}, flow="queue = 1000")
    launcher = flow.start(manifest)
    poll_for(lambda: line_count(out) >= 1, timeout=20)
    launcher.send_signal(signal.SIGINT)  # the sink would need ~1000 s to drain its queue
    poll_for(lambda: "stopping" in (launcher.stderr.readline() or ""), timeout=10)
    launcher.send_signal(signal.SIGINT)
    _, stderr = launcher.communicate(timeout=10)
    assert launcher.returncode == 130
    assert "killing" in stderr
    poll_for(lambda: not flow_processes(flow.name), timeout=5)


def test_a_failing_node_stops_the_flow_with_its_name_and_traceback(flow: FlowRunner) -> None:
    out = flow.path("out.jsonl")
    manifest = flow.manifest(
        {"numbers": count(), "check": node("{nodes}:fail_at", "numbers", {"at": 5}), "sink": collect("check", out)}
    )
    result = flow.run(manifest)
    assert result.returncode == 1
    assert 'node "check" failed: ValueError: cannot handle 5' in result.stderr
    check_lines = [line for line in result.stdout.splitlines() if line.startswith("check ")]
    assert any("Traceback (most recent call last)" in line for line in check_lines)
    assert any("in fail_at" in line for line in check_lines)
    assert read_lines(out) == [0, 1, 2, 3, 4]  # what passed before the failure still arrived


def test_a_node_failing_in_open_means_nothing_is_produced(flow: FlowRunner) -> None:
    out = flow.path("out.jsonl")
    manifest = flow.manifest({"numbers": count(), "sink": collect("numbers", "/nonexistent/folder/out.jsonl")})
    result = flow.run(manifest)
    assert result.returncode == 1
    assert 'node "sink" failed: FileNotFoundError' in result.stderr
    assert not Path(out).exists()


def test_slow_consumer_keeps_the_producers_memory_bounded(flow: FlowRunner) -> None:
    """500 arrays of 4 MB (2 GB in all) behind a slow consumer, with a queue of 4 per edge."""
    out, report = flow.path("out.jsonl"), flow.path("memory.json")
    manifest = flow.manifest(
        {
            "frames": node("{nodes}:BigArrays", args={"report": report, "n": 500, "mb": 4}),
            "sink": collect("frames", out, delay=0.002),
        },
        flow="queue = 4",
    )
    result = flow.run(manifest, timeout=50)
    assert result.returncode == 0, result.stderr
    items = read_lines(out)
    assert [item["i"] for item in items] == list(range(500))
    assert all(item["data"] == [item["i"] % 256, 4 * 1024 * 1024] for item in items)
    memory = json.loads(Path(report).read_text())
    growth_mb = memory["peak_mb"] - memory["baseline_mb"]
    # The frames in flight live in the producer's shared-memory pool: 2 x queue + 2 slots (what
    # the ZeroMQ pipes would hold at both ends), twice that at most while readers keep frames;
    # plus the array being built: a few arrays, not 500.
    pool_limit = 2 * (2 * 4 + 2)
    assert growth_mb < (pool_limit + 3) * 4, memory


def test_killing_the_launcher_leaves_no_node_behind(flow: FlowRunner) -> None:
    out = flow.path("out.jsonl")
    manifest = flow.manifest(
        {
            "numbers": count(),
            "square": node("{nodes}:square", "numbers", replicas=2),
            "sink": collect("square", out, delay=0.001),
        }
    )
    launcher = flow.start(manifest)
    poll_for(lambda: line_count(out) >= 10, timeout=20)
    nodes = [p for p in flow_processes(flow.name) if p.pid != launcher.pid]
    assert len(nodes) == 5  # four nodes and the fork server they were forked from
    os.kill(launcher.pid, signal.SIGKILL)
    launcher.communicate(timeout=5)
    _gone, alive = psutil.wait_procs(nodes, timeout=5)
    assert not alive


def test_skip_on_error_counts_logs_and_goes_on(flow: FlowRunner) -> None:
    out = flow.path("out.jsonl")
    manifest = flow.manifest(
        {
            "numbers": count(20),
            "check": node("{nodes}:fail_at", "numbers", {"at": 5}, on_error="skip"),
            "total": node("{nodes}:add", {"a": "numbers", "b": "check"}),
            "sink": collect("total", out),
        }
    )
    result = flow.run(manifest)
    stdout = result.stdout
    assert result.returncode == 0, result.stderr
    assert read_lines(out) == [2 * n for n in range(20) if n != 5]  # the zip skipped the failed item
    check_lines = [line for line in stdout.splitlines() if line.startswith("check ")]
    assert any("skipped item 5" in line for line in check_lines)
    assert any("ValueError: cannot handle 5" in line for line in check_lines)
