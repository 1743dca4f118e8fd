"""flujo.Flow as people use it from scripts and notebooks: every node option, errors raised
as exceptions, and a flow that always ends with its program (exception, Ctrl-C, SIGKILL),
leaving no process and no temporary folder behind."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import psutil
import pytest
from conftest import NODES, poll_for

from flujo import Flow
from flujo.launch.flow import FlowDefinitionError, FlowError
from flujo.launch.manifest import NODE_OPTIONS, load_manifest
from flujo.loader import load_target
from flujo.nodes.basic import Collect, Count, Map

REPO = Path(__file__).resolve().parent.parent


def double(number: int, factor: int = 2) -> int:
    return factor * number


# -- definition ------------------------------------------------------------------------------
def test_an_unknown_keyword_is_refused_by_name_never_taken_as_an_argument() -> None:
    flow = Flow("f")
    numbers = flow.add(Count, n=3)
    with pytest.raises(
        FlowDefinitionError,
        match=r'node "double": unknown keyword "on_eror" \(did you mean "on_error"\?\)'
        r".*argument of double \(takes: number, factor\)",
    ):
        flow.add(double, numbers, on_eror="skip")
    with pytest.raises(FlowDefinitionError, match=r'unknown keyword "sourc".*takes: n, start'):
        flow.add(Count, sourc="x")
    assert list(flow.manifest()["nodes"]) == ["count"]


def test_every_manifest_option_is_a_keyword(tmp_path: Path) -> None:
    flow = Flow("options")
    numbers = flow.add(
        Count,
        n=3,
        name="numbers",
        restart="on-failure",
        max_restarts=2,
        restart_window=9.5,
        stop_timeout=3,
        env={"A": "1"},
        queue=4,
    )
    flow.add(double, numbers, factor=3, on_error="skip", policy="drop-oldest", replicas=2, join="merge")
    spec = load_manifest(flow.to_manifest(tmp_path / "options.toml"))
    node, source = spec.nodes["double"], spec.nodes["numbers"]
    assert (node.on_error, node.policy, node.replicas, node.join, node.args) == (
        "skip",
        "drop-oldest",
        2,
        "merge",
        {"factor": 3},
    )
    assert (
        source.restart,
        source.max_restarts,
        source.restart_window,
        source.stop_timeout,
        source.env,
        source.queue,
    ) == ("on-failure", 2, 9.5, 3, {"A": "1"}, 4)
    assert set(NODE_OPTIONS) >= {
        "on_error",
        "policy",
        "restart",
        "max_restarts",
        "restart_window",
        "stop_timeout",
        "queue",
        "host",
        "env",
        "cwd",
        "outputs",
        "replicas",
        "join",
    }
    with pytest.raises(FlowDefinitionError, match='field "policy": must be one of block, drop-newest, drop-oldest'):
        flow.add(double, numbers, policy="drop")


def test_command_nodes(tmp_path: Path) -> None:
    flow = Flow("commands")
    numbers = flow.add(Count, n=3, name="numbers")
    split = flow.add([sys.executable, str(NODES)], numbers, outputs=["even", "odd"])
    flow.add(Collect, split.output("odd"), path="odd.jsonl")
    assert split.name == "flow_nodes"
    spec = load_manifest(flow.to_manifest(tmp_path / "commands.toml"))
    assert spec.nodes["flow_nodes"].command == [sys.executable, str(NODES)]
    assert spec.nodes["flow_nodes"].outputs == ["even", "odd"]
    with pytest.raises(FlowDefinitionError, match=r'unknown keyword "factor".*a command'):
        flow.add([sys.executable, str(NODES)], numbers, factor=2)


def test_stop_takes_the_reference_add_returned_and_a_wrong_name_lists_the_nodes() -> None:
    flow = Flow("names")
    reader = flow.add(Count, n=3)
    assert reader.name == "count"
    with pytest.raises(FlowDefinitionError, match=r'no node "reader" \(its nodes: count\)'):
        flow.stop("reader")
    with pytest.raises(FlowDefinitionError, match=r'no node "reader"'):
        flow.status("reader")  # checked before it asks a running flow


# -- running in this process -------------------------------------------------------------------
@pytest.fixture
def isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Flows announce themselves and keep their temporary folders in this test's folder."""
    temp = tmp_path / "tmp"
    temp.mkdir()
    monkeypatch.setenv("FLUJO_RUNS", str(tmp_path / "runs"))
    monkeypatch.setenv("TMPDIR", str(temp))
    monkeypatch.setattr("tempfile.tempdir", str(temp))
    monkeypatch.chdir(tmp_path)
    yield tmp_path
    assert not list(temp.glob("flujo-flow-*")), "a flow's temporary folder was left behind"
    assert not _processes_in(tmp_path), "processes left behind"


def _processes_in(folder: Path) -> list[psutil.Process]:
    """Processes (a launcher, nodes) working in ``folder``: where the flows of a test run."""
    found = []
    for process in psutil.process_iter(["cwd", "status"]):
        try:
            if (
                process.pid != os.getpid()
                and process.info["status"] != psutil.STATUS_ZOMBIE
                and str(folder) in (process.info["cwd"] or "")
            ):
                found.append(process)
        except psutil.Error:
            continue
    return found


@pytest.mark.timeout(60)
def test_run_raises_with_the_failing_nodes_message(isolated: Path) -> None:
    flow = Flow("failing")
    numbers = flow.add(Count, n=20)
    flow.add(Collect, flow.add(Map, numbers, function=f"{NODES}:fail_at"), path="out.jsonl")
    with pytest.raises(FlowError, match=r'flow "failing" failed: node "map" failed: .*cannot handle 5') as raised:
        flow.run(timeout=40)
    assert raised.value.results["map"] == 1 and raised.value.results["count"] == 0


@pytest.mark.timeout(60)
def test_a_with_block_waits_for_the_end_and_cleans_up(isolated: Path) -> None:
    tally = load_target(f"{NODES}:Tally")
    with Flow("whole") as flow:
        squares = flow.add(Map, flow.add(Count, n=50), function=f"{NODES}:square")
        flow.add(Collect, squares, path="out.jsonl")
        flow.add(tally, squares)
        flow.start()
    assert flow.returncode == 0
    assert flow.summaries == {"tally": {"even": 25, "odd": 25}}
    assert (isolated / "out.jsonl").read_text().split() == [str(n * n) for n in range(50)]


@pytest.mark.timeout(60)
def test_an_exception_in_a_with_block_stops_the_flow(isolated: Path) -> None:
    with pytest.raises(ZeroDivisionError), Flow("broken") as flow:
        flow.add(Collect, flow.add(Count), path="out.jsonl")  # endless
        flow.start()
        poll_for(
            lambda: (
                len((isolated / "out.jsonl").read_text().split()) >= 20 if (isolated / "out.jsonl").exists() else False
            ),
            timeout=30,
        )
        raise ZeroDivisionError("user code failed in the with block")
    assert flow.returncode == 0  # stopped in order: the producer stopped, the pipes drained
    lines = (isolated / "out.jsonl").read_text().split()
    assert lines == [str(n) for n in range(len(lines))]


# -- scripts: Ctrl-C, SIGKILL, notebooks, the README -------------------------------------------
SCRIPT = """
import json, sys, time
from pathlib import Path
from flujo import Flow
from flujo.nodes.basic import Collect, Count

with Flow(sys.argv[1]) as flow:
    flow.add(Collect, flow.add(Count), path="out.jsonl")  # endless
    flow.start()
    while not Path("out.jsonl").exists() or len(Path("out.jsonl").read_text().split()) < 20:
        time.sleep(0.02)
    print("running", flush=True)
    if sys.argv[2] == "join":
        print(json.dumps(flow.join()), flush=True)
    elif sys.argv[2] == "sleep":
        time.sleep(600)
    else:  # "die": killed by the test, the with block never ends
        time.sleep(600)
print("after the block", flush=True)
"""


def _interruptible() -> None:
    """In the script's process before it starts: Ctrl-C reaches it as in a terminal even when the
    test run was started in the background (a shell starts background jobs with SIGINT ignored,
    children inherit that, and Python then leaves it ignored: the Ctrl-C tests hung)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _start_script(folder: Path, code: str, *args: str, stdin: bool = False) -> subprocess.Popen:
    temp = folder / "tmp"
    temp.mkdir(exist_ok=True)
    env = {**os.environ, "FLUJO_RUNS": str(folder / "runs"), "TMPDIR": str(temp)}
    if stdin:  # as in a notebook or a REPL: no file defines the script's classes
        return subprocess.Popen(
            [sys.executable, "-c", code, *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=folder,
            env=env,
            preexec_fn=_interruptible,
        )
    script = folder / "script.py"
    script.write_text(textwrap.dedent(code))
    return subprocess.Popen(
        [sys.executable, str(script), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=folder,
        env=env,
        preexec_fn=_interruptible,
    )


def _assert_all_gone(folder: Path) -> None:
    poll_for(lambda: not _processes_in(folder), timeout=30)
    poll_for(lambda: not list((folder / "tmp").glob("flujo-flow-*")), timeout=5)


@pytest.mark.timeout(90)
@pytest.mark.parametrize("where", ["join", "sleep"], ids=["in join", "in the with block"])
def test_ctrl_c_stops_the_flow_cleanly(tmp_path: Path, where: str) -> None:
    script = _start_script(tmp_path, SCRIPT, "interrupted", where)
    try:
        assert script.stdout.readline() == "running\n"  # type: ignore[union-attr]
        if where == "join":  # interrupt it while it waits for its launcher
            poll_for(lambda: Path(f"/proc/{script.pid}/wchan").read_text() == "do_wait")
        script.send_signal(signal.SIGINT)
        stdout, stderr = script.communicate(timeout=60)
    finally:
        script.kill()
    assert script.returncode == 0, stderr
    assert "Traceback" not in stderr and "KeyboardInterrupt" not in stderr
    assert "stopping: producers stop and the pipes drain" in stderr
    if where == "join":
        assert json.loads(stdout.splitlines()[0]) == {"count": 0, "collect": 0}
    assert stdout.splitlines()[-1] == "after the block"
    lines = (tmp_path / "out.jsonl").read_text().split()
    assert len(lines) >= 20 and lines == [str(n) for n in range(len(lines))]  # drained: nothing lost
    _assert_all_gone(tmp_path)


@pytest.mark.timeout(90)
def test_the_flow_ends_when_its_program_is_killed(tmp_path: Path) -> None:
    script = _start_script(tmp_path, SCRIPT, "orphaned", "die")
    try:
        assert script.stdout.readline() == "running\n"  # type: ignore[union-attr]
        assert len(_processes_in(tmp_path)) >= 3  # the script, its launcher, two nodes
        script.kill()
        script.communicate(timeout=10)
    finally:
        script.kill()
    _assert_all_gone(tmp_path)
    lines = (tmp_path / "out.jsonl").read_text().split()
    assert lines == [str(n) for n in range(len(lines))]


NOTEBOOK = """
import json
from flujo import Flow, Processor
from flujo.nodes.basic import Collect, Count

SUFFIX = "!"                                      # a global the class uses

class Shout(Processor):                           # defined where no file holds it
    def process(self, number):
        return f"{number}{SUFFIX}"

with Flow("notebook") as flow:
    flow.add(Collect, flow.add(Shout, flow.add(Count, n=30), replicas=2, restart="on-failure"), path="out.jsonl")
    print(json.dumps(flow.run(timeout=60)), flush=True)
"""


@pytest.mark.timeout(90)
def test_a_node_class_defined_interactively_runs(tmp_path: Path) -> None:
    script = _start_script(tmp_path, NOTEBOOK, stdin=True)
    try:
        stdout, stderr = script.communicate(timeout=80)
    finally:
        script.kill()
    assert script.returncode == 0, stderr
    assert json.loads(stdout) == {"count": 0, "shout.0": 0, "shout.1": 0, "collect": 0}
    assert (tmp_path / "out.jsonl").read_text().split() == [f'"{n}!"' for n in range(30)]
    _assert_all_gone(tmp_path)


def _readme_python_example() -> str:
    readme = (REPO / "README.md").read_text()
    section = readme[readme.index("## Defining a flow in Python") :]
    return re.search(r"```python\n(.*?)```", section, re.DOTALL).group(1)  # type: ignore[union-attr]


@pytest.mark.timeout(150)
def test_the_readme_example_runs_as_written(tmp_path: Path) -> None:
    (tmp_path / "samples").symlink_to(REPO / "samples")  # the example's paths are relative to the repository
    script = _start_script(tmp_path, _readme_python_example())
    try:
        stdout, stderr = script.communicate(timeout=140)
    finally:
        script.kill()
    assert script.returncode == 0, stderr
    results = json.loads(stdout.splitlines()[-1].replace("'", '"'))
    assert results and set(results.values()) == {0}
    assert {"video_reader", "people_detector.0", "people_detector.1", "video_writer"} <= set(results)
    assert (tmp_path / "out" / "people_counter.mp4").stat().st_size > 0
    written = re.search(r"video_writer: exit 0, in (\d+),", stderr)  # the closing summary
    assert written and int(written.group(1)) >= 50, stderr
    assert re.search(r"line_counter: exit 0, .*; in \d+, out \d+", stderr), stderr
    _assert_all_gone(tmp_path)


@pytest.mark.timeout(60)
def test_a_flow_that_cannot_run_raises_the_launchers_reason(isolated: Path) -> None:
    first = Flow("twice")
    first.add(Collect, first.add(Count), path="out.jsonl")  # endless
    second = Flow("twice")
    second.add(Collect, second.add(Count, n=3), path="other.jsonl")
    with first:
        first.start()
        first.status()  # it runs, under that name
        with pytest.raises(
            FlowError,
            match=r'flow "twice" failed: the launcher exited with status 1 before the '
            r'flow ran: .*a flow named "twice" is already running',
        ):
            second.run(timeout=30)
        first.stop()
