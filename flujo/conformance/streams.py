"""Scenarios of the basic and full levels for a processor or a consumer: items, order, ends, errors."""

from __future__ import annotations

from typing import Any

from flujo.conformance.checks import FAIL_ITEM, Checks, array_item, describe, same, seq_list, small_item
from flujo.conformance.harness import INPUT_PORT, NODE, SOURCE, Bench
from flujo.conformance.steps import (
    EOS,
    check_identity,
    end_of_stream,
    exit_or,
    expect_exit,
    handshake,
    latest_stats,
    output_seqs,
    quiet_before_input,
    send_items,
    wait_end,
    wait_outputs,
    wait_report,
)
from flujo.protocol import Control


# -- basic ---------------------------------------------------------------------------------------------
def lifecycle(bench: Bench, checks: Checks, window: float) -> None:
    """Handshake, 40 items (some SKIP), EOS, release, exit 0."""
    handshake(bench, checks)
    quiet_before_input(bench, checks, window)
    count = 40
    sent = send_items(bench, range(count), skips=frozenset(range(3, count, 7)))
    bench.senders[0].eos()
    if bench.readers:
        reader = bench.readers[0]
        wait_end(bench, reader, checks)
        check_identity(checks, reader, sent)
    end_of_stream(bench, checks)


def stop(bench: Bench, checks: Checks, window: float) -> None:
    """`stop` of this node mid-stream: it stops reading and ends its stream like at EOS."""
    handshake(bench, checks)
    sent = send_items(bench, range(10))
    if bench.readers:
        wait_outputs(bench, bench.readers[0], len(sent))
    else:
        bench.idle(window)  # let a consumer take them (nothing to observe)
    bench.publish(Control.STOP, "someone-else", NODE)
    end_of_stream(bench, checks, cause="when told to stop (section 4 `stop`)")


# -- full ----------------------------------------------------------------------------------------
def batches_and_arrays(bench: Bench, checks: Checks, window: float) -> None:
    """Arrays (ext type 1, one frame each) and BATCH messages, mixed with DATA and SKIP."""
    handshake(bench, checks)
    sender = bench.senders[0]
    sent = send_items(bench, range(9), make=array_item)
    batch = [small_item(seq) for seq in range(9, 25)]
    sender.batch(9, batch)
    sent.update(zip(range(9, 25), batch, strict=True))
    sent.update(send_items(bench, range(25, 28), skips=frozenset({26})))
    batch = [small_item(seq) for seq in range(28, 33)]
    sender.batch(28, batch)
    sent.update(zip(range(28, 33), batch, strict=True))
    sender.eos()
    if bench.readers:
        reader = bench.readers[0]
        wait_end(bench, reader)
        arrays = {seq: item for seq, item in sent.items() if seq < 9}
        got = {message.seq: message for message in reader.items()}
        wrong = [seq for seq in arrays if seq not in got or not same(arrays[seq], got[seq].item)]
        checks.clause(
            "3",
            "arrays: ext type 1 [frame, dtype, shape], bytes in their own frames, given back identical",
            not wrong and not reader.violations,
            "9 items with arrays back with the same dtype, shape and bytes",
            f"violations {reader.violations[:2]}"
            if reader.violations
            else "for seq "
            + ", ".join(
                f"{seq}: sent {describe(arrays[seq])}, got {describe(got[seq].item) if seq in got else 'nothing'}"
                for seq in wrong[:2]
            ),
        )
        check_identity(checks, reader, sent, "BATCH")
    else:
        checks.not_applicable("3", "arrays and BATCH given back identical", "a consumer gives nothing back")
    end_of_stream(bench, checks)
    counters = bench.reports_of("finished")[0].payload
    checks.clause(
        "5",
        "finished counts items_in per sequence number (batched items and SKIP included)",
        counters.get("items_in") == len(sent),
        f"items_in {len(sent)}",
        f"counters {counters}",
    )
    if bench.readers:
        checks.clause(
            "5",
            "finished counts items_out per sequence number sent (SKIP included)",
            counters.get("items_out") == len(sent),
            f"items_out {len(sent)}",
            f"counters {counters}",
        )


def order(bench: Bench, checks: Checks, window: float) -> None:
    """Three replicated senders (replicas 0..2 of the source): order restored, a gap waits while a
    live sender may fill it and is given up once all have gone past it; one EOS from each, or `gone`."""
    handshake(bench, checks)
    s0, s1, _s2 = bench.senders
    reader = bench.readers[0] if bench.readers else None
    sent: dict[int, Any] = {}
    if reader is not None:
        sent.update(send_items(bench, [0], sender=0))
        sent.update(send_items(bench, [2], sender=1))
        wait_outputs(bench, reader, 1)
        bench.idle(window)
        seqs = output_seqs(reader)
        checks.clause(
            "6",
            "an item waits for a gap a live sender may still fill",
            seqs == [0],
            "only seq 0 out while sender 2 (which sent nothing yet) may still send 1",
            f"seqs {seqs}",
        )
        sent.update(send_items(bench, [1], sender=2))
        wait_outputs(bench, reader, 3)
        # 3..29 dealt round robin, but sender 2 sends all of its share first, then 1, then 0.
        for index in (2, 1, 0):
            sent.update(send_items(bench, [seq for seq in range(3, 30) if seq % 3 == index], sender=index))
        wait_outputs(bench, reader, 30)
        seqs = output_seqs(reader)
        checks.clause(
            "6",
            "order restored across replicated senders",
            seqs == list(range(30)),
            f"seqs {seq_list(list(range(30)))}",
            f"seqs {seq_list(seqs)}",
        )
        # seq 30 is lost (never sent): once every sender has sent past it, 31.. go ahead.
        sent.update(send_items(bench, [31], sender=0))
        sent.update(send_items(bench, [32], sender=1))
        bench.idle(window)
        early = [seq for seq in output_seqs(reader) if seq > 30]
        checks.clause(
            "6",
            "a gap waits while a sender has not gone past it",
            not early,
            "31 and 32 held: sender 2's last was 29, it may still send 30",
            f"out already: {early}",
        )
        sent.update(send_items(bench, [33], sender=2))
        wait_outputs(bench, reader, 33)
        seqs = output_seqs(reader)
        checks.clause(
            "6",
            "a gap is given up once every live sender has gone past it (the lost item)",
            seqs[30:] == [31, 32, 33],
            "31, 32, 33 out without 30, before any EOS",
            f"seqs after 29: {seqs[30:]}",
        )
        check_identity(checks, reader, dict(sent.items()), "DATA across senders")
    else:
        for index in range(len(bench.senders)):
            sent.update(send_items(bench, [index], sender=index))
    s0.eos()
    s1.eos()
    bench.idle(window)
    checks.clause(
        "2",
        "expects one EOS from each sender replica 0..senders-1",
        not bench.has_report("released") and not any(reader.has(EOS) for reader in bench.readers),
        "no release and no EOS while sender 2 has neither ended nor gone",
        f"reports {bench.report_kinds()}",
    )
    bench.publish(Control.GONE, SOURCE, 2, "another-node", 0)
    bench.idle(window)
    checks.clause(
        "4",
        "a `gone` addressed to another reader is not for it",
        not bench.has_report("released"),
        "no release after gone [up, 2, another-node, 0]",
        f"reports {bench.report_kinds()}",
    )
    bench.publish(Control.GONE, SOURCE, 2)
    end_of_stream(bench, checks, cause="once every sender ended or is gone")


def fanout_and_stats(bench: Bench, checks: Checks, window: float) -> None:
    """Two downstream nodes (one with two replicas): every node gets every item, one replica each;
    stats are cumulative and keyed as documented."""
    handshake(bench, checks)
    half, count = 10, 20
    skips = frozenset({4, 15})
    sent = send_items(bench, range(half), skips=skips)

    def stats_with(items_in: int) -> Any:
        found = [
            report.payload
            for report in bench.reports_of("stats")
            if isinstance(report.payload, dict) and report.payload.get("items_in", -1) >= items_in
        ]
        return found[-1] if found else None

    bench.wait(lambda: stats_with(half) is not None or bench.exited(), max(bench.timeout, 3.0))
    stats = stats_with(half)
    checks.clause(
        "5",
        "reports stats while it runs (every 0.5 s)",
        stats is not None,
        f"a stats report with items_in >= {half}",
        exit_or(bench, f"stats {[r.payload for r in bench.reports_of('stats')][-2:]}"),
    )
    numbers = [key for key in ("items_in", "items_out") if not isinstance(stats.get(key), int)]
    checks.clause("5", "stats: items_in, items_out are integers", not numbers, "integer counters", f"stats {stats}")
    sent.update(send_items(bench, range(half, count), skips=skips))
    bench.senders[0].eos()
    if bench.readers:
        down, side = (
            [r for r in bench.readers if r.edge.target == "down"],
            [r for r in bench.readers if r.edge.target == "side"],
        )
        bench.wait(lambda: all(reader.has(EOS) for reader in bench.readers) or bench.exited())
        check_identity(checks, side[0], sent, "fan-out")
        dealt = sorted(seq for reader in down for seq in output_seqs(reader))
        checks.clause(
            "6",
            "replicas: each item goes to exactly one replica of a node",
            dealt == sorted(sent),
            f"seqs {seq_list(sorted(sent))} across down.0 and down.1",
            f"down.0 {seq_list(output_seqs(down[0]))}, down.1 {seq_list(output_seqs(down[1]))}",
        )
        # The node is waiting for its readers' release: it still reports, and its latest counters
        # must come to these (a report taken mid-send, or before a batch left, may be short).
        expected = {"received": {INPUT_PORT: count}, "sent": {"down/in": count, "side/in": count}}

        def latest() -> dict[str, Any]:
            return {key: latest_stats(bench).get(key) for key in expected}

        bench.wait(lambda: latest() == expected or bench.exited())
        checks.clause(
            "5",
            "stats are cumulative, keyed as documented, SKIP counted",
            latest() == expected,
            f'{expected} (received by port; sent by downstream "node/port")',
            f"{latest()}",
        )
        bench.publish(Control.RELEASED, "down", 0, "in")
        bench.publish(Control.RELEASED, "side", 0, "in")
        end_of_stream(bench, checks, readers=[down[1]])
    else:
        end_of_stream(bench, checks)
    history = [r.payload.get("items_in", 0) for r in bench.reports_of("stats") if isinstance(r.payload, dict)]
    checks.clause(
        "5",
        "stats counters are cumulative (never go down)",
        history == sorted(history),
        "items_in non-decreasing across reports",
        f"items_in {history}",
    )


def readers_released(bench: Bench, checks: Checks, window: float) -> None:
    """A processor all of whose readers are released stops reading and ends (no input EOS)."""
    handshake(bench, checks)
    reader = bench.readers[0]
    send_items(bench, range(10))
    wait_outputs(bench, reader, 10)
    bench.publish(Control.RELEASED, reader.edge.target, 0, reader.edge.target_port)
    bench.wait(lambda: bench.has_report("released") or bench.exited())
    checks.clause(
        "7.4",
        "stops reading once every reader is released, and reports its input released",
        bench.has_report("released"),
        'a "released" report without any input EOS',
        exit_or(bench, f"reports {bench.report_kinds()}"),
    )
    expect_exit(bench, checks, 0, "7.4", "then ends and exits 0")


def error(bench: Bench, checks: Checks, window: float) -> None:
    """User code fails (on the item FAIL_ITEM), no restart policy: error, deliver, EOS, exit 1."""
    handshake(bench, checks)
    sent = send_items(bench, range(5))
    bench.senders[0].data(5, FAIL_ITEM)
    send_items(bench, range(6, 10))
    bench.senders[0].eos()
    wait_report(bench, "error")
    errors = bench.reports_of("error")
    payload = errors[0].payload if errors else None
    checks.clause(
        "7.5",
        f"reports error when user code fails (on the item {FAIL_ITEM!r})",
        isinstance(payload, dict)
        and isinstance(payload.get("message"), str)
        and isinstance(payload.get("traceback"), str),
        'an "error" report {"message": str, "traceback": str}',
        exit_or(bench, f"error reports {[e.payload for e in errors]}"),
    )
    if bench.readers:
        reader = bench.readers[0]
        wait_end(bench, reader)
        got = [m.seq for m in reader.items() if m.seq < 5 and same(sent[m.seq], m.item)]
        checks.clause(
            "7.5",
            "still delivers what it sent, then EOS",
            got == list(range(5)) and reader.has(EOS),
            "seqs 0..4 then EOS",
            f"seqs {output_seqs(reader)}, EOS {reader.has(EOS)}",
        )
        bench.publish(Control.RELEASED, reader.edge.target, 0, reader.edge.target_port)
    expect_exit(bench, checks, 1, "7.5", "exits 1")


def error_skipped(bench: Bench, checks: Checks, window: float) -> None:
    """on_error = "skip": the item user code fails on becomes a SKIP, counted; the stream goes on."""
    handshake(bench, checks)
    sent = send_items(bench, range(5))
    bench.senders[0].data(5, FAIL_ITEM)
    sent[5] = None  # expected out: a SKIP
    sent.update(send_items(bench, range(6, 10)))
    bench.senders[0].eos()
    if bench.readers:
        reader = bench.readers[0]
        wait_end(bench, reader)
        check_identity(checks, reader, sent, 'on_error = "skip"')
    end_of_stream(bench, checks)
    counters = bench.reports_of("finished")[0].payload
    checks.clause(
        "5",
        'on_error = "skip": the failed item counts in items_in (and in errors, when reported)',
        counters.get("items_in") == len(sent) and counters.get("errors", 1) == 1,
        f"items_in {len(sent)}, errors 1",
        f"counters {counters}",
    )


def crash(bench: Bench, checks: Checks, window: float) -> None:
    """User code fails under a restart policy: error, then no EOS, no released, no finished."""
    handshake(bench, checks)
    send_items(bench, range(5))
    bench.senders[0].data(5, FAIL_ITEM)
    wait_report(bench, "error")
    checks.clause(
        "8",
        "reports error under a restart policy too",
        bench.has_report("error"),
        'an "error" report',
        exit_or(bench, f"reports {bench.report_kinds()}"),
    )
    expect_exit(bench, checks, None, "8", "exits non-zero (its successor continues the stream)")
    bench.idle(window)
    forbidden = [k for k in bench.report_kinds() if k in ("released", "finished")]
    forbidden += [f"EOS to {reader.key}" for reader in bench.readers if reader.has(EOS)]
    checks.clause(
        "8",
        "under a restart policy a failing node sends no EOS, no released, no finished",
        not forbidden,
        "none of them",
        f"{forbidden}",
    )
