"""The JavaScript node library (sdk/js) in real flows: order, replicas, arrays, zips, stops, errors,
graceful restarts. CI installs Node.js and the library's npm packages (.ci/run): when they are
missing these tests fail, they do not skip."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import FlowRunner, poll_for
from flow_nodes import line_count, read_lines
from manifests import program
from netns import can_make_namespaces
from restarting import chain, restart_mid_stream, zip_behind_a_lagging_input
from sdk_checks import admits_only_the_flow_key
from test_hosts import _body as hosts_body
from test_hosts import agent as agent  # fixtures: pytest finds them by name here
from test_hosts import hosts as hosts

pytestmark = pytest.mark.timeout(120)

SDK = Path(__file__).parent.parent / "sdk" / "js"
TEST_NODE = SDK / "test" / "node.js"
PROCESSOR = SDK / "examples" / "processor.js"
CONSUMER = SDK / "examples" / "consumer.js"


def js(script: Path, **args: object) -> str:
    """Manifest lines running a JavaScript node with these args."""
    pairs = ", ".join(f"{name} = {_toml(value)}" for name, value in args.items())
    return f'command = ["node", "{script}"]\nargs = {{ {pairs} }}'


def _toml(value: object) -> str:
    return f'"{value}"' if isinstance(value, str) else str(value).lower() if isinstance(value, bool) else str(value)


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
@pytest.mark.parametrize(
    "kind, script, role", [("processor", SDK / "examples" / "identity.js", None), ("consumer", TEST_NODE, "take")]
)
def test_js_nodes_pass_the_conformance_kit_at_the_restartable_level(kind: str, script: Path, role: str | None) -> None:
    args = {"fail_on": "flujo-conformance:fail", **({"role": role} if role else {})}
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "flujo.conformance",
            "--level",
            "restartable",
            "--kind",
            kind,
            "--args",
            json.dumps(args),
            "--",
            "node",
            str(script),
        ],
        capture_output=True,
        text=True,
        timeout=280,
    )
    failed = [line for line in done.stdout.splitlines() if line.startswith("FAIL")]
    assert done.returncode == 0 and not failed, done.stdout[-3000:] + done.stderr[-2000:]
    assert "Level reached: restartable" in done.stdout


@pytest.mark.parametrize("replicas", [1, 3])
def test_examples_square_and_collect_every_item_in_order(flow: FlowRunner, replicas: int) -> None:
    out, n = flow.path("out.jsonl"), 3000
    manifest = flow.manifest(
        f"""
        [nodes.numbers]
        run = "flujo.nodes.basic:Count"
        args = {{ n = {n} }}
        [nodes.square]
        command = ["node", "{PROCESSOR}"]
        inputs = ["numbers"]
        replicas = {replicas}
        [nodes.sink]
        command = ["node", "{CONSUMER}"]
        inputs = ["square"]
        args = {{ path = "{out}" }}
    """,
        flow="queue = 4",
    )
    result = flow.run(manifest, timeout=60)
    assert result.returncode == 0, result.stderr
    # The sink reads from several replicas of the processor: it restores the order.
    assert read_lines(out) == [i * i for i in range(n)]


def test_a_js_processor_behind_a_replicated_node_restores_the_order(flow: FlowRunner) -> None:
    out, n = flow.path("out.jsonl"), 2000
    manifest = flow.manifest(
        f"""
        [nodes.numbers]
        run = "flujo.nodes.basic:Count"
        args = {{ n = {n} }}
        [nodes.spread]
        run = "{{nodes}}:jitter"
        inputs = ["numbers"]
        replicas = 3
        [nodes.square]
        {js(TEST_NODE, role="square")}
        inputs = ["spread"]
        [nodes.sink]
        run = "{{nodes}}:Collect"
        inputs = ["square"]
        args = {{ path = "{out}" }}
    """,
        flow="queue = 4",
    )
    result = flow.run(manifest, timeout=60)
    assert result.returncode == 0, result.stderr
    assert read_lines(out) == [i * i for i in range(n)]


def test_filtered_items_travel_as_skips_and_a_zip_pairs_them(flow: FlowRunner) -> None:
    # keep_even sends SKIP for odd numbers; the JS zip gets one call per number present on both ports.
    out, n = flow.path("out.jsonl"), 1000
    manifest = flow.manifest(f"""
        [nodes.numbers]
        run = "flujo.nodes.basic:Count"
        args = {{ n = {n} }}
        [nodes.even]
        run = "{{nodes}}:keep_even"
        inputs = ["numbers"]
        [nodes.same]
        run = "{{nodes}}:jitter"
        inputs = ["numbers"]
        replicas = 2
        [nodes.add]
        {js(TEST_NODE, role="add")}
        inputs = {{ a = "even", b = "same" }}
        [nodes.sink]
        run = "{{nodes}}:Collect"
        inputs = ["add"]
        args = {{ path = "{out}" }}
    """)
    result = flow.run(manifest, timeout=60)
    assert result.returncode == 0, result.stderr
    assert read_lines(out) == [2 * i for i in range(0, n, 2)]


def test_js_nodes_in_a_secure_tcp_flow(flow: FlowRunner) -> None:
    # transport = "tcp" is secure by default: every tcp socket is CURVE with the flow key,
    # the JS inputs are CURVE servers behind a ZAP handler admitting only that key.
    out, n = flow.path("out.jsonl"), 1000
    manifest = flow.manifest(
        f"""
        [nodes.numbers]
        run = "flujo.nodes.basic:Count"
        args = {{ n = {n} }}
        [nodes.square]
        command = ["node", "{PROCESSOR}"]
        inputs = ["numbers"]
        replicas = 2
        [nodes.sink]
        command = ["node", "{CONSUMER}"]
        inputs = ["square"]
        args = {{ path = "{out}" }}
    """,
        flow='transport = "tcp"',
    )
    result = flow.run(manifest, timeout=60)
    assert result.returncode == 0, result.stderr
    assert read_lines(out) == [i * i for i in range(n)]


def test_a_secure_js_node_admits_only_the_flow_key() -> None:
    admits_only_the_flow_key(["node", str(SDK / "examples" / "identity.js")], {"PATH": os.environ["PATH"]})


def test_a_js_merge_takes_every_item_of_both_inputs_in_each_ones_order(flow: FlowRunner) -> None:
    out, n = flow.path("out.jsonl"), 500
    manifest = flow.manifest(f"""
        [nodes.a]
        run = "{{nodes}}:Tagged"
        args = {{ tag = "a", n = {n} }}
        [nodes.b]
        run = "{{nodes}}:Tagged"
        args = {{ tag = "b", n = {2 * n} }}
        [nodes.sink]
        {js(TEST_NODE, role="collect", path=out)}
        inputs = ["a", "b"]
        join = "merge"
    """)
    result = flow.run(manifest, timeout=60)
    assert result.returncode == 0, result.stderr
    items = read_lines(out)
    assert [item["i"] for item in items if item["source"] == "a"] == list(range(n))
    assert [item["i"] for item in items if item["source"] == "b"] == list(range(2 * n))
    assert len(items) == 3 * n


def test_arrays_arrive_as_typed_views_and_go_back_unchanged(flow: FlowRunner, tmp_path: Path) -> None:
    out, n = flow.path("out.jsonl"), 6
    manifest = flow.manifest(f"""
        [nodes.arrays]
        run = "{{nodes}}:BigArrays"
        args = {{ report = "{tmp_path / "report.json"}", n = {n}, mb = 1 }}
        [nodes.stats]
        {js(TEST_NODE, role="arrays")}
        inputs = ["arrays"]
        [nodes.sink]
        run = "{{nodes}}:Collect"
        inputs = ["stats"]
        args = {{ path = "{out}" }}
    """)
    result = flow.run(manifest, timeout=60)
    assert result.returncode == 0, result.stderr
    size = 1024 * 1024
    # Collect summarises the array sent back as [first byte, size]: the bytes came through whole.
    assert read_lines(out) == [
        {"i": i, "sum": (i % 256) * size, "nbytes": size, "dtype": "|u1", "shape": [size], "data": [i % 256, size]}
        for i in range(n)
    ]


def test_a_js_producer_feeds_a_js_consumer(flow: FlowRunner) -> None:
    out, n = flow.path("out.jsonl"), 500
    manifest = flow.manifest(f"""
        [nodes.numbers]
        {js(TEST_NODE, role="count", n=n)}
        [nodes.square]
        run = "{{nodes}}:square"
        inputs = ["numbers"]
        replicas = 2
        [nodes.sink]
        {js(TEST_NODE, role="collect", path=out)}
        inputs = ["square"]
    """)
    result = flow.run(manifest, timeout=60)
    assert result.returncode == 0, result.stderr
    assert read_lines(out) == [i * i for i in range(n)]


def test_stop_mid_stream_ends_cleanly_with_nothing_lost_before_it(flow: FlowRunner) -> None:
    out = flow.path("out.jsonl")
    manifest = flow.manifest(f"""
        [nodes.numbers]
        run = "{{nodes}}:Paced"
        args = {{ n = 100000, pause = 0.001 }}
        [nodes.square]
        command = ["node", "{PROCESSOR}"]
        inputs = ["numbers"]
        replicas = 2
        [nodes.sink]
        command = ["node", "{CONSUMER}"]
        inputs = ["square"]
        args = {{ path = "{out}" }}
    """)
    launcher = flow.start(manifest)
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
    manifest = flow.manifest(f"""
        [nodes.numbers]
        run = "{{nodes}}:Paced"
        args = {{ n = 100000, pause = 0.001 }}
        [nodes.square]
        {js(TEST_NODE, role="square")}
        inputs = ["numbers"]
        [nodes.sink]
        run = "{{nodes}}:Collect"
        inputs = ["square"]
        args = {{ path = "{out}" }}
    """)
    launcher = flow.start(manifest)
    poll_for(lambda: line_count(out) >= 50, timeout=30)
    assert flow.command("stop", "square", "--flow", flow.name).returncode == 0
    _, stderr = launcher.communicate(timeout=30)
    assert launcher.returncode == 0, stderr
    values = read_lines(out)
    assert values == [i * i for i in range(len(values))] and len(values) >= 50


def test_an_error_in_js_code_fails_the_node_and_delivers_what_it_sent(flow: FlowRunner) -> None:
    out = flow.path("out.jsonl")
    manifest = flow.manifest(f"""
        [nodes.numbers]
        run = "flujo.nodes.basic:Count"
        args = {{ n = 1000 }}
        [nodes.check]
        {js(TEST_NODE, role="fail_at", at=40)}
        inputs = ["numbers"]
        [nodes.sink]
        run = "{{nodes}}:Collect"
        inputs = ["check"]
        args = {{ path = "{out}" }}
    """)
    result = flow.run(manifest, timeout=60)
    assert result.returncode != 0
    assert "Error: cannot handle 40" in result.stderr
    assert read_lines(out) == list(range(40))  # everything before the failing item, nothing after


def test_on_error_skip_skips_the_failing_item_and_goes_on(flow: FlowRunner) -> None:
    out = flow.path("out.jsonl")
    manifest = flow.manifest(f"""
        [nodes.numbers]
        run = "flujo.nodes.basic:Count"
        args = {{ n = 100 }}
        [nodes.check]
        {js(TEST_NODE, role="fail_at", at=40, catch=True)}
        inputs = ["numbers"]
        on_error = "skip"
        [nodes.sink]
        run = "{{nodes}}:Collect"
        inputs = ["check"]
        args = {{ path = "{out}" }}
    """)
    result = flow.run(manifest, timeout=60)
    assert result.returncode == 0, result.stderr
    assert "skipped item 40: Error: cannot handle 40" in result.stdout  # the node's own output, labelled
    assert read_lines(out) == [i for i in range(100) if i != 40]


@pytest.mark.parametrize("replicas", [1, 2])
def test_restarting_a_js_processor_mid_stream_loses_nothing(flow: FlowRunner, replicas: int) -> None:
    out, n = flow.path("out.jsonl"), 3000
    values, _, _ = restart_mid_stream(
        flow,
        f"""
        [nodes.numbers]
        run = "{{nodes}}:Gated"
        args = {{ n = {n}, pause = 0.0005, gate = "{{gate}}" }}
        [nodes.work]
        command = ["node", "{PROCESSOR}"]
        inputs = ["numbers"]
        replicas = {replicas}
        [nodes.sink]
        run = "{{nodes}}:Collect"
        inputs = ["work"]
        args = {{ path = "{out}" }}
    """,
        "work",
        out,
    )
    assert values == [i * i for i in range(n)]  # every item, once, in order


def test_restarting_a_js_consumer_mid_stream_loses_nothing(flow: FlowRunner) -> None:
    out, n = flow.path("out.jsonl"), 2000
    values, _, _ = restart_mid_stream(
        flow,
        f"""
        [nodes.numbers]
        run = "{{nodes}}:Gated"
        args = {{ n = {n}, pause = 0.0002, gate = "{{gate}}" }}
        [nodes.sink]
        command = ["node", "{CONSUMER}"]
        inputs = ["numbers"]
        args = {{ path = "{out}" }}
    """,
        "sink",
        out,
    )
    assert values == list(range(n))


def test_restarting_a_js_node_behind_a_replicated_node_keeps_the_order(flow: FlowRunner) -> None:
    out, n = flow.path("out.jsonl"), 2000
    values, _, _ = restart_mid_stream(
        flow,
        f"""
        [nodes.numbers]
        run = "{{nodes}}:Gated"
        args = {{ n = {n}, pause = 0.0005, gate = "{{gate}}" }}
        [nodes.spread]
        run = "{{nodes}}:jitter"
        inputs = ["numbers"]
        replicas = 2
        [nodes.work]
        command = ["node", "{PROCESSOR}"]
        inputs = ["spread"]
        replicas = 2
        [nodes.sink]
        run = "{{nodes}}:Collect"
        inputs = ["work"]
        args = {{ path = "{out}" }}
    """,
        "work",
        out,
        after=200,
    )
    assert values == [i * i for i in range(n)]


def test_restarting_a_js_zip_keeps_every_pair(flow: FlowRunner) -> None:
    out, n = flow.path("out.jsonl"), 2000
    values, _, _ = restart_mid_stream(
        flow,
        f"""
        [nodes.numbers]
        run = "{{nodes}}:Gated"
        args = {{ n = {n}, pause = 0.0005, gate = "{{gate}}" }}
        [nodes.lag]
        run = "{{nodes}}:jitter"
        inputs = ["numbers"]
        replicas = 2
        [nodes.add]
        {js(TEST_NODE, role="add")}
        inputs = {{ a = "numbers", b = "lag" }}
        [nodes.sink]
        run = "{{nodes}}:Collect"
        inputs = ["add"]
        args = {{ path = "{out}" }}
    """,
        "add",
        out,
        after=200,
    )
    assert values == [2 * i for i in range(n)]


def test_restarting_a_js_producer_continues_its_stream(flow: FlowRunner) -> None:
    out, n = flow.path("out.jsonl"), 1500
    values, _, _ = restart_mid_stream(
        flow,
        f"""
        [nodes.numbers]
        {js(TEST_NODE, role="count", n=n, pause=1, gate="{gate}")}
        [nodes.sink]
        run = "{{nodes}}:Collect"
        inputs = ["numbers"]
        args = {{ path = "{out}" }}
    """,
        "numbers",
        out,
    )
    # The new process produces its stream again from the start; what the first one produced arrived whole.
    assert values[-n:] == list(range(n))
    first_run = values[:-n]
    assert len(first_run) >= 300 and first_run == list(range(len(first_run)))


def test_a_js_node_refuses_forged_messages_and_keeps_the_good_ones(tmp_path: Path) -> None:
    """Malformed headers, bodies and array references are refused and counted, never handed on."""
    import msgpack
    import zmq

    def header(kind: int, seq: int, version: int = 1) -> bytes:
        return msgpack.packb([version, kind, seq, "up", 0])

    def array_ref(frame: int, dtype: str, shape: list[int]) -> msgpack.ExtType:
        return msgpack.ExtType(1, msgpack.packb([frame, dtype, shape]))

    endpoint = lambda name: f"ipc://{tmp_path}/{name}"  # noqa: E731
    context = zmq.Context()
    control, status = context.socket(zmq.XPUB), context.socket(zmq.PULL)
    control.bind(endpoint("control"))
    status.bind(endpoint("status"))
    reader = context.socket(zmq.PULL)
    reader.bind(endpoint("reader"))
    config = {
        "protocol": 1,
        "flow": "forged",
        "node": "work",
        "replica": 0,
        "replicas": 1,
        "kind": "processor",
        "control": endpoint("control"),
        "status": endpoint("status"),
        "generation": 0,
        "inputs": [
            {"port": "in", "endpoint": endpoint("in"), "hwm": 100, "source": "up", "source_port": "out", "senders": 1}
        ],
        "outputs": [
            {
                "port": "out",
                "target": "down",
                "target_port": "in",
                "hwm": 100,
                "aligned": False,
                "endpoints": [endpoint("reader")],
            }
        ],
    }
    process = subprocess.Popen(
        ["node", str(SDK / "examples" / "identity.js")],
        env={"PATH": os.environ["PATH"], "FLUJO_NODE_CONFIG": json.dumps(config)},
        stderr=subprocess.PIPE,
        text=True,
    )
    try:

        def report() -> list:
            assert status.poll(10_000), "no report from the node"
            return msgpack.unpackb(status.recv())

        assert report()[0] == "ready"
        sender = context.socket(zmq.PUSH)
        sender.connect(endpoint("in"))
        good = msgpack.packb({"a": array_ref(2, "<i4", [3])})
        forged = [
            [b"\xc1"],  # not msgpack
            [msgpack.packb([1, 0])],  # a header too short
            [header(0, 0, version=2), msgpack.packb(1)],  # another protocol version
            [header(9, 0), msgpack.packb(1)],  # an unknown kind
            [header(0, 0)],  # DATA without a body
            [header(0, 0), b"\xc1"],  # a body that is not msgpack
            [header(0, 0), msgpack.packb(array_ref(5, "<i4", [3])), bytes(12)],  # no frame 5
            [header(0, 0), msgpack.packb(array_ref(2, "<i4", [4])), bytes(12)],  # 16 bytes announced, 12 sent
            [header(0, 0), msgpack.packb(array_ref(2, "<q4", [3])), bytes(12)],  # no such dtype
            [msgpack.packb([1, 0, 0, "up", 7]), msgpack.packb(1)],  # a sender replica that does not exist
            [msgpack.packb([1, 0, 0, "elsewhere", 0]), msgpack.packb(1)],  # a node that does not feed this port
            [header(3, 0), msgpack.packb([1, array_ref(2, "<i4", [3])]), bytes(12)],  # an array in a BATCH
            [header(3, 0), msgpack.packb(5)],  # a BATCH whose body is not a list
        ]
        for frames in forged:
            sender.send_multipart(frames)
        sender.send_multipart([header(0, 0), good, (7).to_bytes(4, "little") * 3])
        sender.send_multipart([header(2, 0)])  # end of stream
        assert reader.poll(10_000)
        first = reader.recv_multipart()
        head = msgpack.unpackb(first[0])
        assert head[:3] == [1, 0, 0] and head[3:5] == ["work", 0]
        assert msgpack.unpackb(first[1])["a"] == array_ref(2, "<i4", [3])
        assert first[2] == (7).to_bytes(4, "little") * 3  # the array went back whole
        assert reader.poll(10_000)
        assert msgpack.unpackb(reader.recv_multipart()[0])[1] == 2  # then EOS: the forged ones never came out
        reports = {}
        while "finished" not in reports:
            kind, _, _, payload = report()
            reports[kind] = payload
        assert reports["released"] == ["in"]
        assert reports["finished"]["refused"] == len(forged)
        assert reports["finished"]["items_in"] == 1 and reports["finished"]["sent"] == {"down/in": 1}
        control.send_multipart([b"released", msgpack.packb(["down", 0, "in"])])
        assert process.wait(timeout=10) == 0
        assert process.stderr.read().count('port "in" refused message') == len(forged)
    finally:
        process.kill()
        process.wait()
        context.destroy(linger=0)


def test_a_realtime_js_reader_and_its_js_sender_drop_rather_than_wait(flow: FlowRunner) -> None:
    # The sink reads "drop-oldest": the JS sender never blocks (an item finding the queue full
    # is dropped, counted) and the JS sink drops its oldest waiting items. What arrives is in
    # order and never twice, and the flow ends cleanly.
    out, n = flow.path("out.jsonl"), 3000
    manifest = flow.manifest(f"""
        [nodes.numbers]
        run = "flujo.nodes.basic:Count"
        args = {{ n = {n} }}
        [nodes.work]
        command = ["node", "{SDK / "examples" / "identity.js"}"]
        inputs = ["numbers"]
        [nodes.sink]
        {js(TEST_NODE, role="collect", path=out)}
        inputs = ["work"]
        policy = "drop-oldest"
        queue = 2
    """)
    result = flow.run(manifest, timeout=60)
    assert result.returncode == 0, result.stderr
    values = read_lines(out)
    assert values == sorted(set(values)) and set(values) <= set(range(n)) and values


def test_restarting_the_reader_of_a_js_sender_loses_nothing(flow: FlowRunner) -> None:
    # The JS node is the sender here: it pauses the held Python sink, waits, and resumes.
    out, n = flow.path("out.jsonl"), 2000
    body = chain(n, out, program(["node", str(SDK / "examples" / "identity.js")]), pause=None, delay=0.0005)
    values, _, _ = restart_mid_stream(flow, body, "sink", out)
    assert values == list(range(n))


def test_restarting_a_zip_fed_by_a_js_sender_keeps_every_pair(flow: FlowRunner) -> None:
    # The JS node is one of the zip's senders: it reports its position, keeps back what is past
    # the agreed limit, pauses there, and sends what it kept back to the successor first.
    out, n = flow.path("out.jsonl"), 2000
    body = zip_behind_a_lagging_input(n, out, "same", program(["node", str(SDK / "examples" / "identity.js")]))
    values, _, _ = restart_mid_stream(flow, body, "pair", out)
    assert values == [2 * i for i in range(n)]


@pytest.mark.parametrize("victim", ["work.1", "sink"])
def test_a_killed_js_node_restarts_by_policy_and_the_flow_ends(flow: FlowRunner, victim: str) -> None:
    # At most once across a crash: the items queued in the killed process may be lost, but
    # nothing comes twice or out of order, and the stream reaches its end.
    out, n = flow.path("out.jsonl"), 1500
    manifest = flow.manifest(
        f"""
        [nodes.numbers]
        run = "{{nodes}}:Paced"
        args = {{ n = {n}, pause = 0.001 }}
        [nodes.work]
        command = ["node", "{SDK / "examples" / "identity.js"}"]
        inputs = ["numbers"]
        replicas = 2
        restart = "on-failure"
        [nodes.sink]
        {js(TEST_NODE, role="collect", path=out)}
        inputs = ["work"]
        restart = "on-failure"
    """,
        flow="queue = 4",
    )
    launcher = flow.start(manifest)
    poll_for(lambda: line_count(out) >= 300, timeout=30)
    pid = flow.replicas()[victim]["pid"]
    os.kill(pid, signal.SIGKILL)
    poll_for(lambda: flow.replicas().get(victim, {}).get("restarts") == 1, timeout=20)
    _, stderr = launcher.communicate(timeout=60)
    assert launcher.returncode == 0, stderr
    assert f'node "{victim}" exited with status -9; restarting' in stderr
    values = read_lines(out)
    assert values == sorted(set(values)) and values[-1] == n - 1
    print(f"SIGKILL of JS {victim}: {n - len(values)} items lost")


@pytest.mark.skipif(can_make_namespaces() is not None, reason=can_make_namespaces() or "")
def test_a_js_node_on_another_host_restarts_without_loss(flow: FlowRunner, hosts, agent) -> None:
    # Host B runs the JS replicas through its agent: a secure tcp flow (CURVE with the flow key,
    # the JS node's ZAP handler admitting its Python senders), restarted gracefully mid-stream.
    out, n = flow.path("out.jsonl"), 2000
    body = f"""
        [nodes.numbers]
        run = "{{nodes}}:Gated"
        args = {{ n = {n}, pause = 0.0005, gate = "{{gate}}" }}
        [nodes.work]
        command = ["node", "{PROCESSOR}"]
        inputs = ["numbers"]
        replicas = 2
        host = "b"
        [nodes.sink]
        run = "{{nodes}}:Collect"
        inputs = ["work"]
        args = {{ path = "{out}" }}
    """
    values, _, _ = restart_mid_stream(
        flow, hosts_body(hosts, body, agent.key.public.decode()), "work", out, prefix=hosts[0].command()
    )
    assert values == [i * i for i in range(n)]
