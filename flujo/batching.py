"""Small items waiting to go together, without sockets or clock (the caller says when it started).

While a single reader's queue is full, small items (no arrays) wait in a batch, sent as one
message: past the per-message cost, and no slower when the queue has room (then every item
goes alone, at once). flujo/outputs.py decides when a batch starts and when it goes.
"""

from __future__ import annotations

#: A batch holds at most this many items or bytes.
BATCH_ITEMS = 16
BATCH_BYTES = 16 * 1024


class Batch:
    """Encoded bodies of small items with consecutive sequence numbers, waiting to go together."""

    __slots__ = ("bodies", "first_seq", "since", "size")

    def __init__(self, seq: int, body: bytes, since: float) -> None:
        self.first_seq, self.bodies, self.size = seq, [body], len(body)
        self.since = since  # when the first item started waiting (the caller's clock)

    def accepts(self, seq: int) -> bool:
        """The item numbered ``seq`` is the next one: it may join."""
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
