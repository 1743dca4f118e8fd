"""`flujo-launch restart NODE` drains each replica before replacing it: nothing is lost, order is kept."""

from __future__ import annotations

import pytest
from conftest import FlowRunner, poll_for
from flow_nodes import line_count, read_lines
from manifests import collect, node
from restarting import LOSSLESS, chain, gated, restart_mid_stream, zip_behind_a_lagging_input

# Every graceful restart is exactly once, on plain edges and on lossless ones (PROTOCOL 8, 9).
DELIVERY = pytest.mark.parametrize("settings", ["", LOSSLESS], ids=["plain", "lossless"])


@DELIVERY
@pytest.mark.parametrize("replicas", [1, 2])
def test_restarting_a_processor_loses_nothing(flow: FlowRunner, replicas: int, settings: str) -> None:
    out, n = flow.path("out.jsonl"), 1000
    work = node("{nodes}:square", replicas=replicas)
    values, _, _ = restart_mid_stream(flow, chain(n, out, work), "work", out, settings=settings)
    assert values == [i * i for i in range(n)]  # every item, once, in order


@DELIVERY
def test_restarting_the_consumer_loses_nothing(flow: FlowRunner, settings: str) -> None:
    # The slow sink keeps its queue full: the drain has items to take, some in batches.
    out, n = flow.path("out.jsonl"), 1000
    values, _, _ = restart_mid_stream(
        flow, {"numbers": gated(n), "sink": collect("numbers", out, delay=0.0005)}, "sink", out, settings=settings
    )
    assert values == list(range(n))


@DELIVERY
def test_restarting_behind_a_replicated_node_keeps_the_order(flow: FlowRunner, settings: str) -> None:
    # Both replicas of "work" read from both replicas of "spread": each drains items that were
    # waiting for a gap, and the sink still gets every item in order.
    out, n = flow.path("out.jsonl"), 1000
    values, _, _ = restart_mid_stream(
        flow,
        {
            "numbers": gated(n, 0.0005),
            "spread": node("{nodes}:jitter", "numbers", replicas=2),
            "work": node("{nodes}:square", "spread", replicas=2),
            "sink": collect("work", out),
        },
        "work",
        out,
        after=200,
        settings=settings,
    )
    assert values == [i * i for i in range(n)]


@DELIVERY
def test_a_restarted_producer_continues_its_numbering(flow: FlowRunner, settings: str) -> None:
    out, n = flow.path("out.jsonl"), 1000
    values, _, _ = restart_mid_stream(
        flow, {"numbers": gated(n, 0.001), "sink": collect("numbers", out)}, "numbers", out, settings=settings
    )
    # The new process produces its stream again from the start; everything the first one
    # produced before it stopped arrived, without a gap.
    assert values[-n:] == list(range(n))
    first_run = values[:-n]
    assert len(first_run) >= 300 and first_run == list(range(len(first_run)))


def test_a_node_that_does_not_drain_in_time_is_restarted_anyway(flow: FlowRunner) -> None:
    out = flow.path("out.jsonl")
    manifest = flow.manifest(f"""
        [nodes.numbers]
        run = "{{nodes}}:Paced"
        args = {{ n = 100000, pause = 0.001 }}
        [nodes.work]
        run = "{{nodes}}:Sleepy"
        inputs = ["numbers"]
        stop_timeout = 0.5
        [nodes.sink]
        run = "{{nodes}}:Collect"
        inputs = ["work"]
        args = {{ path = "{out}" }}
    """)
    launcher = flow.start(manifest)
    poll_for(lambda: line_count(out) >= 5, timeout=30)
    pid = flow.replicas()["work"]["pid"]
    assert flow.command("restart", "work", "--flow", flow.name).returncode == 0
    poll_for(lambda: flow.replicas().get("work", {}).get("pid") not in (None, pid), timeout=20)
    count = line_count(out)
    poll_for(lambda: line_count(out) > count + 3, timeout=20)  # the new process works
    assert flow.command("stop", "--flow", flow.name).returncode == 0
    _, stderr = launcher.communicate(timeout=30)
    assert launcher.returncode == 0, stderr
    assert 'node "work" did not drain within 0.5 s: sending SIGTERM' in stderr
    assert 'node "work" exited with status -15 before it had drained; restarting it' in stderr
    values = read_lines(out)
    assert values == sorted(set(values))  # at most once: maybe a gap, never a duplicate or a swap


@DELIVERY
def test_restarting_a_zip_keeps_every_pair(flow: FlowRunner, settings: str) -> None:
    # One input of the zip lags the other (jitter), so at the restart its senders stand at
    # different sequence numbers: they agree on a common one before pausing.
    out, n = flow.path("out.jsonl"), 1000
    values, _, _ = restart_mid_stream(
        flow, zip_behind_a_lagging_input(n, out, "squares", node("{nodes}:square")), "pair", out, settings=settings
    )
    assert values == [i + i * i for i in range(n)]
