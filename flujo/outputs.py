"""Output side of a node replica: one PUSH socket per downstream replica, per edge.

A socket per replica (rather than one PUSH connected to all of them) lets the node address
each replica: end-of-stream markers go to every one, and items are dealt to the first
replica with room, so a busy replica is skipped instead of waited on.

The decisions live in socket-free classes: batching in flujo/batching.py, graceful-restart
pauses in flujo/pausing.py. An edge waits only through the two callables the runtime gives
it: ``wait(sockets)`` (for room on a socket, or a command) and ``idle()`` (for a command,
while a held reader makes it wait); neither sends on any edge, so an edge is never re-entered.
"""

from __future__ import annotations

import contextlib
import sys
import time
from collections import deque
from collections.abc import Callable, Iterable
from typing import Any

import zmq

from flujo.acks import Retention
from flujo.batching import BATCH_ITEMS, BATCH_PREFIX, Batch
from flujo.config import OutputConfig
from flujo.credits import MAX_WINDOW, CreditWindow, batch_items, window_items
from flujo.holds import Holds
from flujo.pausing import PauseDecisions
from flujo.protocol import NOBLOCK, Codec, MessageKind, send_message
from flujo.vocab import QueuePolicy

Waiter = Callable[[Iterable[zmq.Socket]], None]
#: A send to a single reader blocks (GIL released) at most this long before the node looks at
#: its commands again: under backpressure that is far cheaper than a failed send and a poll per item.
BLOCKING_SEND_MS = 200

IsReleased = Callable[[str, str, int], bool]
#: The sequence number end of stream counts as: past any pause limit.
END_SEQ = sys.maxsize
# A lossless edge keeps at most this many queues' worth per reader replica (2 x hwm messages
# each): far more than the queues of a path below it hold in flight (two per hop).
RETAINED_QUEUES = 16


def retained_items(config: OutputConfig) -> int:
    """The most items a lossless edge keeps per reader replica: RETAINED_QUEUES queues' worth,
    a message holding a batch. A credited hop may have a whole window in flight (up to
    MAX_WINDOW items, in batches larger than BATCH_ITEMS), so a credited edge keeps that many
    windows' worth: a path of credited hops below holds far more than its queues' messages."""
    per_queue = 2 * config.hwm * BATCH_ITEMS
    if config.credits:
        per_queue = max(per_queue, MAX_WINDOW)
    return RETAINED_QUEUES * per_queue


def _no_wait(sockets: Iterable[zmq.Socket]) -> None:
    """Waiting on nothing: the blocking send's timeout is the wait."""


class OutputEdge:
    """Sends to every replica of one downstream node's input port."""

    def __init__(
        self,
        context: zmq.Context,
        config: OutputConfig,
        is_released: IsReleased,
        codec: Codec,
        holds: Holds | None = None,
        wait: Waiter = _no_wait,
        idle: Callable[[OutputEdge], None] = lambda edge: None,
    ) -> None:
        self.config = config
        self.port = config.port
        self.target = config.target
        self._context = context
        self._endpoints = list(config.endpoints)
        self._drops = config.policy != QueuePolicy.BLOCK  # a realtime reader: never wait, drop
        # A lossless edge (section 9.3) keeps what it sent per reader replica until acknowledged,
        # and re-sends it to the replica's successor ahead of anything new.
        self.retentions: list[Retention] | None = None
        if config.lossless and not self._drops:
            # Retention never holds the sender back: the queues' high-water marks do, as on any
            # edge. (A window that waited for acknowledgements deadlocked a flow whose reader
            # restores order across replicas: it holds one replica's items, unacknowledged, until
            # a gap that only a held-back sender upstream can fill.) So what is kept is what is in
            # flight below this edge, bounded by the queues on the way. A reader that stopped
            # acknowledging would make it grow: past RETAINED_QUEUES queues' worth, the oldest is
            # forgotten (counted in `unretained`, said once): at most once for those items.
            window = RETAINED_QUEUES * 2 * config.hwm
            self.retentions = [Retention(retained_items(config), window) for _ in config.endpoints]
        self.unretained = 0
        # A credited edge (section 18) sends a reader replica at most a window of items beyond
        # what it said it took; a busy reader's small items go in batches of up to half of it.
        self.windows: list[CreditWindow] | None = None
        if config.credits and not self._drops:
            self.windows = [CreditWindow(window_items(config.hwm)) for _ in config.endpoints]
        # A processor with more input already here: its results may wait for those (they leave
        # together, as they came) instead of going one message each (set by the runtime).
        self.more_ready: Callable[[], bool] = lambda: False
        self._replay_due: set[int] = set()  # replicas whose process ended: replay before sending there
        # replicas whose replay is under way: what is left to send them (frames, items), in order
        self._replays: dict[int, deque[tuple[list[Any], int]]] = {}
        self._end_frames: list[Any] | None = None  # end of stream, sent again after a replay
        self.replayed = 0  # items sent again to successors
        self.sockets: list[zmq.Socket] = [self._connect(endpoint) for endpoint in config.endpoints]
        self._is_released = is_released
        self._wait = wait  # for room on these sockets (or a command): never sends on any edge
        self._idle = idle  # for a command, while a held reader makes this edge wait
        self._next = 0  # round-robin start for dealing
        # A drop-oldest reader wants the newest item: one that finds its socket full waits here,
        # replaced by the next (the older one counted dropped), and goes when there is room.
        self._keeps_newest = config.policy == QueuePolicy.DROP_OLDEST
        self._newest: tuple[list[Any], int] | None = None
        self._codec = codec
        holds = holds if holds is not None else Holds()  # the control state's, updated in place
        self.pauses = PauseDecisions(holds, self.target, config.target_port, len(self.sockets), config.aligned)
        self._held = holds.generation  # the same dict: "any hold?" costs no call on the per-item path
        # (frames, items, last seq) for a zip replica's successor
        self._held_back: deque[tuple[list[Any], int, int]] = deque()
        self._held_back_bytes = 0
        self._pause_marker = codec.marker(MessageKind.PAUSE, 0)
        self.batch: Batch | None = None  # small items held while the single reader is busy
        # The first item of a message taken out of the batch or the held-back queue and not sent
        # yet (its send waits for room, a credit or a resume): not done below this edge either.
        self._unsent_from: int | None = None
        self.sent = 0
        self.dropped = 0
        self.last_reader: int | None = None  # the replica the last dealt message went to (None: dropped)

    def _connect(self, endpoint: str) -> zmq.Socket:
        socket = self._context.socket(zmq.PUSH)
        socket.sndhwm = self.config.hwm
        socket.linger = 0  # the node waits for downstream's release instead of lingering
        socket.reconnect_ivl = 10  # ms; a restarted replica is found again quickly
        socket.sndtimeo = BLOCKING_SEND_MS
        socket.connect(endpoint)
        return socket

    # -- lossless edges (docs/PROTOCOL.md, section 9.3) ---------------------------------------
    def _keep(self, index: int, frames: list[Any], items: int, last: int) -> None:
        """A data message went to that replica: keep it until acknowledged."""
        retentions = self.retentions
        if retentions is not None and items:
            retention = retentions[index]
            retention.keep(last - items + 1, last, frames, heavy=len(frames) > 2)
            if retention.full:
                self._forget_oldest(index, retention)

    def _forget_oldest(self, index: int, retention: Retention) -> None:
        """Far more is kept than the queues below could hold: that reader does not acknowledge."""
        if not self.unretained:
            print(
                f"edge {self.port} -> {self.target}.{index}/{self.config.target_port}: the reader has not "
                f"acknowledged {retention.items} items; the oldest are no longer kept for a replay",
                file=sys.stderr,
                flush=True,
            )
        while retention.full:
            self.unretained += retention.forget_oldest()

    @property
    def lowest_undone(self) -> list[int | None]:
        """The first item of this lossless edge not done below it, per reader replica kept for,
        and the first taken but not sent yet (in a batch, or kept back for a successor): a
        node acknowledges upstream only before all of them (section 9.2)."""
        lowest: list[int | None] = [retention.lowest_unacked for retention in self.retentions or ()]
        if self.batch is not None:
            lowest.append(self.batch.first_seq)
        if self._held_back:
            _, items, last = self._held_back[0]
            lowest.append(last - items + 1)
        if self._unsent_from is not None:
            lowest.append(self._unsent_from)
        return lowest

    def _room(self, index: int) -> bool:
        """Whether that replica may take a message now: nothing to replay to it first."""
        return index not in self._replay_due and index not in self._replays

    def announce(self) -> None:
        """This process replaces one that died: each reader replica gets a REPLAY marker before
        anything of ours (a reader that replaced a process too takes nothing from us before it)."""
        if self.retentions is not None:
            self._replay_due.update(range(len(self.sockets)))

    def reader_exited(self, index: int) -> None:
        """That reader replica's process ended: unless it had been released, its successor gets
        what it had not acknowledged, before anything new (state only: the replay runs later)."""
        if self.retentions is not None and not self._is_released(self.target, self.config.target_port, index):
            self._replay_due.add(index)

    @property
    def replaying(self) -> bool:
        """A replay is due or under way on this edge."""
        return bool(self._replay_due or self._replays)

    def replay_sockets(self) -> list[zmq.Socket]:
        """The sockets a replay waits on for room."""
        return [self.sockets[index] for index in self._replays]

    def pump_replays(self) -> None:
        """Send what the replays can send now, without waiting: a REPLAY marker, then every message
        kept for that replica, in order (and the end of stream, if it went out); started afresh
        when the replica ended once more meanwhile. It never waits, so every wait of the node
        runs it: a sender that waits for room, a credit or a slot on one edge still replays on
        the others (a zip's successor may need that replay before it takes anything from the
        edge the sender waits on).

        All on the same socket: what libzmq still queued for the dead process stays ahead of the
        marker in that one pipe, and the successor drops everything before the marker (section
        9.3). A fresh socket would open a second pipe, whose order against the old one's
        leftovers nothing guarantees (the race PROTOCOL 9.8 used to describe)."""
        while self._replay_due:
            index = self._replay_due.pop()
            retention = self.retentions[index]  # type: ignore[index]
            # The marker carries the first number the replay can bring: its reader's predecessor
            # passed on every one before (section 9.3), and the successor drops them as they come
            # again; or they were forgotten (counted in `unretained`), and it must not wait for them.
            marker = self._codec.marker(MessageKind.REPLAY, retention.replay_from)
            queue: deque[tuple[list[Any], int]] = deque([(marker, 0)])
            queue.extend((kept.frames, kept.items) for kept in retention.replay())
            if self._end_frames is not None:
                queue.append((self._end_frames, 0))
            self._replays[index] = queue
        for index in list(self._replays):
            queue = self._replays[index]
            if self._is_released(self.target, self.config.target_port, index):
                queue.clear()
            socket = self.sockets[index]
            while queue:
                frames, items = queue[0]
                try:
                    send_message(socket, frames, NOBLOCK)
                except zmq.Again:
                    break
                queue.popleft()
                self.replayed += items
                if items and self.windows is not None:
                    self.windows[index].sent_items(items)
            if not queue:
                del self._replays[index]

    def follow(self, moved: dict[tuple[str, str, int], str]) -> None:
        """Connect to readers restarted on another machine (Control.MOVED) instead of their old place;
        what was queued for the old place is lost with the process that was there."""
        for index, socket in enumerate(self.sockets):
            endpoint = moved.get((self.target, self.config.target_port, index))
            if endpoint is not None and endpoint != self._endpoints[index]:
                with contextlib.suppress(zmq.ZMQError):
                    socket.disconnect(self._endpoints[index])
                socket.connect(endpoint)
                self._endpoints[index] = endpoint

    def live_replicas(self) -> list[int]:
        """Downstream replicas that still read."""
        return [
            index
            for index in range(len(self.sockets))
            if not self._is_released(self.target, self.config.target_port, index)
        ]

    @property
    def released(self) -> bool:
        return not self.live_replicas()

    @property
    def ended(self) -> bool:
        """This edge's end of stream went out."""
        return self._end_frames is not None

    def deal(self, frames: list[Any], seq: int, batchable: bool = False) -> bool:
        """Send the message numbered ``seq`` to one live replica, blocking (with ``wait``) while
        all are full. ``batchable``: a small data item that may join a batch. Returns False
        when every replica has been released (the message is dropped)."""
        if self._held:  # a graceful restart somewhere in the flow (rare): pause what it concerns
            self.pause_held()
        self.last_reader = None
        if self._drops:
            return self._offer(frames, seq)
        if len(self.sockets) == 1:
            return self._deal_single(frames, seq, batchable)
        return self._deal_replicas(frames, seq)

    # -- graceful restarts (docs/PROTOCOL.md, section 8) ------------------------------------
    def between_items(self) -> None:
        """Housekeeping between two items (never inside a send): what was kept back for a
        successor goes once it runs; held replicas due a pause marker get it; the newest item
        waiting for a drop-oldest reader goes if there is room now."""
        if self.replaying:
            self.pump_replays()
        if (
            self.batch is not None
            and self.windows is not None
            and self._reader_runs_dry(self.windows[0], len(self.batch.bodies))
            and not self.more_ready()
        ):
            self.flush()  # a credit came: the reader has less than a credit's worth left
        if self._newest is not None:
            self._send_newest()
        if self._held:
            self.pause_held()
        elif self._held_back:
            self._send_held_back()

    def pause_held(self) -> None:
        """Send every pause marker due now, each behind everything sent to that replica before."""
        pauses = self.pauses
        for index in range(len(self.sockets)):
            generation = pauses.pause_due(index)
            if generation is not None:
                self._pause(index, generation)

    def offer_pauses(self) -> bool:
        """While another edge waits: send the pause markers due now that can go without waiting
        (never blocks, so never nests); False if one could not go (it stays due)."""
        pauses = self.pauses
        for index in range(len(self.sockets)):
            generation = pauses.pause_due(index)
            if generation is None:
                continue
            if self._is_released(self.target, self.config.target_port, index):
                pauses.paused(index, generation)  # reads no more: nothing to pause
                continue
            try:
                if self.config.aligned and self.batch is not None:  # its items are within the limit: first
                    batch = self.batch
                    if not self._room(0):
                        return False
                    frames = self._codec.batch(batch.first_seq, batch.bodies)
                    send_message(self.sockets[0], frames, NOBLOCK)
                    self._keep(0, frames, len(batch.bodies), batch.last_seq)
                    if self.windows is not None:  # within the limit: goes ahead of its window
                        self.windows[0].sent_items(len(batch.bodies))
                    self.batch = None
                    self.sent += len(batch.bodies)
                    self.last_reader = 0
                send_message(self.sockets[index], self._pause_marker, NOBLOCK)
            except zmq.Again:
                return False
            pauses.paused(index, generation)
        return True

    def _pause(self, index: int, generation: int) -> None:
        """A pause marker, once per hold, behind everything sent to that replica before (for a
        zip, the batch too: its items are within the limit; otherwise it waits for the successor)."""
        self.pauses.paused(index, generation)
        if self.config.aligned:
            self._send_batch_now()
        self._send_to(index, self._pause_marker)

    def _must_wait(self, index: int, seq: int) -> bool:
        """Whether the message numbered ``seq`` must wait for that replica's successor; pauses
        the replica first when that is due."""
        wait, pause = self.pauses.must_wait(index, seq)
        if pause is not None:
            self._pause(index, pause)
        return wait

    def _hold_back(self, frames: list[Any], items: int, last: int) -> bool:
        """Keep a message for the held zip replica's successor instead of blocking, while its
        draining process may still need other senders to catch up (see flujo/pausing.py)."""
        if not self.pauses.may_hold_back(self._held_back_bytes):
            return False
        self._held_back.append((frames, items, last))
        self.last_reader = 0
        self._held_back_bytes += sum(memoryview(frame).nbytes for frame in frames)
        return True

    def _send_held_back(self) -> None:
        while self._held_back:
            frames, items, last = self._held_back.popleft()
            self._held_back_bytes -= sum(memoryview(frame).nbytes for frame in frames)
            self._send_to(0, frames, items, last)

    def _send_batch_now(self) -> None:
        """Send the waiting batch to the single reader, held or not."""
        batch, self.batch = self.batch, None
        if batch is not None:
            self._send_to(0, self._codec.batch(batch.first_seq, batch.bodies), len(batch.bodies), batch.last_seq)

    def pause_all(self) -> list[int]:
        """This replica hands over: what it holds back, then a pause marker, to every replica
        that still reads. Returns those replicas, whose confirmations the launcher awaits."""
        self._send_held_back()
        self._send_batch_now()
        return [index for index in range(len(self.sockets)) if self._send_to(index, self._pause_marker)]

    def _send_to(self, index: int, frames: list[Any], items: int = 0, last: int = -1) -> bool:
        """Send to that replica whether held or not, blocking while its queue is full; False when
        it has been released (nothing sent). ``items``..``last``: the data it carries (kept on a
        lossless edge, which sends without blocking and waits in a poll that wakes for commands:
        it takes a reader's "exited" in at once, before its old socket can reconnect to the
        successor and hand it what the replay must bring first)."""
        lossless = self.retentions is not None
        window = self.windows[index] if self.windows is not None and items else None
        if not (lossless and items):
            return self._send_waiting(index, frames, items, last, lossless, window)
        outer = self._mark_unsent(last - items + 1)
        try:
            return self._send_waiting(index, frames, items, last, lossless, window)
        finally:
            self._unsent_from = outer

    def _mark_unsent(self, first: int) -> int | None:
        """A lossless message from item ``first`` is being sent (its send may wait): it counts as
        undone until kept (lowest_undone). Returns the mark to restore afterwards (a send
        nested in another's: the outer one's first item is lower or equal)."""
        outer = self._unsent_from
        self._unsent_from = first if outer is None else min(outer, first)
        return outer

    def _send_waiting(
        self, index: int, frames: list[Any], items: int, last: int, lossless: bool, window: CreditWindow | None
    ) -> bool:
        while not self._is_released(self.target, self.config.target_port, index):
            if lossless and not self._room(index):
                self.pump_replays()
                if not self._room(index):
                    self._wait([self.sockets[index]])  # for room for the replay (the wait sends it)
                    continue
            if window is not None and not window.allows(items):
                self._wait(())  # for a credit (or a command)
                continue
            socket = self.sockets[index]
            try:
                send_message(socket, frames, NOBLOCK if lossless else 0)
                self._keep(index, frames, items, last)
                if window is not None:
                    window.sent_items(items)
                self.sent += items
                if items:  # (a pause marker says nothing about where data went)
                    self.last_reader = index
                return True
            except zmq.Again:
                self._wait([socket])  # timed out: look at commands (released? stopped?), then try again
        return False

    # -- dealing ----------------------------------------------------------------------------
    def _deal_single(self, frames: list[Any], seq: int, batchable: bool) -> bool:
        batch = self.batch
        window = self.windows[0] if self.windows is not None else None
        if batch is not None:
            if batchable and not self._held and batch.accepts(seq, frames[1]):
                batch.add(frames[1])
                self.pauses.last_seq = seq
                self.last_reader = 0
                if batch.full or (
                    window is not None and self._reader_runs_dry(window, len(batch.bodies)) and not self.more_ready()
                ):
                    self.flush()
                return True
            self.flush()  # keep the order: what waits goes first
        elif batchable and not self._held and not self._held_back:
            self.pauses.last_seq = seq
            self.last_reader = 0
            try:
                if not self._room(0) or (
                    window is not None and (window.busy or not window.allows(1) or self.more_ready())
                ):
                    raise zmq.Again
                send_message(self.sockets[0], frames, NOBLOCK)
                self._keep(0, frames, 1, seq)
                if window is not None:
                    window.sent_items(1)
                self.sent += 1
            except zmq.Again:  # the reader is busy: start a batch
                limit = batch_items(window.window) if window is not None else BATCH_ITEMS
                self.batch = Batch(seq, frames[1], time.monotonic(), self.config.max_message - BATCH_PREFIX, limit)
            return True
        return self._send_blocking(frames, 1, seq)

    @staticmethod
    def _reader_runs_dry(window: CreditWindow, items: int) -> bool:
        """A credited reader has less than a credit's worth left: what waits goes now."""
        return not window.busy and window.allows(items)

    def flush(self) -> None:
        """Send the waiting batch, if any (blocking while the reader's queue is full), and the
        newest item waiting for a drop-oldest reader if there is room (it never blocks)."""
        if self._newest is not None:
            self._send_newest()
        batch, self.batch = self.batch, None
        if batch is not None:
            frames = self._codec.batch(batch.first_seq, batch.bodies)
            self._send_blocking(frames, len(batch.bodies), batch.last_seq)

    def _send_blocking(self, frames: list[Any], items: int, seq: int) -> bool:
        """One reader: block in the send itself, looking at commands between timeouts. While
        the reader is held, wait (backpressure) until its successor runs."""
        if seq > self.pauses.last_seq:
            self.pauses.last_seq = seq
        if not self._held:
            if self._held_back:
                self._send_held_back()
            return self._send_to(0, frames, items, seq)
        if self.retentions is None:
            return self._send_held(frames, items, seq)
        outer = self._mark_unsent(seq - items + 1)
        try:
            return self._send_held(frames, items, seq)
        finally:
            self._unsent_from = outer

    def _send_held(self, frames: list[Any], items: int, seq: int) -> bool:
        while self._held and self._must_wait(0, seq):
            if self._is_released(self.target, self.config.target_port, 0):
                return False
            if self._hold_back(frames, items, seq):
                return True
            self._idle(self)  # only commands: the limit, or the resume
        if self._held_back:
            self._send_held_back()
        return self._send_to(0, frames, items, seq)

    def _deal_replicas(self, frames: list[Any], seq: int) -> bool:
        """To the next live replica with room; on a lossless edge, to the replica the number
        names (see below), waiting for it."""
        sockets = self.sockets
        while True:
            live = self.live_replicas()
            if not live:
                return False
            if self.retentions is not None:
                # By number, not by room: a sender's successor (a resumed producer, a processor
                # fed a replay) deals the replayed items to the replicas its predecessor dealt
                # them to. Dealt by room, an item lost with the dead sender could go to a replica
                # already past it, which drops it as a duplicate. (A released replica's share
                # goes to the others: nothing is replayed to it.)
                own = seq % len(sockets)
                live = [own if own in live else live[seq % len(live)]]
            if self._held:
                live = [index for index in live if not self._must_wait(index, seq)]
                if not live:
                    self._idle(self)  # every live replica is held: wait for a resume
                    continue
            count = len(live)
            if self.replaying:
                self.pump_replays()
            windows = self.windows
            for offset in range(count):
                index = live[(self._next + offset) % count]
                if not self._room(index) or (windows is not None and not windows[index].allows(1)):
                    continue
                try:
                    send_message(sockets[index], frames, NOBLOCK)
                except zmq.Again:
                    continue
                self._keep(index, frames, 1, seq)
                if windows is not None:
                    windows[index].sent_items(1)
                self._next = (self._next + offset + 1) % count
                self.sent += 1
                self.last_reader = index
                return True
            # for room (or a credit), or a command
            self._wait([sockets[index] for index in live if self._room(index) and self._credited(index)])

    def _credited(self, index: int) -> bool:
        """That replica's window has room for an item (always, on an edge without credits)."""
        return self.windows is None or self.windows[index].allows(1)

    def _offer(self, frames: list[Any], seq: int) -> bool:
        """Send to a live replica with room, or drop an item (counted): a realtime reader never
        waits. Drop-newest drops this item; drop-oldest keeps it waiting and drops the one that
        waited (so the reader always gets the newest, the last one of a stream included)."""
        if self._keeps_newest:
            if self._newest is not None and not self._send_newest():
                self.dropped += 1  # still no room: the newer item takes its place
            self._newest = None if self._try_offer(frames, seq) else (frames, seq)
        elif not self._try_offer(frames, seq):
            self.dropped += 1
        return True

    def _send_newest(self) -> bool:
        """Offer the item waiting for a drop-oldest reader; True when it went."""
        frames, seq = self._newest  # type: ignore[misc]
        if self._try_offer(frames, seq):
            self._newest = None
            return True
        return False

    def _try_offer(self, frames: list[Any], seq: int) -> bool:
        """Send to a live replica with room, without waiting; False when none took it."""
        for index in self.live_replicas():
            if self._held and self._must_wait(index, seq):
                continue  # a held realtime reader misses what comes meanwhile (counted)
            try:
                send_message(self.sockets[index], frames, NOBLOCK)
                self.sent += 1
                self.last_reader = index
                return True
            except zmq.Again:
                continue
        return False

    def broadcast(self, frames: list[Any]) -> None:
        """Send to every live replica (used for end of stream); a held one gets it from its
        successor. The newest item still waiting for a drop-oldest reader goes first: the end
        of a stream waits for room, as the end of stream itself does."""
        while self._newest is not None and not self._send_newest():
            if self.released:
                self.dropped, self._newest = self.dropped + 1, None
            elif self._held:
                self._idle(self)  # a held reader: its successor takes it
            else:
                self._wait([self.sockets[index] for index in self.live_replicas()])
        for index in range(len(self.sockets)):
            while (
                self._held
                and self._must_wait(index, END_SEQ)
                and not self._is_released(self.target, self.config.target_port, index)
            ):
                self._idle(self)
            if self._held_back:
                self._send_held_back()
            self._send_to(index, frames)
        self._end_frames = frames  # for a successor after a replay

    def close(self, linger_ms: int = 0) -> None:
        for socket in self.sockets:
            socket.close(linger=linger_ms)
