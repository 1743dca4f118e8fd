"""Clause outcomes, the test items, and the typed comparison the identity contract needs."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from flujo.conformance.items import FAIL_ITEM, SMALL_ITEMS, small_item

LEVELS = ("basic", "full", "restartable", "acknowledging")
__all__ = ["FAIL_ITEM", "LEVELS", "SMALL_ITEMS", "small_item"]  # items re-exported: the kit's modules take them here


@dataclass
class Outcome:
    """One checked clause: PROTOCOL.md section, what it says, and how the node did."""

    section: str
    title: str
    level: str
    passed: bool | None  # None: does not apply to this kind of node, or a note
    expected: str = ""
    seen: str = ""
    note: bool = False

    def line(self) -> str:
        verdict = "note" if self.note else {True: "PASS", False: "FAIL", None: "n/a "}[self.passed]
        text = f"{verdict}  §{self.section:<5} {self.title}"
        if self.note:
            text += f": {self.seen}"
        if self.passed is False:
            text += f"\n        expected: {self.expected}\n        seen:     {self.seen}"
        return text


class ClauseFailed(Exception):
    """A clause failed: the scenario stops there (what follows would only repeat the failure)."""

    def __init__(self, outcome: Outcome) -> None:
        super().__init__(outcome.title)
        self.outcome = outcome


class Checks:
    """Collects the outcomes of one scenario; a failed clause ends the scenario."""

    def __init__(self, level: str, outcomes: list[Outcome]) -> None:
        self.level = level
        self.outcomes = outcomes

    def clause(self, section: str, title: str, passed: bool, expected: str, seen: Any = "") -> None:
        outcome = Outcome(section, title, self.level, bool(passed), expected, str(seen))
        self.outcomes.append(outcome)
        if not passed:
            raise ClauseFailed(outcome)

    def note(self, section: str, title: str, seen: str) -> None:
        """A measurement that does not decide a level."""
        self.outcomes.append(Outcome(section, title, self.level, None, "", seen, note=True))

    def not_applicable(self, section: str, title: str, why: str) -> None:
        self.outcomes.append(Outcome(section, title, self.level, None, "", why))


def array_item(seq: int) -> Any:
    """Items with arrays (ext type 1 and their own frames), one or two per item."""
    rng = np.random.default_rng(seq)
    choice = seq % 3
    if choice == 0:
        return np.arange(12, dtype="<f4").reshape(3, 4) + seq
    if choice == 1:
        return {"frame": rng.integers(0, 255, size=(4, 6, 3), dtype=np.uint8), "id": seq}
    return [
        rng.standard_normal(5),
        {"mask": np.array([[True, False], [False, True]]), "n": np.int16(3).item()},
        rng.integers(-5, 5, size=(2, 2), dtype="<i2"),
    ]


def same(a: Any, b: Any) -> bool:
    """Equal with types: True is not 1, 1 is not 1.0, bytes are not str; arrays by dtype, shape, bytes."""
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        return (
            isinstance(a, np.ndarray)
            and isinstance(b, np.ndarray)
            and a.dtype == b.dtype
            and a.shape == b.shape
            and a.tobytes() == b.tobytes()
        )
    if isinstance(a, bool) or isinstance(b, bool):
        return type(a) is type(b) and a == b
    if isinstance(a, int) and isinstance(b, int):
        return a == b
    if isinstance(a, float) or isinstance(b, float):
        return isinstance(a, float) and isinstance(b, float) and a == b
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(same(a[key], b[key]) for key in a)
    return type(a) is type(b) and a == b


def describe(value: Any, limit: int = 80) -> str:
    """A short rendering of an item for a report line."""
    if isinstance(value, np.ndarray):
        return f"array({value.dtype.str}, {list(value.shape)})"
    if isinstance(value, list):
        text = "[" + ", ".join(describe(v, limit) for v in value) + "]"
    elif isinstance(value, dict):
        text = "{" + ", ".join(f"{k!r}: {describe(v, limit)}" for k, v in value.items()) + "}"
    else:
        text = repr(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def seq_list(seqs: list[int], limit: int = 24) -> str:
    text = ", ".join(str(seq) for seq in seqs[:limit])
    return f"[{text}{', …' if len(seqs) > limit else ''}] ({len(seqs)})"
