"""Every frame Flujo puts on the wire is built and parsed here (see docs/PROTOCOL.md).

Data edges carry multipart messages:

    frame 0   header   msgpack array [version, kind, seq, sender_node, sender_replica]
    frame 1   body     msgpack item (DATA only); arrays appear as ext type 1 = [frame, dtype, shape]
    frame 2.. buffers  raw bytes of each array, in the order the body refers to them

The control channel (launcher PUB -> nodes SUB) carries [topic, msgpack payload];
the status channel (nodes PUSH -> launcher PULL) carries one msgpack array
[kind, node, replica, payload].
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import msgpack
import zmq

from flujo import numpy_once
from flujo.wire_check import (
    ARRAY_EXT_CODE,
    BATCH,
    DATA,
    KNOWN_ARRAY_SHAPES,
    MAX_FRAMES,
    PROTOCOL_VERSION,
    DataCheck,
    ProtocolError,
    check_control,
    check_status,
    describe_sender,
)

#: Environment variable through which the launcher hands a node its JSON configuration.
CONFIG_ENV = "FLUJO_NODE_CONFIG"


class MessageKind(enum.IntEnum):
    """What a data-edge message carries (header field 1)."""

    DATA = 0  # an item
    SKIP = 1  # "no item for this sequence number": lets zip joins and reordering advance
    EOS = 2  # end of stream from this sender on this edge
    BATCH = 3  # several items with consecutive sequence numbers from seq on (small items, busy queue)
    PAUSE = 4  # this sender sends nothing more here until further notice (a graceful restart, section 8)
    REPLAY = 5  # a lossless edge: this sender's replay to a new reader process follows (section 9.3)


_KINDS = tuple(MessageKind)  # header value -> kind, without the cost of an enum call per message
# Plain ints: on the per-message path, flag-enum arithmetic costs more than the call it decorates.
SNDMORE, NOBLOCK, RCVMORE, EVENTS, POLLIN = (
    int(flag) for flag in (zmq.SNDMORE, zmq.NOBLOCK, zmq.RCVMORE, zmq.EVENTS, zmq.POLLIN)
)
_get_option = zmq.backend.Socket.get  # without the wrapper that turns results into enums
#: Without the wrapper that handles routing ids and groups (data edges use neither): a Python
#: call less per frame, and a low-rate hop sends every frame cold.
_send = zmq.backend.Socket.send


def readable(socket: zmq.Socket) -> bool:
    """A message waits on ``socket``. The cheap look before a non-blocking receive: one that
    finds nothing raises zmq.Again, which costs about four times as much, and housekeeping
    looks at several sockets after every item at a low rate."""
    return bool(_get_option(socket, EVENTS) & POLLIN)  # type: ignore[operator]  # (EVENTS is an int, not bytes)


class Control(bytes, enum.Enum):
    """Topics the launcher publishes on the control channel."""

    START = b"start"  # payload []: every node is ready, producers may produce
    STOP = b"stop"  # payload [node, ...]: these nodes stop reading/producing and finish
    RELEASED = b"released"  # payload [node, replica, port]: that replica reads no more from that port
    GONE = b"gone"  # payload [node, replica(, to_node, to_replica)]: count that sender as ended (it exited),
    # for every reader, or only for the named replica (a restarted reader whose sender already finished)
    HOLD = b"hold"  # payload [node, replica, generation]: senders pause that replica; that process drains
    ALIGN = b"align"  # payload [node, replica, generation, seq]: senders of that held zip replica pause
    # after seq, the highest position they reported (until then they send nothing past their own)
    RESUME = b"resume"  # payload [node, replica, generation]: its successor runs: senders send to it again
    DISMISS = b"dismiss"  # payload [node, replica, generation]: every reader has that drained process's
    # pause marker: it may exit
    EXITED = b"exited"  # payload [node, replica]: that process ended (any way): its shared-memory holds return
    MOVED = b"moved"  # payload [node, replica, port, endpoint]: that replica's input port binds there now
    # (restarted on another machine): its senders connect there instead
    KEPT = b"kept"  # payload [node, replica, generation, through]: the launcher keeps a snapshot of that
    # process through item `through`: it may acknowledge upstream through it (section 9.6)


class Status(enum.StrEnum):
    """What a node reports to the launcher on the status channel."""

    READY = "ready"  # sockets are bound and connected, node opened
    RELEASED = "released"  # payload [port, ...]: this replica will read no more from these ports
    ENDING = "ending"  # its stream or inputs ended: closing now (the launcher's stop grace period starts)
    FINISHED = "finished"  # end of stream sent on every output
    ERROR = "error"  # payload {"message", "traceback"}: user code failed
    STATS = "stats"  # payload {counter: value}
    DRAINED = "drained"  # payload {"stats", "readers": [[node, replica, port], ...]}: a held replica took
    # every item its senders sent before pausing, closed, and sent a pause marker to those readers
    POSITION = "position"  # payload [node, replica, port, seq]: the highest sequence number this sender
    # has sent (or batched) to that held zip replica's port; it sends nothing further until "align"
    PAUSE_SEEN = "pause-seen"  # payload [port, sender_node, sender_replica]: that sender's pause marker arrived
    SNAPSHOT = "snapshot"  # payload [through, packed state]: user state after item `through`, acknowledged
    # upstream once the launcher answers "kept"


def identity_topic(node: str, replica: int) -> bytes:
    """The control subscription by which the launcher sees that a replica's SUB is live."""
    return f"hello:{node}.{replica}".encode()


@dataclass(slots=True)
class Message:
    """A decoded data-edge message."""

    kind: MessageKind
    seq: int
    sender: str
    replica: int
    item: Any = None


class Codec:
    """Encodes and decodes data messages; one per node (it reuses its packer)."""

    def __init__(self, node: str, replica: int, max_message: int | None = None, generation: int = 0) -> None:
        self._node, self._replica = node, replica
        # A successor's headers carry its generation (a sixth field), so that readers can tell its
        # messages from what its dead predecessor's connection still brings (section 3).
        self._generation = generation
        #: The smallest frame limit of this node's readers: a larger frame would be dropped with
        #: its connection there, so encoding it fails here, loudly.
        self._max_message = max_message if max_message is not None else 1 << 62
        self._buffers: list[Any] = []
        self._extensions: dict[tuple[int, str, tuple[int, ...]], msgpack.ExtType] = {}  # see _pack_extension
        self._packer = msgpack.Packer(default=self._pack_extension, use_bin_type=True)
        self._header_packer = msgpack.Packer(use_bin_type=True)
        # Shared memory (flujo/shm.py): the pool arrays go into on shared-memory edges, and
        # what maps the descriptors this node accepts. None: inline frames only.
        self.shm_pool: Any = None
        self.shm_reader: Any = None
        self._use_shm = False

    # -- encoding -----------------------------------------------------------------------
    def header(self, kind: MessageKind, seq: int) -> bytes:
        if self._generation:
            return self._header_packer.pack(
                (PROTOCOL_VERSION, int(kind), seq, self._node, self._replica, self._generation)
            )
        return self._header_packer.pack((PROTOCOL_VERSION, int(kind), seq, self._node, self._replica))

    def encode(self, seq: int, item: Any, shm: bool = False) -> list[Any]:
        """Frames for one item; array buffers are referenced, not copied. ``shm``: large arrays
        go as shared-memory descriptors (the pool is set)."""
        self._buffers = []
        self._use_shm = shm
        body = self._packer.pack(item)
        if len(body) > self._max_message:
            raise ValueError(
                f"an item of {len(body)} bytes (without its arrays) is over the readers' max_message "
                f"of {self._max_message} bytes (raise it in the manifest)"
            )
        return [self.header(MessageKind.DATA, seq), body, *self._buffers]

    def batch(self, first_seq: int, bodies: list[bytes]) -> list[bytes]:
        """One message carrying the items whose encoded bodies are given (no arrays), in order:
        a BATCH, or the DATA message of a lone item."""
        count = len(bodies)
        if count == 1:
            return [self.header(MessageKind.DATA, first_seq), bodies[0]]
        prefix = bytes((0x90 | count,)) if count < 16 else b"\xdc" + count.to_bytes(2, "big")  # msgpack array
        return [self.header(MessageKind.BATCH, first_seq), prefix + b"".join(bodies)]

    def marker(self, kind: MessageKind, seq: int) -> list[bytes]:
        """Frames of a SKIP, EOS, PAUSE or REPLAY marker."""
        return [self.header(kind, seq)]

    def _pack_extension(self, value: Any) -> Any:
        # msgpack calls this only for values it cannot pack itself; numpy is imported by the first
        # array (flujo/numpy_once.py), so a node that never sends one starts without it.
        np = numpy_once.np or numpy_once.load()

        if isinstance(value, np.ndarray):
            if value.dtype.hasobject:
                raise TypeError("numpy arrays of Python objects cannot be sent; use a numeric dtype")
            if self._use_shm:
                descriptor = self.shm_pool.pack(value)
                if descriptor is not None:
                    return descriptor
            array = np.ascontiguousarray(value)
            if array.nbytes > self._max_message:
                raise ValueError(
                    f"an array of {array.nbytes} bytes is over the readers' max_message of "
                    f"{self._max_message} bytes (raise it in the manifest: [flow] max_message)"
                )
            self._buffers.append(array)
            # The same arrays go again and again (a camera's frames, a fixed-size payload): their
            # extensions are made once (packing one cold costs more than the rest of the array).
            key = (len(self._buffers) + 1, array.dtype.str, array.shape)
            extension = self._extensions.get(key)
            if extension is None:
                if len(self._extensions) >= KNOWN_ARRAY_SHAPES:
                    self._extensions.clear()
                extension = self._extensions[key] = msgpack.ExtType(ARRAY_EXT_CODE, msgpack.packb(key))
            return extension
        if isinstance(value, np.generic):
            return value.item()
        raise TypeError(
            f"cannot send a value of type {type(value).__name__}: items are msgpack values and numpy arrays"
        )

    # -- decoding -----------------------------------------------------------------------
    def receive(self, socket: zmq.Socket, check: DataCheck, flags: int = 0) -> Message:
        """Receive, check (flujo/wire_check.py) and decode one message: header and body as bytes
        (small), arrays in place.

        Raises zmq.Again when nothing arrived (NOBLOCK, or the socket's receive timeout), and
        ProtocolError for a refused message, every frame of which has then been taken off the socket.
        """
        first = socket.recv(flags, copy=False)  # a frame knows whether more follows: cheaper than RCVMORE
        header = first.bytes
        try:
            kind, seq, sender, replica = check.header(header)
            if kind in (DATA, BATCH):
                if not first.more:  # never take the next message's first frame as a body
                    raise ProtocolError(
                        "frames", f"{_KINDS[kind].name} without a body frame", describe_sender(sender, replica)
                    )
                frames: list[Any] = [header, socket.recv(NOBLOCK)]  # once a message's first part is here, all of it is
                while _get_option(socket, RCVMORE) and len(frames) <= MAX_FRAMES:
                    frames.append(socket.recv(NOBLOCK, copy=False))
                item = check.body(kind, seq, replica, frames)
            else:
                if first.more:
                    raise ProtocolError(
                        "frames",
                        f"{_KINDS[kind].name} marker with more than one frame",
                        describe_sender(sender, replica),
                    )
                check.marker(kind, seq, replica)
                item = None
        except ProtocolError:
            _discard_rest(socket)
            raise
        return Message(_KINDS[kind], seq, sender, replica, item)

    def decode(self, frames: Sequence[Any], check: DataCheck | None = None) -> Message:
        """Check and parse frames (bytes or zmq.Frame); arrays are views on the received frames.
        Without a port's ``check``, any sender named in the header is believed."""
        if not frames:
            raise ProtocolError("frames", "a message without frames")
        check = check or _believing(_buffer(frames[0]))
        kind, seq, sender, replica = check.header(_buffer(frames[0]))
        if kind in (DATA, BATCH):
            if len(frames) < 2:
                raise ProtocolError(
                    "frames", f"{_KINDS[kind].name} without a body frame", describe_sender(sender, replica)
                )
            item = check.body(kind, seq, replica, frames)
        else:
            if len(frames) > 1:
                raise ProtocolError(
                    "frames", f"{_KINDS[kind].name} marker with more than one frame", describe_sender(sender, replica)
                )
            check.marker(kind, seq, replica)
            item = None
        return Message(_KINDS[kind], seq, sender, replica, item)


def _believing(header: Any) -> DataCheck:
    """A check for whoever the header names as its sender (tools and tests decode without a port)."""
    try:
        fields = msgpack.unpackb(header)
        if type(fields[4]) is int and 0 <= fields[4] < 1024:
            return DataCheck(fields[3], fields[4] + 1)
    except Exception:
        pass
    return DataCheck("", 0)


def _discard_rest(socket: zmq.Socket) -> None:
    """Take the remaining frames of a refused message, so the next receive starts a message."""
    while _get_option(socket, RCVMORE):
        socket.recv(NOBLOCK, copy=False)


def send_message(socket: zmq.Socket, frames: Sequence[Any], flags: int = 0) -> None:
    """Send one message. Header and body are copied (cheaper than tracking small buffers);
    array frames go by reference. Raises zmq.Again with NOBLOCK before anything is sent."""
    last = len(frames) - 1
    if last == 0:
        _send(socket, frames[0], flags)
        return
    _send(socket, frames[0], flags | SNDMORE)  # after the first part, the rest cannot block
    for index in range(1, last):
        _send(socket, frames[index], flags | SNDMORE, copy=type(frames[index]) is bytes)
    _send(socket, frames[last], flags, copy=type(frames[last]) is bytes)


def _buffer(frame: Any) -> Any:
    """Zero-copy view of a zmq.Frame, or the bytes themselves."""
    return frame.buffer if hasattr(frame, "buffer") else frame


# -- control and status ---------------------------------------------------------------------
def control_frames(topic: Control, *payload: Any) -> list[bytes]:
    return [topic.value, msgpack.packb(list(payload))]


def parse_control(frames: Sequence[Any]) -> tuple[Control | None, list[Any]]:
    """(topic, payload); topic is None for topics this version does not know (ignore them).
    Raises ProtocolError for a malformed message of a known topic."""
    checked = check_control(frames)
    if checked is None:
        return None, []
    return Control(checked[0]), checked[1]


def status_frame(kind: Status, node: str, replica: int, payload: Any = None) -> bytes:
    return msgpack.packb([kind.value, node, replica, payload])


def parse_status(frame: bytes) -> tuple[Status, str, int, Any]:
    """A status report; raises ProtocolError for a malformed one."""
    kind, node, replica, payload = check_status([frame])
    return Status(kind), node, replica, payload
