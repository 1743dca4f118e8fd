"""Nodes on other hosts: two network namespaces stand for two machines, joined by a veth pair.

The launcher runs in host A, `flujo-launch agent` in host B; the manifest places nodes on B.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest
from conftest import FlowRunner, poll_for
from flow_nodes import line_count, read_lines
from netns import Host, can_make_namespaces, two_hosts
from restarting import restart_mid_stream

from flujo.curve import KeyPair
from flujo.launch.keys import AUTHORIZED_KEYS, create_identity

AGENT_PORT = 7700  # each test's namespaces are its own: no other agent there
_why_not = can_make_namespaces()
pytestmark = pytest.mark.skipif(_why_not is not None, reason=_why_not or "")


@pytest.fixture
def hosts() -> Iterator[tuple[Host, Host]]:
    with two_hosts() as pair:
        yield pair


def _is_agent_helper(process: psutil.Process) -> bool:
    """The agent's reaper, or its fork server (started with the first Python node)."""
    try:
        command = " ".join(process.cmdline())
        return "reaper.sh" in command or "flujo-fork-server" in command
    except psutil.Error:  # ended meanwhile (a zombie has no command line any more)
        return False


class Agent:
    """`flujo-launch agent` in a host's namespace, started and ended by the test.

    The agent's keys live in their own folder (its host's ~/.config/flujo); it trusts the
    launcher key of this test's launchers (theirs is in the flow's FLUJO_HOME)."""

    def __init__(self, host: Host, env: dict[str, str], home: Path, *options: str) -> None:
        self.host, self.home = host, home
        self.key, _ = create_identity(home)
        self.process = subprocess.Popen(
            host.command(
                sys.executable,
                "-m",
                "flujo.launch",
                "agent",
                "--bind",
                f"tcp://{host.address}:{AGENT_PORT}",
                "--keys",
                str(home),
                *options,
            ),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env=env,
        )
        self.lines = []
        while not self.lines or "listening on" not in self.lines[-1]:
            line = self.process.stdout.readline()  # type: ignore[union-attr]
            assert line, "".join(self.lines)
            self.lines.append(line)

    def own_pids(self) -> set[int]:
        """The agent, its reaper and its fork server (``ip netns exec`` execs: the agent keeps the Popen's pid)."""
        return {
            self.process.pid,
            *(child.pid for child in psutil.Process(self.process.pid).children() if _is_agent_helper(child)),
        }

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()

    def output(self) -> str:
        self.kill()
        rest, _ = self.process.communicate(timeout=10)
        return "".join(self.lines) + rest


def launcher_key(flow: FlowRunner) -> KeyPair:
    """This test's launchers' key pair (made on first use), in the flow's own FLUJO_HOME."""
    flow.env["FLUJO_HOME"] = str(flow.folder / "launcher-home")
    return create_identity(flow.folder / "launcher-home")[0]


@pytest.fixture
def agent(hosts: tuple[Host, Host], flow: FlowRunner) -> Iterator[Agent]:
    home = flow.folder / "agent-home"
    home.mkdir(mode=0o700)
    (home / AUTHORIZED_KEYS).write_text(f"{launcher_key(flow).public.decode()} the test's launcher\n")
    running = Agent(hosts[1], flow.env, home)
    yield running
    running.kill()
    running.process.communicate(timeout=10)


def _body(hosts: tuple[Host, Host], nodes: str, agent_key: str = "", timeout: float | None = None) -> str:
    """The manifest after [flow]: host B, then the nodes; the launcher's address is host A's."""
    launcher_host, other = hosts
    key = f'key = "{agent_key}"' if agent_key else ""
    host_timeout = f"timeout = {timeout}" if timeout is not None else ""
    return (
        f"""
        host = "{launcher_host.address}"
        [hosts.b]
        address = "{other.address}"
        agent_port = {AGENT_PORT}
        {key}
        {host_timeout}
    """
        + nodes
    )


def _manifest(
    flow: FlowRunner,
    hosts: tuple[Host, Host],
    nodes: str,
    agent: Agent | None = None,
    timeout: float | None = None,
    settings: str = "",
):
    key = agent.key.public.decode() if agent else ""
    return flow.manifest(_body(hosts, nodes, key, timeout), flow=f"queue = 4\n{settings}")


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
    flow: FlowRunner, hosts: tuple[Host, Host], agent: Agent
) -> None:
    out, n = flow.path("out.jsonl"), 1000
    printer = """
        [nodes.show]
        run = "flujo.nodes.basic:Print"
        inputs = ["numbers"]
        host = "b"
    """
    body = CHAIN.format(n=n, out=out, sink_extra="").replace('"{nodes}:Paced"', '"{nodes}:Gated"')
    body = body.replace("pause = 0.0005 }", 'pause = 0.0005, gate = "{gate}" }') + printer
    items, stdout, _ = restart_mid_stream(
        flow, _body(hosts, body, agent.key.public.decode()), "where", out, on=hosts[0]
    )
    assert [item["n"] for item in items] == list(range(n))  # every item, in order, across the restart
    assert {item["net"] for item in items} == {hosts[1].namespace_inode()}  # all worked on host B
    assert os.stat("/proc/self/ns/net").st_ino != hosts[1].namespace_inode()
    assert f"show    | {n - 1}" in stdout  # output of a node on host B, relayed
    logs = flow.command("logs", "show", "--flow", flow.name, "--no-timestamps")
    assert logs.returncode == 0 and logs.stdout.splitlines() == [str(i) for i in range(n)]
    assert f'serving flow "{flow.name}"' in agent.output()


def test_status_tells_where_each_node_runs(flow: FlowRunner, hosts: tuple[Host, Host], agent: Agent) -> None:
    out = flow.path("out.jsonl")
    launcher = flow.start(_manifest(flow, hosts, CHAIN.format(n=10**7, out=out, sink_extra=""), agent), on=hosts[0])
    poll_for(lambda: line_count(out) >= 10, timeout=30)
    replicas = flow.replicas()
    assert {label: replica["host"] for label, replica in replicas.items()} == {
        "numbers": None,
        "where.0": "b",
        "where.1": "b",
        "sink": None,
    }
    on_b = hosts[1].pids()
    assert replicas["where.0"]["pid"] in on_b and replicas["where.1"]["pid"] in on_b  # pids as the agent saw them
    assert replicas["sink"]["pid"] in hosts[0].pids()
    table = flow.command("status", "--flow", flow.name).stdout
    assert f"{replicas['where.1']['pid']}@b" in table and f"{replicas['sink']['pid']}@" not in table
    assert flow.command("stop", "--flow", flow.name).returncode == 0
    _, stderr = launcher.communicate(timeout=30)
    assert launcher.returncode == 0, stderr


@pytest.mark.timeout(60)
def test_killing_the_launcher_ends_the_nodes_on_the_other_host(
    flow: FlowRunner, hosts: tuple[Host, Host], agent: Agent
) -> None:
    out = flow.path("out.jsonl")
    # The default host timeout (30 s) is for cut links; a dead launcher is told apart by its lifeline.
    manifest = _manifest(flow, hosts, CHAIN.format(n=10**7, out=out, sink_extra=""), agent)
    launcher = flow.start(manifest, on=hosts[0])
    poll_for(lambda: line_count(out) >= 100, timeout=30)
    agent_own = agent.own_pids()
    nodes_on_b = hosts[1].pids() - agent_own
    assert len(nodes_on_b) == 2 and len(agent_own) == 3
    os.killpg(launcher.pid, signal.SIGKILL)  # the launcher and nothing else: its nodes must end by themselves
    killed = time.monotonic()
    launcher.communicate()
    poll_for(lambda: hosts[1].pids() == agent_own, timeout=5)
    print(f"launcher SIGKILL: the nodes on the other host ended {time.monotonic() - killed:.2f} s later")
    assert agent.process.poll() is None  # the agent itself serves on
    assert f'the launcher of flow "{flow.name}" has gone (its lifeline closed)' in agent.output()


@pytest.mark.timeout(40)
def test_an_unreachable_agent_stops_the_launch_before_anything_starts(
    flow: FlowRunner, hosts: tuple[Host, Host]
) -> None:
    launcher_key(flow)
    chain = CHAIN.format(n=10, out=flow.path("out.jsonl"), sink_extra="")
    body = _body(hosts, chain, KeyPair.generate().public.decode())
    manifest = flow.manifest(body, flow="queue = 4")
    result = flow.start(manifest, on=hosts[0])
    _, stderr = result.communicate(timeout=30)
    assert result.returncode == 2
    assert f"{manifest}: [hosts.b]: no agent answers at tcp://{hosts[1].address}:{AGENT_PORT}" in stderr
    assert "flujo-launch agent --bind" in stderr
    assert not os.path.exists(flow.path("out.jsonl"))  # no node ran


@pytest.mark.timeout(60)
def test_a_lost_host_fails_the_flow_with_a_clear_message(
    flow: FlowRunner, hosts: tuple[Host, Host], agent: Agent
) -> None:
    out = flow.path("out.jsonl")
    manifest = _manifest(flow, hosts, CHAIN.format(n=10**7, out=out, sink_extra=""), agent, timeout=3)
    launcher = flow.start(manifest, on=hosts[0])
    poll_for(lambda: line_count(out) >= 100, timeout=30)
    agent.kill()  # the host goes away: its agent and, with it, its nodes
    _, stderr = launcher.communicate(timeout=40)
    assert launcher.returncode == 1
    assert 'host "b" lost: its agent sent nothing for 3 s; its nodes count as crashed' in stderr
    assert 'node "where.0" failed: host "b" lost' in stderr
    values = [item["n"] for item in read_lines(out)]
    assert values == sorted(set(values))  # what arrived is in order, without duplicates


def _refused_launch(flow: FlowRunner, hosts: tuple[Host, Host], agent_key: str) -> str:
    manifest = flow.manifest(_body(hosts, CHAIN.format(n=10, out=flow.path("out.jsonl"), sink_extra=""), agent_key))
    result = flow.start(manifest, on=hosts[0])
    _, stderr = result.communicate(timeout=30)
    assert result.returncode == 2, stderr
    assert f"{manifest}: [hosts.b]: " in stderr
    assert not os.path.exists(flow.path("out.jsonl"))  # no node ran
    return stderr


@pytest.mark.timeout(60)
def test_an_agent_refuses_a_launcher_it_does_not_know(flow: FlowRunner, hosts: tuple[Host, Host], agent: Agent) -> None:
    flow.env["FLUJO_HOME"] = str(flow.folder / "stranger-home")  # this launcher has a key the agent never saw
    create_identity(flow.folder / "stranger-home")
    stderr = _refused_launch(flow, hosts, agent.key.public.decode())
    assert f"the agent at tcp://{hosts[1].address}:{AGENT_PORT} does not know this launcher's key" in stderr
    assert "serving flow" not in agent.output()


@pytest.mark.timeout(60)
def test_a_launcher_refuses_an_agent_whose_key_is_not_the_expected_one(
    flow: FlowRunner, hosts: tuple[Host, Host], agent: Agent
) -> None:
    stderr = _refused_launch(flow, hosts, KeyPair.generate().public.decode())  # a key of someone else
    assert "the secure handshake with" in stderr and "agent's key is not the one this launcher expects" in stderr
    assert "serving flow" not in agent.output()


@pytest.mark.timeout(30)
def test_a_secure_flow_needs_the_agent_key_and_a_launcher_key(flow: FlowRunner, hosts: tuple[Host, Host]) -> None:
    flow.env["FLUJO_HOME"] = str(flow.folder / "empty-home")
    stderr = _refused_launch(flow, hosts, "")
    assert "this launcher has no key pair" in stderr and "flujo-launch keys" in stderr
    launcher_key(flow)
    stderr = _refused_launch(flow, hosts, "")
    assert 'no key known for the agent of host "b"' in stderr and "known_hosts" in stderr


def test_an_agent_without_keys_or_trusted_launchers_does_not_serve(tmp_path: Path) -> None:
    command = [sys.executable, "-m", "flujo.launch", "agent", "--bind", "tcp://127.0.0.1:0", "--keys", str(tmp_path)]
    no_keys = subprocess.run(command, capture_output=True, text=True, timeout=20)
    assert no_keys.returncode == 2 and f"no key pair in {tmp_path}" in no_keys.stderr
    create_identity(tmp_path)
    nobody = subprocess.run(command, capture_output=True, text=True, timeout=20)
    assert nobody.returncode == 2 and "no launcher may use this agent" in nobody.stderr
    (tmp_path / AUTHORIZED_KEYS).write_text("not-a-key\n")
    garbage = subprocess.run(command, capture_output=True, text=True, timeout=20)
    assert garbage.returncode == 2 and "entry 1: 'not-a-key' is not a public key" in garbage.stderr


def _gated_chain(n: int, out: str, gate: Path, restart: str) -> str:
    """CHAIN whose producer holds its stream open until ``gate`` exists, ``where`` restarting by ``restart``."""
    body = CHAIN.format(n=n, out=out, sink_extra="").replace(
        '    host = "b"\n', f'    host = "b"\n    restart = "{restart}"\n'
    )
    body = body.replace('"{nodes}:Paced"', '"{nodes}:Gated"')
    return body.replace("pause = 0.0005 }", f'pause = 0.0005, gate = "{gate}" }}')


@pytest.mark.timeout(60)
def test_a_killed_node_on_the_other_host_restarts_by_policy(
    flow: FlowRunner, hosts: tuple[Host, Host], agent: Agent
) -> None:
    out, n, gate = flow.path("out.jsonl"), 3000, Path(flow.path("gate"))
    body = _gated_chain(n, out, gate, "on-failure")
    launcher = flow.start(_manifest(flow, hosts, body, agent), on=hosts[0])
    poll_for(lambda: line_count(out) >= 300, timeout=30)
    victim = flow.replicas()["where.1"]["pid"]
    assert victim in hosts[1].pids()
    os.kill(victim, signal.SIGKILL)  # the agent sees it die and tells the launcher
    # restarts counts the respawn at once; the pid is known once the new process has started
    successor = poll_for(
        lambda: (where := flow.replicas().get("where.1", {})).get("restarts") == 1 and where.get("pid") and where,
        timeout=20,
    )
    assert successor["pid"] in hosts[1].pids()  # started again on host B
    gate.touch()  # the stream may end now
    _, stderr = launcher.communicate(timeout=60)
    assert launcher.returncode == 0, stderr
    assert 'node "where.1" exited with status -9; restarting' in stderr
    values = [item["n"] for item in read_lines(out)]
    assert values == sorted(set(values)) and values[-1] == n - 1  # in order, no duplicates, to the end


@pytest.mark.timeout(90)
def test_a_lossless_edge_across_hosts_loses_nothing_when_a_node_there_is_killed(
    flow: FlowRunner, hosts: tuple[Host, Host], agent: Agent
) -> None:
    # Host A's producer keeps what it sent to each replica on host B until the sink on host A
    # has it; a replica SIGKILLed twice gets it all again from its successor, over CURVE tcp,
    # acknowledgements included (they go to the sender's own host).
    out, n, gate = flow.path("out.jsonl"), 3000, Path(flow.path("gate"))
    manifest = _manifest(flow, hosts, _gated_chain(n, out, gate, "always"), agent, settings="lossless = true")
    launcher = flow.start(manifest, on=hosts[0])
    for kill, label in enumerate(["where.1", "where.0"]):
        poll_for(lambda kill=kill: line_count(out) >= 300 * (kill + 1), timeout=30)
        victim = flow.replicas()[label]
        assert victim["pid"] in hosts[1].pids()
        os.kill(victim["pid"], signal.SIGKILL)
        poll_for(lambda label=label, before=victim: _respawned(flow, label, before), timeout=20)
    gate.touch()  # the stream may end now
    _, stderr = launcher.communicate(timeout=60)
    assert launcher.returncode == 0, stderr
    assert "lossless across a crash: numbers -> where, where -> sink" in stderr
    assert [item["n"] for item in read_lines(out)] == list(range(n))  # every item once, in order


def _respawned(flow: FlowRunner, label: str, before: dict) -> bool:
    now = flow.replicas().get(label, {})
    return now.get("restarts") == before["restarts"] + 1 and now.get("pid") not in (None, before["pid"])
