"""Nodes that write down why they were closed (tests/test_close_reason.py)."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from flujo import Processor, Producer
from flujo.closing import CloseReason


def _note(path: str, text: str) -> None:
    generation = json.loads(os.environ["FLUJO_NODE_CONFIG"])["generation"]
    with Path(path).open("a") as log:
        log.write(f"{generation} {text}\n")


class ReasonCount(Producer):
    """Counts to n, ``pause`` seconds apart; its close(reason) notes the reason in ``path``."""

    def __init__(self, path: str, n: int, pause: float = 0.001) -> None:
        self.path, self.n, self.pause = path, n, pause

    def produce(self) -> Iterable[int]:
        for i in range(self.n):
            time.sleep(self.pause)
            yield i

    def close(self, reason: CloseReason = CloseReason.END_OF_STREAM) -> None:
        _note(self.path, reason)


class ReasonPass(Processor):
    """Passes items on (raising on item ``fail_at``); its close(reason) notes the reason in ``path``."""

    def __init__(self, path: str, fail_at: int = -1) -> None:
        self.path, self.fail_at = path, fail_at

    def process(self, item: Any) -> Any:
        if item == self.fail_at:
            raise ValueError(f"failing at {item}")
        return item

    def close(self, reason: CloseReason = CloseReason.END_OF_STREAM) -> None:
        _note(self.path, f"{reason} {type(reason).__name__}")


class PlainClose(Processor):
    """Passes items on; its close() takes no reason, as nodes written before it existed."""

    def __init__(self, path: str) -> None:
        self.path = path

    def process(self, item: Any) -> Any:
        return item

    def close(self) -> None:
        _note(self.path, "closed")
