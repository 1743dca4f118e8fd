"""What a receiver accepts: every frame from a socket is checked here before anything of it is used.

Socket-free, so every rule is unit-tested on bytes (tests/test_wire_check.py). The socket
side (flujo/protocol.py ``Codec.receive``, the launcher, the agent) calls these checks and
drops what they refuse. docs/PROTOCOL.md, section 14, is the published form of these rules.

A data message is refused when:
    * it has the wrong number of frames for its kind (DATA and BATCH: a body; markers: none);
    * its header is not ``[1, kind, seq, sender_node, sender_replica, ...]`` with those types;
    * the sender is not the port's upstream node, or its replica is not below ``senders``;
    * its sequence number does not move forward for that sender replica, or jumps further
      than MAX_SEQ_ADVANCE past it, or comes after that replica's end of stream;
    * its body is not msgpack, or nests deeper than msgpack allows (1024 levels);
    * an array is not extension type 1 ``[frame, dtype, shape]`` with a frame index in range
      and used once, a dtype from DTYPES and a non-negative shape whose size is exactly the
      frame's byte count; a frame no array refers to is refused too;
    * a BATCH body is not a non-empty list of plain items (no arrays, no extensions).
"""

from __future__ import annotations

import functools
import math
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from enum import StrEnum
from typing import TYPE_CHECKING, Any, TypeVar

import msgpack

if TYPE_CHECKING:  # numpy is imported where arrays are made or read: a node that never
    import numpy as np  # handles one starts without it (numpy is a third of a node's start-up)

from flujo import numpy_once
from flujo.launch.agent_wire import AgentReply, AgentRequest
from flujo.shm_wire import SHM_EXT_CODE, DescriptorError
from flujo.snapshots import snapshot_report_ok

PROTOCOL_VERSION = 1
ARRAY_EXT_CODE = 1
DATA, SKIP, EOS, BATCH, PAUSE, REPLAY = range(6)  # header kinds (flujo.protocol.MessageKind)
#: Sequence numbers are non-negative and below this (fits a signed 64-bit integer with room).
SEQ_LIMIT = 1 << 62
#: The restart jump (launch/launcher.py SEQ_JUMP): a producer restarted after a crash numbers
#: its items from this far past the last number it reported.
RESTART_SEQ_JUMP = 1 << 24
#: How far one sender replica's sequence number may move forward from one message to its next:
#: a restart jump plus everything that replica could legitimately skip in between (items dealt
#: to other replicas, items dropped by a realtime edge) with a wide margin. Anything further is a
#: forgery or a bug; accepted, it would make every later legitimate number look old (refused),
#: so a reorder or zip port would wait for ever.
MAX_SEQ_ADVANCE = 16 * RESTART_SEQ_JUMP
#: A header is five short fields (and whatever later versions append): far below this.
MAX_HEADER_BYTES = 4096
#: Frames of one data message: header, body, and one per array of the item.
MAX_FRAMES = 1 << 16
MAX_ARRAY_DIMENSIONS = 32
#: Inline arrays' metadata a port keeps parsed, and a codec keeps packed (flujo/protocol.py), at
#: most this many shapes each (cleared when full: forged metadata cannot grow them).
KNOWN_ARRAY_SHAPES = 64
#: Plain numeric and bool dtypes, as numpy's type strings, in either byte order.
DTYPES: frozenset[str] = frozenset(
    order + code
    for code in ("b1", "i1", "u1", "i2", "u2", "i4", "u4", "i8", "u8", "f2", "f4", "f8", "c8", "c16")
    for order in (("|",) if code in ("b1", "i1", "u1") else ("<", ">"))
)
_KIND_NAMES = ("DATA", "SKIP", "EOS", "BATCH", "PAUSE", "REPLAY")
_unpack = msgpack.unpackb
_ENDED = SEQ_LIMIT  # a replica's floor after its end of stream: no number is above it


@functools.cache
def _dtype(name: str) -> np.dtype:
    """The dtype of one of DTYPES (numpy is imported by the first array that arrives: a node that
    never receives one starts without it)."""
    import numpy as np

    return np.dtype(name)


class ProtocolError(Exception):
    """A message that does not follow the protocol: refused.

    ``code`` names the rule it broke (one word, for counting and logging once per sender);
    ``sender`` is who the message claims to come from, as far as it could be read."""

    def __init__(self, code: str, reason: str, sender: str = "?") -> None:
        super().__init__(reason)
        self.code, self.reason, self.sender = code, reason, sender


class StaleMessage(ProtocolError):
    """A message from an older process of a sender replica than one already heard from: what a
    dead process's connection still carried. Dropped and counted (``stale``), not a fault."""


def describe_sender(node: Any, replica: Any) -> str:
    """A printable, bounded name for a claimed sender (it may be anything)."""
    name = node if type(node) is str else repr(node)
    name = name if len(name) <= 40 else name[:37] + "..."
    return f"{name}.{replica!r}"[:60]


class DataCheck:
    """Checks the messages of one input port, given the port's configuration.

    ``header`` and ``body`` are called on every message (the per-item path), so the usual case
    costs a few comparisons; explanations are built only when a message is refused.
    """

    def __init__(self, source: str, senders: int) -> None:
        self.source, self.senders = source, senders
        # Per sender replica: the next number must be above the floor and at most the ceiling.
        self._floor = [-1] * senders
        self._ceiling = [SEQ_LIMIT - 1] * senders  # nothing heard yet: any number
        # Per sender replica: the newest process heard from (header field 6; absent: 0). What an
        # older one's connection still brings after that is stale (section 3).
        self._generation = [0] * senders
        self._frames: Sequence[Any] = ()  # of the message being decoded, when it has array frames
        self._used: set[int] = set()
        self._batch = False
        self._ext_hook = self._extension  # bound once: it is passed for every item
        self._metas: dict[bytes, tuple[Any, np.dtype, tuple[int, ...], int]] = {}  # see _array_meta
        self.shm_reader: Any = None  # maps shared-memory descriptors (flujo/shm.py) when the port accepts them
        self._replica = 0  # sender replica of the message being decoded

    def generation(self, replica: int) -> int:
        """The newest process of that sender replica heard from (0 before any)."""
        return self._generation[replica]

    def header(self, frame: Any) -> tuple[int, int, str, int]:
        """(kind, seq, sender, replica) of a header frame from a legitimate sender, in order."""
        try:
            header = _unpack(frame) if len(frame) <= MAX_HEADER_BYTES else None
        except Exception as error:  # msgpack raises several types, all meaning "not msgpack"
            raise ProtocolError("header", f"header is not msgpack ({type(error).__name__})") from None
        if type(header) is not list or len(header) < 5:
            raise self._bad_header(frame, header)
        version, kind, seq, sender, replica = header[:5]
        generation = header[5] if len(header) > 5 else 0
        # The usual case in few steps (every check is exact: 1 == True, so types are compared too);
        # the explanations are worked out below only when something is wrong.
        if (
            version == 1
            and kind == 0
            and sender == self.source
            and type(seq) is int
            and type(replica) is int
            and type(version) is int
            and type(kind) is int
            and 0 <= replica < self.senders
            and generation == self._generation[replica]
            and self._floor[replica] < seq <= self._ceiling[replica]
        ):
            return 0, seq, sender, replica
        return self._unusual_header(version, kind, seq, sender, replica, generation)

    def _unusual_header(
        self, version: Any, kind: Any, seq: Any, sender: Any, replica: Any, generation: Any = 0
    ) -> tuple[int, int, str, int]:
        """A header that is not a DATA in order from a known sender: checked rule by rule."""
        if version != PROTOCOL_VERSION or type(version) is not int:
            raise ProtocolError(
                "version",
                f"protocol version {_short(version)} is not supported (this node speaks {PROTOCOL_VERSION})",
                describe_sender(sender, replica),
            )
        if type(kind) is not int or not 0 <= kind <= REPLAY:
            raise ProtocolError("kind", f"unknown message kind {_short(kind)}", describe_sender(sender, replica))
        if sender != self.source or type(replica) is not int or not 0 <= replica < self.senders:
            raise self._stranger(sender, replica)
        if type(seq) is not int:
            raise ProtocolError(
                "seq", f"sequence number {_short(seq)} is not an integer", describe_sender(sender, replica)
            )
        if generation != self._generation[replica]:
            self._new_generation(generation, sender, replica)
        if kind in (EOS, PAUSE, REPLAY):
            if not 0 <= seq < SEQ_LIMIT:
                raise ProtocolError("seq", f"sequence number {seq} out of range", describe_sender(sender, replica))
        elif not self._floor[replica] < seq <= self._ceiling[replica]:
            raise self._out_of_order(kind, seq, sender, replica)
        return kind, seq, sender, replica

    def _new_generation(self, generation: Any, sender: str, replica: int) -> None:
        """A header from another process of that sender replica than the last one heard from: an
        older one's is stale; a newer one (a successor) may number lower than its predecessor."""
        if type(generation) is not int or not 0 <= generation < SEQ_LIMIT:
            raise ProtocolError(
                "generation", f"generation {_short(generation)} is not a valid number", describe_sender(sender, replica)
            )
        if generation < self._generation[replica]:
            raise StaleMessage(
                "stale",
                f"from process {generation}, after process {self._generation[replica]}",
                describe_sender(sender, replica),
            )
        self._generation[replica] = generation
        if self._floor[replica] != _ENDED:
            self._floor[replica], self._ceiling[replica] = -1, SEQ_LIMIT - 1

    @staticmethod
    def _bad_header(frame: Any, header: Any) -> ProtocolError:
        if len(frame) > MAX_HEADER_BYTES:
            return ProtocolError("header", f"header of {len(frame)} bytes (at most {MAX_HEADER_BYTES})")
        return ProtocolError("header", f"header is not an array of 5 fields: {_short(header)}")

    def body(self, kind: int, seq: int, replica: int, frames: Sequence[Any]) -> Any:
        """The item (DATA) or list of items (BATCH) of a message whose header passed; arrays are
        read-only views on their frames. Only then does the sender's position move."""
        self._replica = replica
        if kind == DATA and len(frames) == 2:  # the usual case, kept short: an item without arrays
            body = frames[1]
            try:  # (an array in it refers to a frame out of range: refused by the extension hook)
                item = _unpack(
                    body if type(body) is bytes else _buffer(body), ext_hook=self._ext_hook, strict_map_key=False
                )
            except Exception as error:
                raise self._undecodable(error, replica) from None
            last = seq
        else:
            item, last = self._body_with_frames(kind, seq, replica, frames)
        self._floor[replica] = last  # inline: this runs for every item
        ceiling = last + MAX_SEQ_ADVANCE
        self._ceiling[replica] = ceiling if ceiling < SEQ_LIMIT else SEQ_LIMIT - 1
        return item

    def _body_with_frames(self, kind: int, seq: int, replica: int, frames: Sequence[Any]) -> tuple[Any, int]:
        """A BATCH, or a DATA with array frames: (item, the last sequence number it carries)."""
        count = len(frames)
        if kind == BATCH:
            if count != 2:
                raise ProtocolError(
                    "frames",
                    f"BATCH with {count} frames (a BATCH never carries arrays)",
                    describe_sender(self.source, replica),
                )
            self._batch = True
        elif count > MAX_FRAMES:
            raise ProtocolError(
                "frames", f"{count} frames (at most {MAX_FRAMES})", describe_sender(self.source, replica)
            )
        self._frames, self._used = frames, set()
        try:
            item = _unpack(_buffer(frames[1]), ext_hook=self._ext_hook, strict_map_key=False)
        except Exception as error:
            raise self._undecodable(error, replica) from None
        finally:
            self._frames, self._batch = (), False
        if kind == BATCH:
            if type(item) is not list or not item:
                raise ProtocolError(
                    "batch",
                    f"BATCH body is not a non-empty list: {_short(item)}",
                    describe_sender(self.source, replica),
                )
            last = seq + len(item) - 1
            if last > self._ceiling[replica]:
                raise self._out_of_order(kind, last, self.source, replica)
            return item, last
        if len(self._used) != count - 2:
            raise ProtocolError(
                "array",
                f"{count - 2 - len(self._used)} of {count - 2} array frames referred to by no array",
                describe_sender(self.source, replica),
            )
        return item, seq

    def _undecodable(self, error: Exception, replica: int) -> ProtocolError:
        if isinstance(error, ProtocolError):  # from the extension hook
            error.sender = describe_sender(self.source, replica)
            return error
        return ProtocolError(
            "body",
            f"body is not msgpack ({type(error).__name__}: {str(error)[:80]})",
            describe_sender(self.source, replica),
        )

    def marker(self, kind: int, seq: int, replica: int) -> None:
        """A SKIP, EOS, PAUSE or REPLAY marker passed: where its sender stands now."""
        if kind == SKIP:
            self._advance(replica, seq)
        elif kind == EOS:
            self._floor[replica] = _ENDED  # nothing more from it: its end of stream is final
        elif kind in (PAUSE, REPLAY) and self._floor[replica] != _ENDED:
            # A graceful restart: its successor's first number may be lower than this one's last.
            # A replay: it starts again below what it sent before (what this process refuses).
            self._floor[replica], self._ceiling[replica] = -1, SEQ_LIMIT - 1

    def _advance(self, replica: int, seq: int) -> None:
        self._floor[replica] = seq
        ceiling = seq + MAX_SEQ_ADVANCE
        self._ceiling[replica] = ceiling if ceiling < SEQ_LIMIT else SEQ_LIMIT - 1

    def _extension(self, code: int, data: bytes) -> np.ndarray:
        if code == SHM_EXT_CODE and self.shm_reader is not None:  # also in a BATCH: descriptors are small
            try:
                return self.shm_reader.view(data, (self.source, self._replica))
            except DescriptorError as error:
                raise ProtocolError("shm", str(error), describe_sender(self.source, self._replica)) from None
        if code != ARRAY_EXT_CODE:
            raise ProtocolError("ext", f"msgpack extension type {code} (only 1, an array, is allowed)")
        if self._batch:
            raise ProtocolError("batch", "array in a BATCH (a BATCH carries plain items only)")
        meta = self._metas.get(data)
        if meta is None:
            meta = self._array_meta(data)
        index, dtype, shape, nbytes = meta
        frames = self._frames
        if type(index) is not int or not 2 <= index < len(frames):
            raise ProtocolError(
                "array",
                f"array frame index {_short(index)} out of range (this message has array frames 2..{len(frames) - 1})",
            )
        if index in self._used:
            raise ProtocolError("array", f"array frame {index} used twice")
        self._used.add(index)
        buffer = _buffer(frames[index])
        size = len(buffer) if not isinstance(buffer, memoryview) else buffer.nbytes
        if nbytes != size:
            raise ProtocolError(
                "array",
                f"array of shape {list(shape)} and dtype {dtype.str} needs {nbytes} bytes, its frame has {size}",
            )
        np = numpy_once.np or numpy_once.load()

        array = np.frombuffer(buffer, dtype=dtype)
        if len(shape) != 1:
            array = array.reshape(shape)
        array.flags.writeable = False  # one contract whatever the transport: copy before writing
        return array

    def _array_meta(self, data: bytes) -> tuple[Any, np.dtype, tuple[int, ...], int]:
        """An inline array's metadata ``[frame, dtype, shape]``, checked as far as it depends on its
        bytes alone: (frame index, dtype, shape, bytes it needs). Kept for the next array with
        the same bytes (a sender sends the same shapes again and again, and parsing them cold
        costs more than the rest of the array); the frame index is checked per message."""
        try:
            meta = msgpack.unpackb(data)
        except Exception:
            raise ProtocolError("array", "array metadata is not msgpack") from None
        if type(meta) is not list or len(meta) != 3:
            raise ProtocolError("array", f"array metadata is not [frame, dtype, shape]: {_short(meta)}")
        index, dtype_name, shape = meta
        if type(dtype_name) is not str or dtype_name not in DTYPES:
            raise ProtocolError("array", f"array dtype {_short(dtype_name)} is not a plain numeric or bool type")
        dtype = _dtype(dtype_name)
        if (
            type(shape) is not list
            or len(shape) > MAX_ARRAY_DIMENSIONS
            or not all(type(size) is int and size >= 0 for size in shape)
        ):
            raise ProtocolError("array", f"array shape {_short(shape)} is not a list of non-negative ints")
        parsed = (index, dtype, tuple(shape), math.prod(shape) * dtype.itemsize)
        if len(self._metas) >= KNOWN_ARRAY_SHAPES:
            self._metas.clear()  # (bounded: forged metadata cannot grow it)
        self._metas[data] = parsed
        return parsed

    def _stranger(self, sender: Any, replica: Any) -> ProtocolError:
        who = describe_sender(sender, replica)
        if sender != self.source:
            return ProtocolError(
                "sender", f"sender {_short(sender)} is not this port's upstream node {self.source!r}", who
            )
        return ProtocolError(
            "sender", f"sender replica {_short(replica)} does not exist ({self.source!r} has {self.senders})", who
        )

    def _out_of_order(self, kind: int, seq: int, sender: str, replica: int) -> ProtocolError:
        who, floor, name = describe_sender(sender, replica), self._floor[replica], _KIND_NAMES[kind]
        if not 0 <= seq < SEQ_LIMIT:
            return ProtocolError("seq", f"sequence number {seq} out of range (0 to 2^62)", who)
        if floor == _ENDED:
            return ProtocolError("ended", f"{name} {seq} after that sender's end of stream", who)
        if seq <= floor:
            return ProtocolError("order", f"{name} {seq} does not move forward (last from that sender: {floor})", who)
        return ProtocolError(
            "jump",
            f"{name} {seq} jumps {seq - floor} past that sender's last ({floor}; at most {MAX_SEQ_ADVANCE})",
            who,
        )


def _buffer(frame: Any) -> Any:
    """Zero-copy view of a zmq.Frame, or the bytes themselves."""
    return frame.buffer if hasattr(frame, "buffer") else frame


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


class RefusalLog:
    """Logs refused messages: the first of each (place, sender, rule) with its reason, then only counts.

    Bounded whatever a peer sends: at most ``max_keys`` distinct (place, sender, rule) are ever
    logged (random sender names cannot flood the log), and at most ``per_second`` lines a second;
    lines over that rate wait (at most ``max_keys`` of them) for the next refusal in a later second.
    """

    def __init__(
        self, where: str, write: Callable[[str], None] | None = None, max_keys: int = 64, per_second: int = 20
    ) -> None:
        self.where = where  # prefixes each line, when not empty
        self._write_line = write  # default: the process's stderr
        self._seen: set[tuple[str, str, str]] = set()
        self._waiting: list[str] = []  # lines over the rate, for the next second
        self._max_keys, self._per_second = max_keys, per_second
        self._window, self._lines = 0, 0
        self._silenced = False
        self.counts: dict[str, int] = {}  # rule -> messages refused

    def refused(self, error: ProtocolError, place: str = "") -> None:
        self.counts[error.code] = self.counts.get(error.code, 0) + 1
        now = int(time.monotonic())
        if now != self._window:
            self._window, self._lines = now, 0
            while self._waiting and self._lines < self._per_second:
                self._emit(self._waiting.pop(0))
        key = (place, error.sender, error.code)
        if key in self._seen:
            return
        if len(self._seen) >= self._max_keys:
            if not self._silenced:
                self._silenced = True
                self._write("more kinds of refused messages: counted, no longer logged")
            return
        self._seen.add(key)
        at = f" on {place}" if place else ""
        line = (
            f"refused a message{at} from {error.sender} ({error.code}): {error.reason}; "
            "further ones like it are counted, not logged"
        )
        if self._lines < self._per_second:
            self._emit(line)
        else:
            self._waiting.append(line)

    def _emit(self, line: str) -> None:
        self._lines += 1
        self._write(line)

    def _write(self, line: str) -> None:
        line = f"{self.where}: {line}" if self.where else line
        try:
            if self._write_line is not None:
                self._write_line(line)
            else:
                sys.stderr.write(line + "\n")
                sys.stderr.flush()
        except (OSError, ValueError):
            pass  # nowhere to log: the count still says it


# -- control plane: the same care for the launcher's and the agent's sockets -------------------------
def _shape_ok(payload: Any, types: tuple[type, ...]) -> bool:
    """A list whose first fields have exactly these types (later fields are ignored)."""
    return (
        type(payload) is list
        and len(payload) >= len(types)
        and all(type(value) is kind for value, kind in zip(payload, types, strict=False))
    )


_NODE_REPLICA_GENERATION = (str, int, int)
CONTROL_PAYLOADS: dict[bytes, tuple[type, ...]] = {
    b"start": (),
    b"released": (str, int, str),
    b"gone": (str, int),
    b"hold": _NODE_REPLICA_GENERATION,
    b"align": (str, int, int, int),
    b"resume": _NODE_REPLICA_GENERATION,
    b"dismiss": _NODE_REPLICA_GENERATION,
    b"exited": (str, int),
    b"moved": (str, int, str, str),
    b"kept": (str, int, int, int),
}


def check_control(frames: Sequence[Any]) -> tuple[bytes, list[Any]] | None:
    """(topic, payload) of a well-formed control message of a known topic; None for an unknown
    topic (ignored, as the protocol says). Raises ProtocolError for a malformed one."""
    if len(frames) != 2:
        raise ProtocolError("frames", f"control message of {len(frames)} frames (2 expected)", "launcher")
    topic = bytes(frames[0])
    if topic != b"stop" and topic not in CONTROL_PAYLOADS:
        return None
    try:
        payload = msgpack.unpackb(frames[1])
    except Exception:
        raise ProtocolError("control", f"{_short(topic)} payload is not msgpack", "launcher") from None
    if topic == b"stop":
        ok = type(payload) is list and all(type(name) is str for name in payload)
    else:
        ok = _shape_ok(payload, CONTROL_PAYLOADS[topic])
        if ok and topic == b"gone" and len(payload) >= 4:
            ok = _shape_ok(payload, (str, int, str, int))
    if not ok:
        raise ProtocolError(
            "control", f"{topic.decode(errors='replace')} payload {_short(payload)} is malformed", "launcher"
        )
    return topic, payload


def check_reply_frame(frame: bytes, kind: str, count: int, noun: str) -> list[Any]:
    """The first ``count`` fields of a frame a reader sends back to its sender,
    ``[version, kind, ...]`` (an acknowledgement, section 9.2; a credit, section 18), once its
    shape, version and kind are checked; raises ProtocolError (rule ``kind``, or "version")."""
    try:
        fields = msgpack.unpackb(frame, use_list=True, max_bin_len=0, max_ext_len=0, strict_map_key=True)
    except Exception as error:
        raise ProtocolError(kind, f"not msgpack: {type(error).__name__}") from None
    if type(fields) is not list or len(fields) < count:  # later versions may append fields
        raise ProtocolError(kind, f"not an array of at least {count} fields")
    if fields[0] != PROTOCOL_VERSION:
        raise ProtocolError("version", f"{noun} of protocol version {fields[0]!r}, this is {PROTOCOL_VERSION}")
    if fields[1] != kind:
        raise ProtocolError(kind, f"kind {fields[1]!r}, expected {kind!r}")
    return fields[:count]


def _counters(value: Any) -> bool:
    return type(value) is dict and all(type(key) is str and type(count) in (int, float) for key, count in value.items())


_STAT_MAPS = ("received", "sent", "dropped_sent", "rejected_by")
_STAT_NUMBERS = ("items_in", "items_out", "busy", "errors", "late", "next_seq", "dropped", "rejected")


def _stats_ok(value: Any) -> bool:
    """A stats map: the counters the launcher computes with have their types (numbers, and maps
    of numbers per port); other keys are a later version's, and ignored."""
    if type(value) is not dict:
        return False
    return all(type(value.get(key, 0)) in (int, float) for key in _STAT_NUMBERS) and all(
        _counters(value.get(key, {})) for key in _STAT_MAPS
    )


def _status_payload_ok(kind: str, payload: Any) -> bool:
    if kind in ("ready", "ending"):
        return True
    if kind == "released":
        return payload is None or (type(payload) is list and all(type(port) is str for port in payload))
    if kind == "finished":
        return payload is None or _stats_ok(payload)
    if kind == "stats":
        return _stats_ok(payload)
    if kind == "error":
        return (
            type(payload) is dict and type(payload.get("message")) is str and type(payload.get("traceback", "")) is str
        )
    if kind == "drained":
        return (
            type(payload) is dict
            and _stats_ok(payload.get("stats"))
            and type(payload.get("readers")) is list
            and all(_shape_ok(reader, (str, int, str)) for reader in payload["readers"])
        )
    if kind == "position":
        return _shape_ok(payload, (str, int, str, int))
    if kind == "pause-seen":
        return _shape_ok(payload, (str, str, int))
    if kind == "snapshot":
        return snapshot_report_ok(payload)
    return False


STATUS_KINDS = (
    "ready",
    "released",
    "ending",
    "finished",
    "error",
    "stats",
    "drained",
    "position",
    "pause-seen",
    "snapshot",
)


def check_status(frames: Sequence[Any]) -> tuple[str, str, int, Any]:
    """(kind, node, replica, payload) of a well-formed status report; raises ProtocolError."""
    if len(frames) != 1:
        raise ProtocolError("frames", f"status message of {len(frames)} frames (1 expected)")
    try:
        report = msgpack.unpackb(frames[0])
    except Exception:
        raise ProtocolError("status", "status message is not msgpack") from None
    if type(report) is not list or len(report) < 4:
        raise ProtocolError("status", f"status message is not [kind, node, replica, payload]: {_short(report)}")
    kind, node, replica, payload = report[:4]
    who = describe_sender(node, replica)
    if type(node) is not str or type(replica) is not int:
        raise ProtocolError("status", f"status from {who}: node is not a string or replica not an int", who)
    if kind not in STATUS_KINDS:
        raise ProtocolError("status", f"unknown status kind {_short(kind)}", who)
    if not _status_payload_ok(kind, payload):
        raise ProtocolError("status", f"{kind} payload {_short(payload)} is malformed", who)
    return kind, node, replica, payload


def check_command(frames: Sequence[Any]) -> dict[str, Any]:
    """A request on the launcher's command socket: a map whose fields have the types
    ``flujo-launch stop/status/restart`` send; raises ProtocolError."""
    if len(frames) != 1:
        raise ProtocolError("frames", f"command of {len(frames)} frames (1 expected)")
    try:
        request = msgpack.unpackb(frames[0])
    except Exception:
        raise ProtocolError("command", "command is not msgpack") from None
    if type(request) is not dict or type(request.get("command")) is not str:
        raise ProtocolError("command", f'command is not a map with a "command" string: {_short(request)}')
    nodes = request.get("nodes")
    if nodes is not None and not (type(nodes) is list and all(type(name) is str for name in nodes)):
        raise ProtocolError("command", f'"nodes" is not a list of names: {_short(nodes)}')
    if "node" in request and type(request["node"]) is not str:
        raise ProtocolError("command", f'"node" is not a name: {_short(request["node"])}')
    return request


# -- agent channel (docs/PROTOCOL.md section 10) -------------------------------------------------------
def _str_map(value: Any) -> bool:
    return type(value) is dict and all(type(key) is str and type(text) is str for key, text in value.items())


def _argv_ok(value: Any) -> bool:
    return value is None or (type(value) is list and all(type(word) is str for word in value))


_AGENT_REQUESTS: dict[AgentRequest, Callable[[Any], bool]] = {  # launcher -> agent: kind -> payload check
    AgentRequest.HELLO: lambda p: type(p) is dict and type(p.get("flow")) is str and type(p.get("token", "")) is str,
    AgentRequest.PORTS: lambda p: (
        type(p) is dict and type(p.get("address")) is str and type(p.get("count")) is int and 0 <= p["count"] <= 4096
    ),
    AgentRequest.SPAWN: lambda p: (
        type(p) is dict
        and type(p.get("token")) is int
        and type(p.get("label")) is str
        and _argv_ok(p.get("argv"))
        and _str_map(p.get("env"))
        and type(p.get("cwd")) is str
    ),
    AgentRequest.SIGNAL: lambda p: (
        type(p) is dict and type(p.get("token")) is int and type(p.get("signum")) is int and 0 < p["signum"] < 65
    ),
    AgentRequest.HEARTBEAT: lambda p: True,
    AgentRequest.BYE: lambda p: True,
}
_AGENT_REPLIES: dict[AgentReply, Callable[[Any], bool]] = {  # agent -> launcher
    AgentReply.WELCOME: lambda p: type(p) is dict,
    AgentReply.REFUSED: lambda p: type(p) is dict and type(p.get("error")) is str,
    AgentReply.PORTS: lambda p: type(p) is list and all(type(port) is int and 0 < port < 65536 for port in p),
    AgentReply.STARTED: lambda p: type(p) is dict and type(p.get("token")) is int and type(p.get("pid")) is int,
    AgentReply.FAILED: lambda p: type(p) is dict and type(p.get("token")) is int and type(p.get("error")) is str,
    AgentReply.EXIT: lambda p: type(p) is dict and type(p.get("token")) is int and type(p.get("code")) is int,
    AgentReply.LINE: lambda p: type(p) is dict and type(p.get("label")) is str and type(p.get("text")) is str,
    AgentReply.HEARTBEAT: lambda p: True,
}
_Kind = TypeVar("_Kind", bound=StrEnum)


def _check_agent_message(
    frame: Any, checks: Mapping[_Kind, Callable[[Any], bool]], vocabulary: type[_Kind], who: str
) -> tuple[_Kind, Any]:
    try:
        message = msgpack.unpackb(frame)
    except Exception:
        raise ProtocolError("agent", "message is not msgpack", who) from None
    if type(message) is not list or len(message) < 2 or type(message[0]) is not str:
        raise ProtocolError("agent", f"message is not [kind, payload]: {_short(message)}", who)
    try:
        kind, payload = vocabulary(message[0]), message[1]
    except ValueError:
        raise ProtocolError("agent", f"unknown message kind {_short(message[0])}", who) from None
    if not checks[kind](payload):
        raise ProtocolError("agent", f"{kind} payload {_short(payload)} is malformed", who)
    return kind, payload


def check_agent_request(frames: Sequence[Any]) -> tuple[bytes, AgentRequest, Any]:
    """(identity, kind, payload) of a request on the agent's ROUTER socket; raises ProtocolError."""
    if len(frames) != 2:
        raise ProtocolError(
            "frames", f"request of {len(frames) - 1} frames (1 expected)", _short(bytes(frames[0])) if frames else "?"
        )
    identity = bytes(frames[0])
    return (identity, *_check_agent_message(frames[1], _AGENT_REQUESTS, AgentRequest, _short(identity)))


def check_agent_reply(frame: Any, who: str) -> tuple[AgentReply, Any]:
    """(kind, payload) of a message from an agent; raises ProtocolError."""
    return _check_agent_message(frame, _AGENT_REPLIES, AgentReply, who)
