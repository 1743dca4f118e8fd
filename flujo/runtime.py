"""The life of one node replica: open, move items, close, end the stream, wait, exit.

    1. bind input ports, connect outputs and control; build the node; ``open()``; report ready
    2. producers wait for the start command; everyone then loops over items
    3. inputs end (every sender's end of stream, or a zip port ran dry, or a stop command):
       report "released" so upstream stops sending here
    4. ``close(reason)`` (flujo/closing.py); send end of stream on every output to every downstream replica
    5. wait until each downstream replica has confirmed (released) before closing sockets:
       a PUSH socket closed right after its last message can lose its tail
    6. exit 0; or, when user code raised, report the error with its traceback, still end the
       stream (step 4-5, so items already sent are delivered) and exit 1. A node the launcher
       will restart sends no end of stream: its successor continues the stream.

A graceful restart replaces steps 3-5: the held replica takes everything its senders sent
before their pause markers, ``close("restart")``s, sends a pause marker instead of end of stream,
and exits once the launcher says every reader has it (docs/PROTOCOL.md, section 8).
"""

from __future__ import annotations

import functools
import math
import sys
import time
import traceback
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, cast

import msgpack
import zmq

from flujo.ack_channel import AckInbox, AckOutbox
from flujo.acks import Retention, ack_every, ack_spacing, done_through
from flujo.api import Node, Outputs
from flujo.closing import CloseReason, closer
from flujo.config import NodeConfig, OutputConfig
from flujo.control import ControlChannel
from flujo.credit_channel import CreditInbox, CreditOutbox
from flujo.credits import credit_every
from flujo.curve import FlowContext, KeyPair
from flujo.inputs import SKIP, WAIT, Drained, InputPort, Join, bind_pull
from flujo.joins import Step
from flujo.merge_log import MergeLog
from flujo.outputs import END_SEQ, OutputEdge
from flujo.port_queue import PortQueue
from flujo.protocol import POLLIN, Codec, Message, MessageKind, Status, readable
from flujo.shm import SharedMemoryReader, SlotPool, install
from flujo.snapshots import Snapshots, decode_restore, pack_state
from flujo.vocab import ErrorPolicy, NodeKind, RestartPolicy, zips_several
from flujo.wire_check import RefusalLog

_NO_ITEM = object()  # an output port the result does not address
POLLOUT = int(zmq.POLLOUT)

POLL_INTERVAL_MS = 500  # upper bound on a blocking wait; every wait also wakes on control
STATS_INTERVAL = 0.5  # seconds between two stats reports to the launcher
CONTROL_INTERVAL = 0.002  # a busy node looks at commands this often, not after every item
BATCH_WAIT = 0.005  # seconds a batch of small items may wait for more while the reader is busy
#: How long a reader's last acknowledgements may take to leave when it ends (its senders wait for them).
ACK_LINGER_MS = 1000
#: Seconds a stateful node at its end waits for the launcher to keep its last snapshot (section 9.6).
KEPT_WAIT = 5.0
HANDOVER_SHM_WAIT = 2.0  # seconds a drained process waits for readers to release its shared memory
#: Seconds an ending process waits for that, well within the launcher's stop timeout (10 s by
#: default): a reader keeping a frame until it closes must not make its sender overstay.
END_SHM_WAIT = 5.0


_END = object()  # the producer's generator is exhausted


class NodeRuntime:
    """Runs one replica of a node, given its configuration and a factory for the node object.

    Waiting only waits: ``_wait_on`` polls, takes in the commands that woke it (state only)
    and tells the launcher how the node is; it never sends on a data edge and never raises.
    What a node does besides moving items (flushing batches, pausing held readers, sending
    what was kept back) runs at explicit points: between items (``_between_items``) and
    before each wait of the node's own loops (``_housekeeping``).
    """

    def __init__(self, config: NodeConfig, make_node: Callable[[], Node]) -> None:
        self.config = config
        self._make_node = make_node
        self.items_in = 0
        self.items_out = 0
        self.errors = 0  # items whose processing raised, with on_error = "skip"
        self.busy = 0.0  # seconds spent in user code
        self.next_seq = config.seq_start  # producers: the next item's sequence number
        self._next_report = time.monotonic() + STATS_INTERVAL
        self._next_control = 0.0
        self._nobody_reads = False  # every reader of every output has been released
        self._stopped = False  # the loop ended on a stop (or with nobody reading), not at the end of its input
        self._length: int | None = None  # items a producer will send, when it knows
        self._summary: dict[str, Any] | None = None  # what the node reports at its end
        self.inbox: AckInbox | None = None  # lossless outputs' acknowledgements (section 9.2)
        self.credit_inbox: CreditInbox | None = None  # credited outputs' credits (section 18)
        self._outboxes: list[AckOutbox] = []  # lossless inputs' acknowledgements
        self._credit_outboxes: list[CreditOutbox] = []  # credited inputs' credits (section 18)
        self.merge_log: MergeLog | None = None  # a lossless merge's numbering (section 9.5)
        self._retentions: list[Retention] = []
        self._processed = -1  # the highest sequence number this replica finished (lossless inputs)
        # Between its call and the end of its emit an item is in the user's state but not yet
        # processed: a wait inside the emit (room, a credit) must not snapshot that state as
        # of the item before (its successor would count the item twice).
        self._in_item = False
        self._snapshots: Snapshots | None = None  # user code with snapshot()/restore() (section 9.6)
        self._snapshot: Any = None  # its snapshot method

    def run(self) -> int:
        """Run to the end; returns the process exit status."""
        # tcp sockets secure themselves with the flow key, when the launcher gave one.
        context = FlowContext(KeyPair.from_config(self.config.curve))
        try:
            return self._run(context)
        finally:
            control = getattr(self, "control", None)
            if control is not None:
                control.close()  # its reports (an error above all) go out first, within their linger
            context.destroy(linger=0)

    # -- lifecycle -------------------------------------------------------------------------
    def _run(self, context: zmq.Context) -> int:
        config = self.config
        self.control = control = ControlChannel(context, config)
        self.state = state = control.state
        self.lifecycle = lifecycle = state.lifecycle
        max_message = min((edge.max_message for edge in config.outputs), default=None)
        self.codec = Codec(config.node, config.replica, max_message, config.generation)
        self.refusals = RefusalLog(f"flujo: {config.label}")  # refused messages, logged on stderr
        self.ports = [
            InputPort(
                bind_pull(context, port),
                port,
                self.codec,
                port.senders > 1,
                self._release_port,
                self._confirm_pause,
                self.refusals,
            )
            for port in config.inputs
        ]
        self._released_ports: set[str] = set()
        self.edges = [
            OutputEdge(context, edge, state.is_released, self.codec, state.holds, self._wait_writable, self._idle)
            for edge in config.outputs
        ]
        self.pool, self.shm_reader = self._shared_memory(context)
        self._lossless(context)
        self._lossless_edges = [edge for edge in self.edges if edge.retentions is not None]
        self._credits(context)
        if config.kind == NodeKind.PROCESSOR:
            for edge in self.edges:
                edge.more_ready = self._input_ready
        self._seen_changes = 0
        error: BaseException | None = None
        node: Node | None = None
        drained = False
        try:
            node = self._make_node()
            node.open()
            self._stateful(node)
            if config.kind == NodeKind.PRODUCER:
                self._length = _reported(node, "length")
            control.report(Status.READY)
            if config.kind == NodeKind.PRODUCER:
                self._produce(node)
                drained = lifecycle.drain_requested
            else:
                self._consume_inputs(node)
        except Drained:
            drained = True
        except Exception as failure:  # user code failed: report it, with its traceback
            error = failure
        finally:
            if node is not None:
                control.report(Status.ENDING)
                try:
                    closer(node.close)(self._close_reason(error, drained))
                except Exception as failure:
                    error = error or failure
                self._summary = _reported(node, "summary")
        if error is not None:
            control.report_error(error)
        if drained:  # a successor continues this stream, from where this process hands over
            self._hand_over()
            # Readers have everything sent before the pause; one keeping frames must not hold
            # up the successor for long (what they keep stays mapped after the unlink).
            self._close_shared_memory(HANDOVER_SHM_WAIT)
            return 0 if error is None else 1
        if error is not None and config.restart != RestartPolicy.NO:
            # A successor continues this stream: no end of stream. What is still queued
            # gets a moment to leave, at most once (docs/PROTOCOL.md, delivery guarantee).
            for edge in self.edges:
                edge.close(linger_ms=1000)
            if self.pool is not None:
                # What is in flight is lost with this process (at most once), unless its edges
                # are lossless: their readers must still map it; the launcher unlinks it later.
                self.pool.close(unlink=not any(edge.retentions is not None for edge in self.edges))
            return 1
        self._release_ports(*(port.name for port in self.ports))
        # Also after a failure: what this node already sent must reach its readers.
        self._end_outputs()
        self._close_acknowledgements()
        self._close_shared_memory(END_SHM_WAIT)
        return 0 if error is None else 1

    def _close_reason(self, error: BaseException | None, drained: bool) -> CloseReason:
        if error is not None:
            return CloseReason.FAILURE
        if drained:
            return CloseReason.RESTART
        return CloseReason.STOP if self._stopped else CloseReason.END_OF_STREAM

    # -- lossless edges (docs/PROTOCOL.md, section 9) -----------------------------------------
    def _lossless(self, context: zmq.Context) -> None:
        """Bind the acknowledgement socket (lossless outputs) and connect one per lossless input
        port to its senders' (section 9.2)."""
        config = self.config
        self._retentions = []
        kept: dict[tuple[str, int, str], Retention] = {}
        for edge in self.edges:
            for index, retention in enumerate(edge.retentions or ()):
                kept[(edge.target, index, edge.config.target_port)] = retention
                self._retentions.append(retention)
        self.inbox = AckInbox(context, config.ack_endpoint, kept, self.refusals) if kept else None
        self._outboxes = []
        for port in self.ports:
            if port.config.ack_endpoints:
                every = ack_every(port.config.hwm, port.config.shm)
                port.outbox = AckOutbox(
                    context,
                    config.node,
                    config.replica,
                    port.name,
                    port.config.ack_endpoints,
                    every,
                    ack_spacing(port.config.shm),
                )
                self._outboxes.append(port.outbox)
                if config.generation:  # a successor: its senders' replays come first (9.3)
                    port.await_replays()
                if config.replicas > 1:  # its senders deal by number (flujo/outputs.py)
                    port.dealt_by_number(config.replica, config.replicas)
        if config.generation:
            for edge in self.edges:
                edge.announce()
        if config.merge_log and self._outboxes:  # a lossless merge numbers through its log (9.5)
            self.merge_log = MergeLog(Path(config.merge_log), [port.name for port in self.ports])
            if self.merge_log.refused is not None:
                print(f"{self.merge_log.refused}: numbering afresh", file=sys.stderr, flush=True)
            for port in self.ports:  # logged before its senders may forget it: no successor waits for it
                if port.outbox is not None:
                    port.outbox.before_send = functools.partial(self.merge_log.record, port.name)

    # -- credits in items (docs/PROTOCOL.md, section 18) --------------------------------------
    def _input_ready(self) -> bool:
        """More input is already here (the rest of a batch): results may wait to go with theirs."""
        return any(port.ready for port in self.ports)

    def _credits(self, context: zmq.Context) -> None:
        """Bind the credit socket (credited outputs) and connect one per credited input port to
        its senders'; each port's first credit (count 0) tells its senders this process counts
        from here."""
        config = self.config
        windows = {
            (edge.target, index, edge.config.target_port): window
            for edge in self.edges
            for index, window in enumerate(edge.windows or ())
        }
        if windows and config.credit_endpoint:
            self.credit_inbox = CreditInbox(context, config.credit_endpoint, windows, config.generation, self.refusals)
        else:
            for edge in self.edges:
                edge.windows = None  # nowhere to hear credits: ZeroMQ's backpressure alone
        for port in self.ports:
            if port.config.credit_endpoints:
                every = credit_every(port.config.hwm)
                port.credits = CreditOutbox(
                    context,
                    config.node,
                    config.replica,
                    config.generation,
                    port.name,
                    port.config.credit_endpoints,
                    every,
                )
                port.credits.flush()
                self._credit_outboxes.append(port.credits)

    def _acknowledge(self) -> None:
        """What is done end to end goes to the senders, batched: a consumer's items once
        consumed, a processor's once its readers acknowledged the results (section 9.2); a
        merge's, per port, once the outputs numbered for them are (section 9.5)."""
        self._pass_upstream(self._done_through())

    def _done_through(self) -> int:
        """The highest item this replica processed whose results are all done below it."""
        if self._retentions:
            return done_through(self._processed, self._lowest_undone())
        return self._processed

    def _pass_upstream(self, through: int) -> None:
        """Acknowledge to the senders every input up to item ``through`` (a merge: the inputs of
        its outputs up to it, per port, through its log)."""
        merge_log = self.merge_log
        if merge_log is not None:
            acked = merge_log.acknowledge(through)
            for port in self.ports:
                if port.outbox is not None:
                    port.outbox.done(acked.get(port.name, -1))
            return
        for outbox in self._outboxes:
            outbox.done(through)

    def _stateful(self, node: Node) -> None:
        """User code with ``snapshot()`` on lossless inputs acknowledges through snapshots (section
        9.6); a successor restores its predecessor's last one before the first item. Decided once
        here: a node without ``snapshot()`` keeps the plain acknowledgement, at no cost per item."""
        snapshot, restore = getattr(node, "snapshot", None), getattr(node, "restore", None)
        if not self._outboxes or snapshot is None or restore is None:
            return
        through = -1
        if self.config.restore_state is not None:
            through, state = decode_restore(self.config.restore_state)
            restore(state)
            self._processed = through
            if self.merge_log is not None:  # its inputs are numbered apart from its items (9.5)
                self.merge_log.restored_through(through)
            else:
                for port in self.ports:
                    port.passed_through(through)
        self._snapshots, self._snapshot = Snapshots(through), snapshot
        self._acknowledge = self._acknowledge_through_snapshots  # type: ignore[method-assign]

    def _acknowledge_through_snapshots(self, waiting: bool = False) -> None:
        """Report the newest committable snapshot to the launcher, and acknowledge upstream only
        through one the launcher said it keeps (section 9.6)."""
        snapshots = cast(Snapshots, self._snapshots)
        processed, now = self._processed, time.monotonic()
        if not self._in_item and snapshots.wants(processed, now, waiting):
            snapshots.take(processed, pack_state(self._snapshot(), self.config.label), now)
        ready = snapshots.commit(self._done_through())
        if ready is not None:
            self.control.report(Status.SNAPSHOT, list(ready))
        self._pass_kept(snapshots)

    def _pass_kept(self, snapshots: Snapshots) -> None:
        """Acknowledge upstream through the newest reported snapshot the launcher keeps."""
        snapshots.confirm(self.state.kept)
        through = snapshots.acknowledgeable()
        if through is not None:
            self._pass_upstream(through)

    def _await_kept(self) -> None:
        """At the end: the last snapshot reported is acknowledged upstream once the launcher keeps
        it. A launcher that does not answer within KEPT_WAIT leaves those items to the senders,
        which keep them until this replica has ended for good."""
        snapshots = self._snapshots
        deadline = time.monotonic() + KEPT_WAIT
        while snapshots is not None and snapshots.unconfirmed and time.monotonic() < deadline:
            self._wait_on(())

    def _acked(self) -> dict[str, int]:
        """A producer whose every output edge is lossless reports ``acked``: every item up to it
        is done end to end, so a successor may resume after it (section 9.4)."""
        edges = self.edges
        if self.config.kind != NodeKind.PRODUCER or not edges or any(edge.retentions is None for edge in edges):
            return {}
        return {"acked": done_through(self.next_seq - 1, self._lowest_undone())}

    def _lowest_undone(self) -> list[int | None]:
        """Per lossless output edge: the first items not yet done below it (kept, or not sent)."""
        return [low for edge in self.edges if edge.retentions is not None for low in edge.lowest_undone]

    def _take_acks(self) -> None:
        """Take in what readers acknowledged, and acknowledge upstream what is done by now."""
        inbox = self.inbox
        if inbox is not None and readable(inbox.socket):
            inbox.take()
        if self._outboxes:
            self._acknowledge()
        if inbox is not None and self.pool is not None and self.pool.pinning:
            self._unpin_slots()

    def _unpin_slots(self) -> None:
        """Shared-memory slots kept for a lossless edge's replay go back once its reader keeps
        nothing that names them: acknowledged, forgotten, or the reader gone for good (flujo/slot_pins.py).
        A released reader may still die before it acknowledged: its successor gets them again."""
        pool, gone = cast(SlotPool, self.pool), self.state.gone
        for edge in self.edges:
            if edge.retentions is None or not edge.config.shm:
                continue
            port = edge.config.target_port
            for index, retention in enumerate(edge.retentions):
                lowest = retention.lowest_unacked  # later items (in a batch, held back) stay pinned
                floor = retention.highest_sent + 1 if lowest is None else lowest
                if (edge.target, index) in gone:
                    floor = END_SEQ  # reads no more: nothing will be replayed to it
                pool.unpin_below((edge.target, index, port), floor)

    # -- shared memory (flujo/shm.py) --------------------------------------------------------
    def _shared_memory(self, context: zmq.Context) -> tuple[SlotPool | None, SharedMemoryReader | None]:
        config = self.config
        reader = None
        senders = {port.source for port in config.inputs if port.shm}
        if config.shm_run and senders:
            reader = self.codec.shm_reader = SharedMemoryReader(
                context, config.shm_run, config.node, config.replica, senders, config.shm_owners
            )
            for port in self.ports:
                if port.config.shm:
                    port.accept_shared_memory(reader)
        pool = None
        shm_edges = [edge for edge in config.outputs if edge.shm]
        if config.shm_run and config.shm_release and shm_edges:
            # As many frames as the edges' queues hold at both ends (a ZeroMQ pipe holds the send
            # and the receive high-water mark), plus the one being written and the one being read;
            # a lossless edge keeps its slots until acknowledged: plus a reader's acknowledgement batch.
            base = sum(_slots_per_reader(edge) * len(edge.endpoints) for edge in shm_edges) + 2
            pool = self.codec.shm_pool = SlotPool(
                context,
                config.shm_run,
                config.node,
                config.replica,
                config.shm_release,
                base,
                reader,
                unlink_retired=all(edge.lossless for edge in shm_edges),
            )
            pool.wait = lambda sockets: self._wait_on(sockets)
            install(pool)
        return pool, reader

    def _close_shared_memory(self, limit: float) -> None:
        """Readers first hand back what they hold; a sender waits until its readers have let go
        of its slots (or exited), at most ``limit`` seconds, before it unlinks them: a
        descriptor still on its way (sent on by a processor) names a segment that must exist."""
        reader, pool = self.shm_reader, self.pool
        if pool is not None:
            pool.unpin_all()  # no replay from this process any more
        if reader is not None:
            reader.close()
        if pool is not None:
            pool.collect_releases()
            deadline = time.monotonic() + limit
            while pool.held and time.monotonic() < deadline:
                self._wait_on([pool.release_socket])
                pool.collect_releases()
            pool.close()
            install(None)

    def _produce(self, node: Node) -> None:
        lifecycle = self.lifecycle
        while not lifecycle.started:
            self._housekeeping()
            self._wait_on(())
        if lifecycle.stop_requested or lifecycle.drain_requested:
            self._stopped = lifecycle.stop_requested
            return
        self._resume(node)
        stream = iter(node.produce())  # type: ignore[attr-defined]
        clock = time.perf_counter
        try:
            while True:
                started = clock()
                item = next(stream, _END)
                self.busy += clock() - started
                if item is _END:
                    break
                if item is not None:  # None: nothing this time (a live source), but commands still count
                    self._emit(self.next_seq, item)
                    self.next_seq += 1
                self._between_items()
                if lifecycle.stop_requested or lifecycle.drain_requested or self._nobody_reads:
                    self._stopped = not lifecycle.drain_requested
                    break
        finally:
            close = getattr(stream, "close", None)
            if close is not None:
                close()

    def _resume(self, node: Node) -> None:
        """A producer's successor after a crash or a graceful restart (section 9.4): one that can
        resume goes on from the item its readers' acknowledgements end at; one that cannot keeps
        ``seq_start``."""
        position = self.config.resume_at
        hook = getattr(node, "resume_from", None)
        if position is None or hook is None:
            return
        if hook(position) is not False:
            self.next_seq = position
        else:
            print(
                f"{type(node).__name__} cannot resume from item {position}: items it had not had "
                "acknowledged are lost if a reader crashes (at most once for its own restart)",
                file=sys.stderr,
                flush=True,
            )

    def _consume_inputs(self, node: Node) -> None:
        lifecycle = self.lifecycle
        join = Join(self.ports, self.config.join, self)
        join.numbering = self.merge_log
        call = self._calling_convention(node)
        emits = self.config.kind == NodeKind.PROCESSOR
        skip_errors = self.config.on_error == ErrorPolicy.SKIP
        clock = time.perf_counter
        while True:
            self._between_items()
            if lifecycle.stop_requested:
                self._stopped = True
                return
            step = join.next()
            while step is WAIT:  # nothing to read yet: housekeeping, then wait for the ports it needs
                self._before_waiting()
                if lifecycle.stop_requested or self._nobody_reads:
                    self._stopped = True
                    return
                self._wait_on([port.socket for port in join.waiting_on], self._release_wait_ms())  # type: ignore[attr-defined]
                step = join.next()
            if step is None:
                return
            seq, port, items = cast(Step, step)
            self.items_in += 1
            self._in_item = True
            if items is SKIP:
                result = None
            else:
                started = clock()
                try:
                    result = call(port, items)
                except Exception as error:
                    if not skip_errors:
                        raise
                    self.errors += 1  # skipped, as the manifest asks; downstream gets a SKIP marker
                    print(
                        f"skipped item {seq}: {''.join(traceback.format_exception(error))}".rstrip(),
                        file=sys.stderr,
                        flush=True,
                    )
                    result = None
                finally:
                    self.busy += clock() - started
            if emits:
                self._emit(seq, result)
            if self._outboxes:
                # Acknowledged at explicit points (_take_acks: between items now and then, and
                # before waiting), not per item: a processor's results once its readers have
                # acknowledged them, a stateful node's through its last snapshot (section 9.6).
                self._processed = seq
            self._in_item = False
            step = items = result = None  # the arrays of this item: their shared memory may go back
            reader = self.shm_reader
            if reader is not None and reader.release_wait() == 0.0:
                reader.flush()

    def _end_outputs(self) -> None:
        if not self.edges:
            self.control.report(Status.FINISHED, self._stats())
            return
        end = self.codec.marker(MessageKind.EOS, 0)
        for edge in self.edges:
            edge.flush()
            edge.broadcast(end)
        self.control.report(Status.FINISHED, self._stats())
        # Every reader has the end of stream, and a lossless edge's readers have acknowledged
        # everything (or ended for good): until then a reader that dies gets it all again.
        while not all(edge.released for edge in self.edges) or self._unacknowledged():
            self._housekeeping()
            self._wait_on(())
            self._acknowledge_all()

    def _close_acknowledgements(self) -> None:
        """Acknowledge everything done, and let it leave: its senders wait for it before they exit."""
        self._acknowledge_all()
        self._await_kept()
        for outbox in self._outboxes:
            outbox.close(ACK_LINGER_MS)

    def _unacknowledged(self) -> bool:
        """A lossless edge keeps items for a reader replica that has not ended for good."""
        gone = self.state.gone
        return any(
            retention.items and (edge.target, index) not in gone
            for edge in self.edges
            for index, retention in enumerate(edge.retentions or ())
        )

    def _acknowledge_all(self) -> None:
        """Everything done goes to the senders now, not when a batch is due: at the end of a
        stream they wait for it before they exit (section 9.2)."""
        if not self._outboxes:
            return
        if self._snapshots is not None:
            self._acknowledge_through_snapshots(waiting=True)
        else:
            self._acknowledge()
        for outbox in self._outboxes:
            outbox.flush()

    def _hand_over(self) -> None:
        """Graceful restart: a pause marker behind everything sent, then wait to be dismissed."""
        if self._snapshots is not None and self._processed > self._snapshots.committed:
            # Everything it processed goes to its readers before the pause: its successor goes on from it.
            packed = pack_state(self._snapshot(), self.config.label)
            self.control.report(Status.SNAPSHOT, [self._processed, packed])
        if self.merge_log is not None:
            self.merge_log.hand_over()
        readers = []
        for edge in self.edges:
            for index in edge.pause_all():
                readers.append([edge.target, index, edge.config.target_port])
        self.control.report(Status.DRAINED, {"stats": self._stats(), "readers": readers})
        while not self.lifecycle.dismissed:
            self._wait_on(())
        # What it sent and its readers had not acknowledged yet is kept by no one once it exits
        # (its successor starts after the pause); waiting for it here deadlocked readers that
        # restore order across replicas being restarted together (PROTOCOL 9.8, not yet).
        self._close_acknowledgements()

    # -- what a join asks of its node (flujo/joins.py, JoinView) ----------------------------
    @property
    def holding_output(self) -> bool:
        """A batch waits, or a processor awaits acknowledgements from its readers to pass on
        upstream (its senders keep items until then): the join must not block in a receive
        but wait in a poll that wakes for them too."""
        for edge in self.edges:  # (loops, not any(): this runs on every receive that finds nothing)
            if edge.batch is not None:
                return True
        if self._outboxes:
            for retention in self._retentions:
                if retention.items:
                    return True
        return False

    @property
    def draining(self) -> bool:
        return self.lifecycle.drain_requested

    @property
    def drain_limit(self) -> int | None:
        return self.state.drain_limit

    # -- items -----------------------------------------------------------------------------
    def _calling_convention(self, node: Node) -> Callable[[str | None, list[Any]], Any]:
        kind = self.config.kind
        function = node.process if kind == NodeKind.PROCESSOR else node.consume  # type: ignore[attr-defined]
        names = [port.port for port in self.config.inputs]
        if not self.config.keyword_ports:
            return lambda port, items: function(*items)
        if zips_several(self.config.join, len(names)):
            return lambda port, items: function(**dict(zip(names, items, strict=False)))
        return lambda port, items: function(**{cast(str, port): items[0]})

    def _emit(self, seq: int, result: Any) -> None:
        """Send one result (or a SKIP marker for None) on every output edge. A value is encoded
        once per port (twice when some edges take shared memory and others inline arrays)."""
        if not self.edges:
            return
        pool, codec = self.pool, self.codec
        outputs = result if isinstance(result, Outputs) else None
        encoded: dict[tuple[str, bool], tuple[list[Any], list[Any]]] = {}
        skip = None
        for edge in self.edges:
            if outputs is not None:
                value = outputs.get(edge.port, _NO_ITEM)
            else:
                value = result if result is not None and edge.port == "out" else _NO_ITEM
            if value is _NO_ITEM:
                skip = skip or codec.marker(MessageKind.SKIP, seq)
                edge.deal(skip, seq)
                continue
            shm = pool is not None and edge.config.shm
            found = encoded.get((edge.port, shm))
            if found is None:
                if shm:
                    pool.start_message()  # type: ignore[union-attr]
                frames = codec.encode(seq, value, shm)
                found = encoded[(edge.port, shm)] = (frames, pool.take_packed() if shm else [])  # type: ignore[union-attr]
            frames, packed = found
            if edge.deal(frames, seq, len(frames) == 2) and packed and edge.last_reader is not None:
                pool.dealt(packed, (edge.target, edge.last_reader))  # type: ignore[union-attr]
                if edge.retentions is not None:  # kept for a replay until acknowledged (section 9.3)
                    pool.pin((edge.target, edge.last_reader, edge.config.target_port), seq, packed)  # type: ignore[union-attr]
        if pool is not None:
            for _frames, packed in encoded.values():
                if packed:
                    pool.settle(packed)
        self.items_out += 1

    def _release_port(self, port: PortQueue) -> None:
        """Its senders all ended: tell them, so each may close (a merge may read on elsewhere)."""
        self._release_ports(port.name)

    def _confirm_pause(self, port: PortQueue, message: Message) -> None:
        """A sender's pause marker arrived: the launcher lets that sender exit once all its readers have it."""
        self.control.report(Status.PAUSE_SEEN, [port.name, message.sender, message.replica])

    def _release_ports(self, *names: str) -> None:
        names = tuple(name for name in names if name not in self._released_ports)
        if names:
            self._released_ports.update(names)
            self.control.report(Status.RELEASED, list(names))

    # -- housekeeping, at explicit points ---------------------------------------------------
    def _between_items(self) -> None:
        """Between two items: now and then, take in commands, report stats, send aged batches,
        pause held readers and send what was kept back for a successor."""
        now = time.monotonic()
        if now >= self._next_control:
            self._next_control = now + CONTROL_INTERVAL
            if self.control.pending():
                self._take_commands()
            if now >= self._next_report:
                self._report_stats()
            self._take_acks()
            if self.credit_inbox is not None and readable(self.credit_inbox.socket):
                self.credit_inbox.take()
            for outbox in self._outboxes:
                outbox.tick(now)
            for edge in self.edges:  # a batch waits a few milliseconds at most
                if edge.batch is not None and now - edge.batch.since >= BATCH_WAIT:
                    edge.flush()
                edge.between_items()

    def _before_waiting(self) -> None:
        """The loop is about to wait for input: what this node holds back must go now."""
        for edge in self.edges:
            edge.flush()
        if self.shm_reader is not None and self.shm_reader.release_wait() == 0.0:
            self.shm_reader.flush()
        self._take_acks()
        self._acknowledge_all()  # an idle moment: the last item too
        if self._credit_outboxes:
            now = time.monotonic()
            for credits in self._credit_outboxes:
                credits.flush()
                credits.refresh(now)
        self._housekeeping()

    def _release_wait_ms(self) -> int:
        """How long a wait for input may last: until shared-memory releases are due, at most."""
        due = self.shm_reader.release_wait() if self.shm_reader is not None else None
        return POLL_INTERVAL_MS if due is None else max(1, math.ceil(due * 1000))

    def _housekeeping(self) -> None:
        """Before one of the node's own waits: a waiting node still pauses held readers."""
        for edge in self.edges:
            edge.between_items()

    def _report_stats(self) -> None:
        self._next_report = time.monotonic() + STATS_INTERVAL
        self.control.report(Status.STATS, self._stats())

    def _stats(self) -> dict[str, Any]:
        optional = {
            key: value for key, value in (("total", self._length), ("summary", self._summary)) if value is not None
        }
        return {
            **optional,
            "generation": self.config.generation,
            "at": time.time(),
            "items_in": self.items_in,
            "items_out": self.items_out,
            "busy": self.busy,
            "errors": self.errors,
            "late": sum(port.late for port in self.ports),
            "duplicates": sum(port.duplicates for port in self.ports),
            "stale": sum(port.stale for port in self.ports),
            "replayed": sum(edge.replayed for edge in self.edges),
            "unretained": sum(edge.unretained for edge in self.edges),
            "rejected_acks": self.inbox.rejected if self.inbox is not None else 0,
            "rejected_credits": self.credit_inbox.rejected if self.credit_inbox is not None else 0,
            "next_seq": self.next_seq,
            **self._acked(),
            "dropped": sum(port.dropped for port in self.ports),
            "rejected": sum(port.rejected for port in self.ports),
            "rejected_by": dict(self.refusals.counts),
            "dropped_sent": {f"{edge.target}/{edge.config.target_port}": edge.dropped for edge in self.edges},
            "received": {port.name: port.received for port in self.ports},
            "sent": {f"{edge.target}/{edge.config.target_port}": edge.sent for edge in self.edges},
            **({"shm": self.pool.stats()} if self.pool is not None else {}),
        }

    # -- waiting ---------------------------------------------------------------------------
    def _take_commands(self) -> None:
        """Apply the commands received, and follow what they change: readers released or moved,
        senders gone, processes exited, holds (whose zip replicas need this sender's position)."""
        state = self.state
        self.control.handle_pending()
        if self._snapshots is not None and state.kept > self._snapshots.kept:
            self._pass_kept(self._snapshots)
        if state.changes != self._seen_changes:
            self._seen_changes = state.changes
            self._nobody_reads = bool(self.edges) and all(edge.released for edge in self.edges)
            for edge in self.edges:
                if state.moved:
                    edge.follow(state.moved)
                edge.pauses.report_positions()  # a status report: a held zip waits for every position
            for node, replica in state.gone:
                for port in self.ports:
                    if port.config.source == node:
                        port.sender_ended(replica)
            while state.exited:
                node, replica = state.exited.pop()
                if self.pool is not None:
                    self.pool.reader_exited(node, replica)
                for edge in self.edges:
                    if edge.target == node:
                        if edge.ended and edge.retentions is not None:
                            # Released, but maybe not everything acknowledged: its successor
                            # gets the replay and this end of stream again (9.3), unless gone.
                            state.reopen(node, edge.config.target_port, replica)
                        edge.reader_exited(replica)
                for port in self.ports:
                    if port.outbox is not None and port.config.source == node:
                        port.sender_restarted(replica)

    def _wait_on(self, sockets: Iterable[zmq.Socket], timeout_ms: int | None = None, event: int = POLLIN) -> None:
        """Wait until a socket is ready for ``event``, a command comes, or ``timeout_ms`` (the poll
        interval by default) passes; take in the commands, and tell the launcher how this node is
        when that is due. A wait of open length first sends the shared-memory releases it holds."""
        if timeout_ms is None:
            timeout_ms = POLL_INTERVAL_MS
            if self.shm_reader is not None and self.shm_reader.pending:
                self.shm_reader.flush()
        commands = self.control.commands
        polled = [(socket, event) for socket in sockets] + [(commands, POLLIN)]
        inbox = self.inbox
        if inbox is not None:
            polled.append((inbox.socket, POLLIN))  # an acknowledgement may be what a full window waits for
        credit_inbox = self.credit_inbox
        if credit_inbox is not None:
            polled.append((credit_inbox.socket, POLLIN))  # a credit may be what a full window waits for
        replaying = [edge for edge in self._lossless_edges if edge.replaying]
        for edge in replaying:  # room for a replay under way
            polled.extend((socket, POLLOUT) for socket in edge.replay_sockets())
        ready = zmq.zmq_poll(polled, timeout_ms)
        if any(socket is commands for socket, _ in ready):
            self._take_commands()
        if inbox is not None:  # (also after a command: a reader gone for good unpins its slots)
            self._take_acks()
        if credit_inbox is not None and readable(credit_inbox.socket):
            credit_inbox.take()
        # Whatever this wait is for (room, a credit, a slot, a resume), replays go on meanwhile:
        # the successor they feed may be what the wait waits for, a few hops below (section 9.3).
        for edge in self._lossless_edges:
            if edge.replaying:
                edge.pump_replays()
        if time.monotonic() >= self._next_report:  # a waiting node still says how it is
            self._report_stats()

    def _wait_writable(self, sockets: Iterable[zmq.Socket]) -> None:
        """An edge waits for room on its sockets."""
        self._wait_on(sockets, event=POLLOUT)

    def _idle(self, waiting: OutputEdge) -> None:
        """An edge waits for a command while a held reader keeps it from sending: the held
        readers of the other edges get their pause markers meanwhile, when they can go without
        waiting (a held merge replica fed by two of this node's edges drains only with both)."""
        self._wait_on(())
        for edge in self.edges:
            if edge is not waiting:
                edge.offer_pauses()


def _slots_per_reader(edge: OutputConfig) -> int:
    """Shared-memory slots a reader replica of ``edge`` may hold at once: what its queue holds
    at both ends, and on a lossless edge what it consumed but has not acknowledged yet."""
    slots = 2 * edge.hwm
    if edge.lossless:
        slots += ack_every(edge.hwm, shared_memory=True)
    return slots


def _reported(node: Node, method: str) -> Any:
    """What a node's optional reporting hook (``length``, ``summary``) returns; a hook that
    fails or returns something msgpack cannot carry is reported on stderr and ignored."""
    hook = getattr(node, method, None)
    if hook is None:
        return None
    try:
        value = hook()
        if value is not None:
            value = dict(value) if method == "summary" else int(value)
            msgpack.packb(value)
        return value
    except Exception as error:
        print(
            f"{type(node).__name__}.{method}() failed, ignored: {type(error).__name__}: {error}",
            file=sys.stderr,
            flush=True,
        )
        return None
