"""Stopping one producer drains only what depends on it alone; commands reach a running flow."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from conftest import FlowRunner, poll_for
from flow_nodes import line_count, read_lines
from manifests import PRINT, collect, count, node

#: An endless count into a sink that takes 2 ms an item: a flow that runs until stopped.
ENDLESS = {"numbers": count(), "sink": collect("numbers", "/dev/null", delay=0.002)}


def _states(flow: FlowRunner) -> dict[str, str]:
    return {label: node["state"] for label, node in flow.replicas().items()}


def test_stopping_one_producer_drains_only_its_part(flow: FlowRunner) -> None:
    merged, zipped, b_only = flow.path("merged.jsonl"), flow.path("zipped.jsonl"), flow.path("b.jsonl")
    manifest = flow.manifest(
        {
            "a": node("{nodes}:Tagged", args={"tag": "a", "n": 1000000000}),
            "b": node("{nodes}:Tagged", args={"tag": "b", "n": 1000000000}),
            "merged": collect(["a", "b"], merged, delay=0.0003, join="merge"),
            "pairs": node("{nodes}:pair_tags", {"x": "a", "y": "b"}),
            "zipped": collect("pairs", zipped),
            "b_only": collect("b", b_only),
        },
        flow="queue = 4",
    )
    launcher = flow.start(manifest)
    poll_for(lambda: _states(flow).get("merged") == "running", timeout=20)
    assert flow.command("stop", "b", "--flow", flow.name).returncode == 0

    expected_exits = {"b", "pairs", "zipped", "b_only"}
    poll_for(lambda: all(_states(flow).get(name) == "exited" for name in expected_exits), timeout=40)
    states = _states(flow)
    assert states["a"] == "running" and states["merged"] == "running", states  # a and the merge go on
    count = len(read_lines(merged))
    poll_for(lambda: len(read_lines(merged)) > count + 20, timeout=10)  # still receiving from a

    assert flow.command("stop", "--flow", flow.name).returncode == 0  # now every producer
    _, stderr = launcher.communicate(timeout=20)
    assert launcher.returncode == 0, stderr

    b_items = read_lines(b_only)
    assert [item["i"] for item in b_items] == list(range(len(b_items)))
    merged_items = read_lines(merged)
    assert [i["i"] for i in merged_items if i["source"] == "b"] == list(range(len(b_items)))
    a_in_merge = [i["i"] for i in merged_items if i["source"] == "a"]
    assert a_in_merge == list(range(len(a_in_merge))) and len(a_in_merge) > count // 2
    pairs = read_lines(zipped)
    assert pairs == [[i, i] for i in range(len(pairs))] and len(pairs) <= len(b_items)


def test_commands_name_the_flow_they_need(flow: FlowRunner) -> None:
    result = flow.command("stop", "--flow", "nothing-like-it")
    assert result.returncode == 1
    assert 'no running flow named "nothing-like-it"' in result.stderr


def test_stop_of_an_unknown_node_is_refused(flow: FlowRunner) -> None:
    manifest = flow.manifest(ENDLESS)
    launcher = flow.start(manifest)
    poll_for(lambda: _states(flow).get("sink") == "running", timeout=20)
    result = flow.command("stop", "numbrs", "--flow", flow.name)
    assert result.returncode == 1 and 'no node named "numbrs"' in result.stderr
    assert flow.command("stop").returncode == 0  # the only flow running: no name needed
    launcher.communicate(timeout=20)
    assert launcher.returncode == 0


def test_status_shows_rates_queues_busy_and_the_bottleneck(flow: FlowRunner) -> None:
    manifest = flow.manifest(
        {
            "numbers": count(),
            "square": node("{nodes}:square", "numbers", replicas=2),
            "slow": collect("square", "/dev/null", delay=0.002),
        },
        flow="queue = 8",
    )
    launcher = flow.start(manifest)

    def settled() -> list[list[str]] | None:
        reply = flow.command("status", "--flow", flow.name)
        rows = [line.split() for line in reply.stdout.splitlines()]
        ok = reply.returncode == 0 and len(rows) == 7 and rows[-1] == ["bottleneck:", "slow"]
        # a status taken while the slow sink has just emptied its queue shows 0%: wait for a full one
        return rows if ok and float(rows[5][6]) > 0 and int(rows[5][7].rstrip("%")) >= 50 else None

    rows = poll_for(settled, timeout=20)
    assert rows[1] == [
        "node",
        "state",
        "pid",
        "restarts",
        "in",
        "out",
        "items/s",
        "queue",
        "busy",
        "dropped",
        "rejected",
    ]
    by_label = {row[0]: row for row in rows[2:5]}
    assert set(by_label) == {"numbers", "square.0", "square.1"} and rows[5][0] == "slow"
    slow = rows[5]
    assert slow[1] == "running" and int(slow[2]) > 0 and slow[3] == "0"
    assert 0 < float(slow[6]) < 600  # at most 1 / 2 ms per item: it sleeps that long for each (load only slows it)
    assert int(slow[8].rstrip("%")) >= 50  # mostly in its own code: the bottleneck
    assert int(slow[7].rstrip("%")) >= 50  # its queue is full
    ps = flow.command("ps", "--flow", flow.name).stdout.splitlines()  # the same command, by its short name
    assert ps[0] == f"flow {flow.name}" and ps[1].split() == rows[1]
    assert flow.command("stop").returncode == 0
    launcher.communicate(timeout=20)
    assert launcher.returncode == 0


def test_two_flows_at_once_are_told_apart_by_name(flow: FlowRunner) -> None:
    manifest = flow.manifest(ENDLESS)
    other = manifest.with_name("other.toml")
    other.write_text(manifest.read_text().replace(f'name = "{flow.name}"', f'name = "{flow.name}-b"'))
    first, second = flow.start(manifest), flow.start(other)
    poll_for(lambda: _states(flow).get("sink") == "running", timeout=20)
    poll_for(lambda: flow.command("status", "--flow", f"{flow.name}-b").returncode == 0, timeout=20)
    ambiguous = flow.command("status")
    assert ambiguous.returncode == 1 and "several flows are running" in ambiguous.stderr
    assert flow.command("stop", "--flow", f"{flow.name}-b").returncode == 0
    second.communicate(timeout=20)
    assert second.returncode == 0 and first.poll() is None  # the other flow runs on
    assert flow.command("stop").returncode == 0  # now the only one: no name needed
    first.communicate(timeout=20)
    assert first.returncode == 0


def test_logs_are_kept_per_node_and_can_be_followed(flow: FlowRunner) -> None:
    gate = flow.path("gate")
    manifest = flow.manifest(
        {
            "numbers": node("{nodes}:Gated", args={"n": 30, "gate": gate}),
            "square": node("{nodes}:square", "numbers", replicas=2),
            "printer": node(PRINT, "square"),
        }
    )
    launcher = flow.start(manifest)
    printer_log = Path(flow.env["FLUJO_RUNS"]) / flow.name / "logs" / "latest" / "printer.log"
    poll_for(lambda: line_count(str(printer_log)) == 30, timeout=20)
    follower = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "from flujo.launch.cli import main; main()",
            "logs",
            "printer",
            "-f",
            "--flow",
            flow.name,
            "--no-timestamps",
        ],
        stdout=subprocess.PIPE,
        text=True,
        env=flow.env,
    )
    flow.running.append(follower)
    assert follower.stdout.readline().strip() == "0"  # type: ignore[union-attr]  # following a running flow
    Path(gate).touch()  # now the stream may end, and the follower with it
    launcher.communicate(timeout=20)
    assert launcher.returncode == 0
    rest = follower.stdout.read()  # type: ignore[union-attr]  # (communicate would skip what readline buffered)
    assert follower.wait(timeout=20) == 0
    assert rest.split() == [str(n * n) for n in range(1, 30)]
    afterwards = flow.command("logs", "printer", "--flow", flow.name, "--no-timestamps")
    assert afterwards.stdout.split() == [str(n * n) for n in range(30)]
    missing = flow.command("logs", "nobody", "--flow", flow.name)
    assert missing.returncode == 1 and f'no node "nobody" in flow "{flow.name}"' in missing.stderr
