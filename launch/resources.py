"""What a node replica asks a cluster engine for (the manifest's ``resources`` table), and
whether any machine of the cluster could ever give it."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kKmMgGtT]i?[bB]?|[bB])?\s*$")
_UNITS = {
    "": 1,
    "b": 1,
    "k": 10**3,
    "m": 10**6,
    "g": 10**9,
    "t": 10**12,
    "ki": 2**10,
    "mi": 2**20,
    "gi": 2**30,
    "ti": 2**40,
}


def parse_memory(value: Any) -> int | None:
    """Bytes from ``2GB``, ``512MiB`` or a whole number of bytes; None when it is not a size."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int) and value > 0:
        return value
    if not isinstance(value, str):
        return None
    match = _SIZE.match(value)
    if not match:
        return None
    unit = (match.group(2) or "").lower().rstrip("b")
    number = float(match.group(1)) * _UNITS[unit]
    return int(number) if number >= 1 else None


@dataclass(frozen=True)
class Resources:
    """What one replica asks Ray for (the manifest's ``resources`` table, validated)."""

    num_cpus: float = 1.0
    num_gpus: float = 0.0
    memory: int | None = None  # bytes
    custom: tuple[tuple[str, float], ...] = ()

    def demand(self) -> dict[str, float]:
        """In the names of Ray's node resource tables."""
        wanted = {"CPU": self.num_cpus, "GPU": self.num_gpus, **dict(self.custom)}
        if self.memory:
            wanted["memory"] = float(self.memory)
        return {name: amount for name, amount in wanted.items() if amount}

    def describe(self) -> str:
        parts = []
        for name, amount in self.demand().items():
            shown = _size(amount) if name == "memory" else f"{amount:g}"
            parts.append(f"{shown} {name}")
        return ", ".join(parts) or "nothing"

    def actor_options(self) -> dict[str, Any]:
        options: dict[str, Any] = {"num_cpus": self.num_cpus, "num_gpus": self.num_gpus}
        if self.memory:
            options["memory"] = self.memory
        if self.custom:
            options["resources"] = dict(self.custom)
        return options


def _size(amount: float) -> str:
    return f"{amount / 2**30:.1f} GiB" if amount >= 2**30 else f"{amount / 2**20:.0f} MiB"


def unplaceable(resources: Resources, nodes: list[dict[str, Any]]) -> str | None:
    """Why no live Ray node could ever hold a replica asking for ``resources`` (None: one can)."""
    wanted = resources.demand()
    alive = [node for node in nodes if node.get("Alive")]
    for node in alive:
        have = node.get("Resources", {})
        if all(have.get(name, 0) >= amount for name, amount in wanted.items()):
            return None
    cluster = (
        "; ".join(
            f"{node.get('NodeManagerAddress')}: "
            + ", ".join(
                f"{_size(v) if k in ('memory', 'object_store_memory') else f'{v:g}'} {k}"
                for k, v in sorted(node.get("Resources", {}).items())
                if not k.startswith("node:") and k != "object_store_memory"
            )
            for node in alive
        )
        or "no live node"
    )
    return f"no Ray node has {resources.describe()} (cluster: {cluster})"


RESOURCE_FIELDS = ("num_cpus", "num_gpus", "memory", "custom")


def resources_from_table(table: dict[str, Any]) -> tuple[Resources, list[tuple[str, str]]]:
    """The Resources a manifest's ``resources = {...}`` asks for, and every problem as
    (field, message), the field named as ``resources.FIELD``."""
    problems: list[tuple[str, str]] = []

    def amount(name: str, value: Any) -> float:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < 1e6:
            problems.append((f"resources.{name}", f"must be a number from 0 up, got {value!r}"))
            return 0.0
        return float(value)

    for key in table:
        if key not in RESOURCE_FIELDS:
            problems.append((f"resources.{key}", f"unknown field; resources take {', '.join(RESOURCE_FIELDS)}"))
    num_cpus = amount("num_cpus", table.get("num_cpus", 1))
    num_gpus = amount("num_gpus", table.get("num_gpus", 0))
    memory = None
    if "memory" in table:
        memory = parse_memory(table["memory"])
        if memory is None:
            problems.append(("resources.memory", f'must be a size such as "2GB" or "512MiB", got {table["memory"]!r}'))
    custom: list[tuple[str, float]] = []
    given = table.get("custom", {})
    if not isinstance(given, dict):
        problems.append(("resources.custom", "must be a table of resource names and amounts, e.g. { camera = 1 }"))
    else:
        for name, value in given.items():
            if name in ("CPU", "GPU", "memory", "object_store_memory"):
                problems.append((f"resources.custom.{name}", f"use num_cpus, num_gpus or memory, not custom.{name}"))
            else:
                custom.append((name, amount(f"custom.{name}", value)))
    return Resources(num_cpus, num_gpus, memory, tuple(custom)), problems
