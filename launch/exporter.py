"""Prometheus metrics of a running flow (`flujo-launch run --metrics-port PORT`).

prometheus_client serves the text format from its own thread; at each scrape the collector
reads the launcher's latest status snapshot (a dict the loop replaces a few times a second,
never mutates), so a scrape costs the launcher loop nothing and never races it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client import start_http_server
from prometheus_client.core import CollectorRegistry, CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from flujo.launch.replica import ReplicaState

REPLICA_LABELS = ["flow", "node", "replica", "host"]
NODE_LABELS = ["flow", "node"]

#: (status field, metric name, help) per replica; counters get "_total" in the text format.
REPLICA_COUNTERS = (
    ("items_in", "flujo_items_in", "Items the replica received."),
    ("items_out", "flujo_items_out", "Items the replica sent."),
    ("errors", "flujo_errors", "Items whose processing raised (skipped or fatal)."),
    ("rejected", "flujo_rejected", "Malformed or forged messages the replica refused."),
    ("restarts", "flujo_restarts", "Times the launcher started a new process for the replica."),
)
REPLICA_GAUGES = (
    ("rate", "flujo_items_per_second", "Items per second over the last few seconds (in; out for producers)."),
    ("busy", "flujo_busy_ratio", "Share of recent time the replica spent in user code (0..1)."),
)
NODE_METRICS = (
    ("queue", GaugeMetricFamily, "flujo_queue_fill_ratio", "Fill of the node's fullest input queue (0..1)."),
    ("dropped", CounterMetricFamily, "flujo_dropped", "Items dropped by the node's queue policy."),
)


class StatusCollector(Collector):
    """Turns a launcher status snapshot into metric families."""

    def __init__(self, snapshot: Callable[[], dict[str, Any]]) -> None:
        self._snapshot = snapshot

    def collect(self) -> Iterator[Metric]:
        status = self._snapshot()
        flow, replicas = status.get("flow", ""), status.get("nodes", [])

        def replica_labels(entry: dict[str, Any]) -> list[str]:
            return [flow, entry["node"], str(entry["replica"]), entry.get("host") or ""]

        for field, name, documentation in REPLICA_COUNTERS:
            if any(field in entry for entry in replicas):  # e.g. "rejected": only when nodes report it
                family = CounterMetricFamily(name, documentation, labels=REPLICA_LABELS)
                for entry in replicas:
                    family.add_metric(replica_labels(entry), float(entry.get(field, 0)))
                yield family
        for field, name, documentation in REPLICA_GAUGES:
            gauge = GaugeMetricFamily(name, documentation, labels=REPLICA_LABELS)
            for entry in replicas:
                gauge.add_metric(replica_labels(entry), float(entry.get(field, 0.0)))
            yield gauge
        up = GaugeMetricFamily(
            "flujo_replica_up",
            "1 while the replica's process runs the flow, else 0.",
            labels=[*REPLICA_LABELS, "state"],
        )
        for entry in replicas:
            up.add_metric(
                [*replica_labels(entry), entry.get("state", "")],
                1.0 if entry.get("state") == ReplicaState.RUNNING else 0.0,
            )
        yield up
        nodes = {entry["node"]: entry for entry in replicas}  # these are per node: each replica repeats them
        for field, kind, name, documentation in NODE_METRICS:
            per_node = kind(name, documentation, labels=NODE_LABELS)
            for node, entry in nodes.items():
                per_node.add_metric([flow, node], float(entry.get(field, 0)))
            yield per_node
        started = GaugeMetricFamily(
            "flujo_flow_started", "1 once every node is ready and the producers run.", labels=["flow"]
        )
        started.add_metric([flow], 1.0 if status.get("started") else 0.0)
        yield started


class MetricsServer:
    """The HTTP endpoint; ``port`` 0 picks a free one (see ``.port``)."""

    def __init__(self, snapshot: Callable[[], dict[str, Any]], port: int, address: str = "127.0.0.1") -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(StatusCollector(snapshot))
        self._server, self._thread = start_http_server(port, addr=address, registry=self.registry)
        self.address = address
        self.port: int = self._server.server_port

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)
