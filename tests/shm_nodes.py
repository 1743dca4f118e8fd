"""Nodes for the shared-memory tests: frames whose every byte says which item they are."""

from __future__ import annotations

import json
import mmap
import os
import time
import zlib
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

from flujo.api import Consumer, Processor, Producer
from flujo.shm import frame_buffer

SHAPE = (256, 512, 3)  # 384 KB: above the inline threshold, light on a loaded machine


def pattern(i: int, shape: tuple[int, ...] = SHAPE) -> np.ndarray:
    """Frame i's content: rows differ, so a frame mixed from two slots is caught."""
    rows = (np.arange(shape[0], dtype=np.uint16)[:, None, None] + i) % 251
    return np.broadcast_to(rows.astype(np.uint8), shape)


def in_shared_memory(array: np.ndarray) -> bool:
    """Whether the array is a view of a mapped segment (not of a zmq frame)."""
    while isinstance(array.base, np.ndarray):
        array = array.base
    base = array.base
    return isinstance(base, memoryview) and isinstance(base.obj, mmap.mmap)


class Frames(Producer):
    """n frames born in shared memory (``born``) or copied from ordinary memory, ``pause`` apart;
    with ``gate``, holds the stream open (yielding None) until that file exists."""

    def __init__(self, n: int, born: bool = True, pause: float = 0.0, gate: str = "") -> None:
        self.n, self.born, self.pause, self.gate = n, born, pause, Path(gate) if gate else None

    def produce(self) -> Iterable[Any]:
        for i in range(self.n):
            if self.pause:
                time.sleep(self.pause)
            frame = self.frame_buffer(SHAPE, np.uint8) if self.born else np.empty(SHAPE, np.uint8)
            frame[...] = pattern(i)
            yield {"i": i, "frame": frame}
        while self.gate is not None and not self.gate.exists():
            time.sleep(0.005)
            yield None


class Pass(Processor):
    """Sends the item on as it came (a received frame goes on without a copy)."""

    def process(self, item: Any) -> Any:
        return item


class Invert(Processor):
    """A new frame per item, made in a frame buffer."""

    def process(self, item: Any) -> Any:
        out = frame_buffer(item["frame"].shape, item["frame"].dtype)
        np.subtract(255, item["frame"], out=out)
        return {"i": item["i"], "frame": out, "inverted": True}


class Check(Consumer):
    """Checks every frame on arrival, keeps ``keep`` of them (every one for keep < 0) and checks
    them again at close; writes one JSON line per item: [i, intact, shared memory]."""

    def __init__(self, path: str, keep: int = 0, delay: float = 0.0) -> None:
        self.path, self.keep, self.delay = Path(path), keep, delay
        self.kept: list[tuple[int, bool, np.ndarray]] = []

    def open(self) -> None:
        self.file = self.path.open("a")

    def consume(self, item: Any = None, **ports: Any) -> None:
        items = [item] if item is not None else [ports[name] for name in sorted(ports)]
        for one in items:
            self._check(one)

    def _check(self, item: dict[str, Any]) -> None:
        if self.delay:
            time.sleep(self.delay)
        i, frame = item["i"], item["frame"]
        expected = 255 - pattern(i) if item.get("inverted") else pattern(i)
        intact = bool(np.array_equal(frame, expected))
        self.file.write(json.dumps([i, intact, in_shared_memory(frame)]) + "\n")
        self.file.flush()
        if self.keep < 0 or len(self.kept) < self.keep:
            self.kept.append((i, bool(item.get("inverted")), frame))

    def close(self) -> None:
        changed = [
            i
            for i, inverted, frame in self.kept
            if not np.array_equal(frame, 255 - pattern(i) if inverted else pattern(i))
        ]
        self.file.write(json.dumps(["kept", len(self.kept), changed]) + "\n")
        self.file.close()


class Checksums(Consumer):
    """Appends ``[pid, i, crc32 of the frame's bytes, in shared memory]`` per item, flushed: which
    process consumed what (a crash test reads the runs of successive processes apart), and
    whether the bytes it saw are the frame's. With ``gate``, takes nothing (and so acknowledges
    nothing) until that file exists; ``delay``: seconds each item takes."""

    def __init__(self, path: str, gate: str = "", delay: float = 0.0) -> None:
        self.path, self.gate, self.delay = Path(path), Path(gate) if gate else None, delay

    def open(self) -> None:
        self.file = self.path.open("a")
        self.pid = os.getpid()

    def consume(self, item: Any) -> None:
        while self.gate is not None and not self.gate.exists():
            time.sleep(0.005)
        if self.delay:
            time.sleep(self.delay)
        frame = item["frame"]
        line = [self.pid, item["i"], zlib.crc32(frame), in_shared_memory(frame)]
        self.file.write(json.dumps(line) + "\n")
        self.file.flush()

    def close(self) -> None:
        self.file.close()


def checksum(i: int, inverted: bool = False) -> int:
    """What Checksums writes for frame i as Frames makes it (inverted: as Invert makes it)."""
    frame = np.ascontiguousarray(pattern(i))
    return zlib.crc32(255 - frame if inverted else frame)


def read(path: str) -> tuple[list[list[Any]], list[Any] | None]:
    """(item lines, the close line or None)."""
    lines = [json.loads(line) for line in Path(path).read_text().splitlines()]
    items = [line for line in lines if line[0] != "kept"]
    closing = [line for line in lines if line[0] == "kept"]
    return items, closing[-1] if closing else None
