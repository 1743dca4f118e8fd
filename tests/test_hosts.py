"""Nodes on other hosts: two network namespaces stand for two machines, joined by a veth pair.

The launcher runs in host A, `flujo-launch agent` in host B; the manifest places nodes on B.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Iterator

import pytest

from flujo.launch.agent_wire import TOKEN_ENV

from conftest import FlowRunner, poll_for
from flow_nodes import line_count, read_lines
from netns import Host, can_make_namespaces, make_hosts, remove_hosts
from restarting import restart_mid_stream

AGENT_PORT = 7700  # each test's namespaces are its own: no other agent there
_why_not = can_make_namespaces()
pytestmark = pytest.mark.skipif(_why_not is not None, reason=_why_not or "")


@pytest.fixture
def hosts() -> Iterator[tuple[Host, Host]]:
    first, second = make_hosts()
    try:
        yield first, second
    finally:
        for host in (first, second):  # whatever a failed test left there
            for pid in host.pids():
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        remove_hosts(first, second)


class Agent:
    """`flujo-launch agent` in a host's namespace, started and ended by the test."""

    def __init__(self, host: Host, env: dict[str, str]) -> None:
        self.host = host
        self.process = subprocess.Popen(
            host.command(sys.executable, "-m", "flujo.launch", "agent", "--bind",
                         f"tcp://{host.address}:{AGENT_PORT}"),
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
        self.lines = [self.process.stdout.readline()]  # type: ignore[union-attr]
        assert "listening on" in self.lines[0], self.lines

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()

    def output(self) -> str:
        self.kill()
        rest, _ = self.process.communicate(timeout=10)
        return "".join(self.lines) + rest


@pytest.fixture
def agent(hosts: tuple[Host, Host], flow: FlowRunner) -> Iterator[Agent]:
    flow.env[TOKEN_ENV] = f"secret-{flow.name}"  # the agent and this test's launchers share it
    running = Agent(hosts[1], flow.env)
    yield running
    running.kill()
    running.process.communicate(timeout=10)


def _body(hosts: tuple[Host, Host], nodes: str) -> str:
    """The manifest after [flow]: host B, then the nodes; the launcher's address is host A's."""
    launcher_host, other = hosts
    return f"""
        host = "{launcher_host.address}"
        [hosts.b]
        address = "{other.address}"
        agent_port = {AGENT_PORT}
    """ + nodes


def _manifest(flow: FlowRunner, hosts: tuple[Host, Host], nodes: str):
    return flow.manifest(_body(hosts, nodes), flow="queue = 4")


CHAIN = """
    [nodes.numbers]
    run = "{{nodes}}:Paced"
    args = {{ n = {n}, pause = 0.0005 }}
    [nodes.where]
    run = "{{nodes}}:where"
    inputs = ["numbers"]
    replicas = 2
    host = "b"
    [nodes.sink]
    run = "{{nodes}}:Collect"
    inputs = ["where"]
    args = {{ path = "{out}" }}
    {sink_extra}
"""


@pytest.mark.timeout(90)
def test_nodes_on_another_host_run_there_and_restart_without_loss(
        flow: FlowRunner, hosts: tuple[Host, Host], agent: Agent) -> None:
    out, n = flow.path("out.jsonl"), 3000
    printer = """
        [nodes.show]
        run = "flujo.nodes.basic:Print"
        inputs = ["numbers"]
        host = "b"
    """
    body = CHAIN.format(n=n, out=out, sink_extra="").replace('"{nodes}:Paced"', '"{nodes}:Gated"')
    body = body.replace("pause = 0.0005 }", 'pause = 0.0005, gate = "{gate}" }') + printer
    items, stdout, _ = restart_mid_stream(flow, _body(hosts, body), "where", out, prefix=hosts[0].command())
    assert [item["n"] for item in items] == list(range(n))  # every item, in order, across the restart
    assert {item["net"] for item in items} == {hosts[1].namespace_inode()}  # all worked on host B
    assert os.stat("/proc/self/ns/net").st_ino != hosts[1].namespace_inode()
    assert f"show    | {n - 1}" in stdout  # output of a node on host B, relayed
    logs = flow.command("logs", "show", "--flow", flow.name, "--no-timestamps")
    assert logs.returncode == 0 and logs.stdout.splitlines() == [str(i) for i in range(n)]
    assert f'serving flow "{flow.name}"' in agent.output()


def test_status_tells_where_each_node_runs(flow: FlowRunner, hosts: tuple[Host, Host], agent: Agent) -> None:
    out = flow.path("out.jsonl")
    launcher = flow.start(_manifest(flow, hosts, CHAIN.format(n=10 ** 7, out=out, sink_extra="")),
                          prefix=hosts[0].command())
    poll_for(lambda: line_count(out) >= 10, timeout=30)
    replicas = flow.replicas()
    assert {label: replica["host"] for label, replica in replicas.items()} == {
        "numbers": None, "where.0": "b", "where.1": "b", "sink": None}
    on_b = hosts[1].pids()
    assert replicas["where.0"]["pid"] in on_b and replicas["where.1"]["pid"] in on_b  # pids as the agent saw them
    assert replicas["sink"]["pid"] in hosts[0].pids()
    table = flow.command("status", "--flow", flow.name).stdout
    assert f'{replicas["where.1"]["pid"]}@b' in table and f'{replicas["sink"]["pid"]}@' not in table
    assert flow.command("stop", "--flow", flow.name).returncode == 0
    _, stderr = launcher.communicate(timeout=30)
    assert launcher.returncode == 0, stderr


@pytest.mark.timeout(60)
def test_killing_the_launcher_ends_the_nodes_on_the_other_host(
        flow: FlowRunner, hosts: tuple[Host, Host], agent: Agent) -> None:
    out = flow.path("out.jsonl")
    manifest = _manifest(flow, hosts, CHAIN.format(n=10 ** 7, out=out, sink_extra=""))
    launcher = flow.start(manifest, prefix=hosts[0].command())
    poll_for(lambda: line_count(out) >= 100, timeout=30)
    nodes_on_b = hosts[1].pids() - {agent.process.pid}  # (`ip netns exec` execs: the agent keeps its pid)
    assert len(nodes_on_b) == 2
    os.killpg(launcher.pid, signal.SIGKILL)  # the launcher and nothing else: its nodes must end by themselves
    launcher.communicate()
    poll_for(lambda: hosts[1].pids() == {agent.process.pid}, timeout=15)
    assert agent.process.poll() is None  # the agent itself serves on
    assert f'the launcher of flow "{flow.name}" has been silent' in agent.output()


@pytest.mark.timeout(40)
def test_an_unreachable_agent_stops_the_launch_before_anything_starts(
        flow: FlowRunner, hosts: tuple[Host, Host]) -> None:
    manifest = _manifest(flow, hosts, CHAIN.format(n=10, out=flow.path("out.jsonl"), sink_extra=""))
    result = flow.start(manifest, prefix=hosts[0].command())
    _, stderr = result.communicate(timeout=30)
    assert result.returncode == 2
    assert f"{manifest}: [hosts.b]: no agent answers at tcp://{hosts[1].address}:{AGENT_PORT}" in stderr
    assert "flujo-launch agent --bind" in stderr
    assert not os.path.exists(flow.path("out.jsonl"))  # no node ran


@pytest.mark.timeout(60)
def test_a_lost_host_fails_the_flow_with_a_clear_message(
        flow: FlowRunner, hosts: tuple[Host, Host], agent: Agent) -> None:
    out = flow.path("out.jsonl")
    manifest = _manifest(flow, hosts, CHAIN.format(n=10 ** 7, out=out, sink_extra=""))
    launcher = flow.start(manifest, prefix=hosts[0].command())
    poll_for(lambda: line_count(out) >= 100, timeout=30)
    agent.kill()  # the host goes away: its agent and, with it, its nodes
    _, stderr = launcher.communicate(timeout=40)
    assert launcher.returncode == 1
    assert 'host "b" lost: its agent sent nothing for 5 s' in stderr
    assert 'node "where.0" failed: host "b" lost' in stderr
    values = [item["n"] for item in read_lines(out)]
    assert values == sorted(set(values))  # what arrived is in order, without duplicates


@pytest.mark.timeout(40)
def test_an_agent_refuses_a_launcher_without_its_token(
        flow: FlowRunner, hosts: tuple[Host, Host], agent: Agent) -> None:
    flow.env[TOKEN_ENV] = "not-the-secret"
    manifest = _manifest(flow, hosts, CHAIN.format(n=10, out=flow.path("out.jsonl"), sink_extra=""))
    result = flow.start(manifest, prefix=hosts[0].command())
    _, stderr = result.communicate(timeout=30)
    assert result.returncode == 2
    assert f"[hosts.b]: the agent at tcp://{hosts[1].address}:{AGENT_PORT} refused: wrong or missing " \
           f"{TOKEN_ENV}" in stderr
    assert not os.path.exists(flow.path("out.jsonl"))  # no node ran
    assert f'refused flow "{flow.name}"' in agent.output()


@pytest.mark.timeout(60)
def test_a_killed_node_on_the_other_host_restarts_by_policy(
        flow: FlowRunner, hosts: tuple[Host, Host], agent: Agent) -> None:
    out, n, gate = flow.path("out.jsonl"), 3000, Path(flow.path("gate"))
    body = CHAIN.format(n=n, out=out, sink_extra="").replace(
        '    host = "b"\n', '    host = "b"\n    restart = "on-failure"\n')
    body = body.replace('"{nodes}:Paced"', '"{nodes}:Gated"')
    body = body.replace("pause = 0.0005 }", f'pause = 0.0005, gate = "{gate}" }}')
    launcher = flow.start(_manifest(flow, hosts, body), prefix=hosts[0].command())
    poll_for(lambda: line_count(out) >= 300, timeout=30)
    victim = flow.replicas()["where.1"]["pid"]
    assert victim in hosts[1].pids()
    os.kill(victim, signal.SIGKILL)  # the agent sees it die and tells the launcher
    poll_for(lambda: flow.replicas().get("where.1", {}).get("restarts") == 1, timeout=20)
    assert flow.replicas()["where.1"]["pid"] in hosts[1].pids()  # started again on host B
    gate.touch()  # the stream may end now
    _, stderr = launcher.communicate(timeout=60)
    assert launcher.returncode == 0, stderr
    assert 'node "where.1" exited with status -9; restarting' in stderr
    values = [item["n"] for item in read_lines(out)]
    assert values == sorted(set(values)) and values[-1] == n - 1  # in order, no duplicates, to the end
