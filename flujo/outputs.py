"""Output side of a node replica: one PUSH socket per downstream replica, per edge.

A socket per replica (rather than one PUSH connected to all of them) lets the node address
each replica: end-of-stream markers go to every one, and items are dealt to the first
replica with room, so a busy replica is skipped instead of waited on.
"""
from __future__ import annotations

import time
from typing import Any, Callable, Iterable

import zmq

from flujo.config import OutputConfig
from flujo.protocol import NOBLOCK, Codec, send_message

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


class OutputEdge:
    """Sends to every replica of one downstream node's input port."""

    def __init__(self, context: zmq.Context, config: OutputConfig, is_released: IsReleased, codec: Codec) -> None:
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
        sockets = self.sockets
        if self._drops:
            return self._offer(frames)
        if len(sockets) == 1:
            return self._deal_single(frames, wait, seq)
        return self._deal_replicas(frames, wait)

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
        elif batchable:
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
            self._send_blocking(self._codec.batch(batch.first_seq, batch.bodies), wait, len(batch.bodies))

    def _send_blocking(self, frames: list[Any], wait: Waiter, items: int) -> bool:
        """One reader: block in the send itself, looking at commands between timeouts."""
        socket = self.sockets[0]
        while not self._is_released(self.target, self.config.target_port, 0):
            try:
                send_message(socket, frames)
                self.sent += items
                return True
            except zmq.Again:
                wait(self.sockets)  # timed out: look at commands (released? stopped?), then try again
        return False

    def _deal_replicas(self, frames: list[Any], wait: Waiter) -> bool:
        sockets = self.sockets
        while True:
            live = self.live_replicas()
            if not live:
                return False
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
            try:
                send_message(self.sockets[index], frames, NOBLOCK)
                self.sent += 1
                return True
            except zmq.Again:
                continue
        self.dropped += 1
        return True

    def broadcast(self, frames: list[Any], wait: Waiter) -> None:
        """Send to every live replica (used for end of stream)."""
        for index, socket in enumerate(self.sockets):
            while not self._is_released(self.target, self.config.target_port, index):
                try:
                    send_message(socket, frames, NOBLOCK)
                    break
                except zmq.Again:
                    wait([socket])

    def close(self, linger_ms: int = 0) -> None:
        for socket in self.sockets:
            socket.close(linger=linger_ms)
