"""Steps every scenario shares: the handshake, sending items, checking what came out, the end of stream.

A step checks its clauses as it goes (a failed clause ends the scenario); waits have the
clause timeout, and a clause that something must NOT happen watches for ``window`` seconds.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import zmq

from flujo.acks import ack_frame
from flujo.conformance.checks import Checks, describe, same, seq_list, small_item
from flujo.conformance.harness import INPUT_PORT, NODE, Bench, Reader
from flujo.protocol import Control, MessageKind

DATA, SKIP, EOS, PAUSE = MessageKind.DATA, MessageKind.SKIP, MessageKind.EOS, MessageKind.PAUSE


def handshake(bench: Bench, checks: Checks, generation: int = 0, start: bool = True) -> None:
    """Start the node; it subscribes (everything, then its identity topic) and reports ready."""
    bench.spawn(generation)
    identity = bench.identity.decode()
    bench.wait(lambda: bench.subscribed() or bench.exited())
    checks.clause(
        "2",
        "starts from FLUJO_NODE_CONFIG (fields it does not know are ignored)",
        not bench.exited(),
        "the node running and connecting",
        f"the node exited with status {bench.exit_code()}",
    )
    checks.clause(
        "4",
        f"subscribes to its identity topic {identity!r}",
        bench.subscribed(),
        f"a subscription to {identity!r} within {bench.timeout:g} s",
        exit_or(bench, f"subscriptions {bench.subscriptions!r}"),
    )
    subscriptions = bench.subscriptions
    checks.clause(
        "4",
        'subscribes to every topic ("") before its identity topic',
        b"" in subscriptions and subscriptions.index(b"") < subscriptions.index(bench.identity),
        'a subscription to "" first (commands such as start and stop are not addressed to it; the '
        "identity subscription tells the launcher the node will miss none)",
        f"subscriptions {subscriptions!r}",
    )
    bench.wait(lambda: bench.has_report("ready") or bench.exited())
    kinds = [kind for kind in bench.report_kinds() if kind != "stats"]
    checks.clause(
        "5",
        "reports ready first",
        kinds[:1] == ["ready"],
        'a "ready" report before any other',
        exit_or(bench, f"reports {kinds}"),
    )
    if start:
        bench.publish(Control.START)  # every replica ready: as the launcher does


def quiet_before_input(bench: Bench, checks: Checks, window: float) -> None:
    bench.idle(window)
    early = [(reader.key, message.kind.name, message.seq) for reader in bench.readers for message in reader.messages]
    checks.clause(
        "4",
        "sends nothing before ready, start and its first input",
        not early,
        "no message on any output before the node was given input",
        f"received {early}",
    )


def send_items(
    bench: Bench,
    seqs: Iterable[int],
    make: Callable[[int], Any] = small_item,
    skips: frozenset[int] = frozenset(),
    sender: int = 0,
) -> dict[int, Any]:
    """Send DATA (or SKIP for the numbers in ``skips``); returns what each number carried (None: SKIP)."""
    sent: dict[int, Any] = {}
    for seq in seqs:
        if seq in skips:
            bench.senders[sender].skip(seq)
            sent[seq] = None
        else:
            sent[seq] = make(seq)
            bench.senders[sender].data(seq, sent[seq])
    return sent


def latest_stats(bench: Bench) -> dict[str, Any]:
    """The counters of the node's latest stats report ({} before any)."""
    found = [report.payload for report in bench.reports_of("stats") if isinstance(report.payload, dict)]
    return found[-1] if found else {}


def output_seqs(reader: Reader) -> list[int]:
    return [message.seq for message in reader.items()]


#: How long a reader's EOS gets to arrive once the node has exited: what it sent last may still be in
#: the kernel's buffers when the exit is seen, and a loaded machine reads them late.
EXIT_DRAIN = 1.0


def wait_end(bench: Bench, reader: Reader, checks: Checks | None = None) -> bool:
    """Wait for ``reader``'s EOS, or for the node's exit and then, briefly, for the EOS still in
    flight. With ``checks``: a node that exited before its EOS reached the reader fails 7.3 here,
    the cause, rather than the DATA clause, its effect (what a reader's full queue still held
    when the connection closed is lost with it: libzmq drops it)."""
    if bench.wait(lambda: reader.has(EOS) or bench.exited()) and not reader.has(EOS):
        bench.wait(lambda: reader.has(EOS), timeout=EXIT_DRAIN)
    if checks is not None and not reader.has(EOS) and bench.exited():
        checks.clause(
            "7.3",
            "stays up until its readers release it (a sender outlives its EOS)",
            False,
            "running until its readers release it",
            f"exited with status {bench.exit_code()} before its EOS reached the reader "
            f"({len(reader.items())} items had)",
        )
    return reader.has(EOS)


def wait_outputs(bench: Bench, reader: Reader, count: int) -> bool:
    return bench.wait(lambda: len(reader.items()) >= count or bench.exited())


def check_identity(checks: Checks, reader: Reader, expected: dict[int, Any], title: str = "DATA") -> None:
    """Every DATA item came out unchanged with its number, every SKIP as SKIP, once each, in order."""
    checks.clause(
        "3",
        "every message it sends decodes: header [1, kind, seq, node, replica], msgpack body",
        not reader.violations,
        "well-formed messages",
        f"{reader.violations[:3]}",
    )
    got = {message.seq: message for message in reader.items()}
    wrong = [
        (seq, describe(expected[seq]), describe(got[seq].item))
        for seq in sorted(expected)
        if expected[seq] is not None
        and seq in got
        and (got[seq].kind is not DATA or not same(expected[seq], got[seq].item))
    ]
    missing = [seq for seq in sorted(expected) if expected[seq] is not None and seq not in got]
    checks.clause(
        "3",
        f"{title}: each item comes out unchanged with its sequence number",
        not wrong and not missing,
        "every DATA item given back identical, with the same seq",
        f"missing {seq_list(missing)}" if missing else f"(seq, sent, got): {wrong[:3]}",
    )
    skips = sorted(seq for seq, item in expected.items() if item is None)
    if skips:
        bad = [seq for seq in skips if seq not in got or got[seq].kind is not SKIP]
        checks.clause(
            "3",
            "SKIP: a SKIP in gives a SKIP out, same seq (one message per number)",
            not bad,
            f"SKIP for {seq_list(skips)}",
            f"for {seq_list(bad)}: " + ", ".join(got[seq].kind.name if seq in got else "nothing" for seq in bad[:5]),
        )
    strangers = sorted({(m.sender, m.sender_replica) for m in reader.messages} - {(NODE, reader.sender_replica)})
    checks.clause(
        "3",
        "every header names the sending node and its replica",
        not strangers,
        f"sender {[NODE, reader.sender_replica]}",
        f"senders {strangers}",
    )
    seqs = output_seqs(reader)
    extra = [seq for seq in seqs if seq not in expected]
    checks.clause(
        "6",
        "exactly one message per input sequence number, in order",
        seqs == sorted(expected) and not extra,
        f"seqs {seq_list(sorted(expected))}",
        f"seqs {seq_list(seqs)}",
    )


def end_of_stream(
    bench: Bench, checks: Checks, readers: list[Reader] | None = None, cause: str = "once every sender ended"
) -> None:
    """After the input's EOS: released, EOS on every output replica, finished, stay up until
    released, exit 0."""
    readers = bench.readers if readers is None else readers
    if bench.config["inputs"]:
        bench.wait(lambda: bench.has_report("released") or bench.exited())
        released = bench.reports_of("released")
        checks.clause(
            "7.1",
            f"reports its input port released {cause}",
            any(INPUT_PORT in (report.payload or []) for report in released),
            f'a "released" report naming [{INPUT_PORT!r}]',
            exit_or(bench, f"released reports {[r.payload for r in released]}"),
        )
    for reader in readers:
        reader.cap = None  # take everything up to the EOS
    if readers:
        bench.wait(lambda: all(reader.has(EOS) for reader in readers) or bench.exited())
        without = [reader.key for reader in readers if not reader.has(EOS)]
        checks.clause(
            "7.2",
            "sends EOS to every downstream replica",
            not without,
            f"EOS on {[reader.key for reader in readers]}",
            exit_or(bench, f"no EOS on {without}"),
        )
        broken = [violation for reader in readers for violation in reader.violations]
        checks.clause(
            "3",
            "every message it sends decodes: header [1, kind, seq, node, replica], msgpack body",
            not broken,
            "well-formed messages",
            f"{broken[:3]}",
        )
        late = [
            reader.key
            for reader in readers
            if any(message.kind in (DATA, SKIP) for message in reader.messages[first_index(reader, EOS) :])
        ]
        checks.clause(
            "7.2", "EOS comes behind the last item", not late, "nothing after EOS", f"items after EOS on {late}"
        )
    bench.wait(lambda: bench.has_report("finished") or bench.exited())
    finished = bench.reports_of("finished")
    checks.clause(
        "7.2",
        "reports finished (a map of counters) after its end of stream",
        bool(finished) and isinstance(finished[0].payload, dict),
        'a "finished" report with a map',
        exit_or(bench, f"reports {bench.report_kinds()}"),
    )
    kinds = [kind for kind in bench.report_kinds() if kind not in ("stats", "ready")]
    order_ok = all(kinds.index(kind) < kinds.index("finished") for kind in ("released", "ending") if kind in kinds)
    checks.clause(
        "5",
        "reports in order: ready, released, ending, finished",
        order_ok,
        "released (and ending, if sent) before finished",
        f"reports {kinds}",
    )
    if readers:
        bench.idle(bench.window)
        checks.clause(
            "7.3",
            "stays up until its readers release it (a sender outlives its EOS)",
            not bench.exited(),
            f"still running {bench.window:g} s after finished, before any release",
            f"exited with status {bench.exit_code()}",
        )
        for reader in readers:
            bench.publish(Control.RELEASED, reader.edge.target, reader.index, reader.edge.target_port)
        unacknowledged = [reader for reader in readers if reader.highest_taken > reader.acked]
        if bench.config.get("ack_endpoint") and unacknowledged:  # lossless: released is not enough (9.3)
            bench.idle(bench.window)
            checks.clause(
                "9.3",
                "a lossless sender stays up after its readers released it, until they acknowledged everything",
                not bench.exited(),
                f"still running {bench.window:g} s after the release, before the last acknowledgement",
                f"exited with status {bench.exit_code()}",
            )
            acknowledge_everything(bench, unacknowledged)
    expect_exit(bench, checks, 0, "7.3", "exits 0 once every reader has released it")
    strays = [r.payload for r in bench.reports if r.kind in ("<misaddressed>", "<malformed>")]
    checks.clause(
        "5",
        "every report is [kind, node, replica, payload] naming this replica",
        not strays,
        f"[kind, {NODE!r}, {bench.replica}, payload]",
        f"{strays[:3]}",
    )


def acknowledge_everything(bench: Bench, readers: list[Reader]) -> None:
    """Each reader acknowledges the highest item it took, as a real one does before it ends."""
    socket = bench.context.socket(zmq.PUSH)
    socket.connect(bench.config["ack_endpoint"])
    for reader in readers:
        socket.send(ack_frame(*reader.key, reader.highest_taken))
        reader.acked = reader.highest_taken
    socket.close(linger=int(bench.timeout * 1000))  # the frames go before the socket does


def expect_exit(bench: Bench, checks: Checks, code: int | None, section: str, title: str) -> None:
    """Wait for the exit; ``code`` None: any non-zero status."""
    bench.wait(bench.exited)
    status = bench.exit_code()
    ok = status is not None and (status == code if code is not None else status != 0)
    checks.clause(
        section,
        title,
        ok,
        f"exit status {code if code is not None else 'non-zero'} within {bench.timeout:g} s",
        "still running" if status is None else f"exit status {status}",
    )


def first_index(reader: Reader, kind: MessageKind) -> int:
    return next(index for index, message in enumerate(reader.messages) if message.kind is kind)


def exit_or(bench: Bench, text: str) -> str:
    status = bench.exit_code()
    return text if status is None else f"{text}; the node exited with status {status}"


def wait_report(bench: Bench, kind: str) -> bool:
    return bench.wait(lambda: bench.has_report(kind) or bench.exited())
