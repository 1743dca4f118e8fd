"""The launcher's pure cores, without sockets or processes: the replica life-cycle machine,
the graceful-restart decisions (Handovers) and the endpoint plan. Each test runs in milliseconds."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from flujo.config import InputConfig, NodeConfig
from flujo.launch.handover import Handovers
from flujo.launch.manifest import validate
from flujo.launch.plan import plan, ports_needed, run_id
from flujo.launch.replica import InvalidTransition, Replica, ReplicaState
from flujo.protocol import Control

pytestmark = pytest.mark.timeout(10)

S = ReplicaState


class FakeProcess:
    pid = 1234

    def __init__(self) -> None:
        self.signals: list[int] = []

    def signal(self, signum: int) -> None:
        self.signals.append(signum)

    def join(self, timeout: float = 5.0) -> None:
        pass


def config(
    node: str = "n",
    replica: int = 0,
    inputs: tuple[tuple[str, int], ...] = (),
    join: str = "zip",
    generation: int = 0,
    replicas: int = 1,
) -> NodeConfig:
    """A replica's config; ``inputs``: (source node, its replicas) per port, the port named after the source."""
    ports = tuple(
        InputConfig(
            port=source, endpoint=f"ipc:///x/{node}.{source}", hwm=1, source=source, source_port="out", senders=senders
        )
        for source, senders in inputs
    )
    return NodeConfig(
        flow="f",
        node=node,
        replica=replica,
        replicas=replicas,
        kind="processor",
        control="c",
        status="s",
        inputs=ports,
        join=join,
        generation=generation,
    )


def replica_in(state: ReplicaState, **kwargs: Any) -> Replica:
    """A replica brought to ``state`` by events only."""
    replica = Replica(config(**kwargs))
    if state is S.STARTING:
        replica.spawned(FakeProcess(), 0.0)
        return replica
    replica.spawned(FakeProcess(), 0.0)
    steps = {
        S.READY: ["ready"],
        S.RELEASED: ["ready", "released"],
        S.FINISHED: ["ready", "finished"],
        S.DRAINING: ["ready", "drain"],
        S.EXITED: ["ready", "exit0"],
        S.FAILED: ["ready", "exit1"],
        S.RESTARTING: ["ready", "exit1", "schedule"],
    }[state]
    for step in steps:
        {
            "ready": replica.became_ready,
            "drain": replica.drain,
            "finished": replica.finished_stream,
            "exit0": lambda: replica.exited(0, 0.0),
            "exit1": lambda: replica.exited(1, 0.0),
            "schedule": replica.restart_scheduled,
            "released": lambda: [replica.released_port(p.port) for p in replica.config.inputs],
        }[step]()
    assert replica.state is state
    return replica


# -- the machine ---------------------------------------------------------------------------------
def test_a_new_replica_is_starting_without_a_process() -> None:
    replica = Replica(config())
    assert replica.state is S.STARTING and replica.process is None and replica.alive
    assert not replica.ended_for_good and not replica.started


# (state before, event, state after); None: the event raises InvalidTransition
TRANSITIONS = [
    (S.STARTING, "ready", S.READY),
    (S.READY, "ready", S.READY),
    (S.RELEASED, "ready", S.RELEASED),
    (S.DRAINING, "ready", S.DRAINING),
    (S.STARTING, "finished", S.FINISHED),
    (S.READY, "finished", S.FINISHED),
    (S.RELEASED, "finished", S.FINISHED),
    (S.DRAINING, "finished", S.DRAINING),  # it ended its stream while draining: still draining until it exits
    (S.EXITED, "finished", S.EXITED),  # a report overtaken by the exit changes no state
    (S.STARTING, "drain", S.DRAINING),
    (S.READY, "drain", S.DRAINING),
    (S.RELEASED, "drain", S.DRAINING),
    (S.FINISHED, "drain", None),
    (S.DRAINING, "drain", None),
    (S.EXITED, "drain", None),
    (S.RESTARTING, "drain", None),
    (S.STARTING, "exit0", S.EXITED),
    (S.READY, "exit1", S.FAILED),
    (S.RELEASED, "exit0", S.EXITED),
    (S.FINISHED, "exit0", S.EXITED),
    (S.FINISHED, "exit1", S.FAILED),
    (S.DRAINING, "exit0", S.RESTARTING),  # a drained process is replaced at once, whatever its status
    (S.DRAINING, "exit1", S.RESTARTING),
    (S.EXITED, "exit0", None),
    (S.FAILED, "exit1", None),
    (S.RESTARTING, "exit1", None),
    (S.FAILED, "schedule", S.RESTARTING),
    (S.EXITED, "schedule", S.RESTARTING),
    (S.READY, "schedule", None),
    (S.RESTARTING, "schedule", None),
    (S.RESTARTING, "spawned", S.STARTING),
    (S.READY, "spawned", None),
    (S.DRAINING, "spawned", None),
    (S.FAILED, "spawned", None),
    (S.READY, "respawning", None),
    (S.EXITED, "respawning", None),
]


@pytest.mark.parametrize(("before", "event", "after"), TRANSITIONS, ids=[f"{b}-{e}" for b, e, _ in TRANSITIONS])
def test_transition(before: ReplicaState, event: str, after: ReplicaState | None) -> None:
    replica = replica_in(before, inputs=(("a", 1),))
    act = {
        "ready": replica.became_ready,
        "finished": replica.finished_stream,
        "drain": replica.drain,
        "exit0": lambda: replica.exited(0, 0.0),
        "exit1": lambda: replica.exited(1, 0.0),
        "schedule": replica.restart_scheduled,
        "spawned": lambda: replica.spawned(FakeProcess(), 0.0),
        "respawning": lambda: replica.respawning(replica.config),
    }[event]
    if after is None:
        with pytest.raises(InvalidTransition, match=f'replica "n": event ".*" is not valid in state "{before}"'):
            act()
        assert replica.state is before
    else:
        act()
        assert replica.state is after


def test_draining_process_that_finished_its_stream_ends_for_good() -> None:
    replica = replica_in(S.DRAINING)
    replica.finished_stream()
    assert replica.exited(0, 0.0) is S.DRAINING  # the state it was in, for the launcher's hand-over
    assert replica.state is S.EXITED and replica.ended_for_good


def test_released_only_once_every_input_port_is() -> None:
    replica = replica_in(S.READY, inputs=(("a", 1), ("b", 1)))
    assert replica.released_port("a") is True
    assert replica.state is S.READY and not replica.released
    assert replica.released_port("a") is False  # already released: nothing to publish again
    assert replica.released_port("b") is True
    assert replica.state is S.RELEASED and replica.released


def test_a_producer_without_inputs_is_never_released() -> None:
    replica = replica_in(S.READY)
    assert not replica.released


def test_started_needs_ready_and_subscribed_or_an_end_for_good() -> None:
    replica = replica_in(S.STARTING)
    replica.became_ready()
    assert not replica.started
    replica.subscribed()
    assert replica.started and replica.listening
    other = replica_in(S.FAILED)
    assert other.started and not other.alive and not other.sends
    assert not replica_in(S.RESTARTING).started  # a restart is coming: the flow waits for it


def test_respawn_replaces_every_fact_of_the_dead_process() -> None:
    replica = replica_in(S.READY, inputs=(("a", 1),))
    first = replica.process
    replica.subscribed()
    replica.released_port("a")
    replica.failed_with({"message": "boom"})
    replica.grace_started(reading=True)
    replica.escalated("SIGTERM")
    replica.drained({"readers": [], "stats": {}})
    replica.dismissed()
    replica.stop_requested()
    replica.exited(1, 0.0)
    replica.restart_scheduled()
    replica.respawning(config(inputs=(("a", 1),), generation=1))
    second = FakeProcess()
    replica.spawned(second, 0.0)
    record = replica.current
    assert replica.state is S.STARTING and replica.process is second is not first
    assert (
        record.subscribed,
        record.ready,
        record.finished,
        record.exit_code,
        record.error,
        record.drained,
        record.dismissed,
        record.grace_started,
        record.escalated,
    ) == (False, False, False, None, None, None, False, False, "")
    assert replica.released_ports == frozenset()
    assert replica.restarts == 1 and replica.config.generation == 1
    assert replica.stopped  # told to stop: that outlives its processes


def test_a_later_stop_ladder_supersedes_the_earlier() -> None:
    replica = replica_in(S.READY)
    first = replica.grace_started(reading=True)
    second = replica.grace_started(reading=False)
    assert first is not second and replica.current.ladder is second and not replica.current.grace_reading


def test_state_values_keep_their_spellings() -> None:
    assert [state.value for state in S] == [
        "starting",
        "ready",
        "released",
        "finished",
        "draining",
        "restarting",
        "exited",
        "failed",
        "pending",
        "running",
    ]


# -- graceful restarts: Handovers ------------------------------------------------------------------
class Flow:
    """Replicas by key, and everything Handovers published, said and laddered."""

    def __init__(self, *replicas: Replica) -> None:
        self.replicas = {replica.key: replica for replica in replicas}
        self.published: list[tuple[Any, ...]] = []
        self.said: list[str] = []
        self.graced: list[str] = []
        self.handovers = Handovers(
            self.replicas,
            lambda *frames: self.published.append(frames),
            self.said.append,
            lambda replica: self.graced.append(replica.config.label),
        )

    def topics(self) -> list[Control]:
        return [frames[0] for frames in self.published]


def running(node: str, replica: int = 0, **kwargs: Any) -> Replica:
    one = replica_in(S.READY, node=node, replica=replica, replicas=3, **kwargs)
    one.subscribed()
    return one


def test_restart_holds_one_replica_at_a_time_and_resumes_when_its_successor_runs() -> None:
    first, second = running("p", 0), running("p", 1)
    flow = Flow(first, second)
    assert flow.handovers.restart("p") == ["p.0", "p.1"]
    assert first.state is S.DRAINING and second.state is S.READY
    assert flow.published == [(Control.HOLD, "p", 0, 0)] and flow.graced == ["p.0"]
    assert flow.said == ['restarting node "p.0": draining it first']
    flow.handovers.back(first)  # still the draining process: nothing moves
    assert flow.topics() == [Control.HOLD]
    first.exited(0, 0.0)
    first.respawning(first.config)
    first.spawned(FakeProcess(), 0.0)
    flow.handovers.back(first)  # successor not ready yet
    assert flow.topics() == [Control.HOLD]
    first.became_ready()
    first.subscribed()
    flow.handovers.back(first)
    assert flow.published[1:] == [(Control.RESUME, "p", 0, 0), (Control.HOLD, "p", 1, 0)]
    assert first.hold is None and second.state is S.DRAINING


def test_a_second_request_merges_into_the_restart_under_way() -> None:
    flow = Flow(running("p", 0), running("p", 1))
    flow.handovers.restart("p")
    assert flow.handovers.restart("p") == ["p.0", "p.1"]
    assert flow.topics() == [Control.HOLD]  # not held twice


def test_restart_skips_replicas_that_finished_or_ended() -> None:
    done = replica_in(S.FINISHED, node="p", replica=0, replicas=3)
    dead = replica_in(S.FAILED, node="p", replica=1, replicas=3)
    live = running("p", 2)
    flow = Flow(done, dead, live)
    assert flow.handovers.restart("p") == ["p.0", "p.2"]  # the finished one is still alive, not holdable
    assert flow.published == [(Control.HOLD, "p", 2, 0)] and done.state is S.FINISHED


def test_restart_of_a_node_with_nothing_alive_returns_no_labels() -> None:
    flow = Flow(replica_in(S.EXITED, node="p"))
    assert flow.handovers.restart("p") == [] and flow.published == []


def test_a_held_replica_that_ends_its_stream_hands_the_turn_on() -> None:
    first, second = running("p", 0), running("p", 1)
    flow = Flow(first, second)
    flow.handovers.restart("p")
    first.finished_stream()
    first.exited(0, 0.0)
    flow.handovers.back(first, ended=True)
    assert flow.published[1:] == [(Control.RESUME, "p", 0, 0), (Control.HOLD, "p", 1, 0)]


def zip_flow() -> tuple[Flow, Replica, Replica, Replica]:
    a, b = running("a"), running("b")
    z = running("z", inputs=(("a", 1), ("b", 1)), join="zip")
    return Flow(a, b, z), a, b, z


def test_a_zip_is_aligned_once_every_live_sender_said_how_far_it_sent() -> None:
    flow, a, b, _z = zip_flow()
    flow.handovers.restart("z")
    flow.handovers.on_position(a.key, ["z", 0, "a", 7])
    assert flow.topics() == [Control.HOLD]  # b has not said yet
    flow.handovers.on_position(b.key, ["z", 0, "b", 9])
    assert flow.published[-1] == (Control.ALIGN, "z", 0, 0, 9)
    flow.handovers.on_position(b.key, ["z", 0, "b", 11])
    assert flow.topics().count(Control.ALIGN) == 1  # the limit is announced once


def test_a_sender_that_ended_is_not_waited_for_when_aligning() -> None:
    flow, a, b, _z = zip_flow()
    b.finished_stream()
    flow.handovers.restart("z")
    flow.handovers.on_position(a.key, ["z", 0, "a", 3])
    assert flow.published[-1] == (Control.ALIGN, "z", 0, 0, 3)


def test_no_sender_left_aligns_at_minus_one() -> None:
    flow, a, b, _z = zip_flow()
    a.exited(1, 0.0)
    b.exited(0, 0.0)
    flow.handovers.restart("z")
    assert flow.published == [(Control.HOLD, "z", 0, 0), (Control.ALIGN, "z", 0, 0, -1)]


def test_a_dead_sender_that_will_restart_is_waited_for() -> None:
    flow, a, b, _z = zip_flow()
    a.exited(1, 0.0)
    a.restart_scheduled()
    flow.handovers.restart("z")
    flow.handovers.on_position(b.key, ["z", 0, "b", 4])
    assert Control.ALIGN not in flow.topics()


def test_a_merge_or_one_port_replica_is_never_aligned() -> None:
    a, b = running("a"), running("b")
    m = running("m", inputs=(("a", 1), ("b", 1)), join="merge")
    flow = Flow(a, b, m)
    flow.handovers.restart("m")
    flow.handovers.on_position(a.key, ["m", 0, "a", 1])
    flow.handovers.on_position(b.key, ["m", 0, "b", 1])
    assert Control.ALIGN not in flow.topics()


def test_a_position_for_a_replica_not_held_is_ignored() -> None:
    flow, a, _b, z = zip_flow()
    flow.handovers.on_position(a.key, ["z", 0, "a", 7])
    flow.handovers.on_position(a.key, ["nobody", 0, "a", 7])
    assert flow.published == [] and z.hold is None


def drained_sender() -> tuple[Flow, Replica, Replica, Replica]:
    p = running("p")
    r0, r1 = running("r", 0, inputs=(("p", 1),)), running("r", 1, inputs=(("p", 1),))
    flow = Flow(p, r0, r1)
    flow.handovers.restart("p")
    p.drained({"readers": [["r", 0, "p"], ["r", 1, "p"]], "stats": {}})
    return flow, p, r0, r1


def test_a_drained_process_is_dismissed_once_every_reader_saw_its_pause() -> None:
    flow, p, r0, r1 = drained_sender()
    flow.handovers.progress()
    assert Control.DISMISS not in flow.topics()
    flow.handovers.on_pause_seen(r0.key, ["p", "p", 0])
    assert Control.DISMISS not in flow.topics()
    flow.handovers.on_pause_seen(r1.key, ["p", "p", 0])
    assert flow.published[-1] == (Control.DISMISS, "p", 0, 0) and p.current.dismissed
    flow.handovers.progress()
    assert flow.topics().count(Control.DISMISS) == 1


@pytest.mark.parametrize("reader_gone", ["released", "ended", "unknown"])
def test_a_reader_that_stopped_reading_needs_no_pause_marker(reader_gone: str) -> None:
    flow, _p, r0, r1 = drained_sender()
    flow.handovers.on_pause_seen(r0.key, ["p", "p", 0])
    if reader_gone == "released":
        r1.released_port("p")
    elif reader_gone == "ended":
        r1.exited(0, 0.0)
    else:
        del flow.replicas[r1.key]
    flow.handovers.progress()
    assert flow.published[-1] == (Control.DISMISS, "p", 0, 0)


def test_a_reader_that_will_restart_still_needs_its_pause_marker() -> None:
    flow, _p, r0, r1 = drained_sender()
    flow.handovers.on_pause_seen(r0.key, ["p", "p", 0])
    r1.exited(1, 0.0)
    r1.restart_scheduled()
    flow.handovers.progress()
    assert Control.DISMISS not in flow.topics()


def test_a_pause_seen_from_an_unknown_sender_is_ignored() -> None:
    flow, p, r0, _r1 = drained_sender()
    flow.handovers.on_pause_seen(r0.key, ["p", "nobody", 0])
    assert p.hold is not None and not p.hold.pause_seen


def test_a_process_that_exited_is_not_dismissed() -> None:
    flow, p, r0, r1 = drained_sender()
    p.exited(1, 0.0)
    r0.exited(0, 0.0)
    r1.exited(0, 0.0)
    flow.handovers.progress()
    assert Control.DISMISS not in flow.topics()


# -- the plan ------------------------------------------------------------------------------------
def two_node_flow(tmp_path: Path, transport: str = "ipc", replicas: int = 2) -> Any:
    data = {
        "flow": {"name": "planned", "transport": transport},
        "nodes": {
            "src": {"run": "flujo.nodes.basic:Count"},
            "sink": {"run": "flujo.nodes.basic:Print", "inputs": ["src"], "replicas": replicas},
        },
    }
    return validate(data, tmp_path / "manifest.toml", "manifest.toml")


def test_plan_gives_every_input_port_of_every_replica_its_own_endpoint(tmp_path: Path) -> None:
    flow = two_node_flow(tmp_path)
    run_dir = tmp_path / "flujo-ab-cd"
    endpoints, configs = plan(flow, run_dir)
    assert endpoints.control == f"ipc://{run_dir / 'control'}" and endpoints.status == f"ipc://{run_dir / 'status'}"
    assert sorted(configs) == [("sink", 0), ("sink", 1), ("src", 0)]
    sink_endpoints = [configs[("sink", r)].inputs[0].endpoint for r in range(2)]
    assert len(set(sink_endpoints)) == 2
    (edge,) = configs[("src", 0)].outputs
    assert edge.target == "sink" and list(edge.endpoints) == sink_endpoints
    assert configs[("sink", 1)].inputs[0].senders == 1 and configs[("sink", 1)].replicas == 2
    assert all(config.shm_run == "planned_ab_cd" == run_id(run_dir, "planned") for config in configs.values())


def test_plan_on_tcp_picks_distinct_loopback_ports(tmp_path: Path) -> None:
    endpoints, configs = plan(two_node_flow(tmp_path, "tcp"), tmp_path)
    used = [endpoints.control, endpoints.status, *(port.endpoint for c in configs.values() for port in c.inputs)]
    assert all(endpoint.startswith("tcp://127.0.0.1:") for endpoint in used)


def test_plan_places_a_replica_where_its_cluster_put_it(tmp_path: Path) -> None:
    flow = two_node_flow(tmp_path, "tcp", replicas=1)
    _, configs = plan(flow, tmp_path, placed={("sink", 0): ("10.0.0.9", [5001])})
    assert configs[("sink", 0)].inputs[0].endpoint == "tcp://10.0.0.9:5001"
    assert configs[("src", 0)].outputs[0].endpoints == ("tcp://10.0.0.9:5001",)


def test_ports_needed_counts_input_ports_times_replicas_per_other_host(tmp_path: Path) -> None:
    data = {
        "flow": {"name": "hosts", "transport": "tcp", "host": "10.0.0.1"},
        "hosts": {"gpu": {"address": "10.0.0.2"}},
        "nodes": {
            "a": {"run": "flujo.nodes.basic:Count"},
            "b": {"run": "flujo.nodes.basic:Count"},
            "z": {"run": "flujo.nodes.basic:Print", "inputs": ["a", "b"], "host": "gpu"},
            "y": {"run": "flujo.nodes.basic:Print", "inputs": ["a"], "replicas": 3, "host": "gpu"},
        },
    }
    flow = validate(data, tmp_path / "m.toml", "m.toml")
    assert ports_needed(flow) == {"gpu": 5}
    flow.host = "127.0.0.1"  # the launcher's own sockets bind here in the test
    _, configs = plan(flow, tmp_path, remote_ports={"gpu": list(range(7000, 7005))})
    bound = sorted(port.endpoint for key in [("z", 0), ("y", 0), ("y", 1), ("y", 2)] for port in configs[key].inputs)
    assert bound == sorted(f"tcp://10.0.0.2:{p}" for p in range(7000, 7005))


def test_a_queued_replica_that_died_before_its_turn_is_skipped() -> None:
    first, second, third = running("p", 0), running("p", 1), running("p", 2)
    flow = Flow(first, second, third)
    flow.handovers.restart("p")
    second.exited(1, 0.0)  # dies (for good) while the first drains
    first.exited(0, 0.0)
    first.respawning(first.config)
    first.spawned(FakeProcess(), 0.0)
    first.became_ready()
    first.subscribed()
    flow.handovers.back(first)
    assert flow.published == [(Control.HOLD, "p", 0, 0), (Control.RESUME, "p", 0, 0), (Control.HOLD, "p", 2, 0)]
    assert second.state is S.FAILED and third.state is S.DRAINING


def test_back_of_a_replica_that_was_not_held_changes_nothing() -> None:
    first, other = running("p", 0), running("q", 0)
    flow = Flow(first, other)
    flow.handovers.restart("p")
    flow.handovers.back(other)
    assert flow.published == [(Control.HOLD, "p", 0, 0)] and first.state is S.DRAINING


def test_times_span_every_process_and_a_hold_ends_with_its_generation() -> None:
    replica = Replica(config(generation=4))
    replica.spawned(FakeProcess(), 1.0)
    replica.became_ready()
    hold = replica.drain()
    assert replica.hold is hold and hold.generation == 4
    replica.exited(0, 2.0)
    replica.respawning(config(generation=5))
    replica.spawned(FakeProcess(), 3.0)
    assert (replica.started_at, replica.ended_at) == (1.0, 2.0)  # the first start, the last exit
    assert replica.resumed() == 4 and replica.hold is None
    with pytest.raises(InvalidTransition):
        replica.resumed()


def test_a_replica_keeps_its_newest_snapshot_across_its_processes() -> None:
    # PROTOCOL 9.6: a late report of an earlier process (an older item) never replaces a newer one.
    replica = Replica(config())
    assert replica.snapshot is None
    replica.keep_snapshot(10, b"ten")
    replica.keep_snapshot(4, b"four")
    assert replica.snapshot == (10, b"ten")
    replica.keep_snapshot(12, b"twelve")
    assert replica.snapshot == (12, b"twelve")
