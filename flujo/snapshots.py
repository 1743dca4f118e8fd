"""Snapshots of stateful user code at acknowledgement points (docs/PROTOCOL.md, section 9.6).

A node whose user code offers ``snapshot()`` and ``restore(state)`` acknowledges upstream only
through the item of a snapshot the launcher was already sent. The design, exact and cheap:

* At most every ``SNAPSHOT_INTERVAL`` seconds (and whenever the node is about to wait for input),
  the runtime calls ``snapshot()`` right after an item *p* was processed, packs the state at once
  (later changes of the user's objects cannot leak into it) and keeps it *pending* with *p*.
* A pending snapshot becomes *committed* once everything through *p* is done end to end (a
  consumer: at once; a processor: once its readers acknowledged its results through *p*). The
  newest committable one is reported to the launcher, and *p* is acknowledged upstream only once
  the launcher has answered that it keeps it (``kept``). The report and the acknowledgement leave
  on different sockets: a process killed between them could otherwise have its acknowledgement
  arrive and its snapshot lost, and its successor would restore an older state than the one its
  senders had dropped the items of.
* So the latest committed snapshot is always the state right after the last item acknowledged
  upstream: its successor restores it and drops every replayed item numbered ``<= p``; replay
  brings exactly the items after it. Results of items after *p* that the predecessor already
  delivered come again with the same numbers, and its readers drop them (section 9.3).

Pure logic, no sockets: ``tests/test_snapshots.py``.
"""

from __future__ import annotations

import base64
from typing import Any

import msgpack

#: The largest packed state a node may report, and the launcher keeps (bytes).
SNAPSHOT_MAX_BYTES = 256 * 1024
#: Seconds between snapshots while items flow (a snapshot is also taken before waiting for input).
SNAPSHOT_INTERVAL = 0.05
#: Snapshots taken but not yet committed, at most: past it no new one is taken until one commits.
MAX_PENDING = 8


class SnapshotError(ValueError):
    """A state that cannot be a snapshot: not msgpack values, or too big."""


def pack_state(state: Any, label: str) -> bytes:
    """The state packed as msgpack, checked against ``SNAPSHOT_MAX_BYTES``."""
    try:
        packed: bytes = msgpack.packb(state)
    except (TypeError, ValueError, OverflowError) as error:
        raise SnapshotError(f"node {label}: snapshot() returned a state that is not msgpack values: {error}") from None
    if len(packed) > SNAPSHOT_MAX_BYTES:
        raise SnapshotError(
            f"node {label}: snapshot() returned {len(packed)} bytes packed, more than {SNAPSHOT_MAX_BYTES}"
        )
    return packed


def encode_restore(through: int, packed: bytes) -> list[Any]:
    """The configuration's ``restore_state``: ``[through, base64 of the packed state]`` (JSON-safe)."""
    return [through, base64.b64encode(packed).decode("ascii")]


def decode_restore(value: Any) -> tuple[int, Any]:
    """(through, state) of a configuration's ``restore_state``; ValueError if it is malformed."""
    if type(value) is not list or len(value) != 2 or type(value[0]) is not int or type(value[1]) is not str:
        raise ValueError(f"restore_state is not [through, base64 state]: {str(value)[:80]}")
    packed = base64.b64decode(value[1], validate=True)
    if len(packed) > SNAPSHOT_MAX_BYTES:
        raise ValueError(f"restore_state holds {len(packed)} bytes, more than {SNAPSHOT_MAX_BYTES}")
    return value[0], msgpack.unpackb(packed)


def snapshot_report_ok(payload: Any) -> bool:
    """A ``snapshot`` status payload: ``[through, packed state]``, through >= -1, state bounded."""
    return (
        type(payload) is list
        and len(payload) == 2
        and type(payload[0]) is int
        and payload[0] >= -1
        and type(payload[1]) is bytes
        and len(payload[1]) <= SNAPSHOT_MAX_BYTES
    )


class Snapshots:
    """Pending and committed snapshots of one replica; decides what may be acknowledged upstream."""

    def __init__(self, restored_through: int = -1) -> None:
        self.committed = restored_through  # the item of the newest snapshot reported to the launcher
        self.kept = restored_through  # the launcher keeps a snapshot through this item (said so, or gave it)
        self.passed = restored_through  # acknowledged upstream through this item
        self.taken = restored_through  # the item of the newest snapshot taken
        self._pending: list[tuple[int, bytes]] = []  # (item, packed state), oldest first
        self.next_due = 0.0  # monotonic time of the next snapshot while items flow

    def wants(self, processed: int, now: float, waiting: bool = False) -> bool:
        """Whether to take a snapshot now, right after ``processed``: something new was
        processed, the interval passed (or the node is about to wait), and room is left."""
        return processed > self.taken and (waiting or now >= self.next_due) and len(self._pending) < MAX_PENDING

    def take(self, processed: int, packed: bytes, now: float) -> None:
        self._pending.append((processed, packed))
        self.taken = processed
        self.next_due = now + SNAPSHOT_INTERVAL

    def commit(self, done: int) -> tuple[int, bytes] | None:
        """Everything through ``done`` is done end to end: the newest pending snapshot at or
        before it, to report (older ones are dropped); None if none became committable."""
        ready = None
        while self._pending and self._pending[0][0] <= done:
            ready = self._pending.pop(0)
        if ready is not None:
            self.committed = ready[0]
        return ready

    def confirm(self, kept: int) -> None:
        """The launcher keeps a snapshot of this process through item ``kept`` (its ``kept`` command)."""
        self.kept = max(self.kept, kept)

    def acknowledgeable(self) -> int | None:
        """The item to acknowledge upstream through now, once: the newest snapshot reported that
        the launcher keeps (never past this process's own reports); None when nothing is new."""
        through = min(self.committed, self.kept)
        if through <= self.passed:
            return None
        self.passed = through
        return through

    @property
    def unconfirmed(self) -> bool:
        """A snapshot was reported that the launcher has not yet said it keeps."""
        return self.kept < self.committed
