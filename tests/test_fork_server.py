"""Python nodes start as forks of a server that has already imported the runtime
(launch/fork_server.py): each looks like a fresh ``python -m flujo.node``, a node with an
environment of its own starts its own interpreter, and a dead server costs no item."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import psutil
import pytest
from conftest import FlowRunner, flow_processes, poll_for
from flow_nodes import line_count, read_lines
from manifests import collect, node

from flujo.launch.fork_client import SWITCH, ForkServer
from flujo.launch.fork_server import parse_request

pytestmark = pytest.mark.timeout(60)


def _describe_flow(flow: FlowRunner, **fields: object) -> tuple[Path, str]:
    """A manifest: describe (tests/flow_nodes.py:Describe) -> collect; returns it and the facts file."""
    (flow.folder / "describe_helper.py").write_text("")  # importable from the node's working folder only
    facts, out = flow.path("facts.json"), flow.path("out.jsonl")
    manifest = flow.manifest(
        {"describe": node("{nodes}:Describe", args={"path": facts}, **fields), "sink": collect("describe", out)}
    )
    return manifest, facts


def _server_of(flow: FlowRunner, launcher: int) -> list[psutil.Process]:
    """The flow's fork server (a node forked a moment ago may still bear the server's title)."""
    found = []
    for process in flow_processes(flow.name):
        with contextlib.suppress(psutil.Error):
            if "flujo-fork-server" in " ".join(process.cmdline()) and process.ppid() == launcher:
                found.append(process)
    return found


def test_a_forked_node_starts_as_its_own_interpreter_would(flow: FlowRunner) -> None:
    flow.env["FLUJO_TEST_MARK"] = "from the launcher"
    manifest, facts_file = _describe_flow(flow)
    launcher = flow.start(manifest)
    stdout, stderr = launcher.communicate(timeout=30)
    assert launcher.returncode == 0, stderr
    facts = json.loads(Path(facts_file).read_text())
    assert facts["session"] == facts["pid"]  # a session (and process group) of its own
    assert facts["ppid"] != launcher.pid and "flujo-fork-server" in facts["parent"]  # forked by the server
    assert facts["cwd"] == facts["path0"] == facts["helper"] == str(flow.folder)  # as `python -m` would
    assert facts["mark"] == "from the launcher"  # the launcher's environment
    assert facts["stdin"] == os.devnull
    assert "describe | describe: started" in stdout  # its output is relayed like any node's
    assert line_count(flow.path("out.jsonl")) == 3


def test_forked_nodes_show_their_label_and_flow_and_end_with_the_server(flow: FlowRunner) -> None:
    gate = flow.path("gate")
    manifest = flow.manifest(
        {"src": node("{nodes}:Gated", args={"n": 5, "gate": gate}), "sink": collect("src", flow.path("out"))}
    )
    launcher = flow.start(manifest)
    servers = poll_for(lambda: _server_of(flow, launcher.pid), timeout=20)
    assert len(servers) == 1 and servers[0].ppid() == launcher.pid
    wanted = [f"flujo-node sink flow={flow.name}", f"flujo-node src flow={flow.name}"]
    poll_for(lambda: sorted(" ".join(p.cmdline()).strip() for p in servers[0].children()) == wanted, timeout=20)
    Path(gate).touch()
    launcher.communicate(timeout=30)
    assert launcher.returncode == 0
    assert not servers[0].is_running() or servers[0].status() == psutil.STATUS_ZOMBIE  # it ended with the flow


FLOW_SCRIPT = """
import sys
from flujo import Flow
from flow_nodes import Describe
from flujo.nodes.basic import Collect

flow = Flow(sys.argv[1])
flow.add(Collect, flow.add(Describe, path=sys.argv[2], name="describe"), path=sys.argv[2] + ".out")
flow.start()
flow.join(timeout=30)
"""


def test_a_flow_started_from_python_forks_its_nodes_too(flow: FlowRunner) -> None:
    """flujo.Flow starts the launcher with a lifeline in its environment, which the launcher
    takes out: the fork server must not have seen it, or no node would fit its environment."""
    (flow.folder / "describe_helper.py").write_text("")
    script, facts_file = flow.folder / "script.py", flow.path("facts.json")
    script.write_text(FLOW_SCRIPT)
    done = subprocess.run(
        [sys.executable, str(script), flow.name, facts_file],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=flow.folder,
        env={**flow.env, "PYTHONPATH": str(Path(__file__).parent)},  # flow_nodes, for every process
    )
    assert done.returncode == 0, done.stderr
    assert "flujo-fork-server" in json.loads(Path(facts_file).read_text())["parent"]
    assert line_count(facts_file + ".out") == 3


@pytest.mark.parametrize("how", ["env of its own", "switched off"])
def test_a_node_starts_its_own_interpreter_when_a_fork_would_not_do(flow: FlowRunner, how: str) -> None:
    """A manifest ``env`` may change what the interpreter reads as it starts: that node is not
    forked. FLUJO_FORK_SERVER=0 turns the server off for the whole flow."""
    if how == "switched off":
        flow.env[SWITCH] = "0"
        manifest, facts_file = _describe_flow(flow)
    else:
        manifest, facts_file = _describe_flow(flow, env={"FLUJO_TEST_MARK": "its own"})
    launcher = flow.start(manifest)
    _, stderr = launcher.communicate(timeout=30)
    assert launcher.returncode == 0, stderr
    facts = json.loads(Path(facts_file).read_text())
    assert facts["ppid"] == launcher.pid and "flujo-fork-server" not in facts["parent"]  # by the launcher
    assert facts["cwd"] == facts["path0"] == facts["helper"] == str(flow.folder)
    assert facts["mark"] == ("its own" if how == "env of its own" else None)


@pytest.mark.timeout(90)
def test_a_killed_fork_server_takes_its_nodes_and_their_successors_lose_nothing(flow: FlowRunner) -> None:
    """The kernel ends a dead server's nodes (their parent-death signal), as it ends nodes whose
    launcher died; the launcher counts each as a crash and restarts it by its policy, with its
    own interpreter, and the lossless edges lose nothing."""
    n, gate, out = 400, flow.path("gate"), flow.path("out.jsonl")
    always = {"restart": "always", "max_restarts": 3}
    manifest = flow.manifest(
        {
            "src": node("{nodes}:ResumingGated", args={"n": n, "gate": gate, "pause": 0.002}, **always),
            "work": node("{nodes}:square", "src", **always),
            "sink": node("{nodes}:Journal", "work", {"path": out}, **always),
        },
        flow="lossless = true\nshm = false\nqueue = 4",
    )
    launcher = flow.start(manifest)
    poll_for(lambda: line_count(out) >= 50, timeout=30)
    (server,) = _server_of(flow, launcher.pid)
    forked = server.children()
    assert len(forked) == 3
    os.kill(server.pid, signal.SIGKILL)
    psutil.wait_procs(forked, timeout=10)
    assert not [p for p in forked if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]
    poll_for(lambda: all(r.get("restarts", 0) >= 1 for r in flow.replicas().values()) or None, timeout=30)
    Path(gate).touch()
    _, stderr = launcher.communicate(timeout=60)
    assert launcher.returncode == 0, stderr
    items = [item for _, item in read_lines(out)]
    assert sorted(set(items)) == [i * i for i in range(n)]  # the sink's successor may consume a few again


def _probe(scenario: str) -> dict:
    """tests/fork_server_probe.py in a process of its own: a fork server copies its creator."""
    done = subprocess.run(
        [sys.executable, str(Path(__file__).parent / "fork_server_probe.py"), scenario],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_the_client_forks_reports_exits_and_refuses_what_does_not_fit() -> None:
    report = _probe("basics")
    assert report["fits_extra"] is False and report["forked_extra"] is None  # another environment
    assert "bad configuration in FLUJO_NODE_CONFIG" in report["output"]  # the node's own words, relayed
    assert report["exits"] == [[report["pids"][0], 1]]
    assert report["after_close"] is None  # closed: the caller starts the node itself


def test_forks_go_on_while_exits_are_reported_between_them() -> None:
    """Children that exit at once: their exits reach the client between its requests' replies
    (an exit reported while a fork waited for its reply once blocked both until the timeout)."""
    report = _probe("many")
    assert len(report["pids"]) == 30, "a fork got no reply"
    assert report["exits"] == sorted([pid, 1] for pid in report["pids"])


def test_only_a_single_threaded_process_may_start_a_fork_server() -> None:
    """A fork copies only the thread that forks: here (pytest's worker has threads) it is refused."""
    started = threading.Event()
    helper = threading.Thread(target=started.wait, daemon=True)
    helper.start()
    try:
        with pytest.raises(RuntimeError, match="single-threaded"):
            ForkServer("flujo-fork-server refused")
    finally:
        started.set()


@pytest.mark.parametrize(
    "message",
    [
        b"{not json",
        b"[]",
        b'{"cwd": "/", "env": {}}',
        b'{"cwd": 1, "env": {}, "title": "t"}',
        b'{"cwd": "/", "env": {"A": 1}, "title": "t"}',
    ],
)
def test_a_malformed_request_is_refused_and_its_descriptors_closed(message: bytes) -> None:
    read_end, write_end = os.pipe()
    try:
        assert parse_request(message, [write_end]) is None
        assert os.read(read_end, 1) == b""  # the write end was closed: end of file
    finally:
        os.close(read_end)


def test_a_request_names_the_folder_environment_title_and_output() -> None:
    read_end, write_end = os.pipe()
    try:
        request = parse_request(b'{"cwd": "/tmp", "env": {"A": "1"}, "title": "t"}', [write_end])
        assert request is not None and (request.cwd, request.env, request.title, request.stdout) == (
            "/tmp",
            {"A": "1"},
            "t",
            write_end,
        )
    finally:
        os.close(read_end)
        os.close(write_end)
