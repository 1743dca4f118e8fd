"""Scenarios for a producer, at every level: start, numbering, stop, fan-out, stats, graceful restarts.

A producer never ends by itself: readers take a capped number of items and then hold back,
so the producer meets backpressure instead of flooding the kit.
"""

from __future__ import annotations

from typing import Any

from flujo.conformance.checks import Checks, same, seq_list
from flujo.conformance.harness import NODE, Bench
from flujo.conformance.steps import (
    DATA,
    EOS,
    PAUSE,
    SKIP,
    end_of_stream,
    exit_or,
    expect_exit,
    first_index,
    handshake,
    latest_stats,
    output_seqs,
    wait_outputs,
    wait_report,
)
from flujo.protocol import Control

#: Items a reader takes before it holds back.
PRODUCER_CAP = 40


def consecutive(seqs: list[int], first: int) -> bool:
    return seqs == list(range(first, first + len(seqs)))


def produce_and_stop(bench: Bench, checks: Checks, window: float) -> None:
    """A producer waits for start, numbers its items from seq_start, stops on stop."""
    for reader in bench.readers:
        reader.cap = PRODUCER_CAP
    handshake(bench, checks, start=False)
    reader = bench.readers[0]
    bench.idle(window)
    checks.clause(
        "4",
        "a producer produces nothing before start",
        not reader.messages,
        "no message before start",
        f"{len(reader.messages)} messages",
    )
    bench.publish(Control.START)
    wait_outputs(bench, reader, 20)
    seqs = output_seqs(reader)
    checks.clause(
        "6",
        "numbers its items 0, 1, 2, … from seq_start",
        len(seqs) >= 20 and consecutive(seqs, 0),
        "at least 20 items numbered 0, 1, 2, …",
        exit_or(bench, f"seqs {seq_list(seqs)}"),
    )
    bench.publish(Control.STOP, NODE)
    end_of_stream(bench, checks)
    seqs = output_seqs(reader)
    checks.clause(
        "6",
        "every item numbered once, consecutively, up to its EOS",
        consecutive(seqs, 0),
        "0, 1, 2, … without a gap",
        f"seqs {seq_list(seqs)}",
    )


def producer_fanout(bench: Bench, checks: Checks, window: float) -> None:
    """Replica 1 of a producer starting at seq_start 1000: fan-out, replicas, stats keyed by edge."""
    for reader in bench.readers:
        reader.cap = PRODUCER_CAP
    bench.config["seq_start"] = 1000
    handshake(bench, checks)
    side = next(r for r in bench.readers if r.edge.target == "side")
    down = [r for r in bench.readers if r.edge.target == "down"]

    def stats_out(count: int) -> Any:
        found = [
            r.payload
            for r in bench.reports_of("stats")
            if isinstance(r.payload, dict) and r.payload.get("items_out", -1) >= count
        ]
        return found[-1] if found else None

    wait_outputs(bench, side, 10)
    bench.wait(lambda: stats_out(10) is not None or bench.exited(), max(bench.timeout, 3.0))
    checks.clause(
        "5",
        "a producer reports stats while it runs (every 0.5 s)",
        stats_out(10) is not None,
        "a stats report with items_out >= 10",
        exit_or(bench, f"{len(bench.reports_of('stats'))} stats"),
    )
    bench.publish(Control.STOP, NODE)
    for reader in bench.readers:
        reader.cap = None
    bench.wait(lambda: all(reader.has(EOS) for reader in bench.readers) or bench.exited())
    seqs = output_seqs(side)
    checks.clause(
        "6",
        "numbers its items from seq_start",
        bool(seqs) and consecutive(seqs, 1000),
        "1000, 1001, …",
        f"seqs {seq_list(seqs)}",
    )
    by_seq = {m.seq: m.item for m in side.items()}
    dealt = sorted(m.seq for r in down for m in r.items())
    changed = [m.seq for r in down for m in r.items() if m.seq in by_seq and not same(by_seq[m.seq], m.item)]
    checks.clause(
        "6",
        "fan-out: every node gets every item; replicas: each item to exactly one of them",
        dealt == seqs and not changed,
        f"down.0 + down.1 = side's {seq_list(seqs)}",
        f"down: {seq_list(dealt)}, differing items {changed[:5]}",
    )
    expected = {"down/in": len(seqs), "side/in": len(seqs)}
    bench.wait(lambda: latest_stats(bench).get("sent") == expected or bench.exited())
    checks.clause(
        "5",
        'stats: sent is cumulative, keyed by downstream "node/port"',
        latest_stats(bench).get("sent") == expected,
        f"sent {expected} in its latest report",
        f"sent {latest_stats(bench).get('sent')}",
    )
    bench.publish(Control.RELEASED, "down", 0, "in")
    bench.publish(Control.RELEASED, "side", 0, "in")
    end_of_stream(bench, checks, readers=[down[1]])


def producer_released(bench: Bench, checks: Checks, window: float) -> None:
    """A producer whose every reader is released stops producing and ends."""
    bench.readers[0].cap = PRODUCER_CAP
    handshake(bench, checks)
    reader = bench.readers[0]
    wait_outputs(bench, reader, 5)
    bench.publish(Control.RELEASED, reader.edge.target, 0, reader.edge.target_port)
    reader.cap = None
    bench.wait(lambda: bench.has_report("finished") or bench.exited())
    checks.clause(
        "7.4",
        "a producer stops once every reader is released, and reports finished",
        bench.has_report("finished"),
        'a "finished" report',
        exit_or(bench, f"{bench.report_kinds()}"),
    )
    expect_exit(bench, checks, 0, "7.4", "then exits 0")


def producer_drain(bench: Bench, checks: Checks, window: float) -> None:
    """A held producer stops at the next item, PAUSE to its readers, drained with next_seq; its
    successor numbers on from there."""
    bench.readers[0].cap = PRODUCER_CAP
    handshake(bench, checks)
    reader = bench.readers[0]
    wait_outputs(bench, reader, 5)
    bench.publish(Control.HOLD, NODE, bench.replica, 0)
    reader.cap = None
    wait_report(bench, "drained")
    drained = bench.reports_of("drained")
    payload = drained[0].payload if drained else None
    checks.clause(
        "8.3",
        "a held producer stops producing and reports drained",
        isinstance(payload, dict) and isinstance(payload.get("stats"), dict),
        'a "drained" report {"stats": map, "readers": [...]}',
        exit_or(bench, f"{bench.report_kinds()}"),
    )
    assert isinstance(payload, dict)  # else the clause above ended the scenario
    bench.wait(lambda: reader.has(PAUSE) or bench.exited())
    before = (
        [m.seq for m in reader.messages[: first_index(reader, PAUSE)] if m.kind in (DATA, SKIP)]
        if reader.has(PAUSE)
        else []
    )
    checks.clause(
        "8.3",
        "sends PAUSE (not EOS) behind its last item, names the reader in drained",
        bool(before) and not reader.has(EOS) and payload.get("readers") == [list(reader.key)],
        f"PAUSE after the items, readers {[list(reader.key)]}",
        f"PAUSE {reader.has(PAUSE)}, EOS {reader.has(EOS)}, readers {payload.get('readers')}",
    )
    next_seq = payload["stats"].get("next_seq")
    checks.clause(
        "8.6",
        "drained stats: next_seq is the number after its last item",
        next_seq == before[-1] + 1,
        f"next_seq {before[-1] + 1}",
        f"next_seq {next_seq}",
    )
    bench.idle(window)
    checks.clause(
        "8.5",
        "waits for dismiss before it exits",
        not bench.exited(),
        f"still running {window:g} s after drained",
        f"exited with status {bench.exit_code()}",
    )
    bench.publish(Control.DISMISS, NODE, bench.replica, 0)
    expect_exit(bench, checks, 0, "8.5", "exits 0 once dismissed")
    bench.config["seq_start"] = next_seq  # as the launcher starts the successor
    reader.cap = len(reader.messages) + PRODUCER_CAP
    handshake(bench, checks, generation=1, start=False)  # start comes with the replayed history
    bench.publish(Control.RESUME, NODE, bench.replica, 0)
    wait_outputs(bench, reader, len(before) + 5)
    after = [m.seq for m in reader.messages[first_index(reader, PAUSE) + 1 :] if m.kind in (DATA, SKIP)]
    checks.clause(
        "8.6",
        "the successor numbers on from seq_start (the drained next_seq)",
        bool(after) and consecutive(after, next_seq),
        f"{next_seq}, {next_seq + 1}, …",
        exit_or(bench, f"seqs {seq_list(after)}"),
    )
    bench.publish(Control.STOP, NODE)
    end_of_stream(bench, checks)


def producer_hold_reader(bench: Bench, checks: Checks, window: float) -> None:
    """A producer's reader is restarted gracefully: PAUSE, nothing until resume, then on without a gap."""
    reader = bench.readers[0]
    reader.cap = PRODUCER_CAP
    handshake(bench, checks)
    target = (reader.edge.target, reader.index)
    wait_outputs(bench, reader, 5)
    bench.publish(Control.HOLD, *target, 0)
    reader.cap = None
    bench.wait(lambda: reader.has(PAUSE) or bench.exited())
    checks.clause(
        "8.2",
        "a producer sends PAUSE to a held reader",
        reader.has(PAUSE),
        "PAUSE",
        exit_or(bench, f"{len(reader.messages)} messages, no PAUSE"),
    )
    bench.idle(window)
    after = reader.messages[first_index(reader, PAUSE) + 1 :]
    checks.clause(
        "8.2",
        "and nothing more until resume (its only reader: it waits)",
        not after,
        "nothing after PAUSE",
        f"{len(after)} messages",
    )
    bench.publish(Control.DISMISS, *target, 0)
    reader.rebind(bench.context, bench.timeout)
    reader.cap = len(reader.messages) + PRODUCER_CAP
    bench.publish(Control.RESUME, *target, 0)
    wait_outputs(bench, reader, len(reader.items()) + 5)
    seqs = output_seqs(reader)
    checks.clause(
        "8.6",
        "after resume it goes on where it paused: no gap, nothing twice",
        consecutive(seqs, 0),
        "0, 1, 2, … across the PAUSE",
        f"seqs {seq_list(seqs)}",
    )
    bench.publish(Control.STOP, NODE)
    end_of_stream(bench, checks)
