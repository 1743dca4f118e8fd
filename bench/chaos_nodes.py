"""Nodes of ``python -m bench.chaos``: each process notes when it handed its first item on
("first PID T" in the marks file), so a kill's recovery time can be read from the file."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterable
from typing import Any

from flujo.api import Consumer, Processor, Producer

#: With ``arrays``, each item is its number repeated in an int64 array of 64 KiB: large enough
#: to travel through shared memory (flujo/shm_wire.py, MIN_SHM_BYTES), checkable whole.
ARRAY_LENGTH = 8192


def _number(item: Any) -> int:
    """The number an item stands for (an array's first element)."""
    return int(item if isinstance(item, int) else item[0])


class _Marks:
    """Appends "first PID T" once per process, when the process's first result has gone out."""

    def __init__(self, marks: str) -> None:
        self.marks, self.calls = marks, 0

    def handed_on(self) -> None:
        """Called before producing or processing an item: the second call means the first went out."""
        self.calls += 1
        if self.calls == 2:
            with open(self.marks, "a") as file:
                file.write(f"first {os.getpid()} {time.time()}\n")


class Ticks(Producer):
    """Counts to n, ``pause`` seconds apart; ``sign`` -1 yields -(i + 1) (a second stream); with
    ``arrays``, each number filled into an array of ARRAY_LENGTH. Resumes."""

    def __init__(self, n: int, pause: float, marks: str, sign: int = 1, arrays: bool = False) -> None:
        self.n, self.pause, self.sign, self.first, self.arrays = n, pause, sign, 0, arrays
        self.mark = _Marks(marks)

    def resume_from(self, position: int) -> bool:
        self.first = position
        return True

    def produce(self) -> Iterable[int]:
        for i in range(self.first, self.n):
            time.sleep(self.pause)
            self.mark.handed_on()
            value = i if self.sign > 0 else -(i + 1)
            if self.arrays:
                import numpy  # only in the processes that make arrays

                yield numpy.full(ARRAY_LENGTH, value, dtype=numpy.int64)
            else:
                yield value


class Work(Processor):
    """``jitter``: passes the item on after 0-3 ms (replicas finish out of order); ``square``."""

    def __init__(self, marks: str, kind: str) -> None:
        self.kind, self.mark = kind, _Marks(marks)

    def process(self, item: Any) -> Any:
        self.mark.handed_on()
        if self.kind == "square":
            return item * item  # an array: a new one
        time.sleep(0.001 * (_number(item) % 4))
        return item  # an array: sent on as it came


class Pair(Processor):
    """A zip of ``a`` (i) and ``b`` (i * i): i + i * i."""

    def __init__(self, marks: str) -> None:
        self.mark = _Marks(marks)

    def process(self, a: Any, b: Any) -> Any:
        self.mark.handed_on()
        return a + b


class Pass(Processor):
    """A merge: passes every item on, in arrival order."""

    def __init__(self, marks: str) -> None:
        self.mark = _Marks(marks)

    def process(self, item: Any) -> Any:
        self.mark.handed_on()
        return item


class Journal(Consumer):
    """Appends ``[pid, item]`` per item consumed, flushed: which process consumed what."""

    def __init__(self, path: str, marks: str) -> None:
        self.path, self.mark = path, _Marks(marks)

    def open(self) -> None:
        self.file = open(self.path, "a")  # noqa: SIM115 (closed in close())
        self.pid = os.getpid()

    def consume(self, item: Any) -> None:
        self.mark.handed_on()
        if not isinstance(item, int) and not (item == item[0]).all():
            item = None  # an array whose bytes changed under it: the journal check reports it
        self.file.write(json.dumps([self.pid, _number(item) if item is not None else None]) + "\n")
        self.file.flush()

    def close(self) -> None:
        self.file.close()
