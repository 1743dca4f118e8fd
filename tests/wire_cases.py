"""Malformed and forged data messages, for the unit table (tests/test_wire_check.py) and the
hostile end-to-end test (tests/test_hostile_wire.py).

Built for a port that reads ``source`` with ``senders`` replicas, every one of which has already
sent something (sequence numbers 0 up to well below AHEAD): each message then breaks exactly one
rule of flujo/wire_check.py. Messages whose header must pass (to reach the body checks) carry
sequence number AHEAD: ahead of any sender, within the allowed jump, and since they are refused
they move no sender's position.
"""

from __future__ import annotations

import msgpack

from flujo.wire_check import MAX_FRAMES, MAX_SEQ_ADVANCE

AHEAD = 10**8
FOUR = b"\x00\x01\x02\x03"
#: Cases too heavy to send thousands of times (the end-to-end test sends them a few times).
HEAVY = {"too many frames", "BATCH running past the jump bound"}


def ext(code: int, data) -> bytes:
    """A body holding one msgpack extension value (ext 8 format: any type code, -128..127)."""
    data = data if isinstance(data, bytes) else msgpack.packb(data)
    return b"\xc7" + bytes((len(data),)) + code.to_bytes(1, "big", signed=True) + data


def array_body(index=2, dtype="|u1", shape=(4,)) -> bytes:
    return ext(1, [index, dtype, list(shape) if isinstance(shape, tuple) else shape])


def bad_messages(source: str, senders: int) -> dict[str, tuple[list[bytes], str]]:
    """name -> (frames, the rule of flujo/wire_check.py it breaks)."""

    def h(version=1, kind=0, seq=AHEAD, sender=source, replica=0, *more) -> bytes:
        return msgpack.packb([version, kind, seq, sender, replica, *more])

    return {  # name -> (frames, the rule it breaks)
        "empty header frame": ([b""], "header"),
        "header not msgpack": ([b"\xc1\x00garbage"], "header"),
        "header truncated": ([h()[:-2], msgpack.packb(1)], "header"),
        "header an int": ([msgpack.packb(42)], "header"),
        "header a map": ([msgpack.packb({"v": 1})], "header"),
        "header of 4 fields": ([msgpack.packb([1, 0, AHEAD, source]), msgpack.packb(1)], "header"),
        "header over 4 KB": ([h(1, 0, AHEAD, source, 0, "x" * 5000), msgpack.packb(1)], "header"),
        "version 2": ([h(version=2), msgpack.packb(1)], "version"),
        "version as string": ([h(version="1"), msgpack.packb(1)], "version"),
        "version true": ([h(version=True), msgpack.packb(1)], "version"),
        "kind 9": ([h(kind=9), msgpack.packb(1)], "kind"),
        "kind -5": ([h(kind=-5), msgpack.packb(1)], "kind"),
        "kind as string": ([h(kind="0"), msgpack.packb(1)], "kind"),
        "kind nil": ([h(kind=None), msgpack.packb(1)], "kind"),
        "seq as string": ([h(seq=str(AHEAD)), msgpack.packb(1)], "seq"),
        "generation as string": ([h(1, 0, AHEAD, source, 0, "1"), msgpack.packb(1)], "generation"),
        "generation negative": ([h(1, 0, AHEAD, source, 0, -1), msgpack.packb(1)], "generation"),
        "seq float": ([h(seq=float(AHEAD)), msgpack.packb(1)], "seq"),
        "seq true": ([h(seq=True), msgpack.packb(1)], "seq"),
        "seq negative": ([h(seq=-1), msgpack.packb(1)], "seq"),
        "seq 2^64-1": ([h(seq=2**64 - 1), msgpack.packb(1)], "seq"),
        "EOS seq negative": ([h(kind=2, seq=-3)], "seq"),
        "seq 10^9 jump": ([h(seq=10**9), msgpack.packb(1)], "jump"),
        "SKIP seq jump": ([h(kind=1, seq=10**9)], "jump"),
        "seq repeated (0 again)": ([h(seq=0), msgpack.packb(1)], "order"),
        "seq backwards, last replica": ([h(seq=0, replica=senders - 1), msgpack.packb(1)], "order"),
        "SKIP backwards": ([h(kind=1, seq=0)], "order"),
        "sender unknown": ([h(sender="nobody"), msgpack.packb(1)], "sender"),
        "sender an int": ([h(sender=7), msgpack.packb(1)], "sender"),
        "sender nil": ([h(sender=None), msgpack.packb(1)], "sender"),
        "replica = senders": ([h(replica=senders), msgpack.packb(1)], "sender"),
        "replica -1": ([h(replica=-1), msgpack.packb(1)], "sender"),
        "replica as string": ([h(replica="0"), msgpack.packb(1)], "sender"),
        "EOS from nobody": ([h(kind=2, seq=0, sender="nobody", replica=7)], "sender"),
        "EOS from replica 7": ([h(kind=2, seq=0, replica=7)], "sender"),
        "PAUSE from nobody": ([h(kind=4, seq=0, sender="nobody")], "sender"),
        "DATA without body": ([h()], "frames"),
        "BATCH without body": ([h(kind=3)], "frames"),
        "SKIP with a body": ([h(kind=1), msgpack.packb(1)], "frames"),
        "EOS with a body": ([h(kind=2, seq=0), msgpack.packb(1)], "frames"),
        "body not msgpack": ([h(), b"\xc1"], "body"),
        "body empty": ([h(), b""], "body"),
        "body truncated": ([h(), msgpack.packb("a string")[:-2]], "body"),
        "body with trailing bytes": ([h(), msgpack.packb(1) + msgpack.packb(2)], "body"),
        "body 2000 levels deep": ([h(), b"\x91" * 2000 + b"\x00"], "body"),
        "body map with list key": ([h(), b"\x81\x91\x00\x00"], "body"),
        "body array claims 2^31 items": ([h(), b"\xdd\x7f\xff\xff\xff"], "body"),
        "ext type 5": ([h(), ext(5, b"xyz")], "ext"),
        "ext type -2": ([h(), ext(-2, b"xyz")], "ext"),
        "bad timestamp ext": ([h(), ext(-1, b"\x01\x02\x03")], "body"),
        "array meta not msgpack": ([h(), ext(1, b"\xc1"), FOUR], "array"),
        "array meta of 2 fields": ([h(), ext(1, [2, "|u1"]), FOUR], "array"),
        "array meta a map": ([h(), ext(1, {"i": 2}), FOUR], "array"),
        "array frame index 0": ([h(), array_body(index=0), FOUR], "array"),
        "array frame index 1": ([h(), array_body(index=1), FOUR], "array"),
        "array frame index -1": ([h(), array_body(index=-1), FOUR], "array"),
        "array frame index past end": ([h(), array_body(index=3), FOUR], "array"),
        "array frame index string": ([h(), array_body(index="2"), FOUR], "array"),
        "array frame used twice": (
            [h(), msgpack.packb([msgpack.ExtType(1, msgpack.packb([2, "|u1", [4]]))] * 2), FOUR],
            "array",
        ),
        "array frame unreferenced": ([h(), array_body(), FOUR, FOUR], "array"),
        "array frame missing": ([h(), array_body()], "array"),
        "dtype object": ([h(), array_body(dtype="|O"), FOUR * 2], "array"),
        "dtype unicode": ([h(), array_body(dtype="<U1", shape=(1,)), FOUR], "array"),
        "dtype void": ([h(), array_body(dtype="|V4", shape=(1,)), FOUR], "array"),
        "dtype datetime": ([h(), array_body(dtype="<M8[s]", shape=(1,)), FOUR * 2], "array"),
        "dtype structured": ([h(), array_body(dtype=[["a", "<u4"]], shape=(1,)), FOUR], "array"),
        "dtype an int": ([h(), array_body(dtype=5), FOUR], "array"),
        "shape negative": ([h(), array_body(shape=(-1,)), FOUR], "array"),
        "shape negative pair": ([h(), array_body(shape=(-2, -2)), FOUR], "array"),
        "shape too small for bytes": ([h(), array_body(shape=(2,)), FOUR], "array"),
        "shape too large for bytes": ([h(), array_body(shape=(1000, 1000)), FOUR], "array"),
        "shape not a list": ([h(), array_body(shape="4"), FOUR], "array"),
        "shape of floats": ([h(), array_body(shape=[4.0]), FOUR], "array"),
        "shape 40 dimensions": ([h(), array_body(shape=[1] * 40), b"\x00"], "array"),
        "shape with bytes not a multiple": ([h(), array_body(dtype="<f4", shape=(1,)), b"\x00\x01\x02"], "array"),
        "too many frames": ([h(), msgpack.packb(1), *[b""] * MAX_FRAMES], "frames"),
        "BATCH body a string": ([h(kind=3), msgpack.packb("abcdef")], "batch"),
        "BATCH body a map": ([h(kind=3), msgpack.packb({"a": 1})], "batch"),
        "BATCH body empty": ([h(kind=3), msgpack.packb([])], "batch"),
        "BATCH with an array": (
            [h(kind=3), msgpack.packb([msgpack.ExtType(1, msgpack.packb([2, "|u1", [4]]))])],
            "batch",
        ),
        "BATCH with array frames": ([h(kind=3), msgpack.packb([1]), FOUR], "frames"),
        "BATCH with ext type 5": ([h(kind=3), msgpack.packb([msgpack.ExtType(5, b"x")])], "ext"),
        # Its first number passes (within the jump of any sender's position), its last does not
        # while that sender is below a million.
        "BATCH running past the jump bound": ([h(kind=3, seq=MAX_SEQ_ADVANCE), msgpack.packb([0] * 1_000_000)], "jump"),
    }
