"""Killed nodes restart by policy while the flow runs on; the stop ladder ends what will not stop."""

from __future__ import annotations

import os
import signal

import pytest
from conftest import FlowRunner, poll_for
from flow_nodes import line_count, read_lines


def _replica(flow: FlowRunner, label: str) -> dict:
    return flow.replicas().get(label, {})


CHAIN = """
    [nodes.numbers]
    run = "{{nodes}}:Paced"
    args = {{ n = {n}, pause = 0.001 }}
    {producer_extra}
    [nodes.work]
    run = "{{nodes}}:square"
    inputs = ["numbers"]
    replicas = 2
    restart = "on-failure"
    [nodes.sink]
    run = "{{nodes}}:Collect"
    inputs = ["work"]
    args = {{ path = "{out}" }}
    {sink_extra}
"""


@pytest.mark.parametrize("victim", ["work.1", "sink", "numbers"])
def test_a_killed_node_restarts_and_the_flow_ends(flow: FlowRunner, victim: str, record_property) -> None:
    out, n = flow.path("out.jsonl"), 1500
    manifest = flow.manifest(
        CHAIN.format(n=n, out=out, producer_extra='restart = "on-failure"', sink_extra='restart = "on-failure"'),
        flow="queue = 4",
    )
    launcher = flow.start(manifest)
    poll_for(lambda: line_count(out) >= 300, timeout=30)
    pid = _replica(flow, victim)["pid"]
    os.kill(pid, signal.SIGKILL)
    poll_for(
        lambda: _replica(flow, victim).get("restarts") == 1 and _replica(flow, victim).get("pid") != pid, timeout=20
    )
    _, stderr = launcher.communicate(timeout=60)
    assert launcher.returncode == 0, stderr
    assert f'node "{victim}" exited with status -9; restarting' in stderr
    values = [round(value**0.5) for value in read_lines(out)]
    if victim == "numbers":
        # The restarted producer starts its stream again: the tail is a whole second run.
        assert values[-n:] == list(range(n))
        first_run = values[:-n]
        assert first_run == sorted(set(first_run)) and len(first_run) >= 300
        lost = max(first_run) + 1 - len(first_run)
    else:
        assert values == sorted(set(values)) and values[-1] == n - 1  # in order, no duplicates, to the end
        lost = n - len(values)
    record_property("items_lost", lost)
    print(f"SIGKILL of {victim}: {lost} items lost")
    assert lost <= 200  # what sat in the killed process's queues, not more


def test_restart_cap_fails_the_flow(flow: FlowRunner) -> None:
    manifest = flow.manifest("""
        [nodes.numbers]
        run = "flujo.nodes.basic:Count"
        [nodes.check]
        run = "{nodes}:always_fail"
        inputs = ["numbers"]
        restart = "on-failure"
        max_restarts = 2
        [nodes.sink]
        run = "{nodes}:Collect"
        inputs = ["check"]
        args = { path = "/dev/null" }
    """)
    result = flow.run(manifest, timeout=40)
    assert result.returncode == 1
    assert result.stderr.count('node "check" exited with status 1; restarting') == 2
    assert "restarting in 0.0 s" in result.stderr and "restarting in 0.1 s" in result.stderr  # first at once
    assert 'node "check" failed: ValueError: cannot handle' in result.stderr


@pytest.mark.parametrize("ignore_sigterm, needed", [(False, "SIGTERM"), (True, "SIGKILL")])
def test_stop_ladder_ends_a_node_that_ignores_stop(flow: FlowRunner, ignore_sigterm: bool, needed: str) -> None:
    manifest = flow.manifest(f"""
        [nodes.stubborn]
        run = "{{nodes}}:Stubborn"
        args = {{ ignore_sigterm = {str(ignore_sigterm).lower()} }}
        stop_timeout = 0.5
        [nodes.sink]
        run = "{{nodes}}:Collect"
        inputs = ["stubborn"]
        args = {{ path = "{flow.path("out.jsonl")}" }}
    """)
    launcher = flow.start(manifest)
    poll_for(lambda: line_count(flow.path("out.jsonl")) >= 3, timeout=20)
    assert flow.command("stop", "--flow", flow.name).returncode == 0
    _, stderr = launcher.communicate(timeout=20)
    assert launcher.returncode == 1
    assert 'node "stubborn" did not end within 0.5 s: sending SIGTERM' in stderr
    assert ("sending SIGKILL" in stderr) is ignore_sigterm
    assert f'node "stubborn" failed: did not end within its stop timeout and needed {needed}' in stderr
    assert read_lines(flow.path("out.jsonl")) == [0, 1, 2]  # the sink still ended normally


def test_a_node_hanging_in_close_is_ended_after_the_grace_period(flow: FlowRunner) -> None:
    manifest = flow.manifest("""
        [nodes.numbers]
        run = "flujo.nodes.basic:Count"
        args = { n = 10 }
        [nodes.sink]
        run = "{nodes}:HangInClose"
        inputs = ["numbers"]
        stop_timeout = 0.5
    """)
    result = flow.run(manifest, timeout=20)
    assert result.returncode == 1
    assert 'node "sink" did not end within 0.5 s: sending SIGTERM' in result.stderr
