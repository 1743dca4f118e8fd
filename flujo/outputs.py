"""Output side of a node replica: one PUSH socket per downstream replica, per edge.

A socket per replica (rather than one PUSH connected to all of them) lets the node address
each replica: end-of-stream markers go to every one, and items are dealt to the first
replica with room, so a busy replica is skipped instead of waited on.
"""
from __future__ import annotations

import contextlib
import time
from typing import Any, Callable, Iterable, Iterator, Mapping

import zmq

from flujo.config import OutputConfig
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
IsReleased = Callable[[str, str, int], bool]
Held = Mapping[tuple[str, int], int]  # (node, replica) being restarted gracefully -> generation


class OutputEdge:
    """Sends to every replica of one downstream node's input port."""

    def __init__(self, context: zmq.Context, config: OutputConfig, is_released: IsReleased, codec: Codec,
                 held: Held | None = None) -> None:
        self.config = config
        self.port = config.port
        self.target = config.target
        self.sockets: list[zmq.Socket] = []
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
        self._held = held if held is not None else {}  # the control channel's, updated in place
        self._paused: dict[int, int] = {}  # replica index -> generation its pause marker was sent for
        self._pause_marker = codec.marker(MessageKind.PAUSE, 0)
        self.sending = False  # inside one of this edge's send loops (not re-entered from a wait)
        self.batch: _Batch | None = None  # small items held while the single reader is busy
        self.sent = 0
        self.dropped = 0

    def live_replicas(self) -> list[int]:
        """Downstream replicas that still read."""
        return [index for index in range(len(self.sockets))
                if not self._is_released(self.target, self.config.target_port, index)]

    @property
    def released(self) -> bool:
        return not self.live_replicas()

    def deal(self, frames: list[Any], wait: Waiter, seq: int | None = None) -> bool:
        """Send to one live replica, blocking (with ``wait``) while all are full.

        ``seq`` marks a data item that may join a batch. Returns False when every replica
        has been released (the message is dropped).
        """
        self.sending = True  # (never nested: a plain flag, on the per-item path)
        try:
            if self._held:  # a graceful restart somewhere in the flow (rare): pause what it concerns
                self._send_pauses(wait)
            if self._drops:
                return self._offer(frames)
            if len(self.sockets) == 1:
                return self._deal_single(frames, wait, seq)
            return self._deal_replicas(frames, wait)
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
    def is_held(self, index: int) -> bool:
        """That downstream replica is being restarted: send it nothing until its successor runs."""
        return (self.target, index) in self._held

    def pause_held(self, wait: Waiter) -> None:
        """Between items, or while waiting: pause the held replicas that have no marker yet."""
        if self._held and not self.sending:
            with self._busy():
                self._send_pauses(wait)

    def _send_pauses(self, wait: Waiter) -> None:
        """Send a pause marker to every held replica that has not had one for this hold: behind
        everything sent to it before, so once it has the marker it has all of that."""
        for index in range(len(self.sockets)):
            generation = self._held.get((self.target, index))
            if generation is not None and self._paused.get(index) != generation:
                self._paused[index] = generation
                self._send_to(index, self._pause_marker, wait)

    def pause_all(self, wait: Waiter) -> list[int]:
        """This replica hands over: what it holds back, then a pause marker, to every replica
        that still reads. Returns those replicas, whose confirmations the launcher awaits."""
        with self._busy():
            batch, self.batch = self.batch, None
            if batch is not None:
                self._send_to(0, self._codec.batch(batch.first_seq, batch.bodies), wait, len(batch.bodies))
            return [index for index in range(len(self.sockets)) if self._send_to(index, self._pause_marker, wait)]

    def _send_to(self, index: int, frames: list[Any], wait: Waiter, items: int = 0) -> bool:
        """Send to that replica whether held or not, blocking while its queue is full; False when
        it has been released (nothing sent)."""
        socket = self.sockets[index]
        while not self._is_released(self.target, self.config.target_port, index):
            try:
                send_message(socket, frames)
                self.sent += items
                return True
            except zmq.Again:
                wait([socket])  # timed out: look at commands (released? stopped?), then try again
        return False

    def _deal_single(self, frames: list[Any], wait: Waiter, seq: int | None) -> bool:
        batchable = seq is not None and len(frames) == 2
        batch = self.batch
        if batch is not None:
            if batchable and batch.accepts(seq):  # type: ignore[arg-type]
                batch.add(frames[1])
                if batch.full:
                    self.flush(wait)
                return True
            self.flush(wait)  # keep the order: what waits goes first
        elif batchable and not self._held:
            try:
                send_message(self.sockets[0], frames, NOBLOCK)
                self.sent += 1
                return True
            except zmq.Again:  # the reader is busy: start a batch
                self.batch = _Batch(seq, frames[1])  # type: ignore[arg-type]
                return True
        return self._send_blocking(frames, wait, 1)

    def flush(self, wait: Waiter) -> None:
        """Send the waiting batch, if any (blocking while the reader's queue is full)."""
        batch, self.batch = self.batch, None
        if batch is not None:
            with self._busy():
                self._send_blocking(self._codec.batch(batch.first_seq, batch.bodies), wait, len(batch.bodies))

    def _send_blocking(self, frames: list[Any], wait: Waiter, items: int) -> bool:
        """One reader: block in the send itself, looking at commands between timeouts. While
        the reader is held, wait (backpressure) until its successor runs."""
        while self.is_held(0):
            if self._is_released(self.target, self.config.target_port, 0):
                return False
            self._send_pauses(wait)
            wait(())  # only commands: the resume
        return self._send_to(0, frames, wait, items)

    def _deal_replicas(self, frames: list[Any], wait: Waiter) -> bool:
        sockets = self.sockets
        while True:
            live = self.live_replicas()
            if not live:
                return False
            if self._held:
                live = [index for index in live if not self.is_held(index)]
                if not live:
                    self._send_pauses(wait)
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
                return True
            wait([sockets[index] for index in live])

    def _offer(self, frames: list[Any]) -> bool:
        """Send to a live replica with room, or drop the item (counted): a realtime reader never waits."""
        for index in self.live_replicas():
            if self._held and self.is_held(index):
                continue  # a held realtime reader misses what comes meanwhile (counted)
            try:
                send_message(self.sockets[index], frames, NOBLOCK)
                self.sent += 1
                return True
            except zmq.Again:
                continue
        self.dropped += 1
        return True

    def broadcast(self, frames: list[Any], wait: Waiter) -> None:
        """Send to every live replica (used for end of stream); a held one gets it from its successor."""
        with self._busy():
            for index in range(len(self.sockets)):
                while self.is_held(index) and not self._is_released(self.target, self.config.target_port, index):
                    self._send_pauses(wait)
                    wait(())
                self._send_to(index, frames, wait)

    def close(self, linger_ms: int = 0) -> None:
        for socket in self.sockets:
            socket.close(linger=linger_ms)
