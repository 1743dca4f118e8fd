"""Lossless edges with arrays in shared memory (docs/PROTOCOL.md, sections 9.3 and 16): a sender
keeps a message's slot until its reader acknowledges it, so a reader SIGKILLed mid-stream costs
nothing: its successor is replayed the same descriptors and maps the same bytes. Every frame
arrives once, in order, with its checksum, and the flow's segments are all gone at the end.
"""

from __future__ import annotations

import contextlib
import os
import signal
from pathlib import Path

import pytest
from conftest import FlowRunner, poll_for
from flow_nodes import line_count, read_lines
from manifests import Node, node
from shm_nodes import checksum

SHM_NODES = Path(__file__).parent / "shm_nodes.py"
SHM = Path("/dev/shm")
pytestmark = pytest.mark.timeout(150)

N = 500
KILLS = 3
QUEUE = 8
ALWAYS = {"restart": "always", "max_restarts": 10}
LOSSLESS = f"queue = {QUEUE}\nlossless = true"  # shared memory on: the default


def shm_node(name: str, inputs: object = None, **fields: object) -> Node:
    args = fields.pop("args", None)
    return node(f"{SHM_NODES}:{name}", inputs, args, **fields)  # type: ignore[arg-type]


def _segments_of(prefix: str) -> dict[str, int]:
    """Segments in /dev/shm whose names start with ``prefix``, and their sizes in bytes."""
    sizes = {}
    for name in os.listdir(SHM):
        if name.startswith(prefix):
            with contextlib.suppress(FileNotFoundError):  # gone meanwhile
                sizes[name] = (SHM / name).stat().st_size
    return sizes


def _flow_prefix(flow: FlowRunner) -> str:
    """``flujo.<run id>.``: the prefix of this flow run's segments (found by the producer's pid)."""
    pid = poll_for(lambda: flow.replicas().get("frames", {}).get("pid"), timeout=30)

    def made_by_producer() -> str | None:
        for name in os.listdir(SHM):
            parts = name.split(".")
            if name.startswith("flujo.") and len(parts) == 7 and parts[2] == "frames" and parts[4] == str(pid):
                return f"flujo.{parts[1]}."
        return None

    return poll_for(made_by_producer, timeout=30)  # type: ignore[return-value]


def _kill_repeatedly(flow: FlowRunner, victim: str, out: str) -> None:
    """SIGKILL ``victim`` KILLS times, each once a further share of the stream is out and only
    once its predecessor's successor runs."""
    for kill in range(KILLS):
        poll_for(lambda kill=kill: line_count(out) >= (kill + 1) * N // (KILLS + 2), timeout=60)
        replica = flow.replicas()[victim]
        pid, restarts = replica["pid"], replica["restarts"]
        os.kill(pid, signal.SIGKILL)
        poll_for(
            lambda restarts=restarts, pid=pid: (
                flow.replicas().get(victim, {}).get("restarts") == restarts + 1
                and flow.replicas()[victim].get("pid") not in (None, pid)
            ),
            timeout=30,
        )


def _runs(path: str) -> list[list[tuple[int, int, bool]]]:
    """(item, checksum, in shared memory) per item, process by process, in the order written."""
    runs: list[list[tuple[int, int, bool]]] = []
    last_pid = None
    for pid, item, crc, shared in read_lines(path):
        if pid != last_pid:
            runs.append([])
            last_pid = pid
        runs[-1].append((item, crc, shared))
    return runs


@pytest.mark.parametrize("victim", ["check", "work"], ids=["the consumer", "the processor"])
@pytest.mark.parametrize("through", ["Pass", "Invert"], ids=["sent on", "made anew"])
def test_a_reader_killed_again_and_again_loses_no_frame(flow: FlowRunner, victim: str, through: str) -> None:
    # frames (born in shared memory) -> work (Pass: sends the received frame on, the same slot;
    # Invert: a new frame in its own slot) -> check (a checksum per frame, per process). The
    # consumer is the slowest: it is never idle, so at each kill it has released frames it has
    # not acknowledged yet (every QUEUE items), whose slots only the retention still keeps.
    out = flow.path("out.jsonl")
    nodes = {
        "frames": shm_node("Frames", args={"n": N, "pause": 0.001}),
        "work": shm_node(through, "frames", **(ALWAYS if victim == "work" else {})),
        "check": shm_node(
            "Checksums", "work", args={"path": out, "delay": 0.003}, **(ALWAYS if victim == "check" else {})
        ),
    }
    launcher = flow.start(flow.manifest(nodes, flow=LOSSLESS))
    try:
        prefix = _flow_prefix(flow)
        _kill_repeatedly(flow, victim, out)
        stdout, stderr = launcher.communicate(timeout=90)
    finally:
        flow.cleanup()
    assert launcher.returncode == 0, stderr
    assert "lossless across a crash: frames -> work, work -> check" in stderr  # said at start

    runs = _runs(out)
    assert len(runs) == (KILLS + 1 if victim == "check" else 1)
    delivered: list[tuple[int, int, bool]] = []
    again = 0
    for run in runs:
        items = [item for item, _, _ in run]
        assert items == sorted(set(items)), "a process consumed a frame twice or out of order"
        if delivered:
            assert items[0] <= delivered[-1][0] + 1, f"frames {delivered[-1][0] + 1}..{items[0] - 1} lost"
        fresh = [line for line in run if not delivered or line[0] > delivered[-1][0]]
        again += len(run) - len(fresh)
        delivered.extend(fresh)
    assert [item for item, _, _ in delivered] == list(range(N))  # every frame once, in order
    # Every frame any process consumed, a successor's again included, had its bytes; and every
    # replayed descriptor still named them (no slot reused while a replay was on its way).
    inverted = through == "Invert"
    damaged = [item for run in runs for item, crc, _ in run if crc != checksum(item, inverted)]
    assert not damaged, f"frames whose bytes changed: {damaged[:10]}"
    assert "stale shared-memory descriptor" not in stdout + stderr, stdout[-2000:]  # (nodes' lines: stdout)
    shared = sum(in_shm for _, _, in_shm in delivered)
    assert shared >= 0.9 * N, f"only {shared} of {N} frames through shared memory"
    # Nothing of the flow left in /dev/shm: not a segment, not a byte.
    assert _segments_of(prefix) == {}
    print(f"{KILLS} kills of {victim}: 0 lost, {again} consumed again, {shared} of {N} in shared memory")


def test_memory_stays_bounded_while_the_reader_acknowledges_nothing(flow: FlowRunner) -> None:
    # A consumer that takes nothing for a while acknowledges nothing: its sender keeps every
    # message's slot, and makes no more than its pool's bound of them meanwhile. Once it
    # reads, every frame arrives, intact and in order.
    out, gate = flow.path("out.jsonl"), flow.path("gate")
    nodes = {
        "frames": shm_node("Frames", args={"n": 200}),
        "work": shm_node("Pass", "frames"),
        # Without credits (PROTOCOL 18) in front of the held reader: a credit window would stop
        # the producer before it made more frames than the pool holds, the case this is about.
        "check": shm_node("Checksums", "work", args={"path": out, "gate": gate}, credits=False),
    }
    # A small queue: every frame past the pool's base waits PIN_GRACE (0.25 s) for a slot first,
    # so the bound is reached after about 8 s instead of 14 s with the module's queue of 8.
    queue = 4
    launcher = flow.start(flow.manifest(nodes, flow=f"queue = {queue}\nlossless = true"))
    try:
        prefix = _flow_prefix(flow)
        pid = flow.replicas()["frames"]["pid"]
        # More frames out than the pool's bound of slots, none acknowledged: the rest went inline.
        base = (2 * queue + queue) + 2  # a queue at both ends and an acknowledgement batch, plus 2
        poll_for(lambda: flow.replicas()["frames"]["items_out"] > 2 * base + 4, timeout=30)
        made = {name for name in _segments_of(prefix) if name.split(".")[4] == str(pid)}
        assert 0 < len(made) <= 2 * base, sorted(made)
        assert line_count(out) == 0  # nothing taken yet: nothing acknowledged
        Path(gate).touch()
        _, stderr = launcher.communicate(timeout=60)
    finally:
        flow.cleanup()
    assert launcher.returncode == 0, stderr
    lines = read_lines(out)
    assert [line[1] for line in lines] == list(range(200))
    assert all(line[2] == checksum(line[1]) for line in lines)
    assert _segments_of(prefix) == {}
