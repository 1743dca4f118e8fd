"""Arrays between nodes on one host go through shared memory (flujo/shm.py): every frame intact
and in order, kept frames unchanged, nothing left in /dev/shm however the flow ends, and the
inline fallback wherever shared memory cannot or must not be used."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import msgpack
import numpy as np
import psutil
import pytest
import zmq
from conftest import FlowRunner, poll_for
from flow_nodes import line_count
from manifests import Node, node
from shm_nodes import read

SHM_NODES = Path(__file__).parent / "shm_nodes.py"
SHM = Path("/dev/shm")
pytestmark = pytest.mark.timeout(90)


def segments() -> set[str]:
    return {name for name in os.listdir(SHM) if name.startswith("flujo.")}


def orphaned(names: set[str]) -> set[str]:
    """Segments whose maker is dead (other flows running meanwhile keep theirs, legitimately)."""
    return {name for name in names if not psutil.pid_exists(int(name.split(".")[4]))}


def of_flow(flow: FlowRunner, names: set[str]) -> set[str]:
    """The segments of that test's flow runs (a run id starts with the flow's name): other
    tests' flows, running meanwhile, keep a killed sender's segments for its replays."""
    prefix = f"flujo.{flow.name}_"
    return {name for name in names if name.startswith(prefix)}


@pytest.fixture
def shm_flow(flow: FlowRunner):
    """The flow fixture, and after the test: no segment of a dead process of its flows left in /dev/shm."""
    yield flow
    flow.cleanup()
    poll_for(lambda: not orphaned(of_flow(flow, segments())), timeout=10)


def manifest(flow: FlowRunner, body: str | dict[str, Node], settings: str = "") -> Path:
    """A manifest of TOML text (``{shm_nodes}`` stands for the shared-memory test nodes) or of nodes."""
    return flow.manifest(body.replace("{shm_nodes}", str(SHM_NODES)) if isinstance(body, str) else body, flow=settings)


def shm_node(name: str, inputs: object = None, **args: object) -> Node:
    """One of tests/shm_nodes.py's nodes (Frames, Pass, Invert, Check) with these args."""
    return node(f"{SHM_NODES}:{name}", inputs, args)


def shm_chain(
    out: str, frames: dict[str, object], check: dict[str, object], through: str | None = "Pass"
) -> dict[str, Node]:
    """frames -> pass/invert (``through``; None: none) -> check, which writes what it saw in ``out``."""
    nodes = {"frames": shm_node("Frames", **frames)}
    if through:
        nodes[through.lower()] = shm_node(through, "frames")
    nodes["check"] = shm_node("Check", through.lower() if through else "frames", path=out, **check)
    return nodes


def assert_all_frames(out: str, n: int, shared: bool = True) -> None:
    items, closing = read(out)
    assert [line[0] for line in items] == list(range(n))  # every frame, in order
    assert all(line[1] for line in items), [line[0] for line in items if not line[1]][:5]
    assert all(line[2] is shared for line in items), "expected shared memory" if shared else "expected inline"
    assert closing is not None and closing[2] == [], f"kept frames changed: {closing}"


def test_chain_moves_every_frame_through_shared_memory(shm_flow: FlowRunner) -> None:
    out, n = shm_flow.path("out.jsonl"), 300
    result = shm_flow.run(
        manifest(
            shm_flow,
            shm_chain(out, {"n": n}, {"keep": 20}),
        )
    )
    assert result.returncode == 0, result.stderr
    assert_all_frames(out, n)


def test_frames_kept_past_the_call_stay_unchanged(shm_flow: FlowRunner) -> None:
    # The sink keeps every frame: far more than the pool's slots, so the pool grows to its
    # bound and then falls back to inline frames; none of the kept ones may change.
    out, n = shm_flow.path("out.jsonl"), 120
    result = shm_flow.run(
        manifest(
            shm_flow,
            shm_chain(out, {"n": n, "born": False}, {"keep": -1}, through="Invert"),
            "queue = 4",
        )
    )
    assert result.returncode == 0, result.stderr
    items, closing = read(out)
    assert [line[0] for line in items] == list(range(n)) and all(line[1] for line in items)
    assert any(line[2] for line in items) and closing == ["kept", n, []]


def test_fan_out_and_replicas_get_every_frame(shm_flow: FlowRunner) -> None:
    n = 200
    outs = [shm_flow.path(f"out{k}.jsonl") for k in range(3)]
    nodes = {"frames": shm_node("Frames", n=n), "pass": shm_node("Pass", "frames") | {"replicas": 2}}
    nodes |= {f"check{k}": shm_node("Check", "pass", path=out, keep=5) for k, out in enumerate(outs)}
    result = shm_flow.run(manifest(shm_flow, nodes))
    assert result.returncode == 0, result.stderr
    for out in outs:
        assert_all_frames(out, n)


def test_zip_pairs_frames_from_shared_memory(shm_flow: FlowRunner) -> None:
    out, n = shm_flow.path("out.jsonl"), 150
    nodes = {
        "frames": shm_node("Frames", n=n),
        "a": shm_node("Pass", "frames"),
        "b": shm_node("Invert", "frames"),
        "check": shm_node("Check", {"a": "a", "b": "b"}, path=out),  # a zip of the two
    }
    result = shm_flow.run(manifest(shm_flow, nodes))
    assert result.returncode == 0, result.stderr
    items, _ = read(out)
    assert [line[0] for line in items] == [i for i in range(n) for _ in range(2)]
    assert all(line[1] and line[2] for line in items)


@pytest.mark.parametrize(
    "settings, reader_shm_off, why",
    [
        ('transport = "tcp"', False, "tcp edge"),
        ("shm = false", False, "turned off for the flow"),
        ("", True, "turned off for the reader"),
    ],
)
def test_inline_fallback(shm_flow: FlowRunner, settings: str, reader_shm_off: bool, why: str) -> None:
    out, n = shm_flow.path("out.jsonl"), 60
    nodes = shm_chain(out, {"n": n}, {"keep": 5}, through=None)
    if reader_shm_off:
        nodes["check"]["shm"] = False
    result = shm_flow.run(manifest(shm_flow, nodes, settings))
    assert result.returncode == 0, result.stderr
    assert_all_frames(out, n, shared=False)


def test_a_command_node_gets_inline_arrays(tmp_path: Path) -> None:
    from flujo.launch.manifest import validate
    from flujo.launch.plan import plan

    flow = validate(
        {
            "nodes": {
                "frames": {"run": f"{SHM_NODES}:Frames", "args": {"n": 1}},
                "foreign": {"command": ["cat"], "inputs": ["frames"]},
                "python": {"run": f"{SHM_NODES}:Check", "inputs": ["frames"], "args": {"path": "x"}},
                "declared": {"command": ["cat"], "inputs": ["frames"], "shm": True},
            }
        },
        tmp_path / "m.toml",
        "m.toml",
    )
    _, configs = plan(flow, tmp_path / "flujo-run1")
    edges = {edge.target: edge.shm for edge in configs[("frames", 0)].outputs}
    assert edges == {"foreign": False, "python": True, "declared": True}
    assert configs[("frames", 0)].shm_release and configs[("python", 0)].shm_owners
    assert not configs[("foreign", 0)].inputs[0].shm and configs[("python", 0)].inputs[0].shm


def test_stop_drains_and_leaves_no_segment(shm_flow: FlowRunner) -> None:
    out = shm_flow.path("out.jsonl")
    launcher = shm_flow.start(
        manifest(
            shm_flow,
            shm_chain(out, {"n": 100000, "pause": 0.002}, {"keep": 3}),
        )
    )
    poll_for(lambda: line_count(out) >= 50, timeout=30)
    assert shm_flow.command("stop", "--flow", shm_flow.name).returncode == 0
    launcher.communicate(timeout=30)
    assert launcher.returncode == 0
    items, closing = read(out)
    assert [line[0] for line in items] == list(range(len(items))) and all(line[1] and line[2] for line in items)
    assert closing is not None and closing[2] == []


def test_memory_stays_bounded_under_a_slow_consumer(shm_flow: FlowRunner) -> None:
    out, queue = shm_flow.path("out.jsonl"), 4
    before = segments()
    launcher = shm_flow.start(
        manifest(
            shm_flow,
            shm_chain(out, {"n": 100000}, {"delay": 0.02}, through=None),
            f"queue = {queue}",
        )
    )
    poll_for(lambda: line_count(out) >= 60, timeout=30)
    pid = shm_flow.replicas()["frames"]["pid"]
    made = {name for name in segments() - before if name.split(".")[4] == str(pid)}
    assert 0 < len(made) <= 2 * (2 * queue + 2), sorted(made)  # the pool's bound, nothing more
    assert shm_flow.command("stop", "--flow", shm_flow.name).returncode == 0
    launcher.communicate(timeout=30)
    assert launcher.returncode == 0


def pids_of(flow: FlowRunner, label: str) -> int:
    return poll_for(lambda: flow.replicas().get(label, {}).get("pid"), timeout=20)  # type: ignore[return-value]


@pytest.mark.parametrize("victim", ["check", "frames", "launcher"])
def test_sigkill_leaves_no_segment(shm_flow: FlowRunner, victim: str) -> None:
    out = shm_flow.path("out.jsonl")
    launcher = shm_flow.start(
        manifest(
            shm_flow,
            shm_chain(out, {"n": 100000, "pause": 0.002}, {"keep": 3}),
        )
    )
    poll_for(lambda: line_count(out) >= 30, timeout=30)
    assert segments()  # frames are in flight through shared memory
    if victim == "launcher":
        os.kill(launcher.pid, signal.SIGKILL)
    else:
        os.kill(pids_of(shm_flow, victim), signal.SIGKILL)
    launcher.communicate(timeout=40)  # the flow fails and ends; the fixture checks /dev/shm


def test_a_crashed_reader_gives_its_slots_back(shm_flow: FlowRunner) -> None:
    # The sink is killed mid-stream and restarted by policy: the producer gets back the
    # slots the dead process held and goes on in shared memory to the end.
    out, n = shm_flow.path("out.jsonl"), 400
    gate = shm_flow.path("gate")
    nodes = shm_chain(out, {"n": n, "pause": 0.003, "gate": gate}, {"keep": 3}, through=None)
    nodes["check"]["restart"] = "on-failure"
    launcher = shm_flow.start(manifest(shm_flow, nodes, "queue = 4"))
    poll_for(lambda: line_count(out) >= 50, timeout=30)
    os.kill(pids_of(shm_flow, "check"), signal.SIGKILL)
    poll_for(lambda: shm_flow.replicas().get("check", {}).get("restarts") == 1, timeout=30)
    Path(gate).touch()
    launcher.communicate(timeout=60)
    items, _ = read(out)
    seen = [line[0] for line in items]
    assert seen == sorted(seen) and seen[-1] == n - 1  # at most once around the crash, in order
    assert all(line[1] for line in items)
    assert all(line[2] for line in items[-50:])  # still shared memory after the crash


def test_forged_and_stale_descriptors_are_refused(tmp_path: Path) -> None:
    from flujo.shm import SharedMemoryReader, SlotPool
    from flujo.shm_wire import SHM_EXT_CODE, DescriptorError

    context = zmq.Context()
    try:
        endpoint = f"ipc://{tmp_path / 'release'}"
        pool = SlotPool(context, "testrun", "src", 0, endpoint, base=2)
        reader = SharedMemoryReader(context, "testrun", "dst", 0, {"src"}, {"src.0": endpoint})
        try:
            ext = pool.pack(np.full((512, 512), 7, np.uint8))
            assert ext is not None and ext.code == SHM_EXT_CODE
            view = reader.view(ext.data, ("src", 0))
            assert (view == 7).all() and not view.flags.writeable
            fields = msgpack.unpackb(ext.data)
            for index, value in ((6, fields[6] ^ 1), (5, fields[5] + 1), (0, "/etc/passwd"), (1, 10**9)):
                forged = list(fields)
                forged[index] = value
                with pytest.raises(DescriptorError):
                    reader.view(msgpack.packb(forged), ("src", 0))
            with pytest.raises(DescriptorError):
                reader.view(ext.data, ("intruder", 0))  # not a sender of this node
        finally:
            pool.close()
            reader.close()
    finally:
        context.destroy(linger=0)
    assert not [name for name in os.listdir(SHM) if name.startswith("flujo.testrun.")]


def test_graceful_restart_of_a_producer_whose_frames_a_reader_keeps(shm_flow: FlowRunner) -> None:
    # The sink keeps frames until it closes: the drained producer may not wait for them.
    from restarting import restart_mid_stream

    out = shm_flow.path("out.jsonl")
    lines, _, _ = restart_mid_stream(
        shm_flow,
        shm_chain(out, {"n": 300, "pause": 0.001, "gate": "{gate}"}, {"keep": 5}, through=None),
        "frames",
        out,
        after=100,
    )
    items = [line for line in lines if line[0] != "kept"]
    assert len(items) >= 400 and all(line[1] and line[2] for line in items)  # the successor starts over
    assert all(line[2] == [] for line in lines if line[0] == "kept")


@pytest.mark.parametrize("restarted", ["pass", "check"])
def test_graceful_restart_keeps_every_frame(shm_flow: FlowRunner, restarted: str) -> None:
    from restarting import restart_mid_stream

    out, n = shm_flow.path("out.jsonl"), 600
    lines, _, _ = restart_mid_stream(
        shm_flow,
        shm_chain(out, {"n": n, "pause": 0.001, "gate": "{gate}"}, {"keep": 3}),
        restarted,
        out,
        after=100,
    )
    items = [line for line in lines if line[0] != "kept"]
    assert [line[0] for line in items] == list(range(n))  # every frame, once, in order
    assert all(line[1] and line[2] for line in items)
    assert all(line[2] == [] for line in lines if line[0] == "kept")


def test_a_killed_sender_costs_only_its_frames_in_flight(shm_flow: FlowRunner) -> None:
    # The producer is killed and restarted by policy; the launcher unlinks the dead process's
    # segments at once: descriptors still queued for them are refused (counted), the reader
    # lives on, and what arrives stays intact and in order.
    out, gate = shm_flow.path("out.jsonl"), shm_flow.path("gate")
    nodes = shm_chain(out, {"n": 300, "pause": 0.002, "gate": gate}, {"keep": 3, "delay": 0.005})
    nodes["frames"]["restart"] = "on-failure"
    launcher = shm_flow.start(manifest(shm_flow, nodes, "queue = 8"))
    poll_for(lambda: line_count(out) >= 40, timeout=30)
    os.kill(pids_of(shm_flow, "frames"), signal.SIGKILL)
    poll_for(lambda: shm_flow.replicas().get("frames", {}).get("restarts") == 1, timeout=30)
    poll_for(lambda: line_count(out) >= 80, timeout=30)
    Path(gate).touch()
    _, stderr = launcher.communicate(timeout=60)
    assert launcher.returncode == 0, stderr
    items, closing = read(out)
    assert all(line[1] for line in items) and closing is not None and closing[2] == []
    assert len(items) >= 80


def test_a_port_refuses_descriptors_it_does_not_accept_and_reads_on(tmp_path: Path) -> None:
    from flujo.config import InputConfig
    from flujo.inputs import InputPort, bind_pull
    from flujo.protocol import Codec
    from flujo.shm_wire import pack_descriptor

    context = zmq.Context()
    endpoint = f"ipc://{tmp_path / 'in'}"
    config = InputConfig("in", endpoint, 4, "up", "out", 1)
    port = InputPort(bind_pull(context, config), config, Codec("me", 0), False, lambda p: None)
    sender = context.socket(zmq.PUSH)
    try:
        sender.connect(endpoint)
        codec = Codec("up", 0)
        forged = pack_descriptor("flujo.x.up.0.1.0.1", 64, "|u1", (4,), 0, 1, 1)
        for frames in (codec.encode(0, {"frame": forged}), codec.encode(1, {"ok": True})):
            sender.send_multipart(frames)
        assert port.receive() and port.rejected == 1 and not port.ready  # refused, not delivered
        assert port.receive() and [message.item for message in port.ready] == [{"ok": True}]
    finally:
        sender.close(linger=0)
        port.close()
        context.destroy(linger=0)


def test_a_full_dev_shm_falls_back_to_inline(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from flujo import shm

    def full(fd: int, offset: int, size: int) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(shm.os, "posix_fallocate", full)
    context = zmq.Context()
    pool = shm.SlotPool(context, "testrun", "src", 0, f"ipc://{tmp_path / 'release'}", base=2)
    try:
        assert pool.pack(np.zeros((512, 512), np.uint8)) is None  # inline, no crash
        assert pool.frame_buffer((512, 512)).flags.writeable  # ordinary memory
        assert pool.no_room and pool.inline_fallbacks == 2
    finally:
        pool.close()
        context.destroy(linger=0)
    assert not [name for name in os.listdir(SHM) if name.startswith("flujo.testrun.")]


def test_a_foreign_command_node_gets_inline_frames(shm_flow: FlowRunner) -> None:
    import json
    import sys

    from shm_nodes import SHAPE

    out, n = shm_flow.path("out.jsonl"), 40
    sink = Path(__file__).parent / "foreign_frame_sink.py"
    result = shm_flow.run(
        manifest(
            shm_flow,
            f"""
        [nodes.frames]
        run = "{{shm_nodes}}:Frames"
        args = {{ n = {n} }}
        [nodes.foreign]
        command = ["{sys.executable}", "{sink}", "{out}"]
        inputs = ["frames"]
        [nodes.check]
        run = "{{shm_nodes}}:Check"
        inputs = ["frames"]
        args = {{ path = "{out}.python" }}
    """,
        )
    )
    assert result.returncode == 0, result.stderr
    lines = [json.loads(line) for line in Path(out).read_text().splitlines()]
    size = SHAPE[0] * SHAPE[1] * SHAPE[2]
    assert lines == [[i, 1, size, i % 251] for i in range(n)]  # ext type 1, every byte, in order
    items, _ = read(f"{out}.python")  # the Python reader of the same frames: shared memory
    assert [line[0] for line in items] == list(range(n)) and all(line[1] and line[2] for line in items)
