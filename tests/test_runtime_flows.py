"""Items in == items out, in order, through real node processes and sockets."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from conftest import FlowRunner
from flow_nodes import read_lines
from manifests import collect, count, node


@pytest.mark.parametrize("transport", ["ipc", "tcp"])
def test_chain_moves_every_item_in_order(flow: FlowRunner, transport: str) -> None:
    out = flow.path("out.jsonl")
    manifest = flow.manifest(
        {"numbers": count(1000), "square": node("{nodes}:square", "numbers"), "sink": collect("square", out)},
        flow=f'transport = "{transport}"',
    )
    result = flow.run(manifest)
    assert result.returncode == 0, result.stderr
    assert read_lines(out) == [n * n for n in range(1000)]


def test_fan_out_gives_every_reader_every_item(flow: FlowRunner) -> None:
    left, right = flow.path("left.jsonl"), flow.path("right.jsonl")
    manifest = flow.manifest(
        {"numbers": count(500), "left": collect("numbers", left), "right": collect("numbers", right)}
    )
    assert flow.run(manifest).returncode == 0
    assert read_lines(left) == list(range(500))
    assert read_lines(right) == list(range(500))


def test_zip_pairs_items_by_sequence_across_replicas(flow: FlowRunner) -> None:
    out = flow.path("out.jsonl")
    manifest = flow.manifest(
        {
            "numbers": count(300),
            "square": node("{nodes}:square", "numbers", replicas=2),
            "total": node("{nodes}:add", {"a": "numbers", "b": "square"}),
            "sink": collect("total", out),
        }
    )
    result = flow.run(manifest)
    assert result.returncode == 0, result.stderr
    assert read_lines(out) == [n + n * n for n in range(300)]


def test_merge_takes_every_item_of_both_producers(flow: FlowRunner) -> None:
    out = flow.path("out.jsonl")
    manifest = flow.manifest(
        {
            "a": node("{nodes}:Tagged", args={"tag": "a", "n": 300}),
            "b": node("{nodes}:Tagged", args={"tag": "b", "n": 200}),
            "sink": collect(["a", "b"], out, join="merge"),
        }
    )
    result = flow.run(manifest)
    assert result.returncode == 0, result.stderr
    items = read_lines(out)
    assert len(items) == 500
    for tag, length in (("a", 300), ("b", 200)):  # each source's order survives the merge
        assert [item["i"] for item in items if item["source"] == tag] == list(range(length))


def test_three_replicas_restore_the_original_order(flow: FlowRunner) -> None:
    out = flow.path("out.jsonl")
    manifest = flow.manifest(
        {"numbers": count(600), "work": node("{nodes}:jitter", "numbers", replicas=3), "sink": collect("work", out)},
        flow="queue = 4",
    )
    result = flow.run(manifest)
    assert result.returncode == 0, result.stderr
    assert read_lines(out) == list(range(600))


def test_filter_inside_a_zip_does_not_stall_it(flow: FlowRunner) -> None:
    out = flow.path("out.jsonl")
    manifest = flow.manifest(
        {
            "numbers": count(400),
            "even": node("{nodes}:keep_even", "numbers", replicas=2),
            "total": node("{nodes}:add", {"a": "numbers", "b": "even"}),
            "sink": collect("total", out),
        },
        flow="queue = 2",
    )
    result = flow.run(manifest)
    assert result.returncode == 0, result.stderr
    assert read_lines(out) == [2 * n for n in range(0, 400, 2)]


def test_named_output_ports_route_items(flow: FlowRunner) -> None:
    evens, odds = flow.path("even.jsonl"), flow.path("odd.jsonl")
    manifest = flow.manifest(
        {
            "numbers": count(101),
            "split": node("{nodes}:Split", "numbers"),
            "evens": collect("split/even", evens),
            "odds": collect("split/odd", odds),
        }
    )
    result = flow.run(manifest)
    assert result.returncode == 0, result.stderr
    assert read_lines(evens) == list(range(0, 101, 2))
    assert read_lines(odds) == list(range(1, 101, 2))


def test_slow_last_consumer_behind_a_quick_producer_gets_everything(flow: FlowRunner) -> None:
    """The producer and the relay finish long before the consumer: their tails must not be lost."""
    out = flow.path("out.jsonl")
    manifest = flow.manifest(
        {
            "numbers": count(3000),
            "relay": node("{nodes}:square", "numbers", queue=1000),
            "sink": collect("relay", out, delay=0.0005, queue=1000),
        }
    )
    result = flow.run(manifest, timeout=50)
    assert result.returncode == 0, result.stderr
    assert read_lines(out) == [n * n for n in range(3000)]


def test_command_node_written_from_the_protocol_alone(flow: FlowRunner) -> None:
    """samples/hello/sink.py speaks the wire protocol with pyzmq and msgpack only."""
    sink = Path(__file__).parent.parent / "samples" / "hello" / "sink.py"
    manifest = flow.manifest(
        {
            "numbers": count(50),
            "square": node("{nodes}:square", "numbers", replicas=2),
            "sink": {"command": [sys.executable, str(sink)], "inputs": ["square"]},
        }
    )
    result = flow.run(manifest)
    assert result.returncode == 0, result.stderr
    received = [line.split("|", 1)[1].strip() for line in result.stdout.splitlines() if line.startswith("sink")]
    assert sorted(int(line.split(": ")[1]) for line in received) == sorted(n * n for n in range(50))
