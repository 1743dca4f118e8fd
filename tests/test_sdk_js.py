"""The JavaScript node library (sdk/js) in real flows: order, replicas, arrays, zips, stops, errors,
graceful restarts. CI installs Node.js and the library's npm packages (.ci/run): when they are
missing these tests fail, they do not skip."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
from conftest import FlowRunner, poll_for
from flow_nodes import line_count, read_lines
from manifests import Node, collect, count, node, pipeline, program
from netns import can_make_namespaces
from restarting import chain, gated, restart_mid_stream, zip_behind_a_lagging_input
from sdk_checks import (
    admits_only_the_flow_key,
    drops_rather_than_waits,
    passes_the_conformance_kit,
    refuses_forged_messages,
    restart_on_another_host,
    restarts_by_policy_after_a_kill,
)
from test_hosts import agent as agent  # fixtures: pytest finds them by name here
from test_hosts import hosts as hosts

pytestmark = pytest.mark.timeout(120)

SDK = Path(__file__).parent.parent / "sdk" / "js"
TEST_NODE = SDK / "test" / "node.js"
IDENTITY = SDK / "examples" / "identity.js"
PROCESSOR = SDK / "examples" / "processor.js"  # squares numbers
CONSUMER = SDK / "examples" / "consumer.js"  # appends items as JSON lines to args.path


def js(script: Path, inputs: object = None, args: dict[str, object] | None = None, **fields: object) -> Node:
    """A node running a JavaScript file with Node.js."""
    return program(["node", str(script)], inputs, args, **fields)


def js_role(role: str, inputs: object = None, args: dict[str, object] | None = None, **fields: object) -> Node:
    """The tests' JavaScript node (sdk/js/test/node.js) in one of its roles: square, add, count, ..."""
    return js(TEST_NODE, inputs, {"role": role, **(args or {})}, **fields)


def js_collect(out: str, inputs: object = None, **fields: object) -> Node:
    """The tests' JavaScript node appending what it takes to ``out``, one JSON line an item."""
    return js_role("collect", inputs, {"path": out}, **fields)


def test_node_and_the_npm_packages_are_installed() -> None:
    assert shutil.which("node"), "Node.js is missing: .ci/run installs it"
    done = subprocess.run(
        ["node", "-e", 'import("zeromq").then(z => import("@msgpack/msgpack")).then(() => 0)'],
        cwd=SDK,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 0, f"run `npm ci` in sdk/js: {done.stderr}"


@pytest.mark.timeout(300)
@pytest.mark.parametrize("kind, script, role", [("processor", IDENTITY, None), ("consumer", TEST_NODE, "take")])
def test_js_nodes_pass_the_conformance_kit_at_the_restartable_level(kind: str, script: Path, role: str | None) -> None:
    args = {"fail_on": "flujo-conformance:fail", **({"role": role} if role else {})}
    passes_the_conformance_kit(kind, ["node", str(script)], args)


@pytest.mark.parametrize("replicas", [1, 3])
def test_examples_square_and_collect_every_item_in_order(flow: FlowRunner, replicas: int) -> None:
    out, n = flow.path("out.jsonl"), 1000
    nodes = pipeline(numbers=count(n), square=js(PROCESSOR, replicas=replicas), sink=js(CONSUMER, args={"path": out}))
    result = flow.run(flow.manifest(nodes, flow="queue = 4"), timeout=60)
    assert result.returncode == 0, result.stderr
    # The sink reads from several replicas of the processor: it restores the order.
    assert read_lines(out) == [i * i for i in range(n)]


def test_a_js_processor_behind_a_replicated_node_restores_the_order(flow: FlowRunner) -> None:
    out, n = flow.path("out.jsonl"), 1000
    nodes = pipeline(
        numbers=count(n),
        spread=node("{nodes}:jitter", replicas=3),
        square=js_role("square"),
        sink=collect(None, out),
    )
    result = flow.run(flow.manifest(nodes, flow="queue = 4"), timeout=60)
    assert result.returncode == 0, result.stderr
    assert read_lines(out) == [i * i for i in range(n)]


def test_filtered_items_travel_as_skips_and_a_zip_pairs_them(flow: FlowRunner) -> None:
    # keep_even sends SKIP for odd numbers; the JS zip gets one call per number present on both ports.
    out, n = flow.path("out.jsonl"), 1000
    nodes = {
        "numbers": count(n),
        "even": node("{nodes}:keep_even", "numbers"),
        "same": node("{nodes}:jitter", "numbers", replicas=2),
        "add": js_role("add", {"a": "even", "b": "same"}),
        "sink": collect("add", out),
    }
    result = flow.run(flow.manifest(nodes), timeout=60)
    assert result.returncode == 0, result.stderr
    assert read_lines(out) == [2 * i for i in range(0, n, 2)]


def test_js_nodes_in_a_secure_tcp_flow(flow: FlowRunner) -> None:
    # transport = "tcp" is secure by default: every tcp socket is CURVE with the flow key,
    # the JS inputs are CURVE servers behind a ZAP handler admitting only that key.
    out, n = flow.path("out.jsonl"), 1000
    nodes = pipeline(numbers=count(n), square=js(PROCESSOR, replicas=2), sink=js(CONSUMER, args={"path": out}))
    result = flow.run(flow.manifest(nodes, flow='transport = "tcp"'), timeout=60)
    assert result.returncode == 0, result.stderr
    assert read_lines(out) == [i * i for i in range(n)]


def test_a_secure_js_node_admits_only_the_flow_key() -> None:
    admits_only_the_flow_key(["node", str(IDENTITY)], {"PATH": os.environ["PATH"]})


def test_a_js_merge_takes_every_item_of_both_inputs_in_each_ones_order(flow: FlowRunner) -> None:
    out, n = flow.path("out.jsonl"), 500
    nodes = {
        "a": node("{nodes}:Tagged", args={"tag": "a", "n": n}),
        "b": node("{nodes}:Tagged", args={"tag": "b", "n": 2 * n}),
        "sink": js_collect(out, ["a", "b"], join="merge"),
    }
    result = flow.run(flow.manifest(nodes), timeout=60)
    assert result.returncode == 0, result.stderr
    items = read_lines(out)
    assert [item["i"] for item in items if item["source"] == "a"] == list(range(n))
    assert [item["i"] for item in items if item["source"] == "b"] == list(range(2 * n))
    assert len(items) == 3 * n


def test_arrays_arrive_as_typed_views_and_go_back_unchanged(flow: FlowRunner, tmp_path: Path) -> None:
    out, n = flow.path("out.jsonl"), 6
    nodes = pipeline(
        arrays=node("{nodes}:BigArrays", args={"report": str(tmp_path / "report.json"), "n": n, "mb": 1}),
        stats=js_role("arrays"),
        sink=collect(None, out),
    )
    result = flow.run(flow.manifest(nodes), timeout=60)
    assert result.returncode == 0, result.stderr
    size = 1024 * 1024
    # Collect summarises the array sent back as [first byte, size]: the bytes came through whole.
    assert read_lines(out) == [
        {"i": i, "sum": (i % 256) * size, "nbytes": size, "dtype": "|u1", "shape": [size], "data": [i % 256, size]}
        for i in range(n)
    ]


def test_a_js_producer_feeds_a_js_consumer(flow: FlowRunner) -> None:
    out, n = flow.path("out.jsonl"), 500
    nodes = pipeline(
        numbers=js_role("count", args={"n": n}),
        square=node("{nodes}:square", replicas=2),
        sink=js_collect(out),
    )
    result = flow.run(flow.manifest(nodes), timeout=60)
    assert result.returncode == 0, result.stderr
    assert read_lines(out) == [i * i for i in range(n)]


def paced(n: int = 100000) -> Node:
    """Numbers a millisecond apart: endless for these tests, which stop the flow."""
    return node("{nodes}:Paced", args={"n": n, "pause": 0.001})


def test_stop_mid_stream_ends_cleanly_with_nothing_lost_before_it(flow: FlowRunner) -> None:
    out = flow.path("out.jsonl")
    nodes = pipeline(numbers=paced(), square=js(PROCESSOR, replicas=2), sink=js(CONSUMER, args={"path": out}))
    launcher = flow.start(flow.manifest(nodes))
    poll_for(lambda: line_count(out) >= 100, timeout=30)
    assert flow.command("stop", "--flow", flow.name).returncode == 0
    _, stderr = launcher.communicate(timeout=30)
    assert launcher.returncode == 0, stderr
    values = read_lines(out)
    assert 100 <= len(values) < 100000
    assert values == [i * i for i in range(len(values))]  # everything produced before the stop, in order


def test_stopping_only_the_js_processor_drains_the_flow(flow: FlowRunner) -> None:
    # `stop square`: the JS node stops reading, ends its stream; its producer sees it released.
    out = flow.path("out.jsonl")
    launcher = flow.start(flow.manifest(pipeline(numbers=paced(), square=js_role("square"), sink=collect(None, out))))
    poll_for(lambda: line_count(out) >= 50, timeout=30)
    assert flow.command("stop", "square", "--flow", flow.name).returncode == 0
    _, stderr = launcher.communicate(timeout=30)
    assert launcher.returncode == 0, stderr
    values = read_lines(out)
    assert values == [i * i for i in range(len(values))] and len(values) >= 50


def test_an_error_in_js_code_fails_the_node_and_delivers_what_it_sent(flow: FlowRunner) -> None:
    out = flow.path("out.jsonl")
    nodes = pipeline(numbers=count(1000), check=js_role("fail_at", args={"at": 40}), sink=collect(None, out))
    result = flow.run(flow.manifest(nodes), timeout=60)
    assert result.returncode != 0
    assert "Error: cannot handle 40" in result.stderr
    assert read_lines(out) == list(range(40))  # everything before the failing item, nothing after


def test_on_error_skip_skips_the_failing_item_and_goes_on(flow: FlowRunner) -> None:
    out = flow.path("out.jsonl")
    check = js_role("fail_at", args={"at": 40, "catch": True}, on_error="skip")
    result = flow.run(flow.manifest(pipeline(numbers=count(100), check=check, sink=collect(None, out))), timeout=60)
    assert result.returncode == 0, result.stderr
    assert "skipped item 40: Error: cannot handle 40" in result.stdout  # the node's own output, labelled
    assert read_lines(out) == [i for i in range(100) if i != 40]


@pytest.mark.parametrize("replicas", [1, 2])
def test_restarting_a_js_processor_mid_stream_loses_nothing(flow: FlowRunner, replicas: int) -> None:
    out, n = flow.path("out.jsonl"), 1000
    values, _, _ = restart_mid_stream(flow, chain(n, out, js(PROCESSOR, replicas=replicas)), "work", out)
    assert values == [i * i for i in range(n)]  # every item, once, in order


def test_restarting_a_js_consumer_mid_stream_loses_nothing(flow: FlowRunner) -> None:
    out, n = flow.path("out.jsonl"), 1000
    nodes = pipeline(numbers=gated(n, 0.0002), sink=js(CONSUMER, args={"path": out}))
    values, _, _ = restart_mid_stream(flow, nodes, "sink", out)
    assert values == list(range(n))


def test_restarting_a_js_node_behind_a_replicated_node_keeps_the_order(flow: FlowRunner) -> None:
    out, n = flow.path("out.jsonl"), 1000
    nodes = pipeline(
        numbers=gated(n, 0.0005),
        spread=node("{nodes}:jitter", replicas=2),
        work=js(PROCESSOR, replicas=2),
        sink=collect(None, out),
    )
    values, _, _ = restart_mid_stream(flow, nodes, "work", out, after=200)
    assert values == [i * i for i in range(n)]


def test_restarting_a_js_zip_keeps_every_pair(flow: FlowRunner) -> None:
    out, n = flow.path("out.jsonl"), 1000
    nodes = {
        "numbers": gated(n, 0.0005),
        "lag": node("{nodes}:jitter", "numbers", replicas=2),
        "add": js_role("add", {"a": "numbers", "b": "lag"}),
        "sink": collect("add", out),
    }
    values, _, _ = restart_mid_stream(flow, nodes, "add", out, after=200)
    assert values == [2 * i for i in range(n)]


def test_restarting_a_js_producer_continues_its_stream(flow: FlowRunner) -> None:
    out, n = flow.path("out.jsonl"), 1500
    numbers = js_role("count", args={"n": n, "pause": 1, "gate": "{gate}"})
    values, _, _ = restart_mid_stream(flow, pipeline(numbers=numbers, sink=collect(None, out)), "numbers", out)
    # The new process produces its stream again from the start; what the first one produced arrived whole.
    assert values[-n:] == list(range(n))
    first_run = values[:-n]
    assert len(first_run) >= 300 and first_run == list(range(len(first_run)))


def test_a_js_node_refuses_forged_messages_and_keeps_the_good_ones(tmp_path: Path) -> None:
    """Malformed headers, bodies and array references are refused and counted, never handed on."""
    refuses_forged_messages(
        tmp_path, ["node", str(IDENTITY)], {"PATH": os.environ["PATH"]}, 'port "in" refused message'
    )


def test_a_realtime_js_reader_and_its_js_sender_drop_rather_than_wait(flow: FlowRunner) -> None:
    out = flow.path("out.jsonl")
    drops_rather_than_waits(flow, js(IDENTITY), js_collect(out), out)


def test_restarting_the_reader_of_a_js_sender_loses_nothing(flow: FlowRunner) -> None:
    # The JS node is the sender here: it pauses the held Python sink, waits, and resumes.
    out, n = flow.path("out.jsonl"), 1000
    body = chain(n, out, js(IDENTITY), pause=None, delay=0.0005)
    values, _, _ = restart_mid_stream(flow, body, "sink", out)
    assert values == list(range(n))


def test_restarting_a_zip_fed_by_a_js_sender_keeps_every_pair(flow: FlowRunner) -> None:
    # The JS node is one of the zip's senders: it reports its position, keeps back what is past
    # the agreed limit, pauses there, and sends what it kept back to the successor first.
    out, n = flow.path("out.jsonl"), 1000
    body = zip_behind_a_lagging_input(n, out, "same", js(IDENTITY))
    values, _, _ = restart_mid_stream(flow, body, "pair", out)
    assert values == [2 * i for i in range(n)]


@pytest.mark.parametrize("victim", ["work.1", "sink"])
def test_a_killed_js_node_restarts_by_policy_and_the_flow_ends(flow: FlowRunner, victim: str) -> None:
    out = flow.path("out.jsonl")
    lost = restarts_by_policy_after_a_kill(flow, victim, js(IDENTITY), js_collect(out), out)
    print(f"SIGKILL of JS {victim}: {lost} items lost")


@pytest.mark.skipif(can_make_namespaces() is not None, reason=can_make_namespaces() or "")
def test_a_js_node_on_another_host_restarts_without_loss(flow: FlowRunner, hosts, agent) -> None:
    out, n = flow.path("out.jsonl"), 1000
    assert restart_on_another_host(flow, hosts, agent, js(PROCESSOR), n, out) == [i * i for i in range(n)]
