"""Scenarios of the restartable level for a processor or a consumer: graceful restarts (section 8)
of the node itself, of one of its senders, and of its reader (aligned or not)."""

from __future__ import annotations

from typing import Any

from flujo.conformance.checks import Checks, same, seq_list
from flujo.conformance.harness import INPUT_PORT, NODE, SOURCE, Bench, Reader
from flujo.conformance.steps import (
    DATA,
    EOS,
    PAUSE,
    SKIP,
    check_identity,
    end_of_stream,
    exit_or,
    expect_exit,
    first_index,
    handshake,
    output_seqs,
    send_items,
    wait_end,
    wait_outputs,
    wait_report,
)
from flujo.protocol import Control


def drain(bench: Bench, checks: Checks, window: float) -> None:
    """The node under test is restarted gracefully: hold, its senders' PAUSE, drain (an item waiting
    for a gap included), PAUSE to its readers, drained, dismiss, exit 0; its successor goes on."""
    handshake(bench, checks)
    s0, s1 = bench.senders
    reader = bench.readers[0] if bench.readers else None
    sent = send_items(bench, [0, 2], sender=0)
    sent.update(send_items(bench, [1], sender=1))
    sent.update(send_items(bench, [4], sender=0))  # waits for 3, which sender 1 sends the successor
    if reader is not None:
        wait_outputs(bench, reader, 3)
    bench.publish(Control.HOLD, NODE, bench.replica, 0)
    s0.pause()
    s1.pause()
    wait_report(bench, "drained")
    drained = bench.reports_of("drained")
    payload = drained[0].payload if drained else None
    checks.clause(
        "8.3",
        "drains once every sender has paused, and reports drained",
        isinstance(payload, dict) and isinstance(payload.get("stats"), dict),
        'a "drained" report {"stats": map, "readers": [...]}',
        exit_or(bench, f"reports {bench.report_kinds()}"),
    )
    assert isinstance(payload, dict)  # else the clause above ended the scenario
    expected_readers = [list(r.key) for r in bench.readers]
    checks.clause(
        "8.3",
        "drained names the readers it sent PAUSE to, with their port",
        sorted(payload.get("readers") or []) == sorted(expected_readers),
        f"readers {expected_readers}",
        f"readers {payload.get('readers')}",
    )
    if reader is not None:
        bench.wait(lambda: reader.has(PAUSE) or bench.exited())
        before = [m.seq for m in reader.messages[: first_index(reader, PAUSE)]] if reader.has(PAUSE) else []
        checks.clause(
            "8.3",
            "takes everything sent before PAUSE (an item waiting for a gap too), then sends PAUSE, not EOS",
            sorted(before) == [0, 1, 2, 4] and not reader.has(EOS),
            "seqs 0, 1, 2, 4 then PAUSE",
            f"seqs {output_seqs(reader)}, PAUSE {reader.has(PAUSE)}, EOS {reader.has(EOS)}",
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
    expect_exit(bench, checks, 0, "8.5", "exits 0 once dismissed, without EOS or release")
    checks.clause(
        "8.5",
        "a drained process sends no EOS and no release",
        not bench.has_report("released") and not any(r.has(EOS) for r in bench.readers),
        "no released report, no EOS",
        f"reports {bench.report_kinds()}",
    )
    # The successor: same endpoints, generation + 1; the replayed hold is not its own.
    handshake(bench, checks, generation=1, start=False)
    bench.publish(Control.RESUME, NODE, bench.replica, 0)
    sent.update(send_items(bench, [3, 5], sender=1))
    sent.update(send_items(bench, [6, 8], sender=0))
    sent.update(send_items(bench, [7, 9], sender=1))
    s0.eos()
    s1.eos()
    if reader is not None:
        wait_end(bench, reader)
        after = [m.seq for m in reader.messages[first_index(reader, PAUSE) + 1 :] if m.kind in (DATA, SKIP)]
        checks.clause(
            "8.6",
            "the successor continues in order: nothing lost, nothing twice",
            after == [3, 5, 6, 7, 8, 9],
            "seqs 3, 5, 6, 7, 8, 9 from the successor",
            f"seqs {after}",
        )
        check_identity_unordered(checks, reader, sent)
    end_of_stream(bench, checks)
    if reader is None:
        counted = payload["stats"].get("items_in", 0) + bench.reports_of("finished")[0].payload.get("items_in", 0)
        checks.clause(
            "8.6",
            "predecessor and successor took every item once between them",
            counted == len(sent),
            f"items_in {len(sent)} (drained stats + finished)",
            f"items_in {counted}",
        )


def check_identity_unordered(checks: Checks, reader: Reader, expected: dict[int, Any]) -> None:
    got = list(reader.items())
    seqs = sorted(m.seq for m in got)
    wrong = [m.seq for m in got if m.seq in expected and not same(expected[m.seq], m.item)]
    checks.clause(
        "8.6",
        "across the restart every item came out once, unchanged",
        seqs == sorted(expected) and not wrong,
        f"seqs {seq_list(sorted(expected))}",
        f"seqs {seq_list(seqs)}, changed {wrong}",
    )


def hold_reader(bench: Bench, checks: Checks, window: float) -> None:
    """The node's reader is restarted gracefully: PAUSE behind what it sent, nothing until resume,
    EOS for a held reader waits for the successor; a hold replayed after its resume is ignored."""
    handshake(bench, checks)
    reader = bench.readers[0]
    target = (reader.edge.target, reader.index)
    send_items(bench, range(5))
    wait_outputs(bench, reader, 5)
    bench.publish(Control.HOLD, *target, 0)
    bench.wait(lambda: reader.has(PAUSE) or bench.exited())
    checks.clause(
        "8.2",
        "sends PAUSE to a held reader, behind what it sent",
        reader.has(PAUSE) and output_seqs(reader) == list(range(5)),
        "seqs 0..4 then PAUSE",
        f"seqs {output_seqs(reader)}, PAUSE {reader.has(PAUSE)}",
    )
    send_items(bench, range(5, 10))
    bench.idle(window)
    after = [m.seq for m in reader.messages[first_index(reader, PAUSE) + 1 :]]
    checks.clause(
        "8.2",
        "sends nothing more to a held reader (a single reader: it waits)",
        not after,
        "nothing after PAUSE until resume",
        f"received {after}",
    )
    bench.publish(Control.DISMISS, *target, 0)
    reconnected = reader.rebind(bench.context, bench.timeout)  # its successor binds the same endpoint
    checks.clause(
        "1",
        "reconnects to a restarted reader's endpoint",
        reconnected is not None,
        f"a connection to the new socket within {bench.timeout:g} s",
        "none",
    )
    assert reconnected is not None  # else the clause above ended the scenario
    checks.note(
        "1",
        "reconnect interval (10 ms recommended)",
        f"connected {1000 * reconnected:.0f} ms after the reader's socket closed",
    )
    bench.publish(Control.RESUME, *target, 0)
    wait_outputs(bench, reader, 10)
    checks.clause(
        "8.6",
        "after resume the reader's successor (same endpoint) gets the rest",
        output_seqs(reader) == list(range(10)),
        "seqs 0..9",
        f"seqs {seq_list(output_seqs(reader))}",
    )
    pauses = len(reader.of_kind(PAUSE))
    bench.publish(Control.HOLD, *target, 0, keep=False)  # as a replay of the history would deliver it
    bench.idle(window)  # time to apply it before the next items
    send_items(bench, range(10, 15))
    wait_outputs(bench, reader, 15)
    checks.clause(
        "4",
        "a hold replayed after its resume is ignored (generation already resumed)",
        output_seqs(reader) == list(range(15)) and len(reader.of_kind(PAUSE)) == pauses,
        "seqs 10..14 delivered, no new PAUSE",
        f"seqs {seq_list(output_seqs(reader))}, PAUSE x{len(reader.of_kind(PAUSE))}",
    )
    bench.publish(Control.HOLD, *target, 1)  # the successor is restarted in turn
    bench.wait(lambda: len(reader.of_kind(PAUSE)) > pauses or bench.exited())
    bench.senders[0].eos()
    bench.wait(lambda: bench.has_report("released") or bench.exited())
    bench.idle(window)
    checks.clause(
        "8.2",
        "EOS for a held reader waits for its successor",
        not reader.has(EOS),
        "no EOS while the reader is held",
        f"messages {[m.kind.name for m in reader.messages[-3:]]}",
    )
    bench.publish(Control.DISMISS, *target, 1)
    reader.rebind(bench.context, bench.timeout)
    bench.publish(Control.RESUME, *target, 1)
    end_of_stream(bench, checks)


def aligned(bench: Bench, checks: Checks, window: float) -> None:
    """Its reader zips several ports: on hold it reports its position and sends nothing past it until
    align; then up to the limit, PAUSE, and what comes next after resume."""
    handshake(bench, checks)
    reader = bench.readers[0]
    target = (reader.edge.target, reader.index)
    send_items(bench, range(5))
    wait_outputs(bench, reader, 5)
    bench.publish(Control.HOLD, *target, 0)
    wait_report(bench, "position")
    positions = [r.payload for r in bench.reports_of("position")]
    checks.clause(
        "8",
        "reports position [node, replica, port, highest seq sent] on hold of an aligned reader",
        positions[:1] == [[*target, reader.edge.target_port, 4]],
        f"[{[*target, reader.edge.target_port, 4]}]",
        f"{positions}",
    )
    send_items(bench, range(5, 9))
    bench.idle(window)
    checks.clause(
        "8",
        "sends nothing past its position until align",
        output_seqs(reader) == list(range(5)) and not reader.has(PAUSE),
        "seqs 0..4, no PAUSE",
        f"seqs {output_seqs(reader)}",
    )
    bench.publish(Control.ALIGN, *target, 0, 6)  # another sender had reached 6
    bench.wait(lambda: reader.has(PAUSE) or bench.exited())
    before = [m.seq for m in reader.messages[: first_index(reader, PAUSE)]] if reader.has(PAUSE) else []
    checks.clause(
        "8",
        "after align sends everything up to the limit, then PAUSE",
        before == list(range(7)),
        "seqs 0..6 then PAUSE",
        f"seqs {output_seqs(reader)}, PAUSE {reader.has(PAUSE)}",
    )
    bench.publish(Control.DISMISS, *target, 0)
    bench.publish(Control.RESUME, *target, 0)
    bench.senders[0].eos()
    wait_end(bench, reader)
    after = [m.seq for m in reader.messages[first_index(reader, PAUSE) + 1 :] if m.kind in (DATA, SKIP)]
    checks.clause(
        "8",
        "after resume what it kept back goes first, in order",
        after == [7, 8],
        "seqs 7, 8 then EOS",
        f"seqs {after}, EOS {reader.has(EOS)}",
    )
    end_of_stream(bench, checks)


def sender_restart(bench: Bench, checks: Checks, window: float) -> None:
    """One of its senders is restarted gracefully: the node confirms the PAUSE (pause-seen), and
    counts the paused sender as past nothing it has not delivered: the successor may fill a gap."""
    handshake(bench, checks)
    s0, s1 = bench.senders
    reader = bench.readers[0] if bench.readers else None
    sent = send_items(bench, [0, 2], sender=0)
    sent.update(send_items(bench, [1, 3], sender=1))
    if reader is not None:
        wait_outputs(bench, reader, 4)
    bench.publish(Control.HOLD, SOURCE, 1, 0)  # sender 1 drains: what it had, then PAUSE
    sent.update(send_items(bench, [5], sender=1))
    s1.pause()
    wait_report(bench, "pause-seen")
    seen = [r.payload for r in bench.reports_of("pause-seen")]
    checks.clause(
        "8.4",
        "reports pause-seen [port, sender_node, sender_replica] for a sender's PAUSE",
        seen[:1] == [[INPUT_PORT, SOURCE, 1]],
        f"[[{INPUT_PORT!r}, {SOURCE!r}, 1]]",
        exit_or(bench, f"{seen}"),
    )
    sent.update(send_items(bench, [6], sender=0))
    if reader is not None:
        bench.idle(window)
        checks.clause(
            "8.4",
            "a paused sender is past nothing not yet delivered: the gap before its last item waits for its successor",
            output_seqs(reader) == [0, 1, 2, 3],
            "seqs 0..3 only: 4 may still come from sender 1's successor",
            f"seqs {output_seqs(reader)}",
        )
    bench.publish(Control.DISMISS, SOURCE, 1, 0)
    bench.publish(Control.RESUME, SOURCE, 1, 0)  # its successor runs: the same socket stands for it
    sent.update(send_items(bench, [4, 7], sender=1))
    sent.update(send_items(bench, [8], sender=0))
    s0.eos()
    s1.eos()
    if reader is not None:
        wait_end(bench, reader)
        check_identity(checks, reader, sent, "DATA across a sender's restart")
    end_of_stream(bench, checks)
    counters = bench.reports_of("finished")[0].payload
    checks.clause(
        "5",
        "finished counts every item once",
        counters.get("items_in") == len(sent),
        f"items_in {len(sent)}",
        f"counters {counters}",
    )


def aligned_idle(bench: Bench, checks: Checks, window: float) -> None:
    """Hold of an aligned reader before anything was sent: position -1, PAUSE on align -1."""
    handshake(bench, checks)
    reader = bench.readers[0]
    target = (reader.edge.target, reader.index)
    bench.publish(Control.HOLD, *target, 0)
    wait_report(bench, "position")
    positions = [r.payload for r in bench.reports_of("position")]
    checks.clause(
        "8",
        "position before anything was sent is -1",
        positions[:1] == [[*target, INPUT_PORT, -1]],
        f"[{[*target, INPUT_PORT, -1]}]",
        exit_or(bench, f"{positions}"),
    )
    bench.publish(Control.ALIGN, *target, 0, -1)
    bench.wait(lambda: reader.has(PAUSE) or bench.exited())
    checks.clause(
        "8",
        "align -1: PAUSE at once, while it waits for input",
        reader.has(PAUSE),
        "PAUSE",
        exit_or(bench, f"messages {[m.kind.name for m in reader.messages]}"),
    )
    bench.publish(Control.DISMISS, *target, 0)
    reader.rebind(bench.context, bench.timeout)
    bench.publish(Control.RESUME, *target, 0)
    sent = send_items(bench, range(5))
    bench.senders[0].eos()
    wait_end(bench, reader)
    check_identity(checks, reader, sent)
    end_of_stream(bench, checks)
