"""Output side of a node replica: one PUSH socket per downstream replica, per edge.

A socket per replica (rather than one PUSH connected to all of them) lets the node address
each replica: end-of-stream markers go to every one, and items are dealt to the first
replica with room, so a busy replica is skipped instead of waited on.
"""
from __future__ import annotations

import contextlib
import sys
import time
from collections import deque
from typing import Any, Callable, Iterable, Iterator

import zmq

from flujo.config import OutputConfig
from flujo.holds import Holds
from flujo.protocol import NOBLOCK, Codec, MessageKind, send_message

Waiter = Callable[[Iterable[zmq.Socket]], None]
#: A send to a single reader blocks (GIL released) at most this long before the node looks at
#: its commands again: under backpressure that is far cheaper than a failed send and a poll per item.
BLOCKING_SEND_MS = 200
#: While a reader's queue is full, small items (no arrays) wait in a batch of at most this
#: many items or bytes, sent as one message: past the per-message cost, and no slower when
#: the queue has room (then every item goes alone, at once).
BATCH_ITEMS = 16
BATCH_BYTES = 16 * 1024
#: While a zip replica drains, a sender already past the agreed limit keeps at most this
#: much in memory, then blocks (flujo/holds.py; docs/PROTOCOL.md, section 8).
HOLD_BACK_BYTES = 256 * 1024 * 1024


class _Batch:
    """Encoded bodies of small items with consecutive sequence numbers, waiting to go together."""

    def __init__(self, seq: int, body: bytes) -> None:
        self.first_seq, self.bodies, self.size = seq, [body], len(body)
        self.since = time.monotonic()

    def accepts(self, seq: int) -> bool:
        return seq == self.first_seq + len(self.bodies)

    def add(self, body: bytes) -> None:
        self.bodies.append(body)
        self.size += len(body)

    @property
    def full(self) -> bool:
        return len(self.bodies) >= BATCH_ITEMS or self.size >= BATCH_BYTES

    @property
    def last_seq(self) -> int:
        return self.first_seq + len(self.bodies) - 1


IsReleased = Callable[[str, str, int], bool]
#: The sequence number end of stream counts as: past any pause limit.
END_SEQ = sys.maxsize


class OutputEdge:
    """Sends to every replica of one downstream node's input port."""

    def __init__(self, context: zmq.Context, config: OutputConfig, is_released: IsReleased, codec: Codec,
                 holds: Holds | None = None) -> None:
        self.config = config
        self.port = config.port
        self.target = config.target
        self.sockets: list[zmq.Socket] = []
        self._endpoints = list(config.endpoints)
        for endpoint in config.endpoints:
            socket = context.socket(zmq.PUSH)
            socket.sndhwm = config.hwm
            socket.linger = 0  # the node waits for downstream's release instead of lingering
            socket.reconnect_ivl = 10  # ms; a restarted replica is found again quickly
            socket.sndtimeo = BLOCKING_SEND_MS
            socket.connect(endpoint)
            self.sockets.append(socket)
        self._is_released = is_released
        self._next = 0  # round-robin start for dealing
        self._drops = config.policy != "block"  # a realtime reader: never wait, drop the newest
        self._codec = codec
        self._holds = holds if holds is not None else Holds()  # the control channel's, updated in place
        self._held = self._holds.generation  # the same dict: "any hold?" costs no call on the per-item path
        self._paused: dict[int, int] = {}  # replica index -> generation its pause marker was sent for
        self._reported: dict[int, tuple[int, int]] = {}  # replica index -> (generation, position reported)
        self._last_seq = -1  # single reader: the highest sequence number handed to it (sent or batched)
        self._held_back: deque[tuple[list[Any], int]] = deque()  # (frames, items) for a zip replica's successor
        self._held_back_bytes = 0
        self._pause_marker = codec.marker(MessageKind.PAUSE, 0)
        self.sending = False  # inside one of this edge's send loops (not re-entered from a wait)
        self.batch: _Batch | None = None  # small items held while the single reader is busy
        self.sent = 0
        self.dropped = 0
        self.last_reader: int | None = None  # the replica the last dealt message went to (None: dropped)

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
        return [index for index in range(len(self.sockets))
                if not self._is_released(self.target, self.config.target_port, index)]

    @property
    def released(self) -> bool:
        return not self.live_replicas()

    def deal(self, frames: list[Any], wait: Waiter, seq: int, batchable: bool = False) -> bool:
        """Send the message numbered ``seq`` to one live replica, blocking (with ``wait``) while
        all are full. ``batchable``: a small data item that may join a batch. Returns False
        when every replica has been released (the message is dropped)."""
        self.sending = True  # (never nested: a plain flag, on the per-item path)
        try:
            if self._held:  # a graceful restart somewhere in the flow (rare): pause what it concerns
                self._send_pauses(wait)
            self.last_reader = None
            if self._drops:
                return self._offer(frames, seq, wait)
            if len(self.sockets) == 1:
                return self._deal_single(frames, wait, seq, batchable)
            return self._deal_replicas(frames, wait, seq)
        finally:
            self.sending = False

    @contextlib.contextmanager
    def _busy(self) -> Iterator[None]:
        """Marks a send in progress: a wait inside it must not send this edge a pause marker,
        which could overtake the message being sent."""
        outer, self.sending = self.sending, True
        try:
            yield
        finally:
            self.sending = outer

    # -- graceful restarts (docs/PROTOCOL.md, section 8) ------------------------------------
    def pause_held(self, wait: Waiter) -> None:
        """Between items, or while waiting: pause the held replicas that are due a marker, and
        report this sender's position to a held zip replica (also in the middle of a send to
        it: the zip may need the other ports' items before it reads this one)."""
        if not self._held:
            if self._held_back and not self.sending:  # resumed: what was kept back goes first
                with self._busy():
                    self._send_held_back(wait)
            return
        if self.config.aligned:
            for index in range(len(self.sockets)):
                generation = self._holds.generation.get((self.target, index))
                if generation is not None:
                    self._limit(index, generation)  # reports, once per hold
        if not self.sending:
            with self._busy():
                self._send_pauses(wait)

    def _send_pauses(self, wait: Waiter) -> None:
        for index in range(len(self.sockets)):
            generation = self._holds.generation.get((self.target, index))
            if generation is None or self._paused.get(index) == generation:
                continue
            if not self.config.aligned:
                self._pause(index, generation, wait)
            elif self._limit(index, generation) <= self._last_seq and (self.target, index) in self._holds.limit:
                self._pause(index, generation, wait)  # sent everything up to the agreed limit

    def _must_wait(self, index: int, seq: int, wait: Waiter) -> bool:
        """Whether the message numbered ``seq`` must wait for that replica's successor; pauses
        the replica first when that is due."""
        key = (self.target, index)
        generation = self._holds.generation.get(key)
        if generation is None:
            return False
        if self.config.aligned:
            if seq <= self._limit(index, generation):
                return False  # still for the draining process: its zip gets whole sequence numbers
            if key not in self._holds.limit:
                return True  # past our position: wait for the agreed limit, unpaused
        self._pause(index, generation, wait)
        return True

    def _limit(self, index: int, generation: int) -> int:
        """A zip replica's pause limit; until the launcher announces it, this sender's own
        position, reported once per hold."""
        limit = self._holds.limit.get((self.target, index))
        if limit is not None:
            return limit
        reported = self._reported.get(index)
        if reported is None or reported[0] != generation:
            reported = self._reported[index] = (generation, self._last_seq)
            self._holds.report_position(self.target, index, self.config.target_port, self._last_seq)
        return reported[1]

    def _pause(self, index: int, generation: int, wait: Waiter) -> None:
        """A pause marker, once per hold, behind everything sent to that replica before (for a
        zip, the batch too: its items are within the limit; otherwise it waits for the successor)."""
        if self._paused.get(index) != generation:
            self._paused[index] = generation
            if self.config.aligned:
                self._send_batch_now(wait)
            self._send_to(index, self._pause_marker, wait)

    def _hold_back(self, frames: list[Any], items: int) -> bool:
        """Keep a message for the held zip replica's successor instead of blocking, while its
        draining process may still need other senders to catch up (see flujo/holds.py)."""
        key = (self.target, 0)
        if (not self.config.aligned or key not in self._holds.limit or key in self._holds.drained
                or self._held_back_bytes >= HOLD_BACK_BYTES):
            return False
        self._held_back.append((frames, items))
        self.last_reader = 0
        self._held_back_bytes += sum(memoryview(frame).nbytes for frame in frames)
        return True

    def _send_held_back(self, wait: Waiter) -> None:
        while self._held_back:
            frames, items = self._held_back.popleft()
            self._held_back_bytes -= sum(memoryview(frame).nbytes for frame in frames)
            self._send_to(0, frames, wait, items)

    def _send_batch_now(self, wait: Waiter) -> None:
        """Send the waiting batch to the single reader, held or not."""
        batch, self.batch = self.batch, None
        if batch is not None:
            self._send_to(0, self._codec.batch(batch.first_seq, batch.bodies), wait, len(batch.bodies))

    def pause_all(self, wait: Waiter) -> list[int]:
        """This replica hands over: what it holds back, then a pause marker, to every replica
        that still reads. Returns those replicas, whose confirmations the launcher awaits."""
        with self._busy():
            self._send_held_back(wait)
            self._send_batch_now(wait)
            return [index for index in range(len(self.sockets)) if self._send_to(index, self._pause_marker, wait)]

    def _send_to(self, index: int, frames: list[Any], wait: Waiter, items: int = 0) -> bool:
        """Send to that replica whether held or not, blocking while its queue is full; False when
        it has been released (nothing sent)."""
        socket = self.sockets[index]
        while not self._is_released(self.target, self.config.target_port, index):
            try:
                send_message(socket, frames)
                self.sent += items
                if items:  # (a pause marker says nothing about where data went)
                    self.last_reader = index
                return True
            except zmq.Again:
                wait([socket])  # timed out: look at commands (released? stopped?), then try again
        return False

    # -- dealing ----------------------------------------------------------------------------
    def _deal_single(self, frames: list[Any], wait: Waiter, seq: int, batchable: bool) -> bool:
        batch = self.batch
        if batch is not None:
            if batchable and not self._held and batch.accepts(seq):
                batch.add(frames[1])
                self._last_seq = seq
                self.last_reader = 0
                if batch.full:
                    self.flush(wait)
                return True
            self.flush(wait)  # keep the order: what waits goes first
        elif batchable and not self._held and not self._held_back:
            self._last_seq = seq
            self.last_reader = 0
            try:
                send_message(self.sockets[0], frames, NOBLOCK)
                self.sent += 1
            except zmq.Again:  # the reader is busy: start a batch
                self.batch = _Batch(seq, frames[1])
            return True
        return self._send_blocking(frames, wait, 1, seq)

    def flush(self, wait: Waiter) -> None:
        """Send the waiting batch, if any (blocking while the reader's queue is full)."""
        batch, self.batch = self.batch, None
        if batch is not None:
            with self._busy():
                frames = self._codec.batch(batch.first_seq, batch.bodies)
                self._send_blocking(frames, wait, len(batch.bodies), batch.last_seq)

    def _send_blocking(self, frames: list[Any], wait: Waiter, items: int, seq: int) -> bool:
        """One reader: block in the send itself, looking at commands between timeouts. While
        the reader is held, wait (backpressure) until its successor runs."""
        if seq > self._last_seq:
            self._last_seq = seq
        while self._held and self._must_wait(0, seq, wait):
            if self._is_released(self.target, self.config.target_port, 0):
                return False
            if self._hold_back(frames, items):
                return True
            wait(())  # only commands: the limit, or the resume
        if self._held_back:
            self._send_held_back(wait)
        return self._send_to(0, frames, wait, items)

    def _deal_replicas(self, frames: list[Any], wait: Waiter, seq: int) -> bool:
        sockets = self.sockets
        while True:
            live = self.live_replicas()
            if not live:
                return False
            if self._held:
                live = [index for index in live if not self._must_wait(index, seq, wait)]
                if not live:
                    wait(())  # every live replica is held: wait for a resume
                    continue
            count = len(live)
            for offset in range(count):
                index = live[(self._next + offset) % count]
                try:
                    send_message(sockets[index], frames, NOBLOCK)
                except zmq.Again:
                    continue
                self._next = (self._next + offset + 1) % count
                self.sent += 1
                self.last_reader = index
                return True
            wait([sockets[index] for index in live])

    def _offer(self, frames: list[Any], seq: int, wait: Waiter) -> bool:
        """Send to a live replica with room, or drop the item (counted): a realtime reader never waits."""
        for index in self.live_replicas():
            if self._held and self._must_wait(index, seq, wait):
                continue  # a held realtime reader misses what comes meanwhile (counted)
            try:
                send_message(self.sockets[index], frames, NOBLOCK)
                self.sent += 1
                self.last_reader = index
                return True
            except zmq.Again:
                continue
        self.dropped += 1
        return True

    def broadcast(self, frames: list[Any], wait: Waiter) -> None:
        """Send to every live replica (used for end of stream); a held one gets it from its successor."""
        with self._busy():
            for index in range(len(self.sockets)):
                while (self._held and self._must_wait(index, END_SEQ, wait)
                       and not self._is_released(self.target, self.config.target_port, index)):
                    wait(())
                if self._held_back:
                    self._send_held_back(wait)
                self._send_to(index, frames, wait)

    def close(self, linger_ms: int = 0) -> None:
        for socket in self.sockets:
            socket.close(linger=linger_ms)
