"""Manifest bodies for tests, built from Python values instead of hand-written TOML.

``nodes_toml(numbers=count(5), sink=collect("numbers", out))`` renders the ``[nodes.*]``
sections of a manifest; ``FlowRunner.manifest`` takes the mapping directly. Values render as
TOML: strings quoted (``{nodes}`` stands for the tests' node file, as in hand-written bodies),
lists as arrays, mappings as inline tables, None fields left out.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

COUNT = "flujo.nodes.basic:Count"
PRINT = "flujo.nodes.basic:Print"
Node = dict[str, Any]


def toml_value(value: object) -> str:
    """One value in TOML syntax (JSON's string escapes are TOML's too)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        # Characters beyond ASCII as they are: JSON would escape those beyond U+FFFF as surrogate
        # pairs, which TOML refuses. DEL is the one character TOML wants escaped and JSON does not.
        return json.dumps(value, ensure_ascii=False).replace("\x7f", "\\u007f")
    if isinstance(value, (int, float)):
        return json.dumps(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(toml_value(item) for item in value) + "]"
    if isinstance(value, Mapping):
        return "{ " + ", ".join(f"{key} = {toml_value(item)}" for key, item in value.items()) + " }"
    raise TypeError(f"no TOML form for {value!r}")


def nodes_toml(nodes: Mapping[str, Mapping[str, object]] | None = None, **by_name: Mapping[str, object]) -> str:
    """The ``[nodes.NAME]`` sections of a manifest, in the given order."""
    sections = []
    for name, fields in {**(nodes or {}), **by_name}.items():
        lines = [f"[nodes.{name}]"]
        lines += [f"{key} = {toml_value(value)}" for key, value in fields.items() if value is not None]
        sections.append("\n".join(lines))
    return "\n".join(sections) + "\n"


def node(run: str, inputs: object = None, args: Mapping[str, object] | None = None, **fields: object) -> Node:
    """A node that runs ``run`` ("module:attribute"; "{nodes}:name" for the tests' nodes);
    ``inputs`` one name, a list of names, or port -> name for a join."""
    return {"run": run, "inputs": [inputs] if isinstance(inputs, str) else inputs, **fields, "args": _args(args)}


def program(
    command: list[str], inputs: object = None, args: Mapping[str, object] | None = None, **fields: object
) -> Node:
    """A node that runs a program (``command``), in any language."""
    return {"command": command, **node("", inputs, args, **fields), "run": None}


def count(n: int | None = None, **fields: object) -> Node:
    """flujo.nodes.basic:Count, endless when ``n`` is None."""
    return node(COUNT, args={"n": n}, **fields)


def collect(inputs: object, path: str, delay: float | None = None, **fields: object) -> Node:
    """The tests' Collect sink: one JSON line a received item, in ``path``."""
    return node("{nodes}:Collect", inputs, {"path": path, "delay": delay}, **fields)


def _args(args: Mapping[str, object] | None) -> dict[str, object] | None:
    kept = {key: value for key, value in (args or {}).items() if value is not None}
    return kept or None


def pipeline(**nodes: Node) -> dict[str, Node]:
    """Nodes in a line, in the given order: each after the first reads from the one before it
    (``inputs`` it was given are replaced)."""
    names = list(nodes)
    return {name: {**nodes[name], **({"inputs": [names[i - 1]]} if i else {})} for i, name in enumerate(names)}
