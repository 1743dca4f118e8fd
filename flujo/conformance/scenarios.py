"""The catalogue of scenarios: each starts the node under test on a fresh bench and walks it
through some clauses of docs/PROTOCOL.md, in the order a flow would meet them. A scenario
stops at its first failed clause.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from flujo.conformance import acknowledging, producers, restarts, streams
from flujo.conformance.checks import Checks
from flujo.conformance.harness import Bench, Edge
from flujo.vocab import ErrorPolicy, NodeKind, RestartPolicy


@dataclass(frozen=True)
class Scenario:
    """A named walk through some clauses, at one level, for some kinds of node, on a bench so shaped."""

    name: str
    level: str
    run: Callable[[Bench, Checks, float], None]
    senders: int = 1
    edges: tuple[Edge, ...] = (Edge(),)
    restart: RestartPolicy = RestartPolicy.NO
    replica: int = 0  # the node under test is this replica of replica + 1
    on_error: ErrorPolicy = ErrorPolicy.FAIL
    kinds: frozenset[NodeKind] = frozenset({NodeKind.PROCESSOR, NodeKind.CONSUMER})
    acks: bool = False  # lossless edges: ack endpoints in the configuration (section 9.2)


_PROCESSOR, _PRODUCER = frozenset({NodeKind.PROCESSOR}), frozenset({NodeKind.PRODUCER})
SCENARIOS: tuple[Scenario, ...] = (
    Scenario("lifecycle", "basic", streams.lifecycle),
    Scenario("stop", "basic", streams.stop),
    Scenario("batches and arrays", "full", streams.batches_and_arrays),
    Scenario("order", "full", streams.order, senders=3),
    Scenario(
        "fan-out and stats", "full", streams.fanout_and_stats, edges=(Edge("down", 2), Edge("side", 1)), replica=1
    ),
    Scenario("readers released", "full", streams.readers_released, kinds=_PROCESSOR),
    Scenario("error", "full", streams.error),
    Scenario("error skipped", "full", streams.error_skipped, on_error=ErrorPolicy.SKIP),
    Scenario("crash", "full", streams.crash, restart=RestartPolicy.ON_FAILURE),
    Scenario("drain", "restartable", restarts.drain, senders=2, replica=1),
    Scenario("sender restart", "restartable", restarts.sender_restart, senders=2),
    Scenario("hold reader", "restartable", restarts.hold_reader, kinds=_PROCESSOR),
    Scenario("aligned reader", "restartable", restarts.aligned, edges=(Edge(aligned=True),), kinds=_PROCESSOR),
    Scenario(
        "aligned, nothing sent", "restartable", restarts.aligned_idle, edges=(Edge(aligned=True),), kinds=_PROCESSOR
    ),
    Scenario("produce and stop", "basic", producers.produce_and_stop, kinds=_PRODUCER),
    Scenario(
        "producer fan-out and stats",
        "full",
        producers.producer_fanout,
        edges=(Edge("down", 2), Edge("side", 1)),
        replica=1,
        kinds=_PRODUCER,
    ),
    Scenario("producer readers released", "full", producers.producer_released, kinds=_PRODUCER),
    Scenario("producer drain", "restartable", producers.producer_drain, replica=1, kinds=_PRODUCER),
    Scenario("producer hold reader", "restartable", producers.producer_hold_reader, kinds=_PRODUCER),
    Scenario("acknowledges", "acknowledging", acknowledging.acknowledges, senders=2, acks=True),
    Scenario(
        "acknowledges only what is done",
        "acknowledging",
        acknowledging.acknowledges_only_done,
        acks=True,
        restart=RestartPolicy.ON_FAILURE,
    ),
    Scenario("replays", "acknowledging", acknowledging.replays, acks=True, kinds=_PROCESSOR | _PRODUCER),
    Scenario("resumes", "acknowledging", acknowledging.resumes, acks=True, kinds=_PRODUCER),
)
