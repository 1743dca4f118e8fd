"""Nodes of ``python -m bench.recovery``: a paced producer, a processor that notes when each of its
processes opened and sent its first item, and a consumer that keeps nothing."""

from __future__ import annotations

import os
import time
from collections.abc import Iterable

from flujo.api import Consumer, Processor, Producer


class Ticks(Producer):
    """Counts to n, ``pause`` seconds apart."""

    def __init__(self, n: int, pause: float) -> None:
        self.n, self.pause = n, pause

    def produce(self) -> Iterable[int]:
        for i in range(self.n):
            time.sleep(self.pause)
            yield i


class Marked(Processor):
    """Passes items on; appends "open PID T" when its process opens and "first PID T" once its
    first result has been handed to the runtime (the next call: the previous result went out)."""

    def __init__(self, marks: str) -> None:
        self.marks, self.calls = marks, 0

    def _mark(self, what: str) -> None:
        with open(self.marks, "a") as file:
            file.write(f"{what} {os.getpid()} {time.time()}\n")

    def open(self) -> None:
        self._mark("open")

    def process(self, item: int) -> int:
        self.calls += 1
        if self.calls == 2:  # the first result was sent before this call
            self._mark("first")
        return item


class Drop(Consumer):
    def consume(self, item: int) -> None:
        pass
