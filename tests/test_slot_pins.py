"""Shared-memory slots kept for lossless edges' replays (flujo/slot_pins.py, flujo/shm.py).

The bookkeeping alone (SlotPins, no sockets), then a sender's pool and its readers in one
process: a kept slot outlives its reader's release, a crashed reader's successor maps the same
bytes and the slot still comes back, and a reader that never acknowledges cannot grow the pool
past its bound."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import msgpack
import numpy as np
import pytest
import zmq

from flujo.shm import SharedMemoryReader, SlotPool
from flujo.slot_pins import SlotPins

pytestmark = pytest.mark.timeout(20)

A = ("sink", 0, "in")
B = ("other", 0, "in")


# -- the bookkeeping ------------------------------------------------------------------------------
def test_a_pin_lasts_until_every_reader_keeps_the_item_no_longer() -> None:
    pins: SlotPins[str] = SlotPins()
    pins.pin(A, 0, ["slot0"])
    pins.pin(B, 0, ["slot0"])  # a fan-out: each reader's retention pins it on its own
    assert pins.unpin_below(A, 1) == [] and pins.pinned("slot0")
    assert pins.unpin_below(B, 1) == ["slot0"] and not pins.pinned("slot0") and len(pins) == 0


def test_unpinning_goes_by_the_first_number_still_kept() -> None:
    pins: SlotPins[str] = SlotPins()
    for seq in range(5):
        pins.pin(A, seq, [f"slot{seq}"])
    assert pins.unpin_below(A, 3) == ["slot0", "slot1", "slot2"]
    assert pins.unpin_below(A, 3) == []  # a stale floor frees nothing twice
    assert [pins.pinned(f"slot{seq}") for seq in range(5)] == [False, False, False, True, True]
    assert pins.readers() == [A]
    assert pins.unpin_below(A, 10**18) == ["slot3", "slot4"] and pins.readers() == []


def test_a_slot_named_by_two_items_is_returned_once_after_both() -> None:
    pins: SlotPins[str] = SlotPins()
    pins.pin(A, 7, ["shared", "own7"])
    pins.pin(A, 8, ["shared"])
    assert pins.unpin_below(A, 8) == ["own7"]
    assert pins.unpin_below(A, 9) == ["shared"]


def test_an_item_naming_no_slot_pins_nothing() -> None:
    pins: SlotPins[str] = SlotPins()
    pins.pin(A, 2, [])
    assert pins.readers() == [] and len(pins) == 0


def test_pins_come_in_increasing_order() -> None:
    pins: SlotPins[str] = SlotPins()
    pins.pin(A, 5, ["x"])
    with pytest.raises(ValueError, match="increasing order"):
        pins.pin(A, 5, ["y"])


# -- a sender's pool and its readers, in one process ----------------------------------------------
@pytest.fixture
def pool_and_readers(tmp_path: Path) -> Iterator[tuple[SlotPool, SharedMemoryReader, SharedMemoryReader]]:
    """A sender's pool ("src", 2 slots, 4 at most) and two processes of the reader "sink": the
    first, and the successor that replaces it after a crash."""
    context = zmq.Context()
    run = f"p{os.getpid()}"
    owners = {"src.0": f"ipc://{tmp_path}/src"}
    pool = SlotPool(context, run, "src", 0, owners["src.0"], base=2, unlink_retired=True)
    first = SharedMemoryReader(context, run, "sink", 0, {"src"}, owners)
    successor = SharedMemoryReader(context, run, "sink", 0, {"src"}, owners)
    try:
        yield pool, first, successor
    finally:
        first.close()
        successor.close()
        pool.close()
        context.destroy(linger=0)
    assert not [name for name in os.listdir("/dev/shm") if name.startswith(f"flujo.{run}.")]


def _send(pool: SlotPool, seq: int, value: int, lossless: bool = True) -> bytes | None:
    """Item ``seq``, a 128 KB array of ``value``, to sink.0 (pinned when ``lossless``); its
    descriptor, or None when it went inline."""
    pool.start_message()
    descriptor = pool.pack(np.full(1 << 17, value, np.uint8))
    packed = pool.take_packed()
    pool.dealt(packed, ("sink", 0))
    if lossless:
        pool.pin(A, seq, packed)
    pool.settle(packed)
    return None if descriptor is None else descriptor.data


def _read_and_release(pool: SlotPool, reader: SharedMemoryReader, descriptor: bytes) -> int:
    """The reader maps the array, notes its first byte, drops it and releases it; the pool
    takes the release in."""
    view = reader.view(descriptor, ("src", 0))
    first = int(view[0])
    assert (view == first).all()
    del view
    reader.flush()
    assert pool.release_socket.poll(5000)
    pool.collect_releases()
    return first


def test_a_kept_slot_is_not_reused_until_acknowledged(pool_and_readers) -> None:
    pool, reader, _ = pool_and_readers
    kept = _send(pool, 0, 1)
    assert kept is not None and _read_and_release(pool, reader, kept) == 1
    # Released, not acknowledged: the next array goes to another slot, item 0's bytes stay.
    other = _send(pool, 1, 2)
    assert other is not None and other != kept and _read_and_release(pool, reader, other) == 2
    assert reader.view(kept, ("src", 0))[0] == 1
    assert pool.stats()["slots"] == 2 and pool.stats()["kept"] == 2
    pool.unpin_below(A, 2)  # acknowledged: both come back
    assert pool.stats()["kept"] == 0
    assert _send(pool, 2, 3, lossless=False) is not None and pool.stats()["slots"] == 2  # reused, not grown


def test_a_crashed_readers_successor_maps_the_same_bytes_and_the_slot_comes_back(pool_and_readers) -> None:
    pool, first, successor = pool_and_readers
    descriptor = _send(pool, 0, 42)
    assert descriptor is not None
    view = first.view(descriptor, ("src", 0))  # the first process dies holding it, unacknowledged
    pool.reader_exited("sink", 0)
    assert pool.held == 0
    # The replay: the same descriptor, the same bytes. The successor releases what it was never
    # dealt (and may release more: what was queued for the dead process, dropped after decoding).
    assert _read_and_release(pool, successor, descriptor) == 42
    assert _read_and_release(pool, successor, descriptor) == 42
    pool.unpin_below(A, 1)  # the successor acknowledged it
    # Back in the pool (not leaked by the counts below zero), on a fresh segment: a view of the
    # replayed one (here, the dead process's) never sees it change.
    again = _send(pool, 1, 7, lossless=False)
    assert again is not None and pool.stats()["slots"] == 1 and pool.held == 1
    assert (view == 42).all()
    # Its old segment is gone from /dev/shm at once (every edge of this pool is lossless): a
    # flow whose readers crash again and again does not fill it.
    old, new = (msgpack.unpackb(descriptor)[0] for descriptor in (descriptor, again))
    assert old != new and not os.path.exists(f"/dev/shm/{old}") and os.path.exists(f"/dev/shm/{new}")


def test_the_pool_stays_bounded_while_a_reader_does_not_acknowledge(pool_and_readers, monkeypatch) -> None:
    monkeypatch.setattr("flujo.shm.PIN_GRACE", 0.01)  # how long a sender waits before it grows the pool
    pool, reader, _ = pool_and_readers
    sent = [_send(pool, seq, seq) for seq in range(20)]
    for descriptor in sent:
        if descriptor is not None:
            _read_and_release(pool, reader, descriptor)  # released at once, never acknowledged
    stats = pool.stats()
    assert stats["slots"] == pool.limit == 4  # grown to its bound, no further
    assert sum(descriptor is not None for descriptor in sent) == 4 and stats["inline"] == 16
    assert stats["kept"] == 4
    pool.unpin_all()  # the sender ends (or, the same, everything is acknowledged): shared memory again
    assert stats["kept"] == 4 and pool.stats()["kept"] == 0
    assert _send(pool, 20, 20) is not None and pool.stats()["slots"] == 4
