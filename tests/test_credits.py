"""Credits in items (docs/PROTOCOL.md, section 18): the socket-free core, hostile credits, the plan,
and flows whose hops stay bounded in items behind a slow reader."""

from __future__ import annotations

import os
import signal

import msgpack
import pytest
import zmq
from conftest import FlowRunner, poll_for
from flow_nodes import line_count, read_lines
from manifests import collect, count, node

from flujo.batching import Batch
from flujo.credit_channel import CREDIT_REFRESH_SECONDS, CreditInbox, CreditOutbox
from flujo.credits import (
    CreditCounter,
    CreditWindow,
    batch_items,
    credit_every,
    credit_frame,
    parse_credit,
    window_items,
)
from flujo.launch.manifest import load_manifest
from flujo.launch.plan import plan
from flujo.wire_check import PROTOCOL_VERSION, ProtocolError, RefusalLog

pytestmark = pytest.mark.timeout(90)


# -- the core, without sockets ----------------------------------------------------------------
def test_sizes_follow_from_the_queue() -> None:
    assert (window_items(16), credit_every(16), batch_items(window_items(16))) == (32, 8, 16)
    assert (window_items(1), credit_every(1), batch_items(window_items(1))) == (2, 1, 1)
    assert Batch(0, b"x", 0.0, max_items=3).max_items == 3


def test_a_window_bounds_the_items_in_flight() -> None:
    window = CreditWindow(32)
    window.sent_items(1)
    assert window.allows(31) and not window.allows(32)
    window.sent_items(15)
    window.sent_items(16)
    assert not window.allows(1) and window.in_flight == 32
    window.credit(0, 8)  # the reader took 8
    assert window.allows(8) and not window.allows(9)
    assert window.busy  # 24 in flight: small items wait in a batch
    window.credit(0, 30)
    assert window.in_flight == 2 and not window.busy


def test_impossible_or_backward_credits_are_refused_and_change_nothing() -> None:
    window = CreditWindow(32)
    window.sent_items(10)
    window.credit(0, 6)
    with pytest.raises(ProtocolError, match="more than the 10 sent"):
        window.credit(0, 11)
    with pytest.raises(ProtocolError, match="after 6"):
        window.credit(0, 5)
    assert (window.taken, window.in_flight) == (6, 4)


def test_a_reader_successor_starts_a_new_count_and_its_predecessors_credits_are_stale() -> None:
    window = CreditWindow(32)
    window.sent_items(32)
    window.credit(0, 10)  # 22 in flight when the reader died
    window.credit(1, 0)  # its successor's first credit: everything sent is taken or lost
    assert window.in_flight == 0 and window.generation == 1
    window.credit(0, 20)  # the dead process's last credit, still queued: ignored
    assert window.stale == 1 and window.in_flight == 0
    window.sent_items(5)
    window.credit(1, 5 + 22)  # the newcomer may count what was still in flight for its predecessor
    assert window.in_flight == 0
    with pytest.raises(ProtocolError):
        window.credit(1, 5 + 22 + 1)


def test_a_newcomer_may_count_what_every_dead_predecessor_left_in_the_pipe() -> None:
    window = CreditWindow(32)
    window.sent_items(20)
    window.credit(0, 5)  # 15 left in the pipe when it died
    window.credit(1, 0)  # its successor dies before it takes anything
    window.sent_items(3)
    window.credit(2, 0)
    window.sent_items(2)
    window.credit(2, 15 + 3 + 2)  # the third process gets both leftovers, and 2 new items
    assert window.in_flight == 0


def test_the_first_reader_process_counts_from_the_start() -> None:
    window = CreditWindow(8)
    window.sent_items(8)  # sent before the reader's first credit arrived
    window.credit(0, 0)
    assert window.in_flight == 8  # not forgotten: generation 0 is the first process


def test_a_reader_counts_per_sender_process_and_credits_every_so_many() -> None:
    counter = CreditCounter(every=4)
    assert counter.pending  # its first credit (0) is due: the sender learns its generation
    counter.credited = 0
    assert not counter.took(3, 0)
    assert counter.took(1, 0)
    counter.credited = counter.taken
    assert not counter.took(2, 1) and counter.taken == 2  # a sender's successor: a new count


def test_credit_frames_are_checked() -> None:
    windows = {("sink", 0, "in"): CreditWindow(4)}
    good = credit_frame("sink", 0, "in", 2, 1, 7)
    assert parse_credit(good, windows, 1) == (("sink", 0, "in"), 2, 7)
    assert parse_credit(good, windows, 0) is None  # meant for another process of this sender
    hostile = [
        b"\xc1",
        msgpack.packb({"a": 1}),
        msgpack.packb([PROTOCOL_VERSION, "credit", "sink", 0, "in", 0, 0]),
        msgpack.packb([PROTOCOL_VERSION + 1, "credit", "sink", 0, "in", 0, 0, 1]),
        msgpack.packb([PROTOCOL_VERSION, "ack", "sink", 0, "in", 0, 0, 1]),
        msgpack.packb([PROTOCOL_VERSION, "credit", "sink", 0, "in", 0, 0, -1]),
        msgpack.packb([PROTOCOL_VERSION, "credit", "sink", 0, "in", 0, 0, 1 << 63]),
        msgpack.packb([PROTOCOL_VERSION, "credit", "sink", True, "in", 0, 0, 1]),
        msgpack.packb([PROTOCOL_VERSION, "credit", "sink", 0, b"in", 0, 0, 1]),
        msgpack.packb([PROTOCOL_VERSION, "credit", "other", 0, "in", 0, 0, 1]),
    ]
    for frame in hostile:
        with pytest.raises(ProtocolError):
            parse_credit(frame, windows, 0)


def test_the_inbox_refuses_hostile_credits_counts_them_and_goes_on(tmp_path) -> None:
    context = zmq.Context()
    try:
        window = CreditWindow(32)
        window.sent_items(20)
        lines: list[str] = []
        endpoint = f"ipc://{tmp_path}/credit"
        inbox = CreditInbox(context, endpoint, {("sink", 0, "in"): window}, 0, RefusalLog("test", lines.append))
        outbox = CreditOutbox(context, "sink", 0, 0, "in", [endpoint], every=4)
        forger = context.socket(zmq.PUSH)
        forger.connect(endpoint)
        for frame in (b"junk", credit_frame("ghost", 0, "in", 0, 0, 1), credit_frame("sink", 0, "in", 0, 0, 99)):
            forger.send(frame)
        forger.send_multipart([b"two", b"frames"])
        outbox.took(0, 5, 0)  # a real credit: 5 taken
        poll_for(lambda: inbox.take() or window.taken == 5, timeout=10)
        poll_for(lambda: inbox.take() or inbox.rejected == 4, timeout=10)
        assert window.taken == 5 and window.in_flight == 15
        assert any("credit" in line for line in lines)
        forger.close(linger=0)
        inbox.close()
        outbox.close()
    finally:
        context.destroy(linger=0)


def test_a_waiting_reader_says_its_counts_again_so_a_lost_credit_does_not_stall_its_sender(tmp_path) -> None:
    # A credit written to the connection of a sender process that just died is lost without an
    # error; the next covers it, but none comes while the reader waits on another input, which
    # that uncredited sender may be what holds up (a chaos run with arrays stalled so).
    context = zmq.Context()
    try:
        endpoint = f"ipc://{tmp_path}/credit"
        sender = context.socket(zmq.PULL)
        sender.bind(endpoint)
        outbox = CreditOutbox(context, "pair", 0, 3, "a", [endpoint], every=2)
        outbox.took(0, 2, 4)  # due: goes at once
        assert sender.poll(5000) and parse_credit(sender.recv(), {("pair", 0, "a"): None}, 4) == (
            ("pair", 0, "a"),
            3,
            2,
        )
        # ... and is lost (here: taken by nobody). Nothing is pending, so a flush sends nothing:
        outbox.flush()
        assert not sender.poll(50)
        began = outbox._last_sent[0]
        outbox.refresh(began + CREDIT_REFRESH_SECONDS / 2)  # credited a moment ago: nothing
        assert not sender.poll(50)
        outbox.refresh(began + CREDIT_REFRESH_SECONDS + 0.001)
        assert sender.poll(5000) and parse_credit(sender.recv(), {("pair", 0, "a"): None}, 4) == (
            ("pair", 0, "a"),
            3,
            2,
        )
        sender.close(linger=0)
        outbox.close()
    finally:
        context.destroy(linger=0)


# -- the plan ------------------------------------------------------------------------------------
@pytest.mark.parametrize("lossless", [False, True], ids=["plain", "lossless"])
def test_python_readers_get_credit_endpoints_and_command_nodes_do_not(
    flow: FlowRunner, tmp_path, lossless: bool
) -> None:
    manifest = flow.manifest(
        {
            "numbers": count(10),
            "square": node("{nodes}:square", "numbers", replicas=2),
            "sink": collect("square", flow.path("out.jsonl")),
            "quiet": {**collect("square", flow.path("q.jsonl")), "credits": False},
        },
        flow="lossless = true" if lossless else "",
    )
    _, configs = plan(load_manifest(manifest), tmp_path)
    numbers, sink, quiet = configs[("numbers", 0)], configs[("sink", 0)], configs[("quiet", 0)]
    square = [configs[("square", replica)] for replica in range(2)]
    assert numbers.credit_endpoint and all(config.credit_endpoint for config in square)
    assert [edge.credits for edge in square[0].outputs] == [True, False]
    assert sink.inputs[0].credit_endpoints == tuple(config.credit_endpoint for config in square)
    assert quiet.inputs[0].credit_endpoints == ()
    assert all(config.inputs[0].credit_endpoints == (numbers.credit_endpoint,) for config in square)


# -- flows -----------------------------------------------------------------------------------------
def _stopped_behind_a_slow_sink(flow: FlowRunner, credits: bool) -> tuple[int, int, int]:
    """count -> square -> sink (4 ms an item), stopped once the queues are full: (items the sink
    had before the stop, items it had at the end, items the producer sent)."""
    out = flow.path("out.jsonl")
    sink = collect("square", out, delay=0.004)
    if not credits:
        sink["credits"] = False
    manifest = flow.manifest({"numbers": count(), "square": node("{nodes}:square", "numbers"), "sink": sink})
    launcher = flow.start(manifest)
    poll_for(lambda: line_count(out) >= 100, timeout=30)  # the producer is far ahead: every queue is full
    before = line_count(out)
    assert flow.command("stop", "--flow", flow.name).returncode == 0
    _, stderr = launcher.communicate(timeout=60)
    assert launcher.returncode == 0, stderr
    items = [line["i"] if isinstance(line, dict) else line for line in read_lines(out)]
    assert items == [i * i for i in range(len(items))]  # every item once, in order
    return before, len(items), len(items)


def test_a_stop_behind_a_slow_consumer_drains_only_the_windows(flow: FlowRunner) -> None:
    """Two hops of at most 32 items each (queue 16), batches waiting at both senders (16 each)
    and the item in each node: about 100 items after the stop, where ZeroMQ's buffers alone
    let 1,000-2,000 through (bench/RESULTS.md). The margin covers the sink's items while the
    stop command travels (4 ms each)."""
    before, after, _ = _stopped_behind_a_slow_sink(flow, credits=True)
    assert after - before <= 250, f"{after - before} items reached the sink after the stop"


@pytest.mark.parametrize(
    "settings",
    ["", "lossless = true"],
    ids=["plain", "lossless"],
)
def test_readers_restarted_behind_full_windows_stall_nothing(flow: FlowRunner, settings: str) -> None:
    """A graceful restart of two processor replicas and a SIGKILL of the sink, while every
    window is full (the sink is slow): the successors' first credits reopen their senders'
    windows, the flow runs to its end, in order, without duplicates (lossless: nothing lost)."""
    out, n = flow.path("out.jsonl"), 4000  # the sink takes 4 s or more: the restart ends first
    manifest = flow.manifest(
        {
            "numbers": count(n),
            "square": node("{nodes}:square", "numbers", replicas=2),
            "sink": collect("square", out, delay=0.001, restart="on-failure"),
        },
        flow=settings,
    )
    launcher = flow.start(manifest)
    poll_for(lambda: line_count(out) >= 150, timeout=30)
    assert flow.command("restart", "square").returncode == 0
    poll_for(lambda: line_count(out) >= 400 and flow.replicas().get("square.0", {}).get("restarts") == 1, timeout=30)
    pid = flow.replicas()["sink"]["pid"]
    os.kill(pid, signal.SIGKILL)
    _, stderr = launcher.communicate(timeout=60)
    assert launcher.returncode == 0, stderr
    values = [round(value**0.5) for value in read_lines(out)]
    if settings:  # what the killed sink wrote but had not acknowledged comes again, once
        assert sorted(set(values)) == list(range(n))
    else:
        assert values == sorted(set(values)) and values[-1] == n - 1
        # At most what the killed sink's windows held: two senders' windows at its pace (about
        # 1,000 items/s: 50 items each) with the batches on their way.
        assert n - len(values) <= 250


def test_the_window_follows_the_readers_pace_between_its_floor_and_its_cap() -> None:
    window = CreditWindow(32)
    window.sent_items(5000)
    window.credit(0, 0, now=0.0)
    sizes = []
    for step in range(1, 6):  # 10,000 items/s: 500 in PACE_SECONDS, reached by doubling
        window.credit(0, 1000 * step, now=0.1 * step)
        sizes.append(window.window)
    assert sizes == [64, 128, 256, 500, 500] and window.rate == pytest.approx(10_000)
    window.sent_items(600)
    assert not window.allows(1)
    window.credit(0, 5010, now=0.6)  # 100 items/s: back to the floor at once
    assert window.window == 32 and window.in_flight == 590 and not window.allows(1)
    window.credit(0, 5600, now=0.61)
    assert window.allows(400)  # nothing in flight: a batch begun under the larger window goes
    window.credit(1, 0, now=0.7)  # a successor: its pace is not known yet
    assert window.window == 32


def test_a_reader_without_credits_is_sent_to_as_before(flow: FlowRunner) -> None:
    """A reader that sends no credits (``credits = false``: what a command node is by default)
    gets every item, in order, behind ZeroMQ's backpressure alone; its sender's other hops keep
    their credits."""
    out, n = flow.path("out.jsonl"), 1000
    sink = {**collect("square", out, delay=0.0002), "credits": False}
    manifest = flow.manifest({"numbers": count(n), "square": node("{nodes}:square", "numbers"), "sink": sink})
    result = flow.run(manifest, timeout=60)
    assert result.returncode == 0, result.stderr
    assert read_lines(out) == [i * i for i in range(n)]
