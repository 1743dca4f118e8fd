"""Realtime inputs: a full queue drops items instead of slowing the source, and says how many.

How far the source got is read from the source itself (a counter it writes), and compared with
how far the consumer got: no clock decides.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from conftest import FlowRunner, poll_for
from flow_nodes import line_count, progress, read_lines
from manifests import collect, node

PRODUCED = 400


def _run(flow: FlowRunner, policy: str, slow: dict, **camera: object) -> tuple[subprocess.Popen, dict[str, str]]:
    files = {name: flow.path(name) for name in ("out.jsonl", "status.json", "progress", "gate", "held")}
    manifest = flow.manifest(
        {
            "camera": node("{nodes}:Reporting", args={"n": PRODUCED, "progress": files["progress"], **camera}),
            "slow": {**slow, "policy": policy, "queue": 2},
        }
    )
    return flow.start(manifest, "--json-status", files["status.json"]), files


def _ended(launcher: subprocess.Popen, files: dict[str, str]) -> tuple[list[int], int]:
    """What the consumer received and how many items its queue dropped, once the flow has ended."""
    _, stderr = launcher.communicate(timeout=30)
    assert launcher.returncode == 0, stderr
    nodes = {node["label"]: node for node in json.loads(Path(files["status.json"]).read_text())["nodes"]}
    return read_lines(files["out.jsonl"]), nodes["slow"]["dropped"]


@pytest.mark.parametrize("policy", ["drop-newest", "drop-oldest"])
def test_a_full_queue_drops_and_the_source_keeps_its_pace(flow: FlowRunner, policy: str) -> None:
    out = flow.path("out.jsonl")
    slow = collect("camera", out, delay=0.05)  # 50 times slower than the camera
    launcher, files = _run(flow, policy, slow, pause=0.001)
    poll_for(lambda: progress(files["progress"]) == PRODUCED, timeout=30)
    assert line_count(out) < PRODUCED / 3  # the whole stream left the camera long before the consumer took it
    received, dropped = _ended(launcher, files)
    assert received == sorted(set(received))  # in order, no duplicates
    assert dropped + len(received) == PRODUCED  # every item arrived or was counted as dropped
    assert 3 <= len(received) < PRODUCED / 3  # at least the item in hand and a full queue of 2
    if policy == "drop-oldest":
        assert received[-1] == PRODUCED - 1  # the newest item is kept to the end


def test_block_holds_the_source_and_loses_nothing(flow: FlowRunner) -> None:
    files = {name: flow.path(name) for name in ("out.jsonl", "gate", "held")}
    launcher, files = _run(
        flow,
        "block",
        node(
            "{nodes}:HoldsFirst",
            "camera",
            args={"path": files["out.jsonl"], "gate": files["gate"], "held": files["held"]},
        ),
        pause=0,
        pad=8192,  # few such items fit in the sockets' buffers, which a queue of 2 messages does not bound
    )
    poll_for(lambda: Path(files["held"]).exists(), timeout=30)
    poll_for(lambda: progress(files["progress"]) > 0, timeout=30)
    # The consumer holds its first item: the camera is held at its queues' bounds. (A camera
    # that did not wait, pausing for nothing, would have handed over all its items by now.)
    assert progress(files["progress"]) < PRODUCED / 2
    Path(files["gate"]).touch()
    received, dropped = _ended(launcher, files)
    assert received == list(range(PRODUCED)) and dropped == 0  # nothing lost: the camera waited
