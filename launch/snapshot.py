"""The flow's state as one dict (what `flujo-launch status`, the live view, the JSON status file
and the metrics endpoint show), one entry per replica. Counters add up every process a
replica has had, so they never go backwards across restarts."""

from __future__ import annotations

import time
from typing import Any

from flujo.launch.manifest import FlowSpec
from flujo.launch.metrics import bottleneck, busy_fraction, drops, queue_fill
from flujo.launch.replica import Key, Replica, ReplicaState
from flujo.vocab import NodeKind


def shown_state(replica: Replica, flow_started: bool) -> ReplicaState:
    """The state a person sees: a Ray placement waiting for room is pending, a ready replica of a
    started flow is running; otherwise the replica's own state."""
    if getattr(replica.process, "pending", None) and replica.exit_code is None:
        return ReplicaState.PENDING
    if replica.state is ReplicaState.READY and flow_started:
        return ReplicaState.RUNNING
    return replica.state


def replica_status(
    flow: FlowSpec, replica: Replica, flow_started: bool, queue: float, dropped: int, now: float
) -> dict[str, Any]:
    """One replica's entry (docs/PROTOCOL.md, section 17, lists the fields)."""
    sample, config = replica.sample, replica.config
    totals = sample.totals
    rate = sample.rate("items_out" if config.kind == NodeKind.PRODUCER else "items_in")
    total = sample.stats.get("total")  # a producer that knows its length
    pending = getattr(replica.process, "pending", None)  # a Ray placement waiting for room
    left = max(0, total - totals.get("items_out", 0)) if isinstance(total, int) else None
    ended = replica.exit_code is not None
    return {
        "label": config.label,
        "node": config.node,
        "replica": config.replica,
        "host": flow.nodes[config.node].host or getattr(replica.process, "machine", None),
        "pid": replica.process.pid if replica.process else None,
        "exit_code": replica.exit_code,
        "state": str(shown_state(replica, flow_started)),
        **({"pending": pending} if pending else {}),
        "restarts": replica.restarts,
        "error": (replica.error or {}).get("message"),
        "items_in": totals.get("items_in", 0),
        "items_out": totals.get("items_out", 0),
        "errors": totals.get("errors", 0),
        "rejected": totals.get("rejected", 0),
        "rejected_by": totals.get("rejected_by", {}),
        "rate": rate,
        "queue": queue,
        "busy": busy_fraction(sample),
        "dropped": dropped,
        "total": total,
        "eta": left / rate if left is not None and rate > 0 and not ended else None,
        "seconds": (
            (replica.ended_at if ended and replica.ended_at else now) - replica.started_at
            if replica.started_at is not None
            else None
        ),
        "summary": sample.stats.get("summary"),
    }


def flow_status(
    flow: FlowSpec, replicas: dict[Key, Replica], hosts: list[dict[str, Any]], started: bool, stopping: bool
) -> dict[str, Any]:
    """The whole flow: its name, whether it started or is stopping, its hosts, its bottleneck and nodes."""
    samples = {key: replica.sample for key, replica in replicas.items()}
    fills = {name: queue_fill(flow, name, samples) for name in flow.nodes}
    dropped = {name: drops(flow, name, samples) for name in flow.nodes}
    now = time.time()
    nodes = [
        replica_status(flow, replica, started, fills[replica.config.node], dropped[replica.config.node], now)
        for replica in replicas.values()
    ]
    return {
        "flow": flow.name,
        "started": started,
        "stopping": stopping,
        "hosts": hosts,
        "bottleneck": bottleneck(flow, samples),
        "nodes": nodes,
    }
