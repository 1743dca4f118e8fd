"""Deadlines for the launcher's loop: call something at a given time, without threads."""

from __future__ import annotations

import heapq
import itertools
import time
from collections.abc import Callable


class Timers:
    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._due: list[tuple[float, int, Callable[[], None]]] = []
        self._order = itertools.count()

    def after(self, seconds: float, action: Callable[[], None]) -> None:
        heapq.heappush(self._due, (self._clock() + seconds, next(self._order), action))

    def timeout_ms(self) -> int | None:
        """How long the loop may block before the next deadline (None: no deadline)."""
        if not self._due:
            return None
        return max(0, int((self._due[0][0] - self._clock()) * 1000) + 1)

    def run_due(self) -> None:
        now = self._clock()
        while self._due and self._due[0][0] <= now:
            heapq.heappop(self._due)[2]()
