"""Shared memory for arrays between nodes on one host: the sender's slot pool and the reader's maps.

One pool per node replica (not per edge): a result is encoded once and dealt to every
output edge, so one slot serves a fan-out, counted once per reader that got it. Each slot
is its own segment (flujo/shm_wire.py), created when first needed and grown when an array
does not fit, so an idle or fast flow maps little memory.

Life of a slot: free -> taken (by ``frame_buffer`` or to copy an array in) -> sent (one
hold per reader replica it was dealt to) -> free again once every hold is released *and*
no array of the sender's own still points into it. Readers release by a message on the
sender's release socket when the last numpy view of the array dies (a finalizer on the
view's base), so an array kept past the call stays valid: its slot stays pinned.

The pool holds ``base`` slots (what the output edges' queues hold: send and receive
high-water marks, per reader replica; plus two), and may grow to twice
that while readers pin frames; when even those are taken for ``PIN_GRACE`` seconds, an
array goes inline (copied into a zmq frame) and ``frame_buffer`` hands out ordinary memory:
a reader keeping frames can slow its sender, never deadlock it.

A reader whose process exits (the launcher publishes "exited") gives its holds back; such
slots are retired (unlinked, remade under a new name) rather than reused, since a view of
them may still live in a process downstream.

On a lossless edge (docs/PROTOCOL.md, section 9.3) a slot is also *kept*: pinned until the
reader acknowledges the message that names it, not only until it released its views
(flujo/slot_pins.py), so a replay to a crashed reader's successor resends the same descriptor
and the successor maps the same bytes. Such a pool retires every slot in use when a reader
exits: the successor's views of them stay valid whatever it keeps. Release counts of a reader that
was replaced no longer balance (its successor releases what it was replayed; what was queued
for the dead process is dropped after decoding): a slot is therefore free when no reader
holds it *positively*; a count below zero only ever waits for an announcement (below) while
the announcer's own hold is still counted, and counts start afresh when the slot is reused.

A processor that sends on an array it received (a shared-memory view from upstream) sends
the same descriptor on, and first tells the segment's owner that each new reader holds it
too (a release with count +1, on the same socket as its own later release, so the owner
never sees the slot free in between); those readers release to the owner directly. A frame
crosses a chain of nodes without a copy, and no node waits on another's releases.
"""

from __future__ import annotations

import contextlib
import functools
import math
import mmap
import os
import signal
import sys
import time
import weakref
from collections import deque
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

import msgpack
import zmq

if TYPE_CHECKING:  # numpy is imported where arrays are made or read: a node that never
    import numpy as np  # handles one starts without it (numpy is a third of a node's start-up)

from flujo import numpy_once
from flujo.shm_wire import (
    HEADER,
    HEADER_SIZE,
    MAGIC,
    MIN_SHM_BYTES,
    SHM_DIR,
    SHM_EXT_CODE,
    DescriptorError,
    pack_descriptor,
    parse_releases,
    release_frame,
    segment_name,
    unpack_descriptor,
)
from flujo.slot_pins import PinKey, SlotPins

#: Seconds a sender waits for a slot beyond ``base`` (pinned frames) before it grows the pool
#: or, at twice ``base``, falls back to inline frames.
PIN_GRACE = 0.25
PAGE = mmap.PAGESIZE
Waiter = Callable[[Iterable[zmq.Socket]], None]
ReaderKey = tuple[str, int]  # (reader node, reader replica)


def _root(array: np.ndarray) -> np.ndarray:
    """The array that owns the buffer every view of ``array`` points into."""
    np = numpy_once.np or numpy_once.load()

    while isinstance(array.base, np.ndarray):
        array = array.base
    return array


def _address(array: np.ndarray) -> int:
    return array.__array_interface__["data"][0]


def _whole(array: np.ndarray, root: np.ndarray) -> bool:
    """A C-contiguous ``array`` is all of ``root`` (itself, or a reshape or dtype view of it): it
    starts where ``root`` does. Asked before ``_address``, which builds a dict and is the costliest
    step of a cold pack (a producer at a low rate packs every frame cold)."""
    return (array is root or array.base is root) and array.nbytes == root.nbytes


class _Slot:
    """One segment of the pool."""

    __slots__ = (
        "address",
        "anchor",
        "capacity",
        "described",
        "generation",
        "holders",
        "index",
        "kept",
        "local",
        "mmap",
        "name",
        "retire",
        "sending",
        "token",
        "version",
        "view",
    )

    def __init__(self, index: int) -> None:
        self.index, self.version = index, 0
        self.name = ""
        self.mmap: mmap.mmap | None = None
        self.view: memoryview | None = None
        self.address = self.capacity = self.token = self.generation = 0
        self.local = 0  # the sender's own live arrays in it (0 or 1: one per take)
        self.anchor: weakref.ref[Any] | None = None  # that array's base: frees the slot when it dies
        self.sending = False  # in the message being dealt: holds are not counted yet
        self.holders: dict[ReaderKey, int] = {}
        self.retire = False  # a reader that held it exited: a fresh segment before reuse
        self.kept = False  # named by a message a lossless edge keeps for a replay (flujo/slot_pins.py)
        #: ((generation, offset, dtype, shape), descriptor) of the array last sent from it
        self.described: tuple[tuple[Any, ...], msgpack.ExtType] | None = None

    @property
    def free(self) -> bool:
        holders = self.holders
        return (
            not self.local
            and not self.sending
            and not self.kept
            and (not holders or max(holders.values()) <= 0)  # (see the module docstring)
        )


class _Forwarded:
    """A received shared-memory array being sent on: its readers are announced to the owner."""

    __slots__ = ("descriptor", "root")

    def __init__(self, root: np.ndarray, descriptor: tuple[Any, ...]) -> None:
        self.root, self.descriptor = root, descriptor  # root: keeps our own hold until settled


class _Described:
    """A descriptor a reader received, parsed and checked as far as its bytes go (the segment's
    header is checked for every message)."""

    __slots__ = (
        "_ext",
        "count",
        "data",
        "dtype",
        "generation",
        "nbytes",
        "offset",
        "owner",
        "segment",
        "shape",
        "slot",
        "token",
    )

    def __init__(
        self,
        data: bytes,
        segment: str,
        offset: int,
        dtype: np.dtype,
        shape: tuple[int, ...],
        slot: int,
        generation: int,
        token: int,
        owner: str,
    ) -> None:
        self.data, self.segment, self.offset, self.dtype, self.shape = data, segment, offset, dtype, shape
        self.slot, self.generation, self.token, self.owner = slot, generation, token, owner
        self.count = math.prod(shape)  # (Python ints: no overflow for a forged shape)
        self.nbytes = self.count * dtype.itemsize
        self._ext: msgpack.ExtType | None = None

    @property
    def ext(self) -> msgpack.ExtType:
        """The descriptor as received, to send the whole array on unchanged."""
        if self._ext is None:
            self._ext = msgpack.ExtType(SHM_EXT_CODE, self.data)
        return self._ext


class SlotPool:
    """A node replica's shared-memory slots for the arrays it sends (see the module docstring)."""

    def __init__(
        self,
        context: zmq.Context,
        run_id: str,
        node: str,
        replica: int,
        release_endpoint: str,
        base: int,
        reader: SharedMemoryReader | None = None,
        unlink_retired: bool = False,
    ) -> None:
        self._run_id, self._node, self._replica = run_id, node, replica
        # Every edge lossless: a retired slot's old segment goes when the slot is reused (every
        # reader it went to acknowledged it: no replay will name it), not at close, so a flow whose
        # readers crash again and again does not fill /dev/shm with them.
        self._unlink_retired = unlink_retired
        self._pid = os.getpid()
        self.base, self.limit = base, 2 * base
        self._slots: list[_Slot] = []
        self._by_name: dict[str, _Slot] = {}
        # The most recently freed slot first: its pages are mapped and likely still in the caches, so
        # a steady flow reuses a few warm slots instead of touching every slot of the pool in turn
        # (a 4 MB slot touched for the first time costs a thousand page faults, about 0.5 ms).
        self._free: deque[_Slot] = deque()
        self._by_root: dict[int, _Slot] = {}  # id(root array's base) -> slot, while the sender's array lives
        self._packed: list[Any] = []  # slots and forwarded arrays in the message being encoded
        self._reader = reader
        self.release_socket = context.socket(zmq.PULL)
        self.release_socket.rcvhwm = 0  # releases are tiny and must never be dropped
        self.release_socket.linger = 0
        self.release_socket.bind(release_endpoint)
        self.wait: Waiter = lambda sockets: None  # set by the runtime: polls, applying commands meanwhile
        self._retired: list[str] = []  # segments of retired slots, unlinked at close
        self._exited: set[ReaderKey] = set()  # readers whose process ended (until they release again)
        self._pins: SlotPins[Any] = SlotPins()  # what lossless edges keep for replays, until acknowledged
        self._starved = False  # every slot stayed pinned through the last wait: do not wait again
        # until a release comes (a reader keeping frames would otherwise cost a wait per item)
        self.inline_fallbacks = 0  # arrays sent inline because every slot was pinned (or no room)
        self.no_room = False  # /dev/shm refused a segment once (said once on stderr)
        self.copies = 0  # arrays copied into a slot (not born there)

    # -- getting a slot -------------------------------------------------------------------
    def frame_buffer(self, shape: tuple[int, ...] | int, dtype: Any = "uint8") -> np.ndarray:
        """A writable array in a free slot; send it as (part of) an item and it crosses without a copy."""
        np = numpy_once.np or numpy_once.load()

        dtype = np.dtype(dtype)
        shape = (shape,) if isinstance(shape, int) else tuple(shape)
        nbytes = math.prod(shape) * dtype.itemsize
        slot = self._take(nbytes) if nbytes >= MIN_SHM_BYTES else None
        if slot is None:
            return np.empty(shape, dtype)
        return self._local_array(slot, nbytes, dtype).reshape(shape)

    def _local_array(self, slot: _Slot, nbytes: int, dtype: np.dtype) -> np.ndarray:
        np = numpy_once.np or numpy_once.load()

        assert slot.view is not None
        array = np.frombuffer(slot.view[HEADER_SIZE : HEADER_SIZE + nbytes], dtype=dtype)
        slot.local = 1
        key = id(array.base)
        self._by_root[key] = slot
        # Kept on the slot (one array of the sender's at a time): a weak reference's callback costs
        # a tenth of weakref.finalize, and this runs for every frame a producer makes.
        slot.anchor = weakref.ref(array.base, functools.partial(self._local_gone, slot, slot.generation, key))
        return array

    def _local_gone(self, slot: _Slot, generation: int, key: int, _ref: Any = None) -> None:
        if self._by_root.get(key) is slot:
            del self._by_root[key]
        if slot.generation == generation:
            slot.local = 0
            if slot.free:
                self._free.append(slot)

    def _take(self, nbytes: int) -> _Slot | None:
        """A free slot of at least ``nbytes``, waiting for readers' releases while all are taken;
        None when every slot stayed pinned (the caller falls back to ordinary memory)."""
        self.collect_releases()
        slot = self._pop_free()
        if slot is None and len(self._slots) < self.base:
            slot = self._new_slot()
        deadline = None
        while slot is None:
            now = time.monotonic()
            deadline = deadline or now + PIN_GRACE
            if now >= deadline or self._starved:
                if len(self._slots) >= self.limit:
                    self._starved = True
                    self.inline_fallbacks += 1
                    return None
                slot = self._new_slot()
                break
            self.wait([self.release_socket])
            self.collect_releases()
            slot = self._pop_free()
        if slot.retire:  # its segment may still be named in descriptors in flight: unlinked at close
            slot.retire = False
            if self._unlink_retired:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(SHM_DIR / slot.name)
            else:
                self._retired.append(slot.name)
            self._by_name.pop(slot.name, None)
            slot.name, slot.view, slot.mmap, slot.capacity = "", None, None, 0
        slot.holders.clear()  # counts of the previous generation (its releases are ignored from now on)
        if slot.capacity < nbytes:
            try:
                self._remap(slot, nbytes)
            except OSError as error:  # no room in /dev/shm: this array goes inline
                if not self.no_room:
                    print(
                        f"flujo: shared memory unavailable ({error.strerror}); sending arrays inline",
                        file=sys.stderr,
                        flush=True,
                    )
                self.no_room = True
                self.inline_fallbacks += 1
                self._free.append(slot)
                return None
        slot.generation += 1
        HEADER.pack_into(slot.mmap, 0, MAGIC, slot.token, slot.generation, slot.capacity)  # type: ignore[arg-type]
        return slot

    def _pop_free(self) -> _Slot | None:
        while self._free:
            slot = self._free.pop()
            if slot.free:  # (a slot may be queued twice; skip the stale entry)
                return slot
        return None

    def _new_slot(self) -> _Slot:
        slot = _Slot(len(self._slots))
        self._slots.append(slot)
        return slot

    def _remap(self, slot: _Slot, nbytes: int) -> None:
        """Give the slot a fresh segment of at least ``nbytes`` (also to retire a reclaimed one)."""
        import numpy as np

        self._unmap(slot)
        slot.version += 1
        slot.name = segment_name(self._run_id, self._node, self._replica, self._pid, slot.index, slot.version)
        size = -(-(HEADER_SIZE + nbytes) // PAGE) * PAGE
        path = SHM_DIR / slot.name
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_RDWR, 0o600)
        try:
            # Reserve the memory now: a full /dev/shm (a container's 64 MB) then fails here,
            # not as a SIGBUS when the array is written.
            os.posix_fallocate(fd, 0, size)
            slot.mmap = mmap.mmap(fd, size)
        except OSError:
            os.unlink(path)
            slot.name = ""
            raise
        finally:
            os.close(fd)
        slot.view = memoryview(slot.mmap)
        slot.address = _address(np.frombuffer(slot.view, np.uint8, count=1)) + HEADER_SIZE
        slot.capacity = size - HEADER_SIZE
        # 63 random bits from the OS, as secrets.randbits would give (secrets costs every node 4 ms to import).
        slot.token = int.from_bytes(os.urandom(8), "big") >> 1
        self._by_name[slot.name] = slot

    def _unmap(self, slot: _Slot) -> None:
        if not slot.name:
            return
        self._by_name.pop(slot.name, None)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(SHM_DIR / slot.name)
        slot.view = slot.mmap = None  # (closed when no array points into it any more)
        slot.capacity = 0

    # -- encoding ---------------------------------------------------------------------------
    def pack(self, array: np.ndarray) -> msgpack.ExtType | None:
        """The descriptor of ``array`` placed in shared memory (where it already lives, or copied
        into a slot), or None to send it inline (small, or every slot pinned)."""
        np = numpy_once.np or numpy_once.load()

        if array.nbytes < MIN_SHM_BYTES:
            return None
        contiguous = array.flags.c_contiguous
        if contiguous:
            root = _root(array)
            slot = self._by_root.get(id(root.base))
            if slot is not None and slot.view is not None:  # born here: no copy
                self._packed.append(slot)
                slot.sending = True
                # A frame buffer sent again and again (a producer's, a processor's) names the same
                # bytes each time: its descriptor is made once per use of the slot.
                offset = HEADER_SIZE if _whole(array, root) else HEADER_SIZE + _address(array) - slot.address
                key = (slot.generation, offset, array.dtype.str, array.shape)
                if slot.described is None or slot.described[0] != key:
                    offset, dtype, shape = key[1:]
                    descriptor = pack_descriptor(
                        slot.name, offset, dtype, shape, slot.index, slot.generation, slot.token
                    )
                    slot.described = (key, descriptor)
                return slot.described[1]
            if self._reader is not None:
                found = self._reader.locate(array, root)
                if found is not None:  # received from upstream: send its descriptor on
                    fields, descriptor = found
                    self._packed.append(_Forwarded(root, fields))
                    return descriptor
        slot = self._take(array.nbytes)
        if slot is None:
            return None
        self.copies += 1
        target = self._local_array(slot, array.nbytes, array.dtype).reshape(array.shape)
        np.copyto(target, array, casting="no")
        self._packed.append(slot)
        slot.sending = True
        return pack_descriptor(
            slot.name, HEADER_SIZE, array.dtype.str, array.shape, slot.index, slot.generation, slot.token
        )

    def start_message(self) -> None:
        self._packed = []

    def take_packed(self) -> list[Any]:
        """What the message just encoded refers to; ``dealt``/``settle`` account for it."""
        packed, self._packed = self._packed, []
        return packed

    def dealt(self, packed: list[Any], reader: ReaderKey) -> None:
        """The message went to that reader replica: one hold on everything it refers to."""
        for entry in packed:
            if isinstance(entry, _Slot):
                entry.holders[reader] = entry.holders.get(reader, 0) + 1
            else:
                assert self._reader is not None
                self._reader.retain(entry.descriptor[0], entry.descriptor[5], reader)

    def settle(self, packed: list[Any]) -> None:
        """Every edge has had the message: what nobody holds is free again. The owners of
        forwarded arrays hear of their new readers with the runtime's next flush of releases,
        in the same message as (and before) our own release: one message per item, sent after
        the item went on, so it does not compete with the readers' wake-up."""
        for entry in packed:
            if isinstance(entry, _Slot):
                entry.sending = False
                if entry.free:
                    self._free.append(entry)

    # -- releases ---------------------------------------------------------------------------
    def collect_releases(self) -> None:
        """Apply every release message already received."""
        socket = self.release_socket
        while True:
            try:
                frame = socket.recv(zmq.NOBLOCK)
            except zmq.Again:
                return
            self._starved = False
            for name, generation, node, replica, change in parse_releases(frame):
                slot = self._by_name.get(name)
                if slot is None or slot.generation != generation:
                    continue  # stale (the slot was reused or retired) or forged: ignored
                # A reader's release may overtake the retain that announced it (they come from
                # different processes): counts may go below zero until both have arrived.
                if change < 0:
                    self._exited.discard((node, replica))  # a live process of that replica released
                was_free = slot.free
                count = slot.holders.get((node, replica), 0) + change
                if count:
                    slot.holders[(node, replica)] = count
                else:
                    slot.holders.pop((node, replica), None)
                if slot.free and not was_free:
                    self._free.append(slot)

    def reader_exited(self, node: str, replica: int) -> None:
        """That reader's process is gone: its holds return; its slots are retired, not reused.
        A pool with lossless edges retires every slot in use: a replay to the successor may
        name any of them, from this sender or from a node that sent it on (whose late
        acknowledgement, from the dead process, may free a slot while its replay is on its way)."""
        reader = (node, replica)
        self._exited.add(reader)
        lossless = self.pinning
        for slot in self._slots:
            if slot.holders.pop(reader, None) is not None or (lossless and not slot.free):
                slot.retire = True  # a fresh segment on next use: a view downstream may live on
                if slot.free:
                    self._free.append(slot)

    # -- lossless edges: slots kept until acknowledged ------------------------------------------
    def pin(self, reader: PinKey, seq: int, packed: list[Any]) -> None:
        """Item ``seq``, whose message refers to ``packed``, went to ``reader`` on a lossless edge:
        its slots stay until that reader keeps the item no longer (:meth:`unpin_below`). An array
        received and sent on stays held too (its root is kept), for the same replay."""
        self._pins.pin(reader, seq, packed)
        for entry in packed:
            if isinstance(entry, _Slot):
                entry.kept = True

    def unpin_below(self, reader: PinKey, floor: int) -> None:
        """``reader`` keeps nothing numbered below ``floor`` any more: those slots may go back."""
        for entry in self._pins.unpin_below(reader, floor):
            if isinstance(entry, _Slot):
                entry.kept = False
                if entry.free:
                    self._free.append(entry)
                    self._starved = False  # a slot came back: worth waiting for the next one again

    def unpin_all(self) -> None:
        """This process replays nothing any more (it ends): every kept slot may go back, and
        arrays received and sent on are released with the reader's last flush."""
        for reader in self._pins.readers():
            self.unpin_below(reader, sys.maxsize)

    @property
    def pinning(self) -> bool:
        """Some lossless edge keeps slots for a replay."""
        return bool(len(self._pins))

    def stats(self) -> dict[str, int]:
        """Slots made, arrays copied into a slot, arrays sent inline because every slot was pinned,
        and slots (or arrays sent on) kept for lossless edges' replays."""
        return {
            "slots": len(self._slots),
            "copies": self.copies,
            "inline": self.inline_fallbacks,
            "kept": len(self._pins),
        }

    @property
    def held(self) -> int:
        """Slots that a running reader still holds (holds announced for a reader that has
        exited, or releases whose announcement never came, do not count)."""
        exited = self._exited
        return sum(
            1 for slot in self._slots if any(count > 0 and key not in exited for key, count in slot.holders.items())
        )

    def close(self, unlink: bool = True) -> None:
        """Unlink every segment (readers keep what they map); without ``unlink``, leave that to
        the launcher (descriptors of them may still be on their way to readers)."""
        if unlink:
            for slot in self._slots:
                self._unmap(slot)
            for name in self._retired:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(SHM_DIR / name)
        self.release_socket.close(linger=0)

    def unlink_all(self) -> None:
        """From a signal handler: only remove the names."""
        for name in [slot.name for slot in self._slots if slot.name] + self._retired:
            with contextlib.suppress(OSError):
                os.unlink(SHM_DIR / name)


class SharedMemoryReader:
    """Maps the segments descriptors name (read-only) and releases each array when its views die."""

    MAX_MAPPED = 256  # segments kept mapped for reuse (a mapping lives on while views use it)
    #: Descriptors kept parsed and checked: a sender that sends its frame buffers again and
    #: again sends the same few, and parsing one cold costs more than the rest of the view.
    DESCRIBED = 64
    #: Releases go this long after the first of them, or once this many have gathered: sent at
    #: once after each item, they woke the owner's process while the next node was waking up
    #: for the item just sent (two cores: they competed). The slots stay held that much longer.
    RELEASE_DELAY_S = 0.002
    RELEASE_BATCH = 16

    def __init__(
        self, context: zmq.Context, run_id: str, node: str, replica: int, senders: set[str], owners: dict[str, str]
    ) -> None:
        self._context = context
        self._run_id, self._me = run_id, (node, replica)
        self._senders = senders  # upstream nodes whose descriptors this node accepts
        self._owners = owners  # "node.replica" -> release endpoint of every pool in the flow
        self._sockets: dict[str, zmq.Socket] = {}
        self._maps: dict[str, tuple[mmap.mmap, memoryview, int]] = {}  # name -> (map, view, address)
        self._versions: dict[str, str] = {}  # slot (name without its version) -> the name mapped
        self._described: dict[bytes, _Described] = {}  # descriptors lately parsed and checked, by their bytes
        self._live: dict[int, tuple[_Described, weakref.ref[Any]]] = {}  # id(root base) -> descriptor, while views live
        self.pending: deque[tuple[str, list[Any]]] = deque()  # (owner, release entry)
        self._pending_since = 0.0  # when the oldest pending release was made
        self.refused = 0

    def view(self, data: bytes, sender: tuple[str, int]) -> np.ndarray:
        """The read-only array a descriptor from ``sender`` names; raises DescriptorError."""
        np = numpy_once.np or numpy_once.load()

        if sender[0] not in self._senders:
            raise DescriptorError(f"{sender[0]}.{sender[1]} may not send shared-memory descriptors to this node")
        described = self._described.get(data)
        if described is None:
            described = self._describe(data)
        segment = described.segment
        found = self._maps.get(segment)
        mapped, view, _ = found if found is not None else self._map(segment)
        # The segment's header, every time: the slot may have been reused or forged since.
        magic, header_token, header_generation, capacity = HEADER.unpack_from(mapped, 0)
        if magic != MAGIC or header_token != described.token:
            raise DescriptorError(f"shared-memory segment {segment} does not match the descriptor (forged?)")
        if header_generation != described.generation:
            raise DescriptorError(f"stale shared-memory descriptor for {segment} (slot reused)")
        end = described.offset + described.nbytes
        if end > HEADER_SIZE + capacity or end > len(view):
            raise DescriptorError(f"shared-memory descriptor reaches past the end of {segment}")
        array = np.frombuffer(view, described.dtype, described.count, described.offset)
        # The array's base (a fresh memoryview per array) is what every view of it keeps alive:
        # when it dies, the slot is released. (A weak reference costs a tenth of weakref.finalize.)
        key = id(array.base)
        self._live[key] = (described, weakref.ref(array.base, functools.partial(self._done, key, described)))
        return array if len(described.shape) == 1 else array.reshape(described.shape)

    def _describe(self, data: bytes) -> _Described:
        """Parse and check a descriptor not seen lately (the checks that depend on its bytes alone)."""
        segment, offset, dtype, shape, slot, generation, token = unpack_descriptor(data, self._run_id)
        owner = _owner(segment)
        if owner not in self._owners:
            raise DescriptorError(f"shared-memory segment {segment} belongs to no sender of this flow")
        described = _Described(data, segment, offset, dtype, shape, slot, generation, token, owner)
        if len(self._described) >= self.DESCRIBED:
            self._described.clear()  # (bounded: forged descriptors cannot grow it)
        self._described[data] = described
        return described

    def _done(self, key: int, described: _Described, _ref: Any) -> None:
        self._live.pop(key, None)
        if not self.pending:
            self._pending_since = time.monotonic()
        self.pending.append((described.owner, [described.segment, described.generation, *self._me, -1]))

    def retain(self, segment: str, generation: int, reader: ReaderKey) -> None:
        """This node sent a received array on to ``reader``: its owner counts that hold too."""
        if not self.pending:
            self._pending_since = time.monotonic()
        self.pending.append((_owner(segment), [segment, generation, *reader, 1]))

    def locate(self, array: np.ndarray, root: np.ndarray) -> tuple[tuple[Any, ...], msgpack.ExtType] | None:
        """If ``array`` (C-contiguous: ``pack`` asks only then) is (part of) a received
        shared-memory array: its descriptor's fields and the descriptor to send it on with."""
        live = self._live.get(id(root.base))
        if live is None:
            return None
        described = live[0]
        offset, shape, dtype = described.offset, array.shape, array.dtype.str
        # The whole array as received (the usual case) starts where it did: no address arithmetic,
        # and the same shape and dtype send on the very descriptor that came.
        whole = _whole(array, root)
        if not whole:
            offset += _address(array) - _address(root)
        fields = (described.segment, offset, dtype, shape, described.slot, described.generation, described.token)
        if whole and shape == described.shape and dtype == described.dtype.str:
            return fields, described.ext
        return fields, pack_descriptor(*fields)

    def _map(self, segment: str) -> tuple[mmap.mmap, memoryview, int]:
        found = self._maps.get(segment)
        if found is not None:
            return found
        try:
            fd = os.open(SHM_DIR / segment, os.O_RDONLY | os.O_NOFOLLOW)
        except OSError as error:
            raise DescriptorError(f"shared-memory segment {segment} cannot be opened: {error.strerror}") from None
        try:
            size = os.fstat(fd).st_size
            if size < HEADER_SIZE:
                raise DescriptorError(f"shared-memory segment {segment} is too small")
            mapped = mmap.mmap(fd, size, prot=mmap.PROT_READ)
        finally:
            os.close(fd)
        # A newer version of a slot replaces the older (grown or retired): an unlinked segment's
        # memory is only freed once nobody maps it, so the cache must not hold it.
        slot = segment.rsplit(".", 1)[0]
        older = self._versions.pop(slot, None)
        if older is not None:
            self._maps.pop(older, None)
        self._versions[slot] = segment
        if len(self._maps) >= self.MAX_MAPPED:
            oldest = next(iter(self._maps))  # its views keep it mapped while they live
            self._maps.pop(oldest)
            self._versions.pop(oldest.rsplit(".", 1)[0], None)
        found = self._maps[segment] = (mapped, memoryview(mapped), 0)
        return found

    def release_wait(self) -> float | None:
        """Seconds until the pending releases are due (0.0: now); None when none are pending."""
        if not self.pending:
            return None
        if len(self.pending) >= self.RELEASE_BATCH:
            return 0.0
        return max(0.0, self._pending_since + self.RELEASE_DELAY_S - time.monotonic())

    def flush(self) -> None:
        """Send the releases of arrays no longer used, one message per sender."""
        by_owner: dict[str, list[list[Any]]] = {}
        pending = self.pending
        while pending:
            owner, entry = pending.popleft()
            by_owner.setdefault(owner, []).append(entry)
        for owner, entries in by_owner.items():
            socket = self._sockets.get(owner)
            if socket is None:
                socket = self._sockets[owner] = self._context.socket(zmq.PUSH)
                socket.sndhwm = 0
                socket.linger = 0  # an owner that is gone no longer needs them
                socket.connect(self._owners[owner])
            # (Again only when the owner is gone, which no longer needs them: no limit is set.)
            with contextlib.suppress(zmq.Again):
                socket.send(release_frame(entries), zmq.NOBLOCK)

    def close(self) -> None:
        self.flush()
        for socket in self._sockets.values():
            socket.close(linger=200)


def _owner(segment: str) -> str:
    """ "node.replica" of the process that made a segment (its name was checked)."""
    parts = segment.split(".")
    return f"{parts[2]}.{parts[3]}"


# -- the process's pool, for the frame_buffer API ------------------------------------------------
_pool: SlotPool | None = None


def install(pool: SlotPool | None) -> None:
    """Make ``pool`` the one ``frame_buffer`` draws from; a SIGTERM (the launcher died) unlinks it."""
    global _pool
    _pool = pool
    if pool is not None:
        previous = signal.getsignal(signal.SIGTERM)

        def on_term(signum: int, frame: Any) -> None:
            pool.unlink_all()
            signal.signal(signal.SIGTERM, previous if callable(previous) else signal.SIG_DFL)
            os.kill(os.getpid(), signal.SIGTERM)

        signal.signal(signal.SIGTERM, on_term)


def frame_buffer(shape: tuple[int, ...] | int, dtype: Any = "uint8") -> np.ndarray:
    """A writable array for an output item. On a shared-memory edge it lives in a slot, so it
    crosses to the readers without a copy; elsewhere it is ordinary memory. Write it, send it,
    and do not write it again after sending (readers may be looking at it)."""
    np = numpy_once.np or numpy_once.load()

    if _pool is None:
        dtype = np.dtype(dtype)
        return np.empty(shape, dtype)
    return _pool.frame_buffer(shape, dtype)


__all__ = ["DescriptorError", "SharedMemoryReader", "SlotPool", "frame_buffer", "install"]
