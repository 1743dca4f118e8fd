"""The C node library (sdk/c) in real flows: replicas, order, zips, stops, errors, graceful restarts, frames."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import FlowRunner, build_c_sdk, poll_for
from flow_nodes import line_count, read_lines
from manifests import Node, collect, count, node, pipeline, program
from netns import can_make_namespaces
from restarting import chain, gated, restart_mid_stream, zip_behind_a_lagging_input
from sdk_checks import (
    FORGED,
    admits_only_the_flow_key,
    drops_rather_than_waits,
    passes_the_conformance_kit,
    processor_config,
    refuses_forged_messages,
    restart_on_another_host,
    restarts_by_policy_after_a_kill,
)
from test_hosts import agent as agent  # fixtures: pytest finds them by name here
from test_hosts import hosts as hosts

pytestmark = pytest.mark.timeout(120)

ROOT = Path(__file__).parent.parent
SDK = ROOT / "sdk" / "c"
BUILD = SDK / "build"
CLIP = ROOT / "samples" / "data" / "vtest.avi"
C_CHECKS = Path(__file__).parent / "sdk_c_nodes.py"  # Python nodes that check what C nodes send


@pytest.fixture(scope="session")
def c_nodes() -> Path:
    """Builds the library and its examples once per session. CI installs the toolchain, so a
    missing compiler or header fails the tests rather than skipping them."""
    if shutil.which("make") is None or shutil.which("cc") is None:
        pytest.fail("make and a C compiler are needed to build sdk/c (CI installs them: .ci/run)")
    done = build_c_sdk()
    if done.returncode != 0:
        pytest.fail(f"make -C sdk/c failed (libzmq3-dev and libmsgpack-dev installed?):\n{done.stdout}{done.stderr}")
    return BUILD


def c(example: str, inputs: object = None, args: dict[str, object] | None = None, **fields: object) -> Node:
    """A node running one of the library's examples (count, identity, gray, sink): tests using
    it take the c_nodes fixture, which builds them."""
    return program([str(BUILD / example)], inputs, args, **fields)


def sink(out: str | None = None, inputs: object = None, **fields: object) -> Node:
    """The C sink: one JSON line a received item in ``out`` (a zip's items as a list)."""
    return c("sink", inputs, {"path": out}, **fields)


def video(frames: int) -> Node:
    """The first ``frames`` frames of the sample clip."""
    return node("flujo.nodes.video:VideoReader", args={"source": str(CLIP), "max_frames": frames})


def test_a_replicated_c_processor_behind_a_replicated_node_keeps_the_order(flow: FlowRunner, c_nodes: Path) -> None:
    # Both C replicas read from both replicas of a jittering Python node: each restores
    # order on its input, and the C sink restores it again behind the two C replicas.
    out, n = flow.path("out.jsonl"), 1000
    nodes = pipeline(
        numbers=count(n),
        spread=node("{nodes}:jitter", replicas=2),
        work=c("identity", replicas=2),
        sink=sink(out),
    )
    result = flow.run(flow.manifest(nodes, flow="queue = 8"), timeout=90)
    assert result.returncode == 0, result.stderr
    assert read_lines(out) == list(range(n))


def test_a_c_processor_passes_skips_and_the_python_nodes_batches(flow: FlowRunner, c_nodes: Path) -> None:
    # keep_even sends SKIP for odd numbers: the C node passes the gaps on (not as items); the
    # slow C sink keeps queues full, so the Python producer sends batches to the C node.
    out, n = flow.path("out.jsonl"), 1000
    nodes = pipeline(numbers=count(n), even=node("{nodes}:keep_even"), work=c("identity"), sink=sink(out))
    result = flow.run(flow.manifest(nodes, flow="queue = 4"), timeout=60)
    assert result.returncode == 0, result.stderr
    assert read_lines(out) == list(range(0, n, 2))


def test_a_c_consumer_zips_two_ports(flow: FlowRunner, c_nodes: Path) -> None:
    out, n = flow.path("out.jsonl"), 500
    nodes = {
        "numbers": count(n),
        "squares": node("{nodes}:square", "numbers", replicas=2),
        "sink": sink(out, {"a": "numbers", "b": "squares"}),
    }
    result = flow.run(flow.manifest(nodes))
    assert result.returncode == 0, result.stderr
    assert read_lines(out) == [[i, i * i] for i in range(n)]


def test_stopping_a_flow_through_c_nodes_delivers_everything_produced(flow: FlowRunner, c_nodes: Path) -> None:
    out, report = flow.path("out.jsonl"), flow.path("produced.json")
    nodes = pipeline(
        numbers=node("{nodes}:CountingProducer", args={"report": report}),
        work=c("identity", replicas=2),
        sink=sink(out),
    )
    launcher = flow.start(flow.manifest(nodes, flow="queue = 8"))
    poll_for(lambda: line_count(out) >= 500, timeout=30)
    assert flow.command("stop", "--flow", flow.name).returncode == 0
    _, stderr = launcher.communicate(timeout=30)
    assert launcher.returncode == 0, stderr
    produced = json.loads(Path(report).read_text())["produced"]
    assert read_lines(out) == list(range(produced))  # exactly once, in order, up to the stop


def test_a_failing_c_node_reports_its_error_and_the_flow_drains(flow: FlowRunner, c_nodes: Path) -> None:
    # gray refuses items that are not frames: the error reaches the launcher, the node exits 1.
    result = flow.run(flow.manifest(pipeline(numbers=count(100), gray=c("gray"), sink=sink())))
    assert result.returncode == 1, result.stderr


@pytest.mark.parametrize("replicas", [1, 2])
def test_restarting_a_c_processor_loses_nothing(flow: FlowRunner, c_nodes: Path, replicas: int) -> None:
    out, n = flow.path("out.jsonl"), 1000
    values, _, _ = restart_mid_stream(flow, chain(n, out, c("identity", replicas=replicas)), "work", out)
    assert values == list(range(n))  # every item, once, in order


def test_restarting_a_c_consumer_loses_nothing(flow: FlowRunner, c_nodes: Path) -> None:
    out, n = flow.path("out.jsonl"), 1000
    values, _, _ = restart_mid_stream(flow, pipeline(numbers=gated(n, 0.0002), sink=sink(out)), "sink", out)
    assert values == list(range(n))


def test_restarting_a_c_zip_keeps_every_pair(flow: FlowRunner, c_nodes: Path) -> None:
    # One input lags the other, so at the restart its senders stand at different sequence
    # numbers: they agree on one (position, align) and the C zip drains up to it.
    out, n = flow.path("out.jsonl"), 1000
    nodes = {
        "numbers": gated(n, 0.0005),
        "lagging": node("{nodes}:jitter", "numbers", replicas=2),
        "squares": node("{nodes}:square", "numbers"),
        "sink": sink(out, {"a": "lagging", "b": "squares"}),
    }
    values, _, _ = restart_mid_stream(flow, nodes, "sink", out)
    assert values == [[i, i * i] for i in range(n)]


def test_c_gray_converts_the_clip_as_opencv_does(flow: FlowRunner, c_nodes: Path) -> None:
    cv2 = pytest.importorskip("cv2")
    out, frames = flow.path("out.jsonl"), 20
    nodes = pipeline(video=video(frames), gray=c("gray", replicas=2), sink=sink(out))
    result = flow.run(flow.manifest(nodes), timeout=60)
    assert result.returncode == 0, result.stderr
    items = read_lines(out)
    assert [item["index"] for item in items] == list(range(frames))
    capture = cv2.VideoCapture(str(CLIP))
    for item in items:
        ok, bgr = capture.read()
        assert ok
        gray = cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY)
        assert item["frame"] == {"dtype": "|u1", "shape": list(gray.shape), "sum": int(gray.sum(dtype=np.uint64))}
        assert item["gray_mean"] == pytest.approx(float(gray.mean()))
        assert (item["gray_min"], item["gray_max"]) == (int(gray.min()), int(gray.max()))
        assert item["width"] == gray.shape[1] and item["height"] == gray.shape[0]


@pytest.mark.parametrize("kind, example", [("processor", "identity"), ("consumer", "sink"), ("producer", "count")])
def test_the_c_examples_pass_the_conformance_kit_at_the_restartable_level(
    c_nodes: Path, kind: str, example: str
) -> None:
    passes_the_conformance_kit(kind, [str(c_nodes / example)], {"fail_on": "flujo-conformance:fail"})


@pytest.mark.timeout(60)
def test_the_c_sdk_does_not_reach_the_acknowledging_level(c_nodes: Path) -> None:
    """The C SDK does not acknowledge yet (PROTOCOL 9.7): the kit says so on the first clause it misses."""
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "flujo.conformance",
            "--level",
            "acknowledging",
            "--only",
            "acknowledges",
            "--timeout",
            "2",
            "--args",
            json.dumps({"fail_on": "flujo-conformance:fail"}),
            "--",
            str(c_nodes / "identity"),
        ],
        capture_output=True,
        text=True,
        timeout=50,
    )
    failed = [line for line in done.stdout.splitlines() if line.startswith("FAIL")]
    assert done.returncode == 1, done.stdout[-3000:]
    assert failed[:1] == [
        "FAIL  §9.2   acknowledges cumulatively to each sender replica, on its ack endpoint, what is done"
    ], done.stdout[-3000:]
    assert "the node does not acknowledge" in done.stdout


def test_a_c_node_refuses_forged_messages_and_keeps_the_good_ones(tmp_path: Path, c_nodes: Path) -> None:
    """Malformed headers, bodies and array references are refused and counted, never handed on."""
    refuses_forged_messages(tmp_path, [str(c_nodes / "identity")], {}, 'refused a message on port "in"', list(FORGED))


def test_a_c_producer_feeds_a_c_merge(flow: FlowRunner, c_nodes: Path) -> None:
    # A C producer and a Python one into a C sink merging both ports: every item of each, in order.
    out, n, m = flow.path("out.jsonl"), 1000, 400
    nodes = {
        "numbers": c("count", args={"n": n}),
        "tagged": node("{nodes}:Tagged", args={"tag": "b", "n": m}),
        "sink": sink(out, ["numbers", "tagged"], join="merge"),
    }
    result = flow.run(flow.manifest(nodes))
    assert result.returncode == 0, result.stderr
    values = read_lines(out)
    assert [v for v in values if isinstance(v, int)] == list(range(n))
    assert [v for v in values if isinstance(v, dict)] == [{"source": "b", "i": i} for i in range(m)]
    assert len(values) == n + m


def test_restarting_a_c_producer_continues_its_numbering(flow: FlowRunner, c_nodes: Path) -> None:
    # The drained process hands over after its last item; its successor (numbering its items on
    # from the drained one's next_seq) counts from 0 again: nothing lost, nothing twice.
    out, n = flow.path("out.jsonl"), 1500
    nodes = pipeline(numbers=c("count", args={"n": n, "pause": 0.001}), sink=collect(None, out))
    launcher = flow.start(flow.manifest(nodes, flow="queue = 4"))
    poll_for(lambda: line_count(out) >= 300, timeout=30)
    assert flow.command("restart", "numbers", "--flow", flow.name).returncode == 0
    _, stderr = launcher.communicate(timeout=60)
    assert launcher.returncode == 0, stderr
    assert 'restarting node "numbers": draining it first' in stderr
    assert "did not drain" not in stderr and "before it had drained" not in stderr, stderr
    values = read_lines(out)
    assert values[-n:] == list(range(n))
    first_run = values[:-n]
    assert len(first_run) >= 300 and first_run == list(range(len(first_run)))


def test_a_realtime_c_reader_and_its_c_sender_drop_rather_than_wait(flow: FlowRunner, c_nodes: Path) -> None:
    out = flow.path("out.jsonl")
    drops_rather_than_waits(flow, c("identity"), sink(out), out)


def test_restarting_the_reader_of_a_c_sender_loses_nothing(flow: FlowRunner, c_nodes: Path) -> None:
    # The C node is the sender here: it pauses the held Python sink, waits, and resumes.
    out, n = flow.path("out.jsonl"), 1000
    body = chain(n, out, c("identity"), pause=None, delay=0.0005)
    values, _, _ = restart_mid_stream(flow, body, "sink", out)
    assert values == list(range(n))


def test_restarting_a_zip_fed_by_a_c_sender_keeps_every_pair(flow: FlowRunner, c_nodes: Path) -> None:
    # The C node is one of the zip's senders: it reports its position, keeps back what is past
    # the agreed limit, pauses there, and sends what it kept back to the successor first.
    out, n = flow.path("out.jsonl"), 1000
    body = zip_behind_a_lagging_input(n, out, "same", c("identity"))
    values, _, _ = restart_mid_stream(flow, body, "pair", out)
    assert values == [2 * i for i in range(n)]


@pytest.mark.parametrize("victim", ["work.1", "sink"])
def test_a_killed_c_node_restarts_by_policy_and_the_flow_ends(flow: FlowRunner, c_nodes: Path, victim: str) -> None:
    out = flow.path("out.jsonl")
    lost = restarts_by_policy_after_a_kill(flow, victim, c("identity"), sink(out), out)
    print(f"SIGKILL of C {victim}: {lost} items lost")


def test_c_gray_statistics_only(flow: FlowRunner, c_nodes: Path) -> None:
    out = flow.path("out.jsonl")
    nodes = pipeline(video=video(5), gray=c("gray", args={"frame": False}), sink=sink(out))
    result = flow.run(flow.manifest(nodes))
    assert result.returncode == 0, result.stderr
    items = read_lines(out)
    assert [item["index"] for item in items] == list(range(5))
    assert all("frame" not in item and 0 < item["gray_mean"] < 255 for item in items)


def test_a_python_reader_gets_the_arrays_a_c_node_sends(flow: FlowRunner, c_nodes: Path) -> None:
    cv2 = pytest.importorskip("cv2")
    out, frames = flow.path("out.jsonl"), 10
    nodes = pipeline(video=video(frames), gray=c("gray"), check=node(f"{C_CHECKS}:ArraySummary", args={"path": out}))
    result = flow.run(flow.manifest(nodes), timeout=60)
    assert result.returncode == 0, result.stderr
    capture = cv2.VideoCapture(str(CLIP))
    expected = []
    for index in range(frames):
        gray = cv2.cvtColor(capture.read()[1], cv2.COLOR_BGR2GRAY)
        expected.append(
            {
                "index": index,
                "dtype": "|u1",
                "shape": list(gray.shape),
                "sum": int(gray.sum(dtype=np.uint64)),
                "writeable": False,
                "gray_mean": float(gray.mean()),
            }
        )
    got = read_lines(out)
    assert [{**g, "gray_mean": round(g["gray_mean"], 9)} for g in got] == [
        {**e, "gray_mean": round(e["gray_mean"], 9)} for e in expected
    ]


def test_a_c_node_skips_the_item_it_fails_on_when_told_to(flow: FlowRunner, c_nodes: Path) -> None:
    out, n = flow.path("out.jsonl"), 50
    nodes = pipeline(
        numbers=count(n),
        text=node(f"{C_CHECKS}:as_text"),
        work=c("identity", args={"fail_on": "7"}, on_error="skip"),
        sink=sink(out),
    )
    result = flow.run(flow.manifest(nodes))
    assert result.returncode == 0, result.stderr
    assert read_lines(out) == [str(i) for i in range(n) if i != 7]
    assert "skipped item 7: cannot handle item 7" in result.stdout + result.stderr


def test_c_nodes_read_their_configuration_whatever_its_characters(flow: FlowRunner, c_nodes: Path) -> None:
    # The launcher's JSON escapes non-ASCII characters (\u00f1, surrogate pairs): the path must
    # come out as written.
    out = flow.path('sal ñandú ☃ 😀 "q".jsonl')
    result = flow.run(flow.manifest(pipeline(numbers=c("count", args={"n": 3}), sink=sink(out))))
    assert result.returncode == 0, result.stderr
    assert read_lines(out) == [0, 1, 2]


@pytest.mark.parametrize(
    "change, message",
    [
        (
            lambda config: config["inputs"][0].update(endpoint="bogus://nowhere"),
            'cannot bind input "in" to bogus://nowhere',
        ),
        (
            lambda config: config["outputs"][0].update(endpoints=["bogus://x"]),
            'cannot connect output "out" to bogus://x',
        ),
        (lambda config: config.pop("control"), "lacks node, control or status"),
        (lambda config: config.update(kind="processor", inputs=[]), "needs inputs"),
    ],
)
def test_a_c_node_with_a_bad_configuration_says_why_and_exits(tmp_path: Path, c_nodes: Path, change, message) -> None:
    config = processor_config(
        "bad", *(f"ipc://{tmp_path}/{name}" for name in ("control", "status", "in", "down")), hwm=10
    )
    change(config)
    done = subprocess.run(
        [str(c_nodes / "identity")],
        env={"FLUJO_NODE_CONFIG": json.dumps(config)},
        capture_output=True,
        text=True,
        timeout=10,
    )
    assert done.returncode == 1
    assert message in done.stderr and "flujo node work" in done.stderr


def test_a_c_node_without_a_configuration_says_so(c_nodes: Path) -> None:
    done = subprocess.run([str(c_nodes / "sink")], env={}, capture_output=True, text=True, timeout=10)
    assert done.returncode == 1 and "no configuration; the launcher sets FLUJO_NODE_CONFIG" in done.stderr
    done = subprocess.run(
        [str(c_nodes / "sink")], env={"FLUJO_NODE_CONFIG": '{"node": '}, capture_output=True, text=True, timeout=10
    )
    assert done.returncode == 1 and "FLUJO_NODE_CONFIG is not a JSON object" in done.stderr


def test_c_nodes_in_a_secure_tcp_flow(flow: FlowRunner, c_nodes: Path) -> None:
    # transport = "tcp" is secure by default: every tcp socket is CURVE with the flow key.
    out, n = flow.path("out.jsonl"), 1000
    nodes = pipeline(numbers=count(n), work=c("identity", replicas=2), sink=sink(out))
    result = flow.run(flow.manifest(nodes, flow='transport = "tcp"'))
    assert result.returncode == 0, result.stderr
    assert read_lines(out) == list(range(n))


def test_a_secure_c_node_admits_only_the_flow_key(c_nodes: Path) -> None:
    admits_only_the_flow_key([str(c_nodes / "identity")], {})


@pytest.mark.skipif(can_make_namespaces() is not None, reason=can_make_namespaces() or "")
def test_a_c_node_on_another_host_restarts_without_loss(flow: FlowRunner, hosts, agent, c_nodes: Path) -> None:
    out, n = flow.path("out.jsonl"), 1000
    assert restart_on_another_host(flow, hosts, agent, c("identity"), n, out) == list(range(n))
