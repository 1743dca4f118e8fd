"""Round trips of every message kind through the codec, as bytes and as zmq frames."""

from __future__ import annotations

import msgpack
import numpy as np
import pytest
import zmq

from flujo.protocol import (
    Codec,
    Control,
    MessageKind,
    ProtocolError,
    Status,
    control_frames,
    parse_control,
    parse_status,
    status_frame,
)


def test_item_with_arrays_round_trips_without_copies() -> None:
    codec = Codec("reader", 1)
    frame = np.arange(1080 * 1920 * 3, dtype=np.uint8).reshape(1080, 1920, 3)
    boxes = np.array([[1.5, 2.5, 3, 4]], dtype=np.float32)
    frames = codec.encode(7, {"frame": frame, "meta": {"boxes": boxes, "n": np.int64(3)}, "t": (1, 2)})
    assert len(frames) == 4  # header, body, one frame per array
    assert frames[2] is frame or np.shares_memory(frames[2], frame)  # sent by reference
    context = zmq.Context()
    try:
        sender, receiver = context.socket(zmq.PAIR), context.socket(zmq.PAIR)
        receiver.bind("inproc://codec")
        sender.connect("inproc://codec")
        sender.send_multipart(frames, copy=False)
        received = receiver.recv_multipart(copy=False)
        message = codec.decode(received)
        item = message.item
        assert (message.kind, message.seq, message.sender, message.replica) == (MessageKind.DATA, 7, "reader", 1)
        assert item["frame"].shape == (1080, 1920, 3) and item["frame"].dtype == np.uint8
        assert np.array_equal(item["frame"], frame)
        assert np.shares_memory(item["frame"], np.frombuffer(received[2].buffer, dtype=np.uint8))
        assert not item["frame"].flags.writeable
        assert item["meta"]["boxes"].tolist() == boxes.tolist() and item["meta"]["n"] == 3
        assert item["t"] == [1, 2]
    finally:
        context.destroy(linger=0)


@pytest.mark.parametrize("kind", [MessageKind.SKIP, MessageKind.EOS])
def test_markers_are_a_single_header_frame(kind: MessageKind) -> None:
    codec = Codec("n", 0)
    frames = codec.marker(kind, 42)
    assert len(frames) == 1
    assert msgpack.unpackb(frames[0]) == [1, int(kind), 42, "n", 0]
    message = codec.decode(frames)
    assert (message.kind, message.seq, message.item) == (kind, 42, None)


def test_non_contiguous_arrays_are_sent_as_their_values() -> None:
    codec = Codec("n", 0)
    view = np.arange(20).reshape(4, 5)[:, ::2]
    frames = [bytes(memoryview(f).cast("B")) if not isinstance(f, bytes) else f for f in codec.encode(0, view)]
    assert codec.decode(frames).item.tolist() == view.tolist()


def test_other_protocol_versions_are_refused_clearly() -> None:
    codec = Codec("n", 0)
    with pytest.raises(ProtocolError, match="protocol version 9 is not supported"):
        codec.decode([msgpack.packb([9, 0, 0, "x", 0]), msgpack.packb(1)])


def test_header_may_grow_without_breaking_readers() -> None:
    # The sixth field is the sender's generation (section 3); fields after it are ignored.
    codec = Codec("n", 0)
    header = msgpack.packb([1, 0, 3, "x", 2, 0, "a future field"])
    assert codec.decode([header, msgpack.packb("item")]).item == "item"


def test_values_msgpack_cannot_carry_are_refused() -> None:
    with pytest.raises(TypeError, match="cannot send a value of type object"):
        Codec("n", 0).encode(0, object())
    with pytest.raises(TypeError, match="arrays of Python objects"):
        Codec("n", 0).encode(0, np.array([object()]))


def test_control_and_status_round_trip() -> None:
    assert parse_control(control_frames(Control.RELEASED, "sink", 2, "in")) == (Control.RELEASED, ["sink", 2, "in"])
    assert parse_control([b"a-future-topic", msgpack.packb([])]) == (None, [])
    assert parse_status(status_frame(Status.ERROR, "n", 1, {"message": "m"})) == (
        Status.ERROR,
        "n",
        1,
        {"message": "m"},
    )


def test_a_batch_carries_consecutive_items_in_one_message() -> None:
    codec = Codec("src", 0)
    bodies = [codec.encode(seq, {"i": seq})[1] for seq in range(20, 40)]  # 20 items: the long array form
    frames = codec.batch(20, bodies)
    assert len(frames) == 2
    message = codec.decode(frames)
    assert (message.kind, message.seq) == (MessageKind.BATCH, 20)
    assert message.item == [{"i": seq} for seq in range(20, 40)]
    assert codec.decode(codec.batch(5, bodies[:3])).item == [{"i": 20}, {"i": 21}, {"i": 22}]  # short form
