"""Nothing outlives the launcher or the agent; a node that exits at once or never reads hangs nothing."""

from __future__ import annotations

import io
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import msgpack
import psutil
import pytest
import zmq
from conftest import FlowRunner, flow_processes, poll_for
from manifests import Node, collect, count, node, program

from flujo.launch.agent_wire import pack
from flujo.launch.launcher import Launcher
from flujo.launch.manifest import load_manifest

#: A command node that runs python as a child (not exec'ed), which ignores SIGTERM.
WRAPPER = f"""{sys.executable} -c 'import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); \
time.sleep(600)'
echo wrapper-child-ended
"""


def _reaper_of(pid: int) -> psutil.Process:
    children = [child for child in psutil.Process(pid).children() if "reaper.sh" in " ".join(child.cmdline())]
    assert len(children) == 1, children
    return children[0]


@pytest.mark.parametrize(
    "parent",
    [
        program(["sh", "wrapper.sh"]),  # a command node: sh runs python (the flow never starts: sh is not ready)
        node("{nodes}:SpawnsChild"),  # a Python node that started a child: the flow runs
    ],
    ids=["command", "python"],
)
def test_launcher_sigkill_leaves_no_process(flow: FlowRunner, parent: Node, record_property) -> None:
    Path(flow.path("wrapper.sh")).write_text(WRAPPER)
    out = flow.path("out.jsonl")
    manifest = flow.manifest(
        {
            "stubborn": node("{nodes}:Stubborn", args={"ignore_sigterm": True}),
            "sink": collect("stubborn", out),
            "parent": parent,
        }
    )
    launcher = flow.start(manifest)

    # launcher, its fork server, stubborn, sink, the parent node and its python child (which inherits
    # the node's environment) (polled until the child has exec'd: right after the fork it still shows
    # its parent's command line)
    def all_running() -> list | None:
        found = flow_processes(flow.name)
        return found if len(found) == 6 and any("time.sleep(600)" in " ".join(p.cmdline()) for p in found) else None

    processes = poll_for(all_running, timeout=20)
    if parent.get("run"):
        poll_for(lambda: Path(out).exists() and Path(out).read_text().count("\n") == 3, timeout=20)  # running
    reaper = _reaper_of(launcher.pid)
    assert any("time.sleep(600)" in " ".join(p.cmdline()) for p in processes)  # the wrapper's child runs
    os.kill(launcher.pid, signal.SIGKILL)
    killed = time.monotonic()
    poll_for(lambda: not flow_processes(flow.name), timeout=5)
    elapsed = time.monotonic() - killed
    poll_for(lambda: not reaper.is_running() or reaper.status() == psutil.STATUS_ZOMBIE, timeout=5)
    record_property("seconds_to_no_process", round(elapsed, 3))
    print(f"launcher SIGKILL: 0 of {len(processes)} processes left after {elapsed:.2f} s")


def test_agent_sigkill_leaves_no_process(tmp_path: Path) -> None:
    Path(tmp_path / "wrapper.sh").write_text(WRAPPER)
    marker = f"agent-test-{os.getpid()}-{time.monotonic_ns()}"
    agent = subprocess.Popen(
        [sys.executable, "-m", "flujo.launch", "agent", "--bind", "tcp://127.0.0.1:0", "--insecure"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    context = zmq.Context()
    try:
        line = ""
        while "listening on" not in line:
            line = agent.stdout.readline()
            assert line, "the agent ended before it listened"
        endpoint = line.split("listening on ")[1].strip()
        dealer = context.socket(zmq.DEALER)
        dealer.linger = 0
        dealer.connect(endpoint)
        dealer.send(pack("hello", {"flow": "orphans"}))
        assert dealer.poll(10_000) and msgpack.unpackb(dealer.recv())[0] == "welcome"
        for token, argv in (
            (1, ["sh", "wrapper.sh"]),
            (
                2,
                [
                    sys.executable,
                    "-c",
                    "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(600)",
                ],
            ),
        ):
            dealer.send(
                pack(
                    "spawn",
                    {
                        "token": token,
                        "label": f"n{token}",
                        "argv": argv,
                        "env": {"ORPHAN_MARKER": marker},
                        "cwd": str(tmp_path),
                    },
                )
            )

        def marked() -> list[psutil.Process]:
            found = []
            for process in psutil.process_iter(["environ"]):
                try:
                    if (process.info["environ"] or {}).get(
                        "ORPHAN_MARKER"
                    ) == marker and process.status() != psutil.STATUS_ZOMBIE:
                        found.append(process)
                except (psutil.NoSuchProcess, psutil.AccessDenied):
                    continue
            return found

        poll_for(lambda: len(marked()) == 3, timeout=20)  # sh, its python child, the stubborn one
        os.kill(agent.pid, signal.SIGKILL)
        poll_for(lambda: not marked(), timeout=5)
    finally:
        if agent.poll() is None:
            agent.kill()
        agent.communicate()
        context.destroy(linger=0)
        for process in psutil.process_iter(["environ"]):  # never leave one behind, even on failure
            try:
                if (process.info["environ"] or {}).get("ORPHAN_MARKER") == marker:
                    process.kill()
            except (psutil.NoSuchProcess, psutil.AccessDenied):
                continue


def _run_in_process(manifest: Path) -> tuple[int, str]:
    messages = io.StringIO()
    code = Launcher(load_manifest(manifest), output=io.StringIO(), messages=messages).run()
    return code, messages.getvalue()


@pytest.mark.timeout(120)
@pytest.mark.parametrize("program, expected", [("true", 0), ("false", 1)])
def test_a_node_that_exits_at_once_hangs_nothing(
    flow: FlowRunner, monkeypatch: pytest.MonkeyPatch, program: str, expected: int, record_property
) -> None:
    monkeypatch.setenv("FLUJO_RUNS", flow.path("runs"))
    manifest = flow.manifest(f'[nodes.quick]\ncommand = ["{program}"]\n')
    started = time.monotonic()
    for _ in range(20):
        code, messages = _run_in_process(manifest)
        assert code == expected, messages
        if expected:
            assert 'node "quick" failed: exited with status 1' in messages
        else:  # nothing to say but the closing summary
            lines = messages.splitlines()
            assert lines[0] == f"flujo-launch: {flow.name}: summary:" and len(lines) == 2, messages
            assert lines[1].startswith("  quick: exit 0, in 0, out 0, "), messages
    record_property("seconds_for_20_runs", round(time.monotonic() - started, 2))


def test_a_node_that_exits_before_ready_lets_the_flow_end(flow: FlowRunner) -> None:
    """A reader that is gone before the start: the producer starts, finds nobody reads, ends."""
    manifest = flow.manifest({"numbers": count(), "quick": program(["true"], "numbers")})
    result = flow.run(manifest, timeout=30)
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize(
    "reader",
    [
        node("{nodes}:NeverReads"),  # takes one item, then hangs in consume
        program(["sleep", "600"]),  # never speaks the protocol at all
    ],
    ids=["python", "command"],
)
def test_stop_ends_a_node_that_never_reads(flow: FlowRunner, reader: Node) -> None:
    out = flow.path("out.jsonl")
    stuck = reader | {"inputs": ["numbers"], "stop_timeout": 0.5}
    manifest = flow.manifest({"numbers": count(), "stuck": stuck, "sink": collect("numbers", out)})
    launcher = flow.start(manifest)
    if reader.get("run"):
        # Running: the sink has items (a few dozen at most: "stuck" takes none, so the producer
        # soon has a credit window's worth in flight to it and waits).
        poll_for(lambda: Path(out).exists() and Path(out).stat().st_size > 0, timeout=20)
    else:
        poll_for(lambda: flow.replicas().get("numbers", {}).get("state") == "ready", timeout=20)
    assert flow.command("stop", "--flow", flow.name).returncode == 0
    stopped = time.monotonic()
    _, stderr = launcher.communicate(timeout=20)
    elapsed = time.monotonic() - stopped
    assert launcher.returncode == 1, stderr
    assert 'node "stuck" moved no item for 1 s after its inputs ended or were stopped: sending SIGTERM' in stderr
    assert 'node "stuck" failed: did not end within its stop timeout and needed SIGTERM' in stderr
    assert 'node "sink" failed' not in stderr and 'node "numbers" failed' not in stderr
    assert elapsed < 10
    print(f"stop with a node that never reads: the flow ended {elapsed:.2f} s after the stop")


def test_restart_requests_during_a_restart_merge(flow: FlowRunner) -> None:
    out, status = flow.path("out.jsonl"), flow.path("status.json")
    manifest = flow.manifest(
        {
            "numbers": node("{nodes}:Paced", args={"n": 100000, "pause": 0.001}),
            "work": node("{nodes}:square", "numbers", replicas=3),
            "sink": collect("work", out),
        }
    )
    launcher = flow.start(manifest, "--json-status", status)
    poll_for(lambda: Path(out).exists() and Path(out).stat().st_size > 1000, timeout=30)
    endpoint = poll_for(lambda: _endpoint(flow), timeout=10)
    context = zmq.Context()
    try:
        sockets = []
        for _ in range(10):  # ten requests at once, none waiting for another's answer
            socket = context.socket(zmq.REQ)
            socket.linger = 0
            socket.connect(endpoint)
            socket.send(msgpack.packb({"command": "restart", "node": "work"}))
            sockets.append(socket)
        for socket in sockets:
            assert socket.poll(10_000)
            assert msgpack.unpackb(socket.recv())["ok"]
    finally:
        context.destroy(linger=0)
    poll_for(
        lambda: (
            [node["restarts"] for label, node in flow.replicas().items() if label.startswith("work")] == [1, 1, 1]
            and all(node["state"] == "running" for node in flow.replicas().values())
        ),
        timeout=40,
    )
    assert flow.command("stop", "--flow", flow.name).returncode == 0
    _, stderr = launcher.communicate(timeout=30)
    assert launcher.returncode == 0, stderr
    import json

    final = json.loads(Path(status).read_text())
    assert [node["restarts"] for node in final["nodes"] if node["node"] == "work"] == [1, 1, 1]


def _endpoint(flow: FlowRunner) -> str | None:
    import json

    path = Path(flow.path("runs")) / flow.name / "launcher.json"
    return json.loads(path.read_text())["endpoint"] if path.exists() else None
