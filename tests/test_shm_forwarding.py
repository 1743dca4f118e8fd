"""In one process, no flow: a processor sending on arrays it received through shared memory
(flujo/shm.py). The descriptor it sends names exactly the bytes it sends, for the whole array
and for parts of it, and the segment's owner hears of the new reader and of the processor's
own release in one message, in that order."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import msgpack
import numpy as np
import pytest
import zmq

from flujo.shm import SharedMemoryReader, SlotPool
from flujo.shm_wire import parse_releases

pytestmark = pytest.mark.timeout(20)


@pytest.fixture
def trio(tmp_path: Path) -> Iterator[tuple[SlotPool, SharedMemoryReader, SlotPool, SharedMemoryReader]]:
    """An owner pool ("src"), a processor ("mid": reader and pool) and a last reader ("sink")."""
    context = zmq.Context()
    run = f"t{os.getpid()}"
    owners = {"src.0": f"ipc://{tmp_path}/src", "mid.0": f"ipc://{tmp_path}/mid"}
    source = SlotPool(context, run, "src", 0, owners["src.0"], 4)
    middle_reader = SharedMemoryReader(context, run, "mid", 0, {"src"}, owners)
    middle = SlotPool(context, run, "mid", 0, owners["mid.0"], 4, middle_reader)
    sink = SharedMemoryReader(context, run, "sink", 0, {"src", "mid"}, owners)
    try:
        yield source, middle_reader, middle, sink
    finally:
        for closing in (sink, middle_reader):
            closing.close()
        middle.close()
        source.close()
        context.destroy(linger=0)
    assert not [name for name in os.listdir("/dev/shm") if name.startswith(f"flujo.{run}.")]


def _send(pool: SlotPool, array: np.ndarray, reader: tuple[str, int]) -> bytes:
    pool.start_message()
    descriptor = pool.pack(array)
    assert descriptor is not None
    packed = pool.take_packed()
    pool.dealt(packed, reader)
    pool.settle(packed)
    return descriptor.data


def test_forwarded_descriptors_name_the_bytes_sent_on(trio) -> None:
    source, middle_reader, middle, sink = trio
    frame = source.frame_buffer((240, 320, 3), np.uint8)
    frame[...] = (np.arange(frame.size, dtype=np.uint32) % 251).astype(np.uint8).reshape(frame.shape)
    received = middle_reader.view(_send(source, frame, ("mid", 0)), ("src", 0))
    assert not received.flags.writeable
    # The whole frame, a band of rows, the frame flattened, the flat frame from an offset.
    for part in (received, received[100:200], received.reshape(-1), received.reshape(-1)[4096:]):
        seen = sink.view(_send(middle, part, ("sink", 0)), ("mid", 0))
        assert seen.shape == part.shape and np.array_equal(seen, part)
    assert middle.copies == 0  # every one went on by reference


def test_a_processor_announces_its_reader_and_releases_in_one_message(trio) -> None:
    source, middle_reader, middle, _ = trio
    frame = source.frame_buffer(1 << 17, np.uint8)
    listener = source.release_socket
    received_descriptor = _send(source, frame, ("mid", 0))
    received = middle_reader.view(received_descriptor, ("src", 0))
    _send(middle, received, ("sink", 0))
    assert not middle_reader.pending or all(entry[-1] == 1 for _, entry in middle_reader.pending)
    del received  # the processor is done with it: its release joins the announcement
    middle_reader.flush()
    message = listener.recv()
    changes = [(node, change) for _, _, node, _, change in parse_releases(message)]
    assert changes == [("sink", 1), ("mid", -1)]
    assert listener.poll(100) == 0  # nothing else: one message per item
    assert {entry[0] for entry in msgpack.unpackb(message)} == {msgpack.unpackb(received_descriptor)[0]}


def test_releases_wait_a_moment_or_for_a_batch(trio, monkeypatch: pytest.MonkeyPatch) -> None:
    """A reader's releases are due RELEASE_DELAY_S after the first of them (sent at once, they
    woke the owner while the next node woke for the item), or at once when RELEASE_BATCH gather."""
    source, _, _, sink = trio
    clock = [1000.0]
    monkeypatch.setattr("flujo.shm.time.monotonic", lambda: clock[0])
    frame = source.frame_buffer(1 << 17, np.uint8)
    assert sink.release_wait() is None  # nothing held back
    sink.view(_send(source, frame, ("sink", 0)), ("src", 0))  # dropped at once: released
    assert sink.release_wait() == pytest.approx(SharedMemoryReader.RELEASE_DELAY_S)
    clock[0] += SharedMemoryReader.RELEASE_DELAY_S / 2
    assert sink.release_wait() == pytest.approx(SharedMemoryReader.RELEASE_DELAY_S / 2)
    clock[0] += SharedMemoryReader.RELEASE_DELAY_S
    assert sink.release_wait() == 0.0
    sink.flush()
    assert sink.release_wait() is None and source.release_socket.poll(5000)
    for _ in range(SharedMemoryReader.RELEASE_BATCH):
        sink.view(_send(source, frame, ("sink", 0)), ("src", 0))
    assert sink.release_wait() == 0.0  # a full batch goes without waiting


def test_a_descriptor_seen_before_is_checked_again_against_its_segment(trio) -> None:
    """A reader keeps recent descriptors parsed (a frame buffer sent again and again sends the
    same bytes), but the segment's header and the sender are checked for every message: the
    same bytes after the slot was reused are refused as stale, and from a stranger at all."""
    from flujo.shm_wire import DescriptorError

    source, middle_reader, middle, sink = trio
    frame = source.frame_buffer(1 << 17, np.uint8)
    descriptor = _send(source, frame, ("mid", 0))
    assert _send(source, frame, ("mid", 0)) == descriptor  # sent again: the same bytes
    received = middle_reader.view(descriptor, ("src", 0))
    # Sent on whole and unchanged, it goes with the very descriptor that came.
    assert _send(middle, received, ("sink", 0)) == descriptor
    sink.view(descriptor, ("mid", 0))  # (dropped at once)
    del frame, received
    middle_reader.view(descriptor, ("src", 0))  # parsed once already, checked again, dropped at once
    with pytest.raises(DescriptorError, match="may not send"):
        middle_reader.view(descriptor, ("intruder", 0))
    middle_reader.flush()
    sink.flush()
    while source.held:  # every hold released: the slot is free
        assert source.release_socket.poll(5000)
        source.collect_releases()
    source.frame_buffer(1 << 17, np.uint8)  # the slot again, in its next generation
    with pytest.raises(DescriptorError, match="stale"):
        middle_reader.view(descriptor, ("src", 0))
