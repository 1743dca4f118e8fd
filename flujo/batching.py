"""Small items waiting to go together, without sockets or clock (the caller says when it started).

While a single reader's queue is full, small items (no arrays) wait in a batch, sent as one
message: past the per-message cost, and no slower when the queue has room (then every item
goes alone, at once). flujo/outputs.py decides when a batch starts and when it goes.
"""

from __future__ import annotations

#: A batch holds at most this many items or bytes (and never more than its reader's frame limit);
#: on a credited edge, at most half its window (flujo/credits.py) instead of BATCH_ITEMS.
BATCH_ITEMS = 16
BATCH_BYTES = 16 * 1024
#: Bytes a batch's frame adds to its items' bodies: the msgpack array's header.
BATCH_PREFIX = 3


class Batch:
    """Encoded bodies of small items with consecutive sequence numbers, waiting to go together."""

    __slots__ = ("bodies", "first_seq", "max_bytes", "max_items", "since", "size")

    def __init__(
        self, seq: int, body: bytes, since: float, max_bytes: int = BATCH_BYTES, max_items: int = BATCH_ITEMS
    ) -> None:
        self.first_seq, self.bodies, self.size = seq, [body], len(body)
        self.since = since  # when the first item started waiting (the caller's clock)
        # The reader's frame limit may be lower than BATCH_BYTES: a larger frame would be
        # dropped there with its connection, so a batch stays within it.
        self.max_bytes = min(max_bytes, BATCH_BYTES)
        self.max_items = max_items  # a credited edge: half its window (flujo/credits.py)

    def accepts(self, seq: int, body: bytes) -> bool:
        """The item numbered ``seq`` is the next one and fits: it may join."""
        return seq == self.first_seq + len(self.bodies) and self.size + len(body) <= self.max_bytes

    def add(self, body: bytes) -> None:
        self.bodies.append(body)
        self.size += len(body)

    @property
    def full(self) -> bool:
        return len(self.bodies) >= self.max_items or self.size >= self.max_bytes

    @property
    def last_seq(self) -> int:
        return self.first_seq + len(self.bodies) - 1
