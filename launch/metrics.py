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
#: Counters that add up across the processes of one replica (a restart starts a process at 0).
COUNTERS = ("items_in", "items_out", "busy", "errors", "late", "dropped", "rejected")
#: Counters kept per port or per edge, added up the same way.
COUNTER_TABLES = ("received", "sent", "dropped_sent", "rejected_by")


def _added(base: dict[str, Any], stats: dict[str, Any]) -> dict[str, Any]:
    """``stats`` with ``base``'s counters added: what every process of the replica did together."""
    total = dict(stats)
    for key in COUNTERS:
        if key in base or key in stats:
            total[key] = base.get(key, 0) + stats.get(key, 0)
    for key in COUNTER_TABLES:
        if key in base or key in stats:
            table = dict(base.get(key) or {})
            for name, value in (stats.get(key) or {}).items():
                table[name] = table.get(name, 0) + value
            total[key] = table
    return total


@dataclass
class Sample:
    """One replica's stats reports, its counters added up across its processes.

    A restarted replica's new process counts from zero; its predecessor's last counters are
    kept as a base, so totals never go backwards and rates never turn negative. A report from
    an earlier process that arrives late (reports carry the process's ``generation``) is
    ignored. Each report is stamped with the time the node took it (``at``, else the time
    it arrived), so counters of different replicas can be compared at one instant.
    """

    stats: dict[str, Any] = field(default_factory=dict)  # the current process's last report, as sent
    totals: dict[str, Any] = field(default_factory=dict)  # the replica's counters over every process
    history: deque[tuple[float, dict[str, Any]]] = field(default_factory=deque)  # (taken at, totals)
    generation: int = 0
    #: When each replaced process last reported (see queue_fill).
    replaced: list[float] = field(default_factory=list)
    #: As a reader: items presumed lost in replaced processes' input buffers, by port; and how
    #: many of the replacements that estimate covers, by port.
    lost: dict[str, float] = field(default_factory=dict)
    estimated: dict[str, int] = field(default_factory=dict)
    #: As a reader: items its replaced senders sent but never reported, by port.
    unreported: dict[str, float] = field(default_factory=dict)
    _base: dict[str, Any] = field(default_factory=dict)

    def update(self, stats: dict[str, Any], received_at: float) -> None:
        """Take a report (``received_at``: wall-clock seconds, for reports without ``at``)."""
        generation = stats.get("generation", self.generation)
        if isinstance(generation, int) and generation != self.generation:
            if generation < self.generation:
                return  # a late report of a process already replaced
            self._base, self.generation = _added(self._base, self.stats), generation
            if self.taken is not None:
                self.replaced.append(self.taken)
        taken = stats.get("at", received_at)
        if not isinstance(taken, (int, float)):
            taken = received_at
        if self.history and taken < self.history[-1][0]:
            taken = self.history[-1][0]  # clocks of two processes may differ slightly
        self.stats = stats
        self.totals = _added(self._base, stats)
        self.history.append((taken, self.totals))
        while len(self.history) > 2 and taken - self.history[1][0] >= RATE_WINDOW:
            self.history.popleft()

    @property
    def taken(self) -> float | None:
        """When the last report was taken."""
        return self.history[-1][0] if self.history else None

    def rate(self, key: str) -> float:
        """Per second, over the last few seconds of reports; never negative."""
        if len(self.history) < 2:
            return 0.0
        (first_at, first), (last_at, last) = self.history[0], self.history[-1]
        elapsed = last_at - first_at
        return max(0.0, (last.get(key, 0) - first.get(key, 0)) / elapsed) if elapsed > 0 else 0.0

    def counter_at(self, when: float, table: str, key: str) -> float:
        """The ``totals[table][key]`` counter at time ``when``, interpolated between reports."""
        earlier: tuple[float, float] | None = None
        for taken, totals in self.history:
            value = (totals.get(table) or {}).get(key, 0)
            if taken >= when:
                if earlier is None or taken == earlier[0]:
                    return value
                share = (when - earlier[0]) / (taken - earlier[0])
                return earlier[1] + share * (value - earlier[1])
            earlier = (taken, value)
        return earlier[1] if earlier else 0.0


def queue_fill(flow: FlowSpec, node: str, samples: dict[tuple[str, int], Sample]) -> float:
    """Fraction (0..1) of the node's input queues in use: items sent to it and not yet received.

    Senders and receivers report at their own moments, up to half a second apart, in which a
    busy edge moves far more items than its queues hold. So every counter is read at one
    instant, the oldest of their latest reports, interpolated between each one's reports.
    """
    spec = flow.nodes[node]
    fills = []
    for port in spec.inputs:
        senders = [
            samples[(port.source, r)] for r in range(flow.nodes[port.source].replicas) if (port.source, r) in samples
        ]
        receivers = [samples[(node, r)] for r in range(spec.replicas) if (node, r) in samples]
        times = [sample.taken for sample in senders + receivers if sample.taken is not None]
        if not times:
            fills.append(0.0)
            continue
        hwm = flow.queue_of(spec)
        _estimate_losses(port.port, f"{node}/{port.port}", senders, receivers, hwm)
        when = min(times)
        sent = sum(sample.counter_at(when, "sent", f"{node}/{port.port}") for sample in senders)
        received = sum(sample.counter_at(when, "received", port.port) for sample in receivers)
        lost = sum(sample.lost.get(port.port, 0.0) for sample in receivers)
        if any(sample.replaced for sample in senders) and receivers:
            # A sender killed between two reports sent items it never reported; its readers
            # received them all the same. What they received beyond what was reported is that.
            first = receivers[0]
            first.unreported[port.port] = max(first.unreported.get(port.port, 0.0), received + lost - sent)
            sent += first.unreported[port.port]
        # Each receiving replica's RCVHWM, plus each sender's SNDHWM towards each of them.
        capacity = spec.replicas * hwm * (1 + len(senders))
        fills.append(min(1.0, max(0.0, (sent - received - lost) / capacity)))
    return max(fills, default=0.0)


def _estimate_losses(port: str, edge: str, senders: list[Sample], receivers: list[Sample], hwm: int) -> None:
    """A receiver process that died took its own input buffer with it; what its senders still
    held for it goes to its successor (ZeroMQ keeps a connecting socket's queue across
    reconnections). So of what was in flight towards it when it last reported, all beyond
    its senders' share is lost: left out of the fill from then on, else a queue that was
    full when its reader died would show full forever."""
    for receiver in receivers:
        for when in receiver.replaced[receiver.estimated.get(port, 0) :]:
            in_flight = (
                sum(sample.counter_at(when, "sent", edge) for sample in senders)
                - sum(sample.counter_at(when, "received", port) for sample in receivers)
                - sum(sample.lost.get(port, 0.0) for sample in receivers)
            ) / len(receivers)
            receiver.lost[port] = receiver.lost.get(port, 0.0) + max(0.0, in_flight - hwm * len(senders))
        receiver.estimated[port] = len(receiver.replaced)


def drops(flow: FlowSpec, node: str, samples: dict[tuple[str, int], Sample]) -> int:
    """Items a realtime node's inputs dropped: by its senders (queue full) and by itself (oldest)."""
    spec = flow.nodes[node]
    total = sum(samples[(node, r)].totals.get("dropped", 0) for r in range(spec.replicas) if (node, r) in samples)
    for port in spec.inputs:
        total += sum(
            samples[(port.source, r)].totals.get("dropped_sent", {}).get(f"{node}/{port.port}", 0)
            for r in range(flow.nodes[port.source].replicas)
            if (port.source, r) in samples
        )
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
