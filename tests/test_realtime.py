"""Realtime inputs: a full queue drops items instead of slowing the source, and says how many."""
from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from conftest import FlowRunner
from flow_nodes import read_lines

PRODUCED = 400


@pytest.mark.parametrize("policy", ["drop-newest", "drop-oldest", "block"])
def test_drop_policies_keep_the_source_at_its_pace(flow: FlowRunner, policy: str) -> None:
    out, status = flow.path("out.jsonl"), flow.path("status.json")
    manifest = flow.manifest(f"""
        [nodes.camera]
        run = "{{nodes}}:Paced"
        args = {{ n = {PRODUCED}, pause = 0.002 }}
        [nodes.slow]
        run = "{{nodes}}:Collect"
        inputs = ["camera"]
        policy = "{policy}"
        queue = 2
        args = {{ path = "{out}", delay = 0.02 }}
    """)
    started = time.monotonic()
    process = flow.start(manifest, "--json-status", status)
    _, stderr = process.communicate(timeout=60)
    elapsed = time.monotonic() - started
    assert process.returncode == 0, stderr
    received = read_lines(out)
    dropped = {node["label"]: node for node in json.loads(Path(status).read_text())["nodes"]}["slow"]["dropped"]
    assert received == sorted(set(received))  # in order, no duplicates
    assert dropped + len(received) == PRODUCED  # every item arrived or was counted as dropped
    if policy == "block":
        assert received == list(range(PRODUCED))  # nothing lost, the source waited
        assert elapsed > PRODUCED * 0.02
        return
    assert 5 < len(received) < PRODUCED / 3
    assert elapsed < PRODUCED * 0.02 / 2  # the camera never waited for the slow node
    if policy == "drop-oldest":
        assert received[-1] == PRODUCED - 1  # the newest item is kept to the end
