"""The wire format of shared-memory arrays (docs/PROTOCOL.md, section 16).

An array on a shared-memory edge travels as a descriptor in the message body instead of
a buffer frame: msgpack ext type 2 whose data is the msgpack array

    [segment, offset, dtype, shape, slot, generation, token]

Each slot is one POSIX shared-memory segment, ``/dev/shm/<segment>``, named

    flujo.<run id>.<node>.<replica>.<pid>.<slot>.<version>

and starting with a 64-byte header ``<8sQQQ``: magic, token (random per segment),
generation (bumped each time the slot is reused), capacity (payload bytes). Arrays start
at ``offset`` (at least 64). A reader hands back every descriptor it was given, once it is
done with the array, as a release message on the sender's release socket:

    msgpack array of [segment, generation, reader_node, reader_replica, change]

``change`` is -1 for a release; a node that sends a received array on announces each new
reader with +1 (to the segment's owner, before its own release of it).
"""

from __future__ import annotations

import functools
import os
import re
import struct
from pathlib import Path
from typing import TYPE_CHECKING, Any

import msgpack

if TYPE_CHECKING:  # numpy is imported where arrays are made or read: a node that never
    import numpy as np  # handles one starts without it (numpy is a third of a node's start-up)

SHM_EXT_CODE = 2
SHM_DIR = Path("/dev/shm")
HEADER = struct.Struct("<8sQQQ")  # magic, token, generation, capacity
HEADER_SIZE = 64  # arrays start 64-byte aligned
MAGIC = b"FLUJOSHM"
#: Arrays smaller than this go inline (a zmq frame): a shared-memory round trip costs more.
MIN_SHM_BYTES = 64 * 1024
#: dtype kinds a descriptor may name: numbers and booleans, never Python objects.
ARRAY_KINDS = frozenset("biufc?")
_NAME = re.compile(r"^flujo\.[A-Za-z0-9_]+\.[A-Za-z_][A-Za-z0-9_-]*\.\d+\.\d+\.\d+\.\d+$")


class DescriptorError(ValueError):
    """A descriptor that is malformed, forged or stale: the message is refused."""


def segment_prefix(run_id: str) -> str:
    return f"flujo.{run_id}."


def segment_name(run_id: str, node: str, replica: int, pid: int, slot: int, version: int) -> str:
    return f"flujo.{run_id}.{node}.{replica}.{pid}.{slot}.{version}"


def cleanup_flow_segments(flow_run_id: str) -> int:
    """Unlink every shared-memory segment of that flow run (whoever made it); returns how many.

    The launcher calls it when a run ends; anything that reaps a dead launcher's flow may
    call it too. Processes that still map a segment keep their mapping until they let go."""
    return _unlink_matching(segment_prefix(flow_run_id))


def cleanup_process_segments(flow_run_id: str, node: str, replica: int, pid: int) -> int:
    """Unlink the segments of one (dead) node process."""
    return _unlink_matching(f"{segment_prefix(flow_run_id)}{node}.{replica}.{pid}.")


def _unlink_matching(prefix: str) -> int:
    count = 0
    try:
        names = os.listdir(SHM_DIR)
    except FileNotFoundError:
        return 0
    for name in names:
        if name.startswith(prefix):
            try:
                os.unlink(SHM_DIR / name)
                count += 1
            except FileNotFoundError:
                pass
    return count


def pack_descriptor(
    segment: str, offset: int, dtype: str, shape: tuple[int, ...], slot: int, generation: int, token: int
) -> msgpack.ExtType:
    return msgpack.ExtType(SHM_EXT_CODE, msgpack.packb([segment, offset, dtype, list(shape), slot, generation, token]))


def unpack_descriptor(data: bytes, run_id: str) -> tuple[str, int, np.dtype, tuple[int, ...], int, int, int]:
    """Parse and check a descriptor's fields (not yet the segment): raises DescriptorError."""
    try:
        fields = msgpack.unpackb(data)
    except Exception as error:
        raise DescriptorError(f"shared-memory descriptor is not msgpack: {error}") from None
    if not isinstance(fields, list) or len(fields) != 7:
        raise DescriptorError("shared-memory descriptor must be a 7-element array")
    segment, offset, dtype_text, shape, slot, generation, token = fields
    if not isinstance(segment, str) or not _segment_of_run(segment, run_id):
        raise DescriptorError(f"shared-memory segment {segment!r} does not belong to this flow run")
    if not (_whole(offset) and _whole(slot) and _whole(generation) and _whole(token)) or offset < HEADER_SIZE:
        raise DescriptorError("shared-memory descriptor has a bad offset, slot, generation or token")
    dtype = _dtype(dtype_text) if isinstance(dtype_text, str) else None
    if dtype is None:
        raise DescriptorError(f"shared-memory descriptor has an unsupported dtype {dtype_text!r}")
    if not isinstance(shape, list) or len(shape) > 32 or not all(_whole(size) for size in shape):
        raise DescriptorError(f"shared-memory descriptor has a bad shape {shape!r}")
    return segment, offset, dtype, tuple(shape), slot, generation, token


# A reader sees the same few segment names and dtypes again and again: checking each once
# keeps a descriptor's parse to about a microsecond (bounded caches: a forger cannot grow them).
@functools.lru_cache(maxsize=1024)
def _segment_of_run(segment: str, run_id: str) -> bool:
    return bool(_NAME.match(segment)) and segment.startswith(segment_prefix(run_id))


@functools.lru_cache(maxsize=64)
def _dtype(text: str) -> np.dtype | None:
    """The numeric dtype ``text`` names, or None (unknown, or Python objects, strings...)."""
    import numpy as np  # a descriptor names an array: numpy is needed from here on

    try:
        dtype = np.dtype(text)
    except TypeError:
        return None
    return dtype if dtype.kind in ARRAY_KINDS else None


def release_frame(entries: list[list[Any]]) -> bytes:
    return msgpack.packb(entries)


def parse_releases(frame: bytes) -> list[tuple[str, int, str, int, int]]:
    """Well-formed release entries of one release message; the rest is ignored."""
    try:
        entries = msgpack.unpackb(frame)
    except Exception:
        return []
    if not isinstance(entries, list):
        return []
    return [
        tuple(entry)
        for entry in entries
        if isinstance(entry, list)
        and len(entry) == 5
        and isinstance(entry[0], str)
        and _whole(entry[1])
        and isinstance(entry[2], str)
        and _whole(entry[3])
        and entry[4] in (-1, 1)
    ]


def _whole(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0
