"""The runs folder is the user's alone: created private, never reached through a link or
someone else's folder; logs are 0600."""

from __future__ import annotations

import os
import stat
import tempfile
from pathlib import Path

import pytest
from conftest import FlowRunner
from manifests import PRINT, count, node, program

from flujo.launch.process import OutputRelay
from flujo.launch.runs import ANNOUNCEMENT, CommandError, announce, find_flow, private_runs_folder

FLOW = {"numbers": count(3), "sink": node(PRINT, "numbers")}


def _default_location(flow: FlowRunner) -> Path:
    """Run the flow's launchers with the default runs folder, under a temporary folder of the test's."""
    tmp = Path(flow.path("tmp"))
    tmp.mkdir(exist_ok=True)
    del flow.env["FLUJO_RUNS"]
    flow.env["TMPDIR"] = str(tmp)
    return tmp / f"flujo-{os.getuid()}"


def _mode(path: Path) -> int:
    return stat.S_IMODE(os.lstat(path).st_mode)


def test_folders_are_private_and_logs_0600(flow: FlowRunner) -> None:
    root = _default_location(flow)
    root.mkdir(mode=0o755)  # left by an older version: ours, but open to all
    os.chmod(root, 0o755)
    result = flow.run(flow.manifest(FLOW))
    assert result.returncode == 0, result.stderr
    logs = root / "runs" / flow.name / "logs"
    run = (logs / "latest").resolve()
    folders = [root, root / "runs", root / "runs" / flow.name, logs, run]
    assert [oct(_mode(folder)) for folder in folders] == [oct(0o700)] * 5
    files = sorted(path for path in run.iterdir() if path.suffix == ".log")
    assert [path.name for path in files] == ["sink.log"]  # the only node that printed
    assert oct(_mode(files[0])) == oct(0o600) and "2" in files[0].read_text()


def test_a_planted_symlink_is_refused(flow: FlowRunner) -> None:
    root = _default_location(flow)
    victim = Path(flow.path("victim"))
    victim.mkdir()
    root.symlink_to(victim)
    marker = Path(flow.path("started"))
    result = flow.run(flow.manifest(FLOW | {"witness": program(["touch", str(marker)])}))
    assert result.returncode == 1
    assert f"refusing to use {root}: it is a symbolic link" in result.stderr
    assert list(victim.iterdir()) == [] and not marker.exists()


@pytest.mark.skipif(os.getuid() != 0, reason="giving a folder to another user needs root")
def test_someone_elses_folder_is_refused(flow: FlowRunner) -> None:
    root = _default_location(flow)
    root.mkdir(mode=0o777)
    os.chown(root, 4242, 4242)
    result = flow.run(flow.manifest(FLOW))
    assert result.returncode == 1
    assert f"refusing to use {root}: it belongs to user id 4242" in result.stderr
    assert list(root.iterdir()) == []


def test_a_planted_logs_link_is_refused(flow: FlowRunner) -> None:
    victim = Path(flow.path("victim"))
    victim.mkdir()
    logs = Path(flow.path("runs")) / flow.name / "logs"
    logs.parent.mkdir(parents=True)
    logs.symlink_to(victim)
    result = flow.run(flow.manifest(FLOW))
    assert result.returncode == 1
    assert f"refusing to use {logs}: it is a symbolic link" in result.stderr
    assert list(victim.iterdir()) == []


def test_a_log_file_is_never_opened_through_a_link(tmp_path: Path) -> None:
    victim = tmp_path / "victim.txt"
    victim.write_text("someone's file\n")
    logs = tmp_path / "logs"
    logs.mkdir()
    (logs / "sink.log").symlink_to(victim)
    relay = OutputRelay(lambda label, text: None, logs)
    try:
        with pytest.raises(OSError):
            relay.line("sink", "a line")
    finally:
        relay.close()
    assert victim.read_text() == "someone's file\n"


def test_a_flow_is_found_in_a_runs_folder_named_in_the_call(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # A tool that watches a flow started with its own FLUJO_RUNS (bench/chaos.py) names that
    # folder instead of changing its own environment.
    monkeypatch.delenv("FLUJO_RUNS", raising=False)
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))  # this user's own runs folder, empty
    runs = tmp_path / "runs"
    announce(private_runs_folder("mine", runs=runs) / ANNOUNCEMENT, {"flow": "mine", "pid": os.getpid()})
    assert find_flow("mine", runs)["pid"] == os.getpid()
    with pytest.raises(CommandError, match='no running flow named "mine"'):
        find_flow("mine")  # not in this user's own runs folder
