"""`flujo-launch logs`: lines stamped when relayed, interleaved by time, --tail, --since,
kept per run (the last few), and a node that printed nothing is not an error."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from pathlib import Path

import pytest
from conftest import FlowRunner
from manifests import PRINT, count, node

from flujo.launch import logstore

# Two printers, one behind a node that prints nothing.
PRINTERS = {
    "numbers": count(30),
    "quiet": node("{nodes}:square", "numbers"),
    "left": node(PRINT, "numbers"),
    "right": node(PRINT, "quiet"),
}


def _parsed(stdout: str) -> list[tuple[datetime, str, str]]:
    """(time, label, text) of each line `logs` printed: "<stamp> <label> | <text>"."""
    rows = []
    for line in stdout.splitlines():
        at, rest = line.split(" ", 1)
        label, text = rest.split(" | ", 1)
        rows.append((logstore.parse_stamp(at), label.strip(), text))
    return rows


def test_logs_are_stamped_interleaved_by_time_and_filtered(flow: FlowRunner) -> None:
    manifest = flow.manifest(PRINTERS)
    before = datetime.now(UTC)
    assert flow.run(manifest).returncode == 0
    after = datetime.now(UTC)
    result = flow.command("logs", "--flow", flow.name)
    assert result.returncode == 0, result.stderr
    rows = _parsed(result.stdout)
    assert all(before <= at <= after for at, _, _ in rows)  # stamped when relayed, in this run
    assert [at for at, _, _ in rows] == sorted(at for at, _, _ in rows)  # interleaved by time
    assert [text for _, label, text in rows if label == "left"] == [str(n) for n in range(30)]
    assert [text for _, label, text in rows if label == "right"] == [str(n * n) for n in range(30)]

    tail = flow.command("logs", "--flow", flow.name, "--tail", "5")
    assert tail.stdout.splitlines() == result.stdout.splitlines()[-5:]
    one = flow.command("logs", "right", "--flow", flow.name, "-n", "3", "--no-timestamps")
    assert one.stdout.splitlines() == [str(n * n) for n in (27, 28, 29)]  # one node: no prefix

    middle = rows[20][0]
    since = flow.command("logs", "--flow", flow.name, "--since", middle.isoformat())
    assert [row[0] for row in _parsed(since.stdout)] == [at for at, _, _ in rows if at >= middle]
    assert len(_parsed(since.stdout)) < len(rows)
    recent = flow.command("logs", "--flow", flow.name, "--since", "1h")
    assert recent.stdout == result.stdout
    bad = flow.command("logs", "--flow", flow.name, "--since", "yesterday-ish")
    assert bad.returncode == 1 and "--since 'yesterday-ish': give a duration" in bad.stderr

    silent = flow.command("logs", "quiet", "--flow", flow.name)  # it ran and printed nothing
    assert silent.returncode == 0 and silent.stdout == ""
    unknown = flow.command("logs", "loud", "--flow", flow.name)
    assert unknown.returncode == 1 and 'no node "loud"' in unknown.stderr and "left, numbers" in unknown.stderr


def test_each_run_keeps_its_own_logs(flow: FlowRunner) -> None:
    manifest = flow.manifest(PRINTERS)
    assert flow.run(manifest).returncode == 0
    first = flow.command("logs", "--flow", flow.name).stdout
    assert flow.run(manifest).returncode == 0
    latest = flow.command("logs", "--flow", flow.name).stdout
    assert latest != first and len(latest.splitlines()) == len(first.splitlines()) == 60  # not appended
    assert _parsed(latest)[0][0] > _parsed(first)[-1][0]  # the second run's lines
    assert flow.command("logs", "--flow", flow.name, "--run", "1").stdout == first  # one run back
    runs = flow.command("logs", "--flow", flow.name, "--runs").stdout.splitlines()
    assert len(runs) == 2
    assert flow.command("logs", "--flow", flow.name, "--run", runs[0].split()[0]).stdout == first
    missing = flow.command("logs", "--flow", flow.name, "--run", "5")
    assert missing.returncode == 1 and "has only 2 kept runs" in missing.stderr


def test_only_the_last_runs_are_kept(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FLUJO_RUNS", str(tmp_path))
    made = []
    for number in range(logstore.KEEP_RUNS + 2):
        made.append(logstore.new_run("f", {"labels": ["a"]}).name)
        (logstore.logs_root("f") / made[-1] / "a.log").write_text(f"{logstore.stamp(time.time())} run {number}\n")
    assert logstore.runs("f") == made[-logstore.KEEP_RUNS :]
    assert logstore.run_folder("f").name == made[-1]  # latest
    assert [line.text for line in logstore.merged(logstore.run_folder("f"), ["a"])] == [f"run {logstore.KEEP_RUNS + 1}"]


def test_since_takes_durations_and_times(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Lines written two hours ago and now: --since 30m shows only the new ones."""
    monkeypatch.setenv("FLUJO_RUNS", str(tmp_path))
    folder = logstore.new_run("f", {"labels": ["a", "b"]})
    now = time.time()
    (folder / "a.log").write_text(f"{logstore.stamp(now - 7200)} old a\n{logstore.stamp(now - 1)} new a\n")
    (folder / "b.log").write_text(f"{logstore.stamp(now - 7100)} old b\n{logstore.stamp(now - 2)} new b\n")
    from click.testing import CliRunner

    from flujo.launch.cli import main

    def logs(*args: str) -> list[str]:
        result = CliRunner().invoke(main, ["logs", "--flow", "f", "--no-timestamps", *args])
        assert result.exit_code == 0, result.output
        return result.output.splitlines()

    assert logs() == ["a | old a", "b | old b", "b | new b", "a | new a"]
    assert logs("--since", "30m") == ["b | new b", "a | new a"]
    assert logs("--since", "1h59m") == ["b | old b", "b | new b", "a | new a"]
    local = datetime.fromtimestamp(now - 3600).strftime("%Y-%m-%dT%H:%M:%S")  # no zone: this machine's time
    assert logs("--since", local) == ["b | new b", "a | new a"]
    assert logs("--since", "2h", "--tail", "1") == ["a | new a"]
