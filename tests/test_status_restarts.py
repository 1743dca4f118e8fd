"""Status stays true across restarts: counters add up a replica's processes, rates are never
negative, queue fill compares counters at one instant, the bottleneck is the busy node."""

from __future__ import annotations

import os
import signal
import threading

import pytest
from conftest import NODES, FlowRunner, poll_for
from flow_nodes import line_count
from manifests import Node, collect, node

from flujo.launch.manifest import validate
from flujo.launch.metrics import Sample, bottleneck, busy_fraction, queue_fill


def _report(generation: int, at: float, items: int, busy: float = 0.0, **tables: dict) -> dict:
    return {"generation": generation, "at": at, "items_in": items, "items_out": items, "busy": busy, **tables}


def test_counters_add_up_the_processes_of_a_replica() -> None:
    sample = Sample()
    for second in range(4):
        sample.update(_report(0, second, 100 * second, busy=0.5 * second), 0)
    sample.update(_report(1, 4.5, 10, busy=0.1), 0)  # restarted: the new process counts from 0
    assert sample.totals["items_in"] == 310 and sample.stats["items_in"] == 10
    assert sample.rate("items_in") > 0 and 0 < busy_fraction(sample) <= 1
    sample.update(_report(0, 4.6, 350), 0)  # a late report of the replaced process
    assert sample.totals["items_in"] == 310
    sample.update(_report(1, 5.0, 60, received={"in": 60}), 0)
    assert sample.totals["items_in"] == 360 and sample.totals["received"] == {"in": 60}


def test_queue_fill_compares_counters_at_one_instant() -> None:
    flow = validate(
        {
            "nodes": {
                "a": {"run": "flujo.nodes.basic:Count"},
                "b": {"run": "flujo.nodes.basic:Print", "inputs": ["a"], "queue": 10},
            }
        },
        NODES,
        "test",
    )
    sender, receiver = Sample(), Sample()
    # 1000 items/s with 5 in flight; the sender reports 0.4 s later than the receiver.
    for tick in range(5):
        sender.update({"at": tick + 0.4, "sent": {"b/a": 1000 * (tick + 0.4) + 5}}, 0)
        receiver.update({"at": tick, "received": {"a": 1000 * tick}}, 0)
    fill = queue_fill(flow, "b", {("a", 0): sender, ("b", 0): receiver})
    assert fill == pytest.approx(5 / 20)  # capacity: its RCVHWM plus the sender's SNDHWM
    # Compared report by report, the same flow looked 100% full:
    assert (sender.stats["sent"]["b/a"] - receiver.stats["received"]["a"]) / 20 > 1


def test_the_bottleneck_is_the_busiest_node_also_after_a_restart() -> None:
    flow = validate(
        {"nodes": {"a": {"run": "flujo.nodes.basic:Count"}, "b": {"run": "flujo.nodes.basic:Print", "inputs": ["a"]}}},
        NODES,
        "test",
    )
    a, b = Sample(), Sample()
    for second in range(3):
        a.update(_report(0, second, 10 * second, busy=0.2 * second), 0)
        b.update(_report(0, second, 10 * second, busy=0.9 * second), 0)
    b.update(_report(1, 3, 5, busy=0.9), 0)  # restarted: its busy counter starts again
    assert bottleneck(flow, {("a", 0): a, ("b", 0): b}) == "b"


def chain(out: str) -> dict[str, Node]:
    """4000 paced numbers -> work (restarted on failure) -> sink writing ``out``."""
    return {
        "numbers": node("{nodes}:Paced", args={"n": 4000, "pause": 0.001}),
        "work": node("{nodes}:square", "numbers", restart="on-failure"),
        "sink": collect("work", out),
    }


@pytest.mark.timeout(90)
def test_status_across_a_restart_mid_stream(flow: FlowRunner) -> None:
    out = flow.path("out.jsonl")
    launcher = flow.start(flow.manifest(chain(out), flow="queue = 4"))
    seen: list[dict] = []
    done = threading.Event()

    def watch() -> None:  # status as a user would poll it, all along (a look every 30 ms: the
        # stream lasts seconds on either side of the kill; looking without a pause cost 4-5 CPU-s)
        while not done.wait(0.03):
            replica = flow.replicas().get("work")
            if replica:
                seen.append(replica)

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        poll_for(lambda: line_count(out) >= 800, timeout=30)
        before = poll_for(lambda: flow.replicas().get("work"))
        os.kill(before["pid"], signal.SIGKILL)
        work = lambda: flow.replicas().get("work", {})  # noqa: E731 - {} while a status request fails
        poll_for(lambda: work().get("restarts") == 1 and work().get("state") == "running", timeout=30)
        _, stderr = launcher.communicate(timeout=60)
        assert launcher.returncode == 0, stderr
    finally:
        done.set()
        watcher.join()
    assert any(entry["restarts"] == 1 for entry in seen) and any(entry["restarts"] == 0 for entry in seen)
    assert all(entry["rate"] >= 0 for entry in seen), [entry["rate"] for entry in seen if entry["rate"] < 0]
    counts = [entry["items_in"] for entry in seen]
    assert counts == sorted(counts), "a counter went backwards"
    assert counts[-1] > before["items_in"]  # the successor counted on from its predecessor's total
    assert all(0 <= entry["queue"] <= 1 for entry in seen)


def _edge(queue: int = 10):
    return validate(
        {
            "nodes": {
                "a": {"run": "flujo.nodes.basic:Count"},
                "b": {"run": "flujo.nodes.basic:Print", "inputs": ["a"], "queue": queue},
            }
        },
        NODES,
        "test",
    )


def test_a_reader_killed_with_a_full_queue_does_not_show_full_forever() -> None:
    sender, receiver = Sample(), Sample()
    samples = {("a", 0): sender, ("b", 0): receiver}
    for tick in range(3):  # full: 20 in flight (10 in its own buffer, 10 queued at the sender)
        sender.update({"generation": 0, "at": tick, "sent": {"b/a": 100 * tick + 20}}, 0)
        receiver.update({"generation": 0, "at": tick, "received": {"a": 100 * tick}}, 0)
    assert queue_fill(_edge(), "b", samples) == 1.0
    # Killed; its buffer (10) is lost; its successor takes the 10 queued and keeps up from then on.
    for tick in range(3, 6):
        sender.update({"generation": 0, "at": tick, "sent": {"b/a": 100 * tick + 20}}, 0)
        receiver.update({"generation": 1, "at": tick, "received": {"a": 100 * tick - 190}}, 0)
    assert queue_fill(_edge(), "b", samples) == pytest.approx(0.0)


def test_a_sender_killed_between_reports_does_not_hide_a_full_queue() -> None:
    sender, receiver = Sample(), Sample()
    samples = {("a", 0): sender, ("b", 0): receiver}
    sender.update({"generation": 0, "at": 0, "sent": {"b/a": 100}}, 0)  # then sent 50 more, unreported
    receiver.update({"generation": 0, "at": 0, "received": {"a": 100}}, 0)
    sender.update({"generation": 1, "at": 1, "sent": {"b/a": 0}}, 0)
    receiver.update({"generation": 0, "at": 1, "received": {"a": 150}}, 0)
    assert queue_fill(_edge(), "b", samples) == 0.0
    for tick in range(2, 5):  # the successor sends 100 a second; the reader stays 10 behind: half full
        sender.update({"generation": 1, "at": tick, "sent": {"b/a": 100 * (tick - 1)}}, 0)
        receiver.update({"generation": 0, "at": tick, "received": {"a": 150 + 100 * (tick - 1) - 10}}, 0)
    assert queue_fill(_edge(), "b", samples) == pytest.approx(0.5)  # 0 if the 50 unreported were ignored
