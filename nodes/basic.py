"""Basic nodes: counters, range and list producers, map and filter wrappers, printing and collecting sinks."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from flujo.api import Consumer, Processor, Producer
from flujo.loader import load_target


class Count(Producer):
    """Yields the integers 0, 1, ..., n-1 (forever when n is not given)."""

    def __init__(self, n: int | None = None, start: int = 0) -> None:
        self.n, self.start = n, start

    def length(self) -> int | None:
        return self.n

    def resume_from(self, position: int) -> bool:
        """Go on from the item numbered ``position`` (docs/PROTOCOL.md, section 9.4)."""
        self.start += position
        if self.n is not None:
            self.n = max(0, self.n - position)
        return True

    def produce(self) -> Iterable[int]:
        number = self.start
        while self.n is None or number < self.start + self.n:
            yield number
            number += 1


class Items(Producer):
    """Yields the given list of items, in order."""

    def __init__(self, items: list[Any]) -> None:
        self.items = items

    def length(self) -> int:
        return len(self.items)

    def resume_from(self, position: int) -> bool:
        """Go on from the item numbered ``position`` (docs/PROTOCOL.md, section 9.4)."""
        self.items = self.items[position:]
        return True

    def produce(self) -> Iterable[Any]:
        yield from self.items


class Map(Processor):
    """Applies a function named by reference ("module:attr" or "file.py:attr") to each item."""

    def __init__(self, function: str) -> None:
        self._function = load_target(function)

    def process(self, item: Any) -> Any:
        return self._function(item)


class Filter(Processor):
    """Passes the items for which a predicate (named by reference) is true."""

    def __init__(self, predicate: str) -> None:
        self._predicate = load_target(predicate)

    def process(self, item: Any) -> Any:
        return item if self._predicate(item) else None


class Print(Consumer):
    """Prints each item on its own line."""

    def consume(self, item: Any) -> None:
        print(item, file=sys.stdout, flush=True)


class Collect(Consumer):
    """Writes every item it receives as one JSON line to ``path`` (for tests and inspection)."""

    def __init__(self, path: str) -> None:
        self.path = Path(path)

    def open(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._file = self.path.open("w")

    def consume(self, item: Any) -> None:
        self._file.write(json.dumps(item) + "\n")

    def close(self) -> None:
        self._file.close()
