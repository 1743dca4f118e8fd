"""Python nodes that check what C nodes send (tests/test_sdk_c.py)."""

from __future__ import annotations

import json
from typing import Any

import numpy as np

from flujo.api import Consumer


class ArraySummary(Consumer):
    """Writes, per item, what a Python reader sees of its "frame" array: dtype, shape, sum, writeable."""

    def __init__(self, path: str) -> None:
        self.path = path

    def open(self) -> None:
        self.file = open(self.path, "a")  # noqa: SIM115 - open for the node's life; close() closes it

    def consume(self, item: dict[str, Any]) -> None:
        frame = item["frame"]
        assert isinstance(frame, np.ndarray)
        self.file.write(
            json.dumps(
                {
                    "index": item["index"],
                    "dtype": frame.dtype.str,
                    "shape": list(frame.shape),
                    "sum": int(frame.sum(dtype=np.uint64)),
                    "writeable": frame.flags.writeable,
                    "gray_mean": item["gray_mean"],
                }
            )
            + "\n"
        )
        self.file.flush()

    def close(self) -> None:
        self.file.close()


def as_text(number: int) -> str:
    return str(number)
