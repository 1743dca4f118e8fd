"""Sinks: write items to a JSON Lines file or print them compactly."""

from __future__ import annotations

import base64
import json
import os
import sys
from collections.abc import Sequence
from typing import Any, TextIO

import numpy as np

from flujo.api import Consumer


def to_json(value: Any) -> Any:
    """A JSON-ready copy of ``value``: arrays become lists, numpy scalars numbers, bytes base64."""
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, dict):
        return {str(key): to_json(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_json(item) for item in value]
    if isinstance(value, (bytes, bytearray, memoryview)):
        return base64.b64encode(bytes(value)).decode("ascii")
    if isinstance(value, float) and not np.isfinite(value):
        return None  # JSON has no NaN or infinity
    return value


def _select(item: Any, fields: Sequence[str] | None, exclude: Sequence[str]) -> Any:
    if not isinstance(item, dict):
        return item
    if fields:
        return {key: item[key] for key in fields if key in item}
    return {key: value for key, value in item.items() if key not in exclude}


class JsonLinesSink(Consumer):
    """Appends each item as one line of JSON to ``path`` (creates parent folders).

    Each line is flushed as it is written, so ``tail -f`` follows the stream.

    Args:
        path: output file, relative to the working directory.
        fields: keep only these keys of dict items.
        exclude: leave out these keys (default: ``frame``, whose pixels make poor JSON).
        append: add to an existing file instead of replacing it.
    """

    def __init__(
        self, path: str, fields: Sequence[str] | None = None, exclude: Sequence[str] = ("frame",), append: bool = False
    ) -> None:
        self.path, self.fields, self.exclude, self.append = path, fields, tuple(exclude), append
        self._file: TextIO | None = None

    def open(self) -> None:
        path = os.path.abspath(self.path)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        self._file = open(path, "a" if self.append else "w", encoding="utf-8")  # noqa: SIM115 (closed in close())

    def consume(self, item: Any) -> None:
        line = json.dumps(to_json(_select(item, self.fields, self.exclude)), separators=(",", ":"), allow_nan=False)
        assert self._file is not None, "consume() before open()"
        try:  # every line is written through at once: a full disk fails the very item it could not keep
            self._file.write(line + "\n")
            self._file.flush()
        except OSError as error:
            raise OSError(error.errno, f"cannot write {os.path.abspath(self.path)}: {error.strerror}") from None

    def close(self) -> None:
        if self._file is not None:
            file, self._file = self._file, None
            try:
                file.close()
            except OSError as error:
                raise OSError(error.errno, f"cannot write {os.path.abspath(self.path)}: {error.strerror}") from None


def compact(value: Any, depth: int = 0) -> str:
    """A short one-line rendering: big arrays as ``<dtype shape>``, floats rounded, long lists cut."""
    if isinstance(value, np.ndarray):
        if value.size <= 8 and value.ndim <= 2:
            return compact(value.tolist(), depth)
        return f"<{value.dtype} {'x'.join(map(str, value.shape))}>"
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float):
        return f"{value:.3f}".rstrip("0").rstrip(".") if np.isfinite(value) else str(value)
    if isinstance(value, dict):
        if depth >= 3:
            return "{…}"
        return "{" + ", ".join(f"{key}: {compact(item, depth + 1)}" for key, item in value.items()) + "}"
    if isinstance(value, (list, tuple)):
        shown = ", ".join(compact(item, depth + 1) for item in value[:5])
        return f"[{shown}{f', …{len(value)}' if len(value) > 5 else ''}]"
    if isinstance(value, (bytes, bytearray)):
        return f"<{len(value)} bytes>"
    return repr(value) if isinstance(value, str) else str(value)


class ConsoleSink(Consumer):
    """Prints items to standard output, one compact line each.

    Args:
        fields: print only these keys of dict items.
        every: print one item in ``every`` (1: all).
        prefix: text before each line (e.g. the node's name).
    """

    def __init__(self, fields: Sequence[str] | None = None, every: int = 1, prefix: str = "") -> None:
        self.fields, self.every, self.prefix = fields, max(1, int(every)), prefix
        self._count = 0

    def consume(self, item: Any) -> None:
        self._count += 1
        if (self._count - 1) % self.every:
            return
        text = compact(_select(item, self.fields, ()))
        sys.stdout.write(f"{self.prefix}{text}\n")
        sys.stdout.flush()
