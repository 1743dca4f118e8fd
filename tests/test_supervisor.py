"""The launcher's policy (launch/supervisor.py, ladder.py) without sockets or processes: fake
channels record what it publishes, a fake clock drives its timers, fake processes record signals."""

from __future__ import annotations

import signal
from pathlib import Path
from typing import Any

import pytest

from flujo.launch import supervisor as supervisor_module
from flujo.launch.manifest import FlowSpec, validate
from flujo.launch.plan import plan
from flujo.launch.replica import Key, Replica, ReplicaState
from flujo.launch.restarts import RestartBudget
from flujo.launch.supervisor import Supervisor
from flujo.launch.timers import Timers
from flujo.protocol import Control, Status, identity_topic

pytestmark = pytest.mark.timeout(10)
S = ReplicaState


@pytest.fixture(autouse=True)
def no_wait_for_error_reports(monkeypatch: pytest.MonkeyPatch) -> None:
    """No report comes over a fake status channel: a failing exit need not give one time."""
    monkeypatch.setattr(supervisor_module, "LAST_REPORT_WAIT", 0.0)


class FakeChannels:
    def __init__(self) -> None:
        self.published: list[tuple[Any, ...]] = []
        self.topic: bytes | None = None
        self.queued: list[tuple[Any, ...]] = []  # status reports sent but not yet taken

    def publish(self, topic: Control, *payload: Any) -> None:
        self.published.append((topic, *payload))

    def forget_released(self, node: str, replica: int) -> None:
        self.published = [
            entry for entry in self.published if not (entry[0] is Control.RELEASED and entry[1:3] == (node, replica))
        ]

    def subscription(self) -> bytes | None:
        return self.topic

    def replay(self) -> None:
        pass

    def wait_for_status(self, seconds: float) -> bool:
        return bool(self.queued)

    def receive_status(self, apply: Any) -> None:
        """Apply the next report still on its way (``queued``), as the status socket does."""
        if self.queued:
            apply(*self.queued.pop(0))

    def topics(self) -> list[Control]:
        return [frames[0] for frames in self.published]


class FakeProcess:
    def __init__(self, pid: int) -> None:
        self.pid, self.signals = pid, []

    def signal(self, signum: int) -> None:
        self.signals.append(signum)


class FakeSpawner:
    def __init__(self) -> None:
        self.respawned: list[str] = []

    def respawn(self, replica: Replica) -> None:
        self.respawned.append(replica.config.label)
        replica.respawning(replica.config)
        replica.spawned(FakeProcess(99), 0.0)


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class Harness:
    def __init__(self, tmp_path: Path, nodes: dict[str, Any]) -> None:
        self.flow: FlowSpec = validate({"flow": {"name": "sup"}, "nodes": nodes}, tmp_path / "m.toml", "m.toml")
        _, configs = plan(self.flow, tmp_path)
        self.replicas: dict[Key, Replica] = {}
        for key, config in configs.items():
            spec = self.flow.nodes[config.node]
            self.replicas[key] = Replica(config, RestartBudget(spec.restart, spec.max_restarts, spec.restart_window))
        self.channels, self.clock, self.said = FakeChannels(), Clock(), []
        self.timers = Timers(self.clock)
        self.supervisor = Supervisor(
            self.flow,
            self.replicas,
            self.channels,
            None,
            self.timers,  # type: ignore[arg-type]
            self.said.append,
            None,
            None,
            "run",
        )  # type: ignore[arg-type]
        self.spawner = FakeSpawner()
        self.supervisor._spawner = self.spawner  # type: ignore[assignment]
        for pid, replica in enumerate(self.replicas.values(), start=10):
            replica.spawned(FakeProcess(pid), 0.0)

    def r(self, label: str) -> Replica:
        return next(r for r in self.replicas.values() if r.config.label == label)

    def ready(self, *labels: str) -> None:
        for label in labels:
            replica = self.r(label)
            self.channels.topic = identity_topic(*replica.key)
            self.supervisor.on_subscription()
            self.supervisor.on_status(Status.READY, *replica.key, None)

    def exit(self, label: str, code: int) -> None:
        self.supervisor._on_remote_exit(self.r(label).key, self.r(label).process, code)

    def advance(self, seconds: float) -> None:
        self.clock.now += seconds
        self.timers.run_due()


def pipeline(restart: str = "no", **extra: Any) -> dict[str, Any]:
    return {
        "src": {"run": "flujo.nodes.basic:Count"},
        "sink": {"run": "flujo.nodes.basic:Print", "inputs": ["src"], "restart": restart, **extra},
    }


def test_the_flow_starts_once_every_replica_is_ready_and_subscribed(tmp_path: Path) -> None:
    h = Harness(tmp_path, pipeline())
    h.ready("src")
    assert Control.START not in h.channels.topics()
    h.ready("sink")
    assert h.channels.topics().count(Control.START) == 1 and h.supervisor.started
    h.ready("sink")
    assert h.channels.topics().count(Control.START) == 1


def test_a_failed_node_without_a_restart_policy_stops_the_flow(tmp_path: Path) -> None:
    h = Harness(tmp_path, pipeline())
    h.ready("src", "sink")
    h.exit("sink", 3)
    assert h.r("sink").state is S.FAILED and h.supervisor.stopping
    assert h.supervisor.failures == ['node "sink" failed: exited with status 3']
    assert (Control.RELEASED, "sink", 0, "src") in h.channels.published
    assert (Control.STOP, "src") in h.channels.published


def test_an_error_report_names_the_failure(tmp_path: Path) -> None:
    h = Harness(tmp_path, pipeline())
    h.ready("src", "sink")
    h.supervisor.on_status(Status.ERROR, "sink", 0, {"message": "ValueError: boom"})
    h.exit("sink", 1)
    assert h.supervisor.failures == ['node "sink" failed: ValueError: boom']


def test_a_report_still_on_its_way_at_the_exit_is_taken_first(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The exit comes one way and the last reports another: the end of stream (with the node's
    last counters and summary) and an error report are taken before the exit is judged."""
    monkeypatch.setattr(supervisor_module, "LAST_REPORT_WAIT", 5.0)  # the fake reports are there already
    h = Harness(tmp_path, pipeline())
    h.ready("src", "sink")
    h.channels.queued.append((Status.FINISHED, "src", 0, {"items_out": 5, "summary": {"sent": 5}}))
    h.exit("src", 0)
    assert h.r("src").finished and h.r("src").state is S.EXITED and not h.channels.queued
    h.channels.queued.append((Status.ERROR, "sink", 0, {"message": "ValueError: late"}))
    h.exit("sink", 1)
    assert h.supervisor.failures == ['node "sink" failed: ValueError: late']


def test_on_failure_restarts_at_once_then_after_a_delay_then_gives_up_past_its_budget(tmp_path: Path) -> None:
    h = Harness(tmp_path, pipeline("on-failure", max_restarts=2))
    h.ready("src", "sink")
    h.exit("sink", 1)
    assert h.r("sink").state is S.RESTARTING and not h.supervisor.failures
    assert h.said == ['node "sink" exited with status 1; restarting in 0.0 s (restart 1)']
    h.advance(0)  # the first restart has no back-off
    assert h.spawner.respawned == ["sink"] and h.r("sink").state is S.STARTING
    h.exit("sink", 1)
    assert h.said[-1] == 'node "sink" exited with status 1; restarting in 0.1 s (restart 2)'
    h.advance(0.05)
    assert h.spawner.respawned == ["sink"]
    h.advance(0.1)
    assert h.spawner.respawned == ["sink", "sink"] and h.r("sink").state is S.STARTING
    h.exit("sink", 1)
    assert h.r("sink").state is S.FAILED
    assert h.supervisor.failures[0] == (
        'node "sink" failed: exited with status 1 and was already restarted 2 times within 60 s'
    )


def test_on_failure_does_not_restart_a_clean_exit_nor_one_that_finished(tmp_path: Path) -> None:
    h = Harness(tmp_path, pipeline("always"))
    h.ready("src", "sink")
    h.supervisor.on_status(Status.FINISHED, "sink", 0, {})
    h.exit("sink", 0)
    assert h.r("sink").state is S.EXITED and h.spawner.respawned == [] and not h.supervisor.failures


def test_a_reader_that_exits_is_released_no_more_unless_it_ended_for_good(tmp_path: Path) -> None:
    # A lossless sender replays to a reader's successor what it had not acknowledged, even
    # after a release (PROTOCOL 9.3): what a dead process released is forgotten; a replica that
    # ended for good is released again and "gone", so its senders stop waiting for it.
    h = Harness(tmp_path, pipeline("on-failure"))
    h.ready("src", "sink")
    h.supervisor.on_status(Status.RELEASED, "sink", 0, ["src"])
    assert (Control.RELEASED, "sink", 0, "src") in h.channels.published
    h.exit("sink", 1)  # restarts
    assert (Control.RELEASED, "sink", 0, "src") not in h.channels.published
    assert (Control.EXITED, "sink", 0) in h.channels.published
    assert (Control.GONE, "sink", 0) not in h.channels.published
    h.advance(0)
    h.ready("sink")
    h.supervisor.on_status(Status.RELEASED, "sink", 0, ["src"])
    h.supervisor.on_status(Status.FINISHED, "sink", 0, {})
    h.exit("sink", 0)  # for good
    assert h.channels.published[-2:] == [(Control.RELEASED, "sink", 0, "src"), (Control.GONE, "sink", 0)]


def test_a_drained_replica_is_replaced_at_once(tmp_path: Path) -> None:
    h = Harness(tmp_path, pipeline())
    h.ready("src", "sink")
    assert h.supervisor.restart("sink") == ["sink"]
    assert h.r("sink").state is S.DRAINING
    h.supervisor.on_status(Status.DRAINED, "sink", 0, {"stats": {}, "readers": []})
    assert (Control.DISMISS, "sink", 0, 0) in h.channels.published
    h.exit("sink", 0)
    assert h.spawner.respawned == ["sink"] and not h.said[1:]  # drained: no warning of loss
    h.ready("sink")
    assert h.channels.published[-1] == (Control.RESUME, "sink", 0, 0)


def test_a_replica_that_exits_before_draining_is_replaced_with_a_warning(tmp_path: Path) -> None:
    h = Harness(tmp_path, pipeline())
    h.ready("src", "sink")
    h.supervisor.restart("sink")
    h.exit("sink", 0)
    assert h.spawner.respawned == ["sink"]
    assert h.said[-1] == (
        'node "sink" exited with status 0 before it had drained; restarting it (what its queues held may be lost)'
    )


def test_the_stop_ladder_escalates_a_replica_that_does_not_end(tmp_path: Path) -> None:
    h = Harness(tmp_path, pipeline(stop_timeout=2))
    h.ready("src", "sink")
    h.supervisor.stop(["sink"])
    process = h.r("sink").process
    h.advance(1.9)
    assert process.signals == []
    h.advance(0.2)
    assert process.signals == [signal.SIGTERM] and h.r("sink").current.escalated == "SIGTERM"
    h.advance(2.1)
    assert process.signals == [signal.SIGTERM, signal.SIGKILL]
    h.exit("sink", -9)
    assert h.supervisor.failures == ['node "sink" failed: did not end within its stop timeout and needed SIGKILL']


def test_a_reader_whose_inputs_ended_is_laddered_only_once_it_stops_moving_items(tmp_path: Path) -> None:
    h = Harness(tmp_path, pipeline(stop_timeout=1))
    h.ready("src", "sink")
    h.supervisor.on_status(Status.FINISHED, "src", 0, {})
    sink = h.r("sink")
    assert sink.current.grace_started and sink.current.grace_reading
    sink.sample.update({"items_in": 5}, 0.0)
    h.advance(1.1)
    assert sink.process.signals == []  # it moved items meanwhile: not stuck
    h.advance(1.1)
    assert sink.process.signals == [signal.SIGTERM]
    assert "moved no item for 1 s after its inputs ended or were stopped" in h.said[-1]


def test_ended_says_how_a_node_ended_once_every_replica_has(tmp_path: Path) -> None:
    h = Harness(tmp_path, pipeline("on-failure"))
    h.ready("src", "sink")
    assert h.supervisor.ended("src") == ""
    h.exit("src", 0)
    assert h.supervisor.ended("src") == "exit status 0"
    h.exit("sink", 1)
    assert h.supervisor.ended("sink") == ""  # a restart is coming
    assert h.supervisor.running


def test_a_late_subscriber_gets_the_flow_as_it_is_not_past_events(tmp_path: Path) -> None:
    # The control history replayed to a node that subscribes: a dead process's releases are
    # forgotten (its successor releases for itself), and "exited", an event, is never replayed
    # (a sender taking it again would replay to the successor again).
    import msgpack
    import zmq

    from flujo.launch.channels import Channels

    context = zmq.Context()
    try:
        ipc = f"ipc://{tmp_path}"
        channels = Channels(context, f"{ipc}/c", f"{ipc}/s", f"{ipc}/k", 1 << 20, lambda text: None)
        channels.publish(Control.RELEASED, "sink", 0, "in")
        channels.publish(Control.RELEASED, "sink", 1, "in")
        channels.publish(Control.EXITED, "sink", 0)
        channels.forget_released("sink", 0)
        channels.publish(Control.GONE, "src", 0)
        late = context.socket(zmq.SUB)
        late.linger, late.rcvtimeo = 0, 5000  # a hang fails, it does not wait for the timeout
        late.subscribe(b"")
        late.connect(f"{ipc}/c")
        assert channels.control.poll(5000) and channels.subscription() == b""
        channels.replay()
        channels.control.send_multipart([b"end", b""])  # not kept: marks the end of the replay
        got = []
        while (frames := late.recv_multipart()) != [b"end", b""]:
            got.append((frames[0], msgpack.unpackb(frames[1])))
        assert got == [(b"released", ["sink", 1, "in"]), (b"gone", ["src", 0])]
    finally:
        context.destroy(linger=0)
