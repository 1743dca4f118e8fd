"""The C node library (sdk/c) in real flows: replicas, order, zips, stops, errors, graceful restarts, frames."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import FlowRunner, build_c_sdk, poll_for
from flow_nodes import line_count, read_lines
from manifests import program
from netns import can_make_namespaces
from restarting import chain, restart_mid_stream, zip_behind_a_lagging_input
from sdk_checks import admits_only_the_flow_key
from test_hosts import _body as hosts_body
from test_hosts import agent as agent  # fixtures: pytest finds them by name here
from test_hosts import hosts as hosts

pytestmark = pytest.mark.timeout(120)

ROOT = Path(__file__).parent.parent
SDK = ROOT / "sdk" / "c"
BUILD = SDK / "build"
CLIP = ROOT / "samples" / "data" / "vtest.avi"


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


def test_a_replicated_c_processor_behind_a_replicated_node_keeps_the_order(flow: FlowRunner, c_nodes: Path) -> None:
    # Both C replicas read from both replicas of a jittering Python node: each restores
    # order on its input, and the C sink restores it again behind the two C replicas.
    out, n = flow.path("out.jsonl"), 3000
    manifest = flow.manifest(
        f"""
        [nodes.numbers]
        run = "flujo.nodes.basic:Count"
        args = {{ n = {n} }}
        [nodes.spread]
        run = "{{nodes}}:jitter"
        inputs = ["numbers"]
        replicas = 2
        [nodes.work]
        command = ["{c_nodes}/identity"]
        inputs = ["spread"]
        replicas = 2
        [nodes.sink]
        command = ["{c_nodes}/sink"]
        inputs = ["work"]
        args = {{ path = "{out}" }}
    """,
        flow="queue = 8",
    )
    result = flow.run(manifest, timeout=90)
    assert result.returncode == 0, result.stderr
    assert read_lines(out) == list(range(n))


def test_a_c_processor_passes_skips_and_the_python_nodes_batches(flow: FlowRunner, c_nodes: Path) -> None:
    # keep_even sends SKIP for odd numbers: the C node passes the gaps on (not as items); the
    # slow C sink keeps queues full, so the Python producer sends batches to the C node.
    out, n = flow.path("out.jsonl"), 2000
    manifest = flow.manifest(
        f"""
        [nodes.numbers]
        run = "flujo.nodes.basic:Count"
        args = {{ n = {n} }}
        [nodes.even]
        run = "{{nodes}}:keep_even"
        inputs = ["numbers"]
        [nodes.work]
        command = ["{c_nodes}/identity"]
        inputs = ["even"]
        [nodes.sink]
        command = ["{c_nodes}/sink"]
        inputs = ["work"]
        args = {{ path = "{out}" }}
    """,
        flow="queue = 4",
    )
    result = flow.run(manifest, timeout=60)
    assert result.returncode == 0, result.stderr
    assert read_lines(out) == list(range(0, n, 2))


def test_a_c_consumer_zips_two_ports(flow: FlowRunner, c_nodes: Path) -> None:
    out, n = flow.path("out.jsonl"), 500
    manifest = flow.manifest(f"""
        [nodes.numbers]
        run = "flujo.nodes.basic:Count"
        args = {{ n = {n} }}
        [nodes.squares]
        run = "{{nodes}}:square"
        inputs = ["numbers"]
        replicas = 2
        [nodes.sink]
        command = ["{c_nodes}/sink"]
        inputs = {{ a = "numbers", b = "squares" }}
        args = {{ path = "{out}" }}
    """)
    result = flow.run(manifest)
    assert result.returncode == 0, result.stderr
    assert read_lines(out) == [[i, i * i] for i in range(n)]


def test_stopping_a_flow_through_c_nodes_delivers_everything_produced(flow: FlowRunner, c_nodes: Path) -> None:
    out, report = flow.path("out.jsonl"), flow.path("produced.json")
    manifest = flow.manifest(
        f"""
        [nodes.numbers]
        run = "{{nodes}}:CountingProducer"
        args = {{ report = "{report}" }}
        [nodes.work]
        command = ["{c_nodes}/identity"]
        inputs = ["numbers"]
        replicas = 2
        [nodes.sink]
        command = ["{c_nodes}/sink"]
        inputs = ["work"]
        args = {{ path = "{out}" }}
    """,
        flow="queue = 8",
    )
    launcher = flow.start(manifest)
    poll_for(lambda: line_count(out) >= 500, timeout=30)
    assert flow.command("stop", "--flow", flow.name).returncode == 0
    _, stderr = launcher.communicate(timeout=30)
    assert launcher.returncode == 0, stderr
    produced = json.loads(Path(report).read_text())["produced"]
    assert read_lines(out) == list(range(produced))  # exactly once, in order, up to the stop


def test_a_failing_c_node_reports_its_error_and_the_flow_drains(flow: FlowRunner, c_nodes: Path) -> None:
    # gray refuses items that are not frames: the error reaches the launcher, the node exits 1.
    manifest = flow.manifest(f"""
        [nodes.numbers]
        run = "flujo.nodes.basic:Count"
        args = {{ n = 100 }}
        [nodes.gray]
        command = ["{c_nodes}/gray"]
        inputs = ["numbers"]
        [nodes.sink]
        command = ["{c_nodes}/sink"]
        inputs = ["gray"]
    """)
    result = flow.run(manifest)
    assert result.returncode == 1
    assert result.returncode == 1, result.stderr


@pytest.mark.parametrize("replicas", [1, 2])
def test_restarting_a_c_processor_loses_nothing(flow: FlowRunner, c_nodes: Path, replicas: int) -> None:
    out, n = flow.path("out.jsonl"), 3000
    values, _, _ = restart_mid_stream(
        flow,
        f"""
        [nodes.numbers]
        run = "{{nodes}}:Gated"
        args = {{ n = {n}, pause = 0.0005, gate = "{{gate}}" }}
        [nodes.work]
        command = ["{c_nodes}/identity"]
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
    assert values == list(range(n))  # every item, once, in order


def test_restarting_a_c_consumer_loses_nothing(flow: FlowRunner, c_nodes: Path) -> None:
    out, n = flow.path("out.jsonl"), 2000
    values, _, _ = restart_mid_stream(
        flow,
        f"""
        [nodes.numbers]
        run = "{{nodes}}:Gated"
        args = {{ n = {n}, pause = 0.0002, gate = "{{gate}}" }}
        [nodes.sink]
        command = ["{c_nodes}/sink"]
        inputs = ["numbers"]
        args = {{ path = "{out}" }}
    """,
        "sink",
        out,
    )
    assert values == list(range(n))


def test_restarting_a_c_zip_keeps_every_pair(flow: FlowRunner, c_nodes: Path) -> None:
    # One input lags the other, so at the restart its senders stand at different sequence
    # numbers: they agree on one (position, align) and the C zip drains up to it.
    out, n = flow.path("out.jsonl"), 2000
    values, _, _ = restart_mid_stream(
        flow,
        f"""
        [nodes.numbers]
        run = "{{nodes}}:Gated"
        args = {{ n = {n}, pause = 0.0005, gate = "{{gate}}" }}
        [nodes.lagging]
        run = "{{nodes}}:jitter"
        inputs = ["numbers"]
        replicas = 2
        [nodes.squares]
        run = "{{nodes}}:square"
        inputs = ["numbers"]
        [nodes.sink]
        command = ["{c_nodes}/sink"]
        inputs = {{ a = "lagging", b = "squares" }}
        args = {{ path = "{out}" }}
    """,
        "sink",
        out,
    )
    assert values == [[i, i * i] for i in range(n)]


def test_c_gray_converts_the_clip_as_opencv_does(flow: FlowRunner, c_nodes: Path) -> None:
    cv2 = pytest.importorskip("cv2")
    out, frames = flow.path("out.jsonl"), 20
    manifest = flow.manifest(f"""
        [nodes.video]
        run = "flujo.nodes.video:VideoReader"
        args = {{ source = "{CLIP}", max_frames = {frames} }}
        [nodes.gray]
        command = ["{c_nodes}/gray"]
        inputs = ["video"]
        replicas = 2
        [nodes.sink]
        command = ["{c_nodes}/sink"]
        inputs = ["gray"]
        args = {{ path = "{out}" }}
    """)
    result = flow.run(manifest, timeout=60)
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


@pytest.mark.parametrize("kind, program", [("processor", "identity"), ("consumer", "sink"), ("producer", "count")])
def test_the_c_examples_pass_the_conformance_kit_at_the_restartable_level(
    c_nodes: Path, kind: str, program: str
) -> None:
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
            json.dumps({"fail_on": "flujo-conformance:fail"}),
            "--",
            str(c_nodes / program),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    failed = [line for line in done.stdout.splitlines() if line.startswith("FAIL")]
    assert done.returncode == 0 and not failed, done.stdout[-3000:] + done.stderr[-2000:]
    assert "Level reached: restartable" in done.stdout


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
        [str(c_nodes / "identity")], env={"FLUJO_NODE_CONFIG": json.dumps(config)}, stderr=subprocess.PIPE, text=True
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
            [header(0, 0), msgpack.packb(array_ref(2, "<q9", [3])), bytes(12)],  # no such dtype
            [msgpack.packb([1, 0, 0, "up", 7]), msgpack.packb(1)],  # a sender replica that does not exist
            [header(3, 0), msgpack.packb([1, array_ref(2, "<i4", [3])]), bytes(12)],  # an array in a BATCH
        ]
        for frames in forged:
            sender.send_multipart(frames)
        sender.send_multipart([header(0, 0), good, (7).to_bytes(4, "little") * 3])
        sender.send_multipart([header(2, 0)])  # end of stream
        assert reader.poll(10_000)
        first = reader.recv_multipart()
        head = msgpack.unpackb(first[0])
        assert head[:3] == [1, 0, 0] and head[3:5] == ["work", 0]
        body = msgpack.unpackb(first[1])
        assert body["a"] == array_ref(2, "<i4", [3]) and first[2] == (7).to_bytes(4, "little") * 3
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
        assert process.stderr.read().count('refused a message on port "in"') == len(forged)
    finally:
        process.kill()
        process.wait()
        context.destroy(linger=0)


def test_a_c_producer_feeds_a_c_merge(flow: FlowRunner, c_nodes: Path) -> None:
    # A C producer and a Python one into a C sink merging both ports: every item of each, in order.
    out, n, m = flow.path("out.jsonl"), 1000, 400
    manifest = flow.manifest(f"""
        [nodes.numbers]
        command = ["{c_nodes}/count"]
        args = {{ n = {n} }}
        [nodes.tagged]
        run = "{{nodes}}:Tagged"
        args = {{ tag = "b", n = {m} }}
        [nodes.sink]
        command = ["{c_nodes}/sink"]
        inputs = ["numbers", "tagged"]
        join = "merge"
        args = {{ path = "{out}" }}
    """)
    result = flow.run(manifest)
    assert result.returncode == 0, result.stderr
    values = read_lines(out)
    assert [v for v in values if isinstance(v, int)] == list(range(n))
    assert [v for v in values if isinstance(v, dict)] == [{"source": "b", "i": i} for i in range(m)]
    assert len(values) == n + m


def test_restarting_a_c_producer_continues_its_numbering(flow: FlowRunner, c_nodes: Path) -> None:
    # The drained process hands over after its last item; its successor (numbering its items on
    # from the drained one's next_seq) counts from 0 again: nothing lost, nothing twice.
    out, n = flow.path("out.jsonl"), 1500
    launcher = flow.start(
        flow.manifest(
            f"""
        [nodes.numbers]
        command = ["{c_nodes}/count"]
        args = {{ n = {n}, pause = 0.001 }}
        [nodes.sink]
        run = "{{nodes}}:Collect"
        inputs = ["numbers"]
        args = {{ path = "{out}" }}
    """,
            flow="queue = 4",
        )
    )
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
    # The sink reads "drop-oldest": the C sender in front of it never blocks (an item finding
    # the queue full is dropped, counted) and the sink drops its oldest waiting items. What
    # arrives is in order and never twice, and the flow ends cleanly.
    out, n = flow.path("out.jsonl"), 3000
    manifest = flow.manifest(f"""
        [nodes.numbers]
        run = "flujo.nodes.basic:Count"
        args = {{ n = {n} }}
        [nodes.work]
        command = ["{c_nodes}/identity"]
        inputs = ["numbers"]
        [nodes.sink]
        command = ["{c_nodes}/sink"]
        inputs = ["work"]
        policy = "drop-oldest"
        queue = 2
        args = {{ path = "{out}" }}
    """)
    result = flow.run(manifest)
    assert result.returncode == 0, result.stderr
    values = read_lines(out)
    assert values == sorted(set(values)) and set(values) <= set(range(n)) and values


def test_restarting_the_reader_of_a_c_sender_loses_nothing(flow: FlowRunner, c_nodes: Path) -> None:
    # The C node is the sender here: it pauses the held Python sink, waits, and resumes.
    out, n = flow.path("out.jsonl"), 2000
    body = chain(n, out, program([str(c_nodes / "identity")]), pause=None, delay=0.0005)
    values, _, _ = restart_mid_stream(flow, body, "sink", out)
    assert values == list(range(n))


def test_restarting_a_zip_fed_by_a_c_sender_keeps_every_pair(flow: FlowRunner, c_nodes: Path) -> None:
    # The C node is one of the zip's senders: it reports its position, keeps back what is past
    # the agreed limit, pauses there, and sends what it kept back to the successor first.
    out, n = flow.path("out.jsonl"), 2000
    body = zip_behind_a_lagging_input(n, out, "same", program([str(c_nodes / "identity")]))
    values, _, _ = restart_mid_stream(flow, body, "pair", out)
    assert values == [2 * i for i in range(n)]


@pytest.mark.parametrize("victim", ["work.1", "sink"])
def test_a_killed_c_node_restarts_by_policy_and_the_flow_ends(flow: FlowRunner, c_nodes: Path, victim: str) -> None:
    # At most once across a crash: the items queued in the killed process may be lost, but
    # nothing comes twice or out of order, and the stream reaches its end.
    out, n = flow.path("out.jsonl"), 1500
    manifest = flow.manifest(
        f"""
        [nodes.numbers]
        run = "{{nodes}}:Paced"
        args = {{ n = {n}, pause = 0.001 }}
        [nodes.work]
        command = ["{c_nodes}/identity"]
        inputs = ["numbers"]
        replicas = 2
        restart = "on-failure"
        [nodes.sink]
        command = ["{c_nodes}/sink"]
        inputs = ["work"]
        restart = "on-failure"
        args = {{ path = "{out}" }}
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
    print(f"SIGKILL of C {victim}: {n - len(values)} items lost")


def test_c_gray_statistics_only(flow: FlowRunner, c_nodes: Path) -> None:
    out = flow.path("out.jsonl")
    manifest = flow.manifest(f"""
        [nodes.video]
        run = "flujo.nodes.video:VideoReader"
        args = {{ source = "{CLIP}", max_frames = 5 }}
        [nodes.gray]
        command = ["{c_nodes}/gray"]
        inputs = ["video"]
        args = {{ frame = false }}
        [nodes.sink]
        command = ["{c_nodes}/sink"]
        inputs = ["gray"]
        args = {{ path = "{out}" }}
    """)
    result = flow.run(manifest)
    assert result.returncode == 0, result.stderr
    items = read_lines(out)
    assert [item["index"] for item in items] == list(range(5))
    assert all("frame" not in item and 0 < item["gray_mean"] < 255 for item in items)


def test_a_python_reader_gets_the_arrays_a_c_node_sends(flow: FlowRunner, c_nodes: Path) -> None:
    cv2 = pytest.importorskip("cv2")
    out, frames = flow.path("out.jsonl"), 10
    manifest = flow.manifest(f"""
        [nodes.video]
        run = "flujo.nodes.video:VideoReader"
        args = {{ source = "{CLIP}", max_frames = {frames} }}
        [nodes.gray]
        command = ["{c_nodes}/gray"]
        inputs = ["video"]
        [nodes.check]
        run = "{Path(__file__).parent / "sdk_c_nodes.py"}:ArraySummary"
        inputs = ["gray"]
        args = {{ path = "{out}" }}
    """)
    result = flow.run(manifest, timeout=60)
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
    manifest = flow.manifest(f"""
        [nodes.numbers]
        run = "flujo.nodes.basic:Count"
        args = {{ n = {n} }}
        [nodes.text]
        run = "{Path(__file__).parent / "sdk_c_nodes.py"}:as_text"
        inputs = ["numbers"]
        [nodes.work]
        command = ["{c_nodes}/identity"]
        inputs = ["text"]
        on_error = "skip"
        args = {{ fail_on = "7" }}
        [nodes.sink]
        command = ["{c_nodes}/sink"]
        inputs = ["work"]
        args = {{ path = "{out}" }}
    """)
    result = flow.run(manifest)
    assert result.returncode == 0, result.stderr
    assert read_lines(out) == [str(i) for i in range(n) if i != 7]
    assert "skipped item 7: cannot handle item 7" in result.stdout + result.stderr


def test_c_nodes_read_their_configuration_whatever_its_characters(flow: FlowRunner, c_nodes: Path) -> None:
    # The launcher's JSON escapes non-ASCII characters (\u00f1, surrogate pairs): the path must
    # come out as written.
    out = flow.path('sal ñandú ☃ 😀 "q".jsonl')
    manifest = flow.manifest(f"""
        [nodes.numbers]
        command = ["{c_nodes}/count"]
        args = {{ n = 3 }}
        [nodes.sink]
        command = ["{c_nodes}/sink"]
        inputs = ["numbers"]
        args = {{ path = {json.dumps(out, ensure_ascii=False)} }}
    """)
    result = flow.run(manifest)
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
    config = {
        "protocol": 1,
        "flow": "bad",
        "node": "work",
        "replica": 0,
        "replicas": 1,
        "kind": "processor",
        "control": f"ipc://{tmp_path}/control",
        "status": f"ipc://{tmp_path}/status",
        "inputs": [
            {
                "port": "in",
                "endpoint": f"ipc://{tmp_path}/in",
                "hwm": 10,
                "source": "up",
                "source_port": "out",
                "senders": 1,
            }
        ],
        "outputs": [
            {"port": "out", "target": "down", "target_port": "in", "hwm": 10, "endpoints": [f"ipc://{tmp_path}/down"]}
        ],
    }
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
    out, n = flow.path("out.jsonl"), 2000
    manifest = flow.manifest(
        f"""
        [nodes.numbers]
        run = "flujo.nodes.basic:Count"
        args = {{ n = {n} }}
        [nodes.work]
        command = ["{c_nodes}/identity"]
        inputs = ["numbers"]
        replicas = 2
        [nodes.sink]
        command = ["{c_nodes}/sink"]
        inputs = ["work"]
        args = {{ path = "{out}" }}
    """,
        flow='transport = "tcp"',
    )
    result = flow.run(manifest)
    assert result.returncode == 0, result.stderr
    assert read_lines(out) == list(range(n))


def test_a_secure_c_node_admits_only_the_flow_key(c_nodes: Path) -> None:
    admits_only_the_flow_key([str(c_nodes / "identity")], {})


@pytest.mark.skipif(can_make_namespaces() is not None, reason=can_make_namespaces() or "")
def test_a_c_node_on_another_host_restarts_without_loss(flow: FlowRunner, hosts, agent, c_nodes: Path) -> None:
    # Host B runs the C replicas through its agent: a secure tcp flow (CURVE with the flow key,
    # the C node's ZAP handler admitting its Python senders), restarted gracefully mid-stream.
    out, n = flow.path("out.jsonl"), 2000
    body = f"""
        [nodes.numbers]
        run = "{{nodes}}:Gated"
        args = {{ n = {n}, pause = 0.0005, gate = "{{gate}}" }}
        [nodes.work]
        command = ["{c_nodes}/identity"]
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
    assert values == list(range(n))
