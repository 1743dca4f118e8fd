"""The per-item shortcuts of a cold hop (an item every 10 ms runs every step cold) check as much
as the long way: inline arrays' metadata kept parsed (flujo/wire_check.py), their extensions
kept made (flujo/protocol.py), a whole frame buffer's descriptor made without its address
(flujo/shm.py), and housekeeping's look at a socket before receiving (flujo/protocol.py)."""

from __future__ import annotations

import os
from pathlib import Path

import msgpack
import numpy as np
import pytest
import zmq

from flujo.protocol import Codec, readable
from flujo.wire_check import ARRAY_EXT_CODE, KNOWN_ARRAY_SHAPES, DataCheck, ProtocolError

pytestmark = pytest.mark.timeout(30)


def _header(seq: int) -> bytes:
    return msgpack.packb([1, 0, seq, "up", 0])


def _array_body(meta: list) -> bytes:
    return msgpack.packb({"a": msgpack.ExtType(ARRAY_EXT_CODE, msgpack.packb(meta))})


def test_kept_metadata_still_checks_each_frame() -> None:
    """Metadata parsed once still has its frame's size, index and single use checked per message."""
    check, good = DataCheck("up", 1), [2, "<f4", [2, 3]]
    array = check.body(0, 0, 0, [_header(0), _array_body(good), np.arange(6, dtype="<f4").tobytes()])["a"]
    assert array.shape == (2, 3) and array[1, 2] == 5 and not array.flags.writeable
    one_d = check.body(0, 1, 0, [_header(1), _array_body([2, "|u1", [8]]), bytes(range(8))])["a"]
    assert one_d.shape == (8,) and one_d[7] == 7 and not one_d.flags.writeable
    with pytest.raises(ProtocolError, match="needs 24 bytes, its frame has 20") as refused:
        check.body(0, 2, 0, [_header(2), _array_body(good), bytes(20)])  # the same metadata, a short frame
    assert refused.value.code == "array"
    with pytest.raises(ProtocolError, match="out of range"):
        check.body(0, 2, 0, [_header(2), _array_body(good)])  # no frame for it
    twice = msgpack.packb({"a": msgpack.ExtType(1, msgpack.packb(good)), "b": msgpack.ExtType(1, msgpack.packb(good))})
    with pytest.raises(ProtocolError, match="used twice"):
        check.body(0, 2, 0, [_header(2), twice, bytes(24)])
    with pytest.raises(ProtocolError, match="dtype"):
        check.body(0, 2, 0, [_header(2), _array_body([2, "O", [1]]), bytes(8)])
    assert check.body(0, 2, 0, [_header(2), _array_body(good), bytes(24)])["a"].sum() == 0  # the port goes on


def test_forged_metadata_cannot_grow_what_a_port_keeps() -> None:
    check = DataCheck("up", 1)
    for seq in range(3 * KNOWN_ARRAY_SHAPES):
        check.body(0, seq, 0, [_header(seq), _array_body([2, "|u1", [seq + 1]]), bytes(seq + 1)])
        assert len(check._metas) <= KNOWN_ARRAY_SHAPES


def test_kept_extensions_encode_like_fresh_ones() -> None:
    """The codec keeps inline extensions by frame, dtype and shape: the bytes are what packing
    each would give, and a second array in the same item refers to its own frame."""
    codec, check = Codec("up", 0), DataCheck("up", 1)
    for seq in range(3):
        frames = codec.encode(seq, {"x": np.full(4, seq, "<i8"), "y": np.ones((2, 2), "<f8")})
        meta = [
            msgpack.unpackb(part.data)
            for part in msgpack.unpackb(frames[1], ext_hook=lambda c, d: msgpack.ExtType(c, d)).values()
        ]
        assert meta == [[2, "<i8", [4]], [3, "<f8", [2, 2]]]
        item = codec.decode([*frames[:2], *(memoryview(array).tobytes() for array in frames[2:])], check).item
        assert item["x"].tolist() == [seq] * 4 and item["y"].tolist() == [[1.0, 1.0], [1.0, 1.0]]


def test_whole_and_partial_frame_buffers_name_their_own_bytes(tmp_path: Path) -> None:
    """A frame buffer sent whole (itself or a reshape of it) starts at the slot's data; a part of
    it at its own offset: the reader sees exactly the bytes sent either way."""
    from flujo.shm import SharedMemoryReader, SlotPool

    context = zmq.Context()
    run = f"cold{os.getpid()}"
    endpoint = f"ipc://{tmp_path / 'release'}"
    try:
        pool = SlotPool(context, run, "src", 0, endpoint, base=4)
        reader = SharedMemoryReader(context, run, "dst", 0, {"src"}, {"src.0": endpoint})
        try:
            buffer = pool.frame_buffer(1 << 20, np.uint8)
            buffer[:] = np.arange(1 << 20) % 251
            for sent in (
                buffer,
                buffer.reshape(1024, 1024),
                buffer[1 << 17 : 1 << 18],
                buffer.reshape(1024, 1024)[100:300],
            ):
                pool.start_message()
                ext = pool.pack(sent)
                assert ext is not None
                pool.settle(pool.take_packed())
                seen = reader.view(ext.data, ("src", 0))
                assert seen.shape == sent.shape and (seen == sent).all()
                del seen
        finally:
            pool.close()
            reader.close()
    finally:
        context.destroy(linger=0)
    assert not [name for name in os.listdir("/dev/shm") if name.startswith(f"flujo.{run}.")]


def test_readable_says_whether_a_message_waits(tmp_path: Path) -> None:
    context = zmq.Context()
    try:
        pull, push = context.socket(zmq.PULL), context.socket(zmq.PUSH)
        pull.bind(f"ipc://{tmp_path / 's'}")
        push.connect(f"ipc://{tmp_path / 's'}")
        assert not readable(pull)
        push.send(b"x")
        assert pull.poll(5000)
        assert readable(pull)
        pull.recv()
        assert not readable(pull)
    finally:
        context.destroy(linger=0)
