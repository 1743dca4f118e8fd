"""What `flujo-launch status` derives from the counters nodes report: rates, queue fill, busy %.

Pure functions of the reports, so they can be tested without processes.
"""
from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Any

from flujo.launch.manifest import FlowSpec


#: Rates are averaged over about this many seconds of reports (nodes report every 0.5 s).
RATE_WINDOW = 3.0


@dataclass
class Sample:
    """One replica's recent stats reports, for rates."""

    stats: dict[str, Any] = field(default_factory=dict)
    history: deque[tuple[float, dict[str, Any]]] = field(default_factory=deque)

    def update(self, stats: dict[str, Any], now: float) -> None:
        self.stats = stats
        self.history.append((now, stats))
        while len(self.history) > 2 and now - self.history[1][0] >= RATE_WINDOW:
            self.history.popleft()

    def rate(self, key: str) -> float:
        """Per second, over the last few seconds of reports."""
        if len(self.history) < 2:
            return 0.0
        (first_at, first), (last_at, last) = self.history[0], self.history[-1]
        elapsed = last_at - first_at
        return (last.get(key, 0) - first.get(key, 0)) / elapsed if elapsed > 0 else 0.0


def queue_fill(flow: FlowSpec, node: str, samples: dict[tuple[str, int], Sample]) -> float:
    """Fraction (0..1) of the node's input queues in use: items sent to it and not yet received."""
    spec = flow.nodes[node]
    fills = []
    for port in spec.inputs:
        sent = sum(samples[(port.source, r)].stats.get("sent", {}).get(f"{node}/{port.port}", 0)
                   for r in range(flow.nodes[port.source].replicas) if (port.source, r) in samples)
        received = sum(samples[(node, r)].stats.get("received", {}).get(port.port, 0)
                       for r in range(spec.replicas) if (node, r) in samples)
        hwm = flow.queue_of(spec)
        # Each receiving replica's RCVHWM, plus each sender's SNDHWM towards each of them.
        capacity = spec.replicas * hwm * (1 + flow.nodes[port.source].replicas)
        fills.append(min(1.0, max(0.0, (sent - received) / capacity)))
    return max(fills, default=0.0)


def drops(flow: FlowSpec, node: str, samples: dict[tuple[str, int], Sample]) -> int:
    """Items a realtime node's inputs dropped: by its senders (queue full) and by itself (oldest)."""
    spec = flow.nodes[node]
    total = sum(samples[(node, r)].stats.get("dropped", 0) for r in range(spec.replicas) if (node, r) in samples)
    for port in spec.inputs:
        total += sum(samples[(port.source, r)].stats.get("dropped_sent", {}).get(f"{node}/{port.port}", 0)
                     for r in range(flow.nodes[port.source].replicas) if (port.source, r) in samples)
    return total


def busy_fraction(sample: Sample) -> float:
    """Share of the last interval the replica spent in user code."""
    return min(1.0, max(0.0, sample.rate("busy")))


def bottleneck(flow: FlowSpec, samples: dict[tuple[str, int], Sample]) -> str | None:
    """The node whose replicas are busiest on average, if any is measurably busy."""
    best, best_busy = None, 0.05
    for name, spec in flow.nodes.items():
        replicas = [samples[(name, r)] for r in range(spec.replicas) if (name, r) in samples]
        if replicas:
            busy = sum(busy_fraction(sample) for sample in replicas) / len(replicas)
            if busy > best_busy:
                best, best_busy = name, busy
    return best
