"""The scenarios: each starts the node under test on a fresh bench and walks it through some
clauses of docs/PROTOCOL.md, in the order a flow would meet them.

A scenario stops at its first failed clause. Waits have the clause timeout; a clause that
says something must NOT happen watches for ``window`` seconds.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Iterable

from flujo.conformance.checks import (FAIL_ITEM, Checks, array_item, describe, same, seq_list, small_item)
from flujo.conformance.harness import INPUT_PORT, NODE, SOURCE, Bench, Edge, Reader
from flujo.protocol import Control, MessageKind

DATA, SKIP, EOS, PAUSE = MessageKind.DATA, MessageKind.SKIP, MessageKind.EOS, MessageKind.PAUSE


@dataclass(frozen=True)
class Scenario:
    name: str
    level: str
    run: Callable[[Bench, Checks, float], None]
    senders: int = 1
    edges: tuple[Edge, ...] = (Edge(),)
    restart: str = "no"
    replica: int = 0  # the node under test is this replica of replica + 1
    kinds: frozenset[str] = frozenset({"processor", "consumer"})


# -- steps every scenario shares ---------------------------------------------------------------
def handshake(bench: Bench, checks: Checks, generation: int = 0, start: bool = True) -> None:
    """Start the node; it subscribes (everything, then its identity topic) and reports ready."""
    bench.spawn(generation)
    identity = bench.identity.decode()
    bench.wait(lambda: bench.subscribed() or bench.exited())
    checks.clause("2", "starts from FLUJO_NODE_CONFIG (fields it does not know are ignored)", not bench.exited(),
                  "the node running and connecting", f"the node exited with status {bench.exit_code()}")
    checks.clause("4", f"subscribes to its identity topic {identity!r}", bench.subscribed(),
                  f"a subscription to {identity!r} within {bench.timeout:g} s",
                  _exit_or(bench, f"subscriptions {bench.subscriptions!r}"))
    checks.clause("4", "subscribes to every topic (\"\") too", b"" in bench.subscriptions,
                  "a subscription to \"\" (commands such as start and stop are not addressed to it)",
                  f"subscriptions {bench.subscriptions!r}")
    bench.wait(lambda: bench.has_report("ready") or bench.exited())
    kinds = [kind for kind in bench.report_kinds() if kind != "stats"]
    checks.clause("5", "reports ready first", kinds[:1] == ["ready"],
                  "a \"ready\" report before any other", _exit_or(bench, f"reports {kinds}"))
    if start:
        bench.publish(Control.START)  # every replica ready: as the launcher does
        bench.idle(0.0)


def quiet_before_input(bench: Bench, checks: Checks, window: float) -> None:
    bench.idle(window)
    early = [(reader.key, message.kind.name, message.seq) for reader in bench.readers for message in reader.messages]
    checks.clause("4", "sends nothing before ready, start and its first input", not early,
                  "no message on any output before the node was given input", f"received {early}")


def send_items(bench: Bench, seqs: Iterable[int], make: Callable[[int], Any] = small_item,
               skips: frozenset[int] = frozenset(), sender: int = 0) -> dict[int, Any]:
    """Send DATA (or SKIP for the numbers in ``skips``); returns what each number carried (None: SKIP)."""
    sent = {}
    for seq in seqs:
        if seq in skips:
            bench.senders[sender].skip(seq)
            sent[seq] = None
        else:
            sent[seq] = make(seq)
            bench.senders[sender].data(seq, sent[seq])
    return sent


def output_seqs(reader: Reader) -> list[int]:
    return [message.seq for message in reader.items()]


def wait_outputs(bench: Bench, reader: Reader, count: int) -> bool:
    return bench.wait(lambda: len(reader.items()) >= count or bench.exited())


def check_identity(checks: Checks, reader: Reader, expected: dict[int, Any], title: str = "DATA") -> None:
    """Every DATA item came out unchanged with its number, every SKIP as SKIP, once each, in order."""
    got = {message.seq: message for message in reader.items()}
    wrong = [(seq, describe(expected[seq]), describe(got[seq].item))
             for seq in sorted(expected) if expected[seq] is not None and seq in got
             and (got[seq].kind is not DATA or not same(expected[seq], got[seq].item))]
    missing = [seq for seq in sorted(expected) if expected[seq] is not None and seq not in got]
    checks.clause("3", f"{title}: each item comes out unchanged with its sequence number",
                  not wrong and not missing, "every DATA item given back identical, with the same seq",
                  f"missing {seq_list(missing)}" if missing else f"(seq, sent, got): {wrong[:3]}")
    skips = sorted(seq for seq, item in expected.items() if item is None)
    if skips:
        bad = [seq for seq in skips if seq not in got or got[seq].kind is not SKIP]
        checks.clause("3", "SKIP: a SKIP in gives a SKIP out, same seq (one message per number)", not bad,
                      f"SKIP for {seq_list(skips)}",
                      f"for {seq_list(bad)}: " + ", ".join(
                          got[seq].kind.name if seq in got else "nothing" for seq in bad[:5]))
    strangers = sorted({(m.sender, m.sender_replica) for m in reader.messages} - {(NODE, reader.sender_replica)})
    checks.clause("3", "every header names the sending node and its replica", not strangers,
                  f"sender {[NODE, reader.sender_replica]}", f"senders {strangers}")
    seqs = output_seqs(reader)
    extra = [seq for seq in seqs if seq not in expected]
    checks.clause("6", "exactly one message per input sequence number, in order",
                  seqs == sorted(expected) and not extra, f"seqs {seq_list(sorted(expected))}",
                  f"seqs {seq_list(seqs)}")


def end_of_stream(bench: Bench, checks: Checks, readers: list[Reader] | None = None,
                  cause: str = "once every sender ended") -> None:
    """After the input's EOS: released, EOS on every output replica, finished, stay up until
    released, exit 0."""
    readers = bench.readers if readers is None else readers
    if bench.config["inputs"]:
        bench.wait(lambda: bench.has_report("released") or bench.exited())
        released = bench.reports_of("released")
        checks.clause("7.1", f"reports its input port released {cause}",
                      any(INPUT_PORT in (report.payload or []) for report in released),
                      f"a \"released\" report naming [{INPUT_PORT!r}]",
                      _exit_or(bench, f"released reports {[r.payload for r in released]}"))
    for reader in readers:
        reader.cap = None  # take everything up to the EOS
    if readers:
        bench.wait(lambda: all(reader.has(EOS) for reader in readers) or bench.exited())
        without = [reader.key for reader in readers if not reader.has(EOS)]
        checks.clause("7.2", "sends EOS to every downstream replica", not without,
                      f"EOS on {[reader.key for reader in readers]}", _exit_or(bench, f"no EOS on {without}"))
        late = [reader.key for reader in readers
                if any(message.kind in (DATA, SKIP) for message in reader.messages[_first(reader, EOS):])]
        checks.clause("7.2", "EOS comes behind the last item", not late, "nothing after EOS",
                      f"items after EOS on {late}")
    bench.wait(lambda: bench.has_report("finished") or bench.exited())
    finished = bench.reports_of("finished")
    checks.clause("7.2", "reports finished (a map of counters) after its end of stream",
                  bool(finished) and isinstance(finished[0].payload, dict),
                  "a \"finished\" report with a map", _exit_or(bench, f"reports {bench.report_kinds()}"))
    kinds = [kind for kind in bench.report_kinds() if kind not in ("stats", "ready")]
    order_ok = all(kinds.index(kind) < kinds.index("finished") for kind in ("released", "ending") if kind in kinds)
    checks.clause("5", "reports in order: ready, released, ending, finished", order_ok,
                  "released (and ending, if sent) before finished", f"reports {kinds}")
    if readers:
        window = min(0.5, bench.timeout / 4)
        bench.idle(window)
        checks.clause("7.3", "stays up until its readers release it (a sender outlives its EOS)",
                      not bench.exited(), f"still running {window:g} s after finished, before any release",
                      f"exited with status {bench.exit_code()}")
        for reader in readers:
            bench.publish(Control.RELEASED, reader.edge.target, reader.index, reader.edge.target_port)
    expect_exit(bench, checks, 0, "7.3", "exits 0 once every reader has released it")
    strays = [r.payload for r in bench.reports if r.kind in ("<misaddressed>", "<malformed>")]
    checks.clause("5", "every report is [kind, node, replica, payload] naming this replica", not strays,
                  f"[kind, {NODE!r}, {bench.replica}, payload]", f"{strays[:3]}")


def expect_exit(bench: Bench, checks: Checks, code: int | None, section: str, title: str) -> None:
    """Wait for the exit; ``code`` None: any non-zero status."""
    bench.wait(bench.exited)
    status = bench.exit_code()
    ok = status is not None and (status == code if code is not None else status != 0)
    checks.clause(section, title, ok, f"exit status {code if code is not None else 'non-zero'} "
                  f"within {bench.timeout:g} s", "still running" if status is None else f"exit status {status}")


def _first(reader: Reader, kind: MessageKind) -> int:
    return next(index for index, message in enumerate(reader.messages) if message.kind is kind)


def _exit_or(bench: Bench, text: str) -> str:
    status = bench.exit_code()
    return text if status is None else f"{text}; the node exited with status {status}"


def _wait_report(bench: Bench, kind: str) -> bool:
    return bench.wait(lambda: bench.has_report(kind) or bench.exited())


# -- basic ---------------------------------------------------------------------------------------
def lifecycle(bench: Bench, checks: Checks, window: float) -> None:
    """Handshake, 40 items (some SKIP), EOS, release, exit 0."""
    handshake(bench, checks)
    quiet_before_input(bench, checks, window)
    count = 40
    sent = send_items(bench, range(count), skips=frozenset(range(3, count, 7)))
    bench.senders[0].eos()
    if bench.readers:
        reader = bench.readers[0]
        bench.wait(lambda: reader.has(EOS) or bench.exited())
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
    sent = send_items(bench, range(0, 9), make=array_item)
    batch = [small_item(seq) for seq in range(9, 25)]
    sender.batch(9, batch)
    sent.update(zip(range(9, 25), batch))
    sent.update(send_items(bench, range(25, 28), skips=frozenset({26})))
    batch = [small_item(seq) for seq in range(28, 33)]
    sender.batch(28, batch)
    sent.update(zip(range(28, 33), batch))
    sender.eos()
    if bench.readers:
        reader = bench.readers[0]
        bench.wait(lambda: reader.has(EOS) or bench.exited())
        arrays = {seq: item for seq, item in sent.items() if seq < 9}
        got = {message.seq: message for message in reader.items()}
        wrong = [seq for seq in arrays if seq not in got or not same(arrays[seq], got[seq].item)]
        checks.clause("3", "arrays: ext type 1 [frame, dtype, shape], bytes in their own frames, given back "
                      "identical", not wrong and not reader.violations, "9 items with arrays back with the same "
                      "dtype, shape and bytes", f"violations {reader.violations[:2]}" if reader.violations else
                      "for seq " + ", ".join(f"{seq}: sent {describe(arrays[seq])}, got "
                                             f"{describe(got[seq].item) if seq in got else 'nothing'}"
                                             for seq in wrong[:2]))
        check_identity(checks, reader, sent, "BATCH")
    else:
        checks.not_applicable("3", "arrays and BATCH given back identical", "a consumer gives nothing back")
    end_of_stream(bench, checks)
    counters = bench.reports_of("finished")[0].payload
    checks.clause("5", "finished counts items_in per sequence number (batched items and SKIP included)",
                  counters.get("items_in") == len(sent), f"items_in {len(sent)}", f"counters {counters}")
    if bench.readers:
        checks.clause("5", "finished counts items_out per sequence number sent (SKIP included)",
                      counters.get("items_out") == len(sent), f"items_out {len(sent)}", f"counters {counters}")


def order(bench: Bench, checks: Checks, window: float) -> None:
    """Three replicated senders (replicas 0..2 of the source): order restored, a gap waits while a
    live sender may fill it and is given up once all have gone past it; one EOS from each, or `gone`."""
    handshake(bench, checks)
    s0, s1, s2 = bench.senders
    reader = bench.readers[0] if bench.readers else None
    sent: dict[int, Any] = {}
    if reader is not None:
        sent.update(send_items(bench, [0], sender=0))
        sent.update(send_items(bench, [2], sender=1))
        wait_outputs(bench, reader, 1)
        bench.idle(window)
        seqs = output_seqs(reader)
        checks.clause("6", "an item waits for a gap a live sender may still fill", seqs == [0],
                      "only seq 0 out while sender 2 (which sent nothing yet) may still send 1",
                      f"seqs {seqs}")
        sent.update(send_items(bench, [1], sender=2))
        wait_outputs(bench, reader, 3)
        # 3..29 dealt round robin, but sender 2 sends all of its share first, then 1, then 0.
        for index in (2, 1, 0):
            sent.update(send_items(bench, [seq for seq in range(3, 30) if seq % 3 == index], sender=index))
        wait_outputs(bench, reader, 30)
        seqs = output_seqs(reader)
        checks.clause("6", "order restored across replicated senders", seqs == list(range(30)),
                      f"seqs {seq_list(list(range(30)))}", f"seqs {seq_list(seqs)}")
        # seq 30 is lost (never sent): once every sender has sent past it, 31.. go ahead.
        sent.update(send_items(bench, [31], sender=0))
        sent.update(send_items(bench, [32], sender=1))
        bench.idle(window)
        early = [seq for seq in output_seqs(reader) if seq > 30]
        checks.clause("6", "a gap waits while a sender has not gone past it", not early,
                      "31 and 32 held: sender 2's last was 29, it may still send 30", f"out already: {early}")
        sent.update(send_items(bench, [33], sender=2))
        wait_outputs(bench, reader, 33)
        seqs = output_seqs(reader)
        checks.clause("6", "a gap is given up once every live sender has gone past it (the lost item)",
                      seqs[30:] == [31, 32, 33], "31, 32, 33 out without 30, before any EOS",
                      f"seqs after 29: {seqs[30:]}")
        check_identity(checks, reader, {seq: item for seq, item in sent.items()}, "DATA across senders")
    else:
        for index, sender in enumerate(bench.senders):
            sent.update(send_items(bench, [index], sender=index))
    s0.eos()
    s1.eos()
    bench.idle(window)
    checks.clause("2", "expects one EOS from each sender replica 0..senders-1", not bench.has_report("released")
                  and not any(reader.has(EOS) for reader in bench.readers), "no release and no EOS while sender 2 "
                  "has neither ended nor gone", f"reports {bench.report_kinds()}")
    bench.publish(Control.GONE, SOURCE, 2, "another-node", 0)
    bench.idle(window)
    checks.clause("4", "a `gone` addressed to another reader is not for it", not bench.has_report("released"),
                  "no release after gone [up, 2, another-node, 0]", f"reports {bench.report_kinds()}")
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
        found = [report.payload for report in bench.reports_of("stats")
                 if isinstance(report.payload, dict) and report.payload.get("items_in", -1) >= items_in]
        return found[-1] if found else None

    bench.wait(lambda: stats_with(half) is not None or bench.exited(), max(bench.timeout, 3.0))
    stats = stats_with(half)
    checks.clause("5", "reports stats while it runs (every 0.5 s)", stats is not None,
                  f"a stats report with items_in >= {half}",
                  _exit_or(bench, f"stats {[r.payload for r in bench.reports_of('stats')][-2:]}"))
    numbers = [key for key in ("items_in", "items_out") if not isinstance(stats.get(key), int)]
    checks.clause("5", "stats: items_in, items_out are integers", not numbers, "integer counters",
                  f"stats {stats}")
    sent.update(send_items(bench, range(half, count), skips=skips))
    bench.senders[0].eos()
    if bench.readers:
        down, side = [r for r in bench.readers if r.edge.target == "down"], [r for r in bench.readers
                                                                           if r.edge.target == "side"]
        bench.wait(lambda: all(reader.has(EOS) for reader in bench.readers) or bench.exited())
        check_identity(checks, side[0], sent, "fan-out")
        dealt = sorted(seq for reader in down for seq in output_seqs(reader))
        checks.clause("6", "replicas: each item goes to exactly one replica of a node", dealt == sorted(sent),
                      f"seqs {seq_list(sorted(sent))} across down.0 and down.1",
                      f"down.0 {seq_list(output_seqs(down[0]))}, down.1 {seq_list(output_seqs(down[1]))}")
        # The node is waiting for its readers' release: it still reports its final counters.
        bench.wait(lambda: stats_with(count) is not None or bench.exited())
        final = stats_with(count) or {}
        expected = {"received": {INPUT_PORT: count}, "sent": {"down/in": count, "side/in": count}}
        seen = {key: final.get(key) for key in expected}
        checks.clause("5", "stats are cumulative, keyed as documented, SKIP counted", seen == expected,
                      f"{expected} (received by port; sent by downstream \"node/port\")", f"{seen}")
        bench.publish(Control.RELEASED, "down", 0, "in")
        bench.publish(Control.RELEASED, "side", 0, "in")
        end_of_stream(bench, checks, readers=[down[1]])
    else:
        end_of_stream(bench, checks)
    history = [r.payload.get("items_in", 0) for r in bench.reports_of("stats") if isinstance(r.payload, dict)]
    checks.clause("5", "stats counters are cumulative (never go down)", history == sorted(history),
                  "items_in non-decreasing across reports", f"items_in {history}")


def readers_released(bench: Bench, checks: Checks, window: float) -> None:
    """A processor all of whose readers are released stops reading and ends (no input EOS)."""
    handshake(bench, checks)
    reader = bench.readers[0]
    send_items(bench, range(10))
    wait_outputs(bench, reader, 10)
    bench.publish(Control.RELEASED, reader.edge.target, 0, reader.edge.target_port)
    bench.wait(lambda: bench.has_report("released") or bench.exited())
    checks.clause("7.4", "stops reading once every reader is released, and reports its input released",
                  bench.has_report("released"), "a \"released\" report without any input EOS",
                  _exit_or(bench, f"reports {bench.report_kinds()}"))
    expect_exit(bench, checks, 0, "7.4", "then ends and exits 0")


def error(bench: Bench, checks: Checks, window: float) -> None:
    """User code fails (on the item FAIL_ITEM), no restart policy: error, deliver, EOS, exit 1."""
    handshake(bench, checks)
    sent = send_items(bench, range(5))
    bench.senders[0].data(5, FAIL_ITEM)
    send_items(bench, range(6, 10))
    bench.senders[0].eos()
    _wait_report(bench, "error")
    errors = bench.reports_of("error")
    payload = errors[0].payload if errors else None
    checks.clause("7.5", f"reports error when user code fails (on the item {FAIL_ITEM!r})",
                  isinstance(payload, dict) and isinstance(payload.get("message"), str)
                  and isinstance(payload.get("traceback"), str),
                  "an \"error\" report {\"message\": str, \"traceback\": str}",
                  _exit_or(bench, f"error reports {[e.payload for e in errors]}"))
    if bench.readers:
        reader = bench.readers[0]
        bench.wait(lambda: reader.has(EOS) or bench.exited())
        got = [m.seq for m in reader.items() if m.seq < 5]
        checks.clause("7.5", "still delivers what it sent, then EOS", got == list(range(5)) and reader.has(EOS),
                      "seqs 0..4 then EOS", f"seqs {output_seqs(reader)}, EOS {reader.has(EOS)}")
        bench.publish(Control.RELEASED, reader.edge.target, 0, reader.edge.target_port)
    expect_exit(bench, checks, 1, "7.5", "exits 1")


def crash(bench: Bench, checks: Checks, window: float) -> None:
    """User code fails under a restart policy: error, then no EOS, no released, no finished."""
    handshake(bench, checks)
    send_items(bench, range(5))
    bench.senders[0].data(5, FAIL_ITEM)
    _wait_report(bench, "error")
    checks.clause("8", "reports error under a restart policy too", bench.has_report("error"),
                  "an \"error\" report", _exit_or(bench, f"reports {bench.report_kinds()}"))
    expect_exit(bench, checks, None, "8", "exits non-zero (its successor continues the stream)")
    bench.idle(window)
    forbidden = [k for k in bench.report_kinds() if k in ("released", "finished")]
    forbidden += [f"EOS to {reader.key}" for reader in bench.readers if reader.has(EOS)]
    checks.clause("8", "under a restart policy a failing node sends no EOS, no released, no finished",
                  not forbidden, "none of them", f"{forbidden}")


# -- restartable ------------------------------------------------------------------------------------
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
    _wait_report(bench, "drained")
    drained = bench.reports_of("drained")
    payload = drained[0].payload if drained else None
    checks.clause("8.3", "drains once every sender has paused, and reports drained",
                  isinstance(payload, dict) and isinstance(payload.get("stats"), dict), "a \"drained\" report "
                  "{\"stats\": map, \"readers\": [...]}", _exit_or(bench, f"reports {bench.report_kinds()}"))
    expected_readers = [list(r.key) for r in bench.readers]
    checks.clause("8.3", "drained names the readers it sent PAUSE to, with their port",
                  sorted(payload.get("readers") or []) == sorted(expected_readers), f"readers {expected_readers}",
                  f"readers {payload.get('readers')}")
    if reader is not None:
        bench.wait(lambda: reader.has(PAUSE) or bench.exited())
        before = [m.seq for m in reader.messages[:_first(reader, PAUSE)]] if reader.has(PAUSE) else []
        checks.clause("8.3", "takes everything sent before PAUSE (an item waiting for a gap too), then "
                      "sends PAUSE, not EOS", sorted(before) == [0, 1, 2, 4] and not reader.has(EOS),
                      "seqs 0, 1, 2, 4 then PAUSE", f"seqs {output_seqs(reader)}, PAUSE {reader.has(PAUSE)}, "
                      f"EOS {reader.has(EOS)}")
    bench.idle(window)
    checks.clause("8.5", "waits for dismiss before it exits", not bench.exited(),
                  f"still running {window:g} s after drained", f"exited with status {bench.exit_code()}")
    bench.publish(Control.DISMISS, NODE, bench.replica, 0)
    expect_exit(bench, checks, 0, "8.5", "exits 0 once dismissed, without EOS or release")
    checks.clause("8.5", "a drained process sends no EOS and no release",
                  not bench.has_report("released") and not any(r.has(EOS) for r in bench.readers),
                  "no released report, no EOS", f"reports {bench.report_kinds()}")
    # The successor: same endpoints, generation + 1; the replayed hold is not its own.
    handshake(bench, checks, generation=1, start=False)
    bench.publish(Control.RESUME, NODE, bench.replica, 0)
    sent.update(send_items(bench, [3, 5], sender=1))
    sent.update(send_items(bench, [6, 8], sender=0))
    sent.update(send_items(bench, [7, 9], sender=1))
    s0.eos()
    s1.eos()
    if reader is not None:
        bench.wait(lambda: reader.has(EOS) or bench.exited())
        after = [m.seq for m in reader.messages[_first(reader, PAUSE) + 1:] if m.kind in (DATA, SKIP)]
        checks.clause("8.6", "the successor continues in order: nothing lost, nothing twice",
                      after == [3, 5, 6, 7, 8, 9], "seqs 3, 5, 6, 7, 8, 9 from the successor", f"seqs {after}")
        check_identity_unordered(checks, reader, sent)
    end_of_stream(bench, checks)
    if reader is None:
        counted = (payload["stats"].get("items_in", 0) + bench.reports_of("finished")[0].payload.get("items_in", 0))
        checks.clause("8.6", "predecessor and successor took every item once between them", counted == len(sent),
                      f"items_in {len(sent)} (drained stats + finished)", f"items_in {counted}")


def check_identity_unordered(checks: Checks, reader: Reader, expected: dict[int, Any]) -> None:
    got = [m for m in reader.items()]
    seqs = sorted(m.seq for m in got)
    wrong = [m.seq for m in got if m.seq in expected and not same(expected[m.seq], m.item)]
    checks.clause("8.6", "across the restart every item came out once, unchanged", seqs == sorted(expected)
                  and not wrong, f"seqs {seq_list(sorted(expected))}", f"seqs {seq_list(seqs)}, changed {wrong}")


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
    checks.clause("8.2", "sends PAUSE to a held reader, behind what it sent", reader.has(PAUSE) and
                  output_seqs(reader) == list(range(5)), "seqs 0..4 then PAUSE",
                  f"seqs {output_seqs(reader)}, PAUSE {reader.has(PAUSE)}")
    send_items(bench, range(5, 10))
    bench.idle(window)
    after = [m.seq for m in reader.messages[_first(reader, PAUSE) + 1:]]
    checks.clause("8.2", "sends nothing more to a held reader (a single reader: it waits)", not after,
                  "nothing after PAUSE until resume", f"received {after}")
    bench.publish(Control.DISMISS, *target, 0)
    reconnected = reader.rebind(bench.context, bench.timeout)  # its successor binds the same endpoint
    checks.clause("1", "reconnects to a restarted reader's endpoint", reconnected is not None,
                  f"a connection to the new socket within {bench.timeout:g} s", "none")
    checks.note("1", "reconnect interval (10 ms recommended)",
                f"connected {1000 * reconnected:.0f} ms after the reader's socket closed")
    bench.publish(Control.RESUME, *target, 0)
    wait_outputs(bench, reader, 10)
    checks.clause("8.6", "after resume the reader's successor (same endpoint) gets the rest",
                  output_seqs(reader) == list(range(10)), "seqs 0..9", f"seqs {seq_list(output_seqs(reader))}")
    pauses = len(reader.of_kind(PAUSE))
    bench.publish(Control.HOLD, *target, 0, keep=False)  # as a replay of the history would deliver it
    bench.idle(window)  # time to apply it before the next items
    send_items(bench, range(10, 15))
    wait_outputs(bench, reader, 15)
    checks.clause("4", "a hold replayed after its resume is ignored (generation already resumed)",
                  output_seqs(reader) == list(range(15)) and len(reader.of_kind(PAUSE)) == pauses,
                  "seqs 10..14 delivered, no new PAUSE",
                  f"seqs {seq_list(output_seqs(reader))}, PAUSE x{len(reader.of_kind(PAUSE))}")
    bench.publish(Control.HOLD, *target, 1)  # the successor is restarted in turn
    bench.wait(lambda: len(reader.of_kind(PAUSE)) > pauses or bench.exited())
    bench.senders[0].eos()
    bench.wait(lambda: bench.has_report("released") or bench.exited())
    bench.idle(window)
    checks.clause("8.2", "EOS for a held reader waits for its successor", not reader.has(EOS),
                  "no EOS while the reader is held", f"messages {[m.kind.name for m in reader.messages[-3:]]}")
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
    _wait_report(bench, "position")
    positions = [r.payload for r in bench.reports_of("position")]
    checks.clause("8", "reports position [node, replica, port, highest seq sent] on hold of an aligned reader",
                  positions[:1] == [[*target, reader.edge.target_port, 4]],
                  f"[{[*target, reader.edge.target_port, 4]}]", f"{positions}")
    send_items(bench, range(5, 9))
    bench.idle(window)
    checks.clause("8", "sends nothing past its position until align", output_seqs(reader) == list(range(5))
                  and not reader.has(PAUSE), "seqs 0..4, no PAUSE", f"seqs {output_seqs(reader)}")
    bench.publish(Control.ALIGN, *target, 0, 6)  # another sender had reached 6
    bench.wait(lambda: reader.has(PAUSE) or bench.exited())
    before = [m.seq for m in reader.messages[:_first(reader, PAUSE)]] if reader.has(PAUSE) else []
    checks.clause("8", "after align sends everything up to the limit, then PAUSE", before == list(range(7)),
                  "seqs 0..6 then PAUSE", f"seqs {output_seqs(reader)}, PAUSE {reader.has(PAUSE)}")
    bench.publish(Control.DISMISS, *target, 0)
    bench.publish(Control.RESUME, *target, 0)
    bench.senders[0].eos()
    bench.wait(lambda: reader.has(EOS) or bench.exited())
    after = [m.seq for m in reader.messages[_first(reader, PAUSE) + 1:] if m.kind in (DATA, SKIP)]
    checks.clause("8", "after resume what it kept back goes first, in order", after == [7, 8],
                  "seqs 7, 8 then EOS", f"seqs {after}, EOS {reader.has(EOS)}")
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
    _wait_report(bench, "pause-seen")
    seen = [r.payload for r in bench.reports_of("pause-seen")]
    checks.clause("8.4", "reports pause-seen [port, sender_node, sender_replica] for a sender's PAUSE",
                  seen[:1] == [[INPUT_PORT, SOURCE, 1]], f"[[{INPUT_PORT!r}, {SOURCE!r}, 1]]",
                  _exit_or(bench, f"{seen}"))
    sent.update(send_items(bench, [6], sender=0))
    if reader is not None:
        bench.idle(window)
        checks.clause("8.4", "a paused sender is past nothing not yet delivered: the gap before its last "
                      "item waits for its successor", output_seqs(reader) == [0, 1, 2, 3],
                      "seqs 0..3 only: 4 may still come from sender 1's successor", f"seqs {output_seqs(reader)}")
    bench.publish(Control.DISMISS, SOURCE, 1, 0)
    bench.publish(Control.RESUME, SOURCE, 1, 0)  # its successor runs: the same socket stands for it
    sent.update(send_items(bench, [4, 7], sender=1))
    sent.update(send_items(bench, [8], sender=0))
    s0.eos()
    s1.eos()
    if reader is not None:
        bench.wait(lambda: reader.has(EOS) or bench.exited())
        check_identity(checks, reader, sent, "DATA across a sender's restart")
    end_of_stream(bench, checks)
    counters = bench.reports_of("finished")[0].payload
    checks.clause("5", "finished counts every item once", counters.get("items_in") == len(sent),
                  f"items_in {len(sent)}", f"counters {counters}")


def aligned_idle(bench: Bench, checks: Checks, window: float) -> None:
    """Hold of an aligned reader before anything was sent: position -1, PAUSE on align -1."""
    handshake(bench, checks)
    reader = bench.readers[0]
    target = (reader.edge.target, reader.index)
    bench.publish(Control.HOLD, *target, 0)
    _wait_report(bench, "position")
    positions = [r.payload for r in bench.reports_of("position")]
    checks.clause("8", "position before anything was sent is -1", positions[:1] == [[*target, INPUT_PORT, -1]],
                  f"[{[*target, INPUT_PORT, -1]}]", _exit_or(bench, f"{positions}"))
    bench.publish(Control.ALIGN, *target, 0, -1)
    bench.wait(lambda: reader.has(PAUSE) or bench.exited())
    checks.clause("8", "align -1: PAUSE at once, while it waits for input", reader.has(PAUSE),
                  "PAUSE", _exit_or(bench, f"messages {[m.kind.name for m in reader.messages]}"))
    bench.publish(Control.DISMISS, *target, 0)
    reader.rebind(bench.context, bench.timeout)
    bench.publish(Control.RESUME, *target, 0)
    sent = send_items(bench, range(5))
    bench.senders[0].eos()
    bench.wait(lambda: reader.has(EOS) or bench.exited())
    check_identity(checks, reader, sent)
    end_of_stream(bench, checks)


# -- producers ---------------------------------------------------------------------------------------
#: A producer never ends by itself: readers take this many items, then hold back (backpressure).
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
    checks.clause("4", "a producer produces nothing before start", not reader.messages,
                  "no message before start", f"{len(reader.messages)} messages")
    bench.publish(Control.START)
    wait_outputs(bench, reader, 20)
    seqs = output_seqs(reader)
    checks.clause("6", "numbers its items 0, 1, 2, … from seq_start", len(seqs) >= 20 and consecutive(seqs, 0),
                  "at least 20 items numbered 0, 1, 2, …", _exit_or(bench, f"seqs {seq_list(seqs)}"))
    bench.publish(Control.STOP, NODE)
    end_of_stream(bench, checks)
    seqs = output_seqs(reader)
    checks.clause("6", "every item numbered once, consecutively, up to its EOS", consecutive(seqs, 0),
                  "0, 1, 2, … without a gap", f"seqs {seq_list(seqs)}")


def producer_fanout(bench: Bench, checks: Checks, window: float) -> None:
    """Replica 1 of a producer starting at seq_start 1000: fan-out, replicas, stats keyed by edge."""
    for reader in bench.readers:
        reader.cap = PRODUCER_CAP
    bench.config["seq_start"] = 1000
    handshake(bench, checks)
    side = next(r for r in bench.readers if r.edge.target == "side")
    down = [r for r in bench.readers if r.edge.target == "down"]

    def stats_out(count: int) -> Any:
        found = [r.payload for r in bench.reports_of("stats")
                 if isinstance(r.payload, dict) and r.payload.get("items_out", -1) >= count]
        return found[-1] if found else None

    wait_outputs(bench, side, 10)
    bench.wait(lambda: stats_out(10) is not None or bench.exited(), max(bench.timeout, 3.0))
    checks.clause("5", "a producer reports stats while it runs (every 0.5 s)", stats_out(10) is not None,
                  "a stats report with items_out >= 10", _exit_or(bench, f"{len(bench.reports_of('stats'))} stats"))
    bench.publish(Control.STOP, NODE)
    for reader in bench.readers:
        reader.cap = None
    bench.wait(lambda: all(reader.has(EOS) for reader in bench.readers) or bench.exited())
    seqs = output_seqs(side)
    checks.clause("6", "numbers its items from seq_start", bool(seqs) and consecutive(seqs, 1000),
                  "1000, 1001, …", f"seqs {seq_list(seqs)}")
    by_seq = {m.seq: m.item for m in side.items()}
    dealt = sorted(m.seq for r in down for m in r.items())
    changed = [m.seq for r in down for m in r.items() if m.seq in by_seq and not same(by_seq[m.seq], m.item)]
    checks.clause("6", "fan-out: every node gets every item; replicas: each item to exactly one of them",
                  dealt == seqs and not changed, f"down.0 + down.1 = side's {seq_list(seqs)}",
                  f"down: {seq_list(dealt)}, differing items {changed[:5]}")
    count = len(seqs)
    bench.wait(lambda: stats_out(count) is not None or bench.exited())
    final = stats_out(count) or {}
    expected = {"down/in": count, "side/in": count}
    checks.clause("5", "stats: sent is cumulative, keyed by downstream \"node/port\"", final.get("sent") == expected,
                  f"sent {expected}", f"sent {final.get('sent')}")
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
    checks.clause("7.4", "a producer stops once every reader is released, and reports finished",
                  bench.has_report("finished"), "a \"finished\" report", _exit_or(bench, f"{bench.report_kinds()}"))
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
    _wait_report(bench, "drained")
    drained = bench.reports_of("drained")
    payload = drained[0].payload if drained else None
    checks.clause("8.3", "a held producer stops producing and reports drained",
                  isinstance(payload, dict) and isinstance(payload.get("stats"), dict),
                  "a \"drained\" report {\"stats\": map, \"readers\": [...]}", _exit_or(bench, f"{bench.report_kinds()}"))
    bench.wait(lambda: reader.has(PAUSE) or bench.exited())
    before = [m.seq for m in reader.messages[:_first(reader, PAUSE)] if m.kind in (DATA, SKIP)] \
        if reader.has(PAUSE) else []
    checks.clause("8.3", "sends PAUSE (not EOS) behind its last item, names the reader in drained",
                  bool(before) and not reader.has(EOS) and payload.get("readers") == [list(reader.key)],
                  f"PAUSE after the items, readers {[list(reader.key)]}",
                  f"PAUSE {reader.has(PAUSE)}, EOS {reader.has(EOS)}, readers {payload.get('readers')}")
    next_seq = payload["stats"].get("next_seq")
    checks.clause("8.6", "drained stats: next_seq is the number after its last item", next_seq == before[-1] + 1,
                  f"next_seq {before[-1] + 1}", f"next_seq {next_seq}")
    bench.idle(window)
    checks.clause("8.5", "waits for dismiss before it exits", not bench.exited(),
                  f"still running {window:g} s after drained", f"exited with status {bench.exit_code()}")
    bench.publish(Control.DISMISS, NODE, bench.replica, 0)
    expect_exit(bench, checks, 0, "8.5", "exits 0 once dismissed")
    bench.config["seq_start"] = next_seq  # as the launcher starts the successor
    reader.cap = len(reader.messages) + PRODUCER_CAP
    handshake(bench, checks, generation=1, start=False)  # start comes with the replayed history
    bench.publish(Control.RESUME, NODE, bench.replica, 0)
    wait_outputs(bench, reader, len(before) + 5)
    after = [m.seq for m in reader.messages[_first(reader, PAUSE) + 1:] if m.kind in (DATA, SKIP)]
    checks.clause("8.6", "the successor numbers on from seq_start (the drained next_seq)",
                  bool(after) and consecutive(after, next_seq), f"{next_seq}, {next_seq + 1}, …",
                  _exit_or(bench, f"seqs {seq_list(after)}"))
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
    checks.clause("8.2", "a producer sends PAUSE to a held reader", reader.has(PAUSE), "PAUSE",
                  _exit_or(bench, f"{len(reader.messages)} messages, no PAUSE"))
    bench.idle(window)
    after = reader.messages[_first(reader, PAUSE) + 1:]
    checks.clause("8.2", "and nothing more until resume (its only reader: it waits)", not after,
                  "nothing after PAUSE", f"{len(after)} messages")
    bench.publish(Control.DISMISS, *target, 0)
    reader.rebind(bench.context, bench.timeout)
    reader.cap = len(reader.messages) + PRODUCER_CAP
    bench.publish(Control.RESUME, *target, 0)
    wait_outputs(bench, reader, len(reader.items()) + 5)
    seqs = output_seqs(reader)
    checks.clause("8.6", "after resume it goes on where it paused: no gap, nothing twice", consecutive(seqs, 0),
                  "0, 1, 2, … across the PAUSE", f"seqs {seq_list(seqs)}")
    bench.publish(Control.STOP, NODE)
    end_of_stream(bench, checks)


_PROCESSOR, _PRODUCER = frozenset({"processor"}), frozenset({"producer"})
SCENARIOS: tuple[Scenario, ...] = (
    Scenario("lifecycle", "basic", lifecycle),
    Scenario("stop", "basic", stop),
    Scenario("batches and arrays", "full", batches_and_arrays),
    Scenario("order", "full", order, senders=3),
    Scenario("fan-out and stats", "full", fanout_and_stats, edges=(Edge("down", 2), Edge("side", 1)), replica=1),
    Scenario("readers released", "full", readers_released, kinds=_PROCESSOR),
    Scenario("error", "full", error),
    Scenario("crash", "full", crash, restart="on-failure"),
    Scenario("drain", "restartable", drain, senders=2, replica=1),
    Scenario("sender restart", "restartable", sender_restart, senders=2),
    Scenario("hold reader", "restartable", hold_reader, kinds=_PROCESSOR),
    Scenario("aligned reader", "restartable", aligned, edges=(Edge(aligned=True),), kinds=_PROCESSOR),
    Scenario("aligned, nothing sent", "restartable", aligned_idle, edges=(Edge(aligned=True),), kinds=_PROCESSOR),
    Scenario("produce and stop", "basic", produce_and_stop, kinds=_PRODUCER),
    Scenario("producer fan-out and stats", "full", producer_fanout, edges=(Edge("down", 2), Edge("side", 1)),
             replica=1, kinds=_PRODUCER),
    Scenario("producer readers released", "full", producer_released, kinds=_PRODUCER),
    Scenario("producer drain", "restartable", producer_drain, replica=1, kinds=_PRODUCER),
    Scenario("producer hold reader", "restartable", producer_hold_reader, kinds=_PRODUCER),
)
