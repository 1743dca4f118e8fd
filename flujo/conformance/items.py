"""The kit's plain test items, apart from its checks: the reference nodes import these at every
start of a scenario, and need neither numpy nor the kit (a node process starts about twice as
fast without them)."""

from __future__ import annotations

from typing import Any

#: An item the node under test must fail on, as its user code raising would (the error clauses).
FAIL_ITEM = "flujo-conformance:fail"

# Plain msgpack values an identity node in any language gives back unchanged: no nil (a
# Python processor's None means "no output"), no integral floats (JavaScript numbers would
# come back as ints), no integers past 2^53, string map keys only.
SMALL_ITEMS: tuple[Any, ...] = (
    0,
    1,
    -7,
    2**40,
    1.5,
    -0.25,
    "",
    "hola",
    "ñandú ☃",
    b"\x00\x01\xff",
    True,
    False,
    [1, "a", [2.5]],
    {"a": 1, "b": [True, "x"]},
    {"nested": {"deep": b"z"}},
    "x" * 300,
)


def small_item(seq: int) -> Any:
    return SMALL_ITEMS[seq % len(SMALL_ITEMS)]
