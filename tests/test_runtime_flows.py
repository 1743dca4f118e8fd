"""Items in == items out, in order, through real node processes and sockets."""
from __future__ import annotations

import pytest
from conftest import FlowRunner
from flow_nodes import read_lines


@pytest.mark.parametrize("transport", ["ipc", "tcp"])
def test_chain_moves_every_item_in_order(flow: FlowRunner, transport: str) -> None:
    out = flow.path("out.jsonl")
    manifest = flow.manifest(f"""
        [nodes.numbers]
        run = "flujo.nodes.basic:Count"
        args = {{ n = 2000 }}
        [nodes.square]
        run = "{{nodes}}:square"
        inputs = ["numbers"]
        [nodes.sink]
        run = "{{nodes}}:Collect"
        inputs = ["square"]
        args = {{ path = "{out}" }}
    """, flow=f'transport = "{transport}"')
    result = flow.run(manifest)
    assert result.returncode == 0, result.stderr
    assert read_lines(out) == [n * n for n in range(2000)]


def test_fan_out_gives_every_reader_every_item(flow: FlowRunner) -> None:
    left, right = flow.path("left.jsonl"), flow.path("right.jsonl")
    manifest = flow.manifest(f"""
        [nodes.numbers]
        run = "flujo.nodes.basic:Count"
        args = {{ n = 500 }}
        [nodes.left]
        run = "{{nodes}}:Collect"
        inputs = ["numbers"]
        args = {{ path = "{left}" }}
        [nodes.right]
        run = "{{nodes}}:Collect"
        inputs = ["numbers"]
        args = {{ path = "{right}" }}
    """)
    assert flow.run(manifest).returncode == 0
    assert read_lines(left) == list(range(500))
    assert read_lines(right) == list(range(500))


def test_zip_pairs_items_by_sequence_across_replicas(flow: FlowRunner) -> None:
    out = flow.path("out.jsonl")
    manifest = flow.manifest(f"""
        [nodes.numbers]
        run = "flujo.nodes.basic:Count"
        args = {{ n = 300 }}
        [nodes.square]
        run = "{{nodes}}:square"
        inputs = ["numbers"]
        replicas = 2
        [nodes.total]
        run = "{{nodes}}:add"
        inputs = {{ a = "numbers", b = "square" }}
        [nodes.sink]
        run = "{{nodes}}:Collect"
        inputs = ["total"]
        args = {{ path = "{out}" }}
    """)
    result = flow.run(manifest)
    assert result.returncode == 0, result.stderr
    assert read_lines(out) == [n + n * n for n in range(300)]


def test_merge_takes_every_item_of_both_producers(flow: FlowRunner) -> None:
    out = flow.path("out.jsonl")
    manifest = flow.manifest(f"""
        [nodes.a]
        run = "{{nodes}}:Tagged"
        args = {{ tag = "a", n = 300 }}
        [nodes.b]
        run = "{{nodes}}:Tagged"
        args = {{ tag = "b", n = 200 }}
        [nodes.sink]
        run = "{{nodes}}:Collect"
        inputs = ["a", "b"]
        join = "merge"
        args = {{ path = "{out}" }}
    """)
    result = flow.run(manifest)
    assert result.returncode == 0, result.stderr
    items = read_lines(out)
    assert len(items) == 500
    for tag, count in (("a", 300), ("b", 200)):  # each source's order survives the merge
        assert [item["i"] for item in items if item["source"] == tag] == list(range(count))


def test_three_replicas_restore_the_original_order(flow: FlowRunner) -> None:
    out = flow.path("out.jsonl")
    manifest = flow.manifest(f"""
        [nodes.numbers]
        run = "flujo.nodes.basic:Count"
        args = {{ n = 600 }}
        [nodes.work]
        run = "{{nodes}}:jitter"
        inputs = ["numbers"]
        replicas = 3
        [nodes.sink]
        run = "{{nodes}}:Collect"
        inputs = ["work"]
        args = {{ path = "{out}" }}
    """, flow="queue = 4")
    result = flow.run(manifest)
    assert result.returncode == 0, result.stderr
    assert read_lines(out) == list(range(600))


def test_filter_inside_a_zip_does_not_stall_it(flow: FlowRunner) -> None:
    out = flow.path("out.jsonl")
    manifest = flow.manifest(f"""
        [nodes.numbers]
        run = "flujo.nodes.basic:Count"
        args = {{ n = 400 }}
        [nodes.even]
        run = "{{nodes}}:keep_even"
        inputs = ["numbers"]
        replicas = 2
        [nodes.total]
        run = "{{nodes}}:add"
        inputs = {{ a = "numbers", b = "even" }}
        [nodes.sink]
        run = "{{nodes}}:Collect"
        inputs = ["total"]
        args = {{ path = "{out}" }}
    """, flow="queue = 2")
    result = flow.run(manifest)
    assert result.returncode == 0, result.stderr
    assert read_lines(out) == [2 * n for n in range(0, 400, 2)]


def test_named_output_ports_route_items(flow: FlowRunner) -> None:
    evens, odds = flow.path("even.jsonl"), flow.path("odd.jsonl")
    manifest = flow.manifest(f"""
        [nodes.numbers]
        run = "flujo.nodes.basic:Count"
        args = {{ n = 101 }}
        [nodes.split]
        run = "{{nodes}}:Split"
        inputs = ["numbers"]
        [nodes.evens]
        run = "{{nodes}}:Collect"
        inputs = ["split/even"]
        args = {{ path = "{evens}" }}
        [nodes.odds]
        run = "{{nodes}}:Collect"
        inputs = ["split/odd"]
        args = {{ path = "{odds}" }}
    """)
    result = flow.run(manifest)
    assert result.returncode == 0, result.stderr
    assert read_lines(evens) == list(range(0, 101, 2))
    assert read_lines(odds) == list(range(1, 101, 2))


def test_slow_last_consumer_behind_a_quick_producer_gets_everything(flow: FlowRunner) -> None:
    """The producer and the relay finish long before the consumer: their tails must not be lost."""
    out = flow.path("out.jsonl")
    manifest = flow.manifest(f"""
        [nodes.numbers]
        run = "flujo.nodes.basic:Count"
        args = {{ n = 3000 }}
        [nodes.relay]
        run = "{{nodes}}:square"
        inputs = ["numbers"]
        queue = 1000
        [nodes.sink]
        run = "{{nodes}}:Collect"
        inputs = ["relay"]
        queue = 1000
        args = {{ path = "{out}", delay = 0.0005 }}
    """)
    result = flow.run(manifest, timeout=50)
    assert result.returncode == 0, result.stderr
    assert read_lines(out) == [n * n for n in range(3000)]


def test_command_node_written_from_the_protocol_alone(flow: FlowRunner) -> None:
    """samples/hello/sink.py speaks the wire protocol with pyzmq and msgpack only."""
    from pathlib import Path
    sink = Path(__file__).parent.parent / "samples" / "hello" / "sink.py"
    manifest = flow.manifest(f"""
        [nodes.numbers]
        run = "flujo.nodes.basic:Count"
        args = {{ n = 50 }}
        [nodes.square]
        run = "{{nodes}}:square"
        inputs = ["numbers"]
        replicas = 2
        [nodes.sink]
        command = ["python3", "{sink}"]
        inputs = ["square"]
    """)
    result = flow.run(manifest)
    assert result.returncode == 0, result.stderr
    received = [line.split("|", 1)[1].strip() for line in result.stdout.splitlines() if line.startswith("sink")]
    assert sorted(int(line.split(": ")[1]) for line in received) == sorted(n * n for n in range(50))
