"""A merge replica's numbering log on disk (docs/PROTOCOL.md, section 9.5), without sockets.

A merge numbers its output anew in arrival order; a replay after a crash arrives in another
order. :class:`~flujo.acks.MergeNumbering` keeps the numbering in memory; this module makes
it survive a process crash exactly: every entry is written to an append-only file in the
flow's run folder *before* the output it numbers is sent. The page cache survives the death
of the process, so no fsync is needed (a machine crash is out of scope, as in section 9).

File layout (little endian)::

    header:     b"FJMLOG1\\0"  u32 ports  u64 next_out  ports x i64 acked_in (-1: none)
                (next_out: the number after the checkpoint's entries; entries after it go on from there)
    entries:    u64 out  u32 port index  u64 input seq  u32 crc32 of the 20 bytes before

Ports are named by their index in the merge's port list (the same list in the successor:
the log says how many there are and is refused if that differs). When the acknowledged
prefix grows past ``rotate_after`` entries the file is rewritten (a checkpoint header with
the next number and per-port acknowledged inputs, then the entries still unacknowledged)
and renamed over the old one, so it stays bounded by what is in flight below the merge.

The file is untrusted on reading: a torn last entry (the process died mid-write) or a bad
checksum ends the log there; a wrong header refuses the whole file (the successor then
starts afresh, which is today's at-most-once behaviour, and says so).
"""

from __future__ import annotations

import os
import struct
import zlib
from collections.abc import Hashable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from flujo.acks import MergeNumbering

MAGIC = b"FJMLOG1\0"
_HEAD = struct.Struct("<8sIQ")
_ACKED = struct.Struct("<q")
_BODY = struct.Struct("<QIQ")
_CRC = struct.Struct("<I")
ENTRY_SIZE = _BODY.size + _CRC.size
#: An entry with this output number records an acknowledgement instead: every input up to
#: ``seq`` of that port is done, and the merge may have told its sender so.
ACK_RECORD = (1 << 64) - 1
#: Rewrite the file once this many of its entries are acknowledged downstream.
ROTATE_AFTER = 4096


class MergeLogError(ValueError):
    """A log file that is not this merge's numbering log."""


def encode_header(ports: int, next_out: int, acked_in: Sequence[int]) -> bytes:
    """The checkpoint a log file starts with."""
    return _HEAD.pack(MAGIC, ports, next_out) + b"".join(_ACKED.pack(a) for a in acked_in)


def encode_entry(out: int, port: int, seq: int) -> bytes:
    """One log entry: output ``out`` is input ``seq`` of port index ``port``."""
    body = _BODY.pack(out, port, seq)
    return body + _CRC.pack(zlib.crc32(body))


@dataclass
class Recovered:
    """What a log file held: the checkpoint, the entries after it, and how many bytes at the
    end were not a whole checked entry (a torn write, or damage)."""

    next_out: int
    acked_in: list[int]
    entries: list[tuple[int, int, int]] = field(default_factory=list)
    discarded_bytes: int = 0


def decode(data: bytes, ports: int) -> Recovered:
    """Read a log file's bytes; raises :class:`MergeLogError` if its header is not a log of
    a merge with ``ports`` ports."""
    head_size = _HEAD.size + ports * _ACKED.size
    if len(data) < head_size:
        raise MergeLogError("merge log shorter than its header")
    magic, count, next_out = _HEAD.unpack_from(data, 0)
    if magic != MAGIC:
        raise MergeLogError("not a merge log (bad magic)")
    if count != ports:
        raise MergeLogError(f"merge log is for {count} ports, this merge has {ports}")
    acked = [_ACKED.unpack_from(data, _HEAD.size + i * _ACKED.size)[0] for i in range(ports)]
    recovered = Recovered(next_out, acked)
    pos = head_size
    last_out = -1
    while pos + ENTRY_SIZE <= len(data):
        body = data[pos : pos + _BODY.size]
        (crc,) = _CRC.unpack_from(data, pos + _BODY.size)
        out, port, seq = _BODY.unpack(body)
        if crc == zlib.crc32(body) and port < ports and out == ACK_RECORD:
            recovered.acked_in[port] = max(recovered.acked_in[port], seq)
            pos += ENTRY_SIZE
            continue
        # Outputs are logged in increasing order: anything else is damage, not a numbering.
        if crc != zlib.crc32(body) or port >= ports or out <= last_out:
            break
        recovered.entries.append((out, port, seq))
        last_out = out
        pos += ENTRY_SIZE
    recovered.discarded_bytes = len(data) - pos
    return recovered


class MergeLog:
    """The numbering of one merge replica, kept in memory (:class:`MergeNumbering`) and on disk.

    ``number()`` appends to a write buffer; ``flush()`` must run before the outputs numbered
    since the last flush are sent (the runtime calls it once per batch it sends).
    """

    def __init__(self, path: Path, ports: Sequence[str], rotate_after: int = ROTATE_AFTER) -> None:
        self.path = path
        self._ports = list(ports)
        self._index = {name: i for i, name in enumerate(self._ports)}
        self._rotate_after = rotate_after
        self._acked_in_file = 0  # entries in the file acknowledged downstream since it was written
        self._pending = bytearray()
        self._recorded: dict[Hashable, int] = {}  # per port, the last acknowledgement recorded
        self.recovered: Recovered | None = None
        self.refused: str | None = None
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            data = b""
        if data:
            try:
                self.recovered = decode(data, len(self._ports))
            except MergeLogError as error:
                self.refused = f"{path}: {error}"
        if self.recovered is not None:
            r = self.recovered
            self.numbering = MergeNumbering(
                r.next_out,
                [(out, self._ports[port], seq) for out, port, seq in r.entries],
                {self._ports[i]: a for i, a in enumerate(r.acked_in) if a >= 0},
            )
        else:
            self.numbering = MergeNumbering()
        self._rewrite()  # start from a clean checkpoint: drops a torn tail, bounds the file
        self._file = open(path, "ab", buffering=0)  # noqa: SIM115 - held for the replica's life

    def number(self, port: str, seq: int) -> int | None:
        """As :meth:`MergeNumbering.number`; a new number is logged (buffered until ``flush``)."""
        before = self.numbering.next_out
        out = self.numbering.number(port, seq)
        if out is not None and out == before:  # newly numbered, not taken from the log
            self._pending += encode_entry(out, self._index[port], seq)
        return out

    # The successor's replay, in logged order (flujo/merge_replay.py): as the numbering's.
    @property
    def replaying(self) -> bool:
        return self.numbering.replaying

    def next_logged(self) -> tuple[Hashable, int]:
        return self.numbering.next_logged()

    def skip_logged(self) -> None:
        self.numbering.skip_logged()

    def acked_through(self, port: str) -> int:
        return self.numbering.acked_through(port)

    def flush(self) -> None:
        """Write what was numbered since the last flush; call before sending those outputs."""
        if self._pending:
            self._file.write(self._pending)
            self._pending.clear()

    def acknowledge(self, out_seq: int) -> dict[Hashable, int]:
        """As :meth:`MergeNumbering.acknowledge`; rewrites the file once enough of it is done."""
        before = self.numbering.pending
        acked = self.numbering.acknowledge(out_seq)
        self._acked_in_file += before - self.numbering.pending
        if self._acked_in_file >= self._rotate_after:
            self.flush()
            self._rewrite()
        return acked

    def restored_through(self, out_seq: int) -> None:
        """As :meth:`MergeNumbering.restored_through` (the state of a snapshot restored)."""
        self.numbering.restored_through(out_seq)

    def record(self, port: str, seq: int) -> None:
        """Inputs of ``port`` up to ``seq`` are about to be acknowledged to their senders, which
        then forget them: on disk first, so that a successor does not wait for their replay."""
        if seq > self._recorded.get(port, -1):
            self._recorded[port] = seq
            self._pending += encode_entry(ACK_RECORD, self._index[port], seq)
            self.flush()

    def hand_over(self) -> None:
        """A graceful hand-over: every input numbered went downstream and its senders freed it
        at their pause markers, so the successor waits for none of them."""
        for port, seq in self.numbering.numbered_through().items():
            self.record(port, seq)  # type: ignore[arg-type]

    def close(self) -> None:
        """Flush and close the file (it stays for a successor; the launcher removes the run folder)."""
        self.flush()
        self._file.close()

    def _rewrite(self) -> None:
        next_out, log, acked = self.numbering.state()
        body = bytearray(encode_header(len(self._ports), next_out, [acked.get(p, -1) for p in self._ports]))
        for out, port, seq in log:
            body += encode_entry(out, self._index[port], seq)  # type: ignore[index]
        tmp = self.path.with_name(self.path.name + ".tmp")
        tmp.write_bytes(body)
        os.replace(tmp, self.path)
        if hasattr(self, "_file"):
            self._file.close()
            self._file = open(self.path, "ab", buffering=0)  # noqa: SIM115
        self._acked_in_file = 0
