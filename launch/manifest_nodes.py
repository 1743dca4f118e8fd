"""Validation of one [nodes.NAME] table into a NodeSpec: its fields, input ports, folder, executable,
and the code it runs (loaded here, so a wrong reference is found before anything starts)."""

from __future__ import annotations

import shutil
from enum import StrEnum
from pathlib import Path
from typing import Any

from flujo.launch.manifest_fields import NAME_PATTERN, NODE_FIELDS, NODE_OPTIONS, Problems, byte_size
from flujo.launch.manifest_spec import InputSpec, NodeSpec, Placement
from flujo.launch.resources import resources_from_table
from flujo.loader import LoadError, load_target
from flujo.vocab import ErrorPolicy, Join, QueuePolicy, RestartPolicy

#: Node fields whose value is one of a closed vocabulary: the manifest spells a member's value.
NODE_VOCABULARIES: dict[str, type[StrEnum]] = {
    "join": Join,
    "on_error": ErrorPolicy,
    "policy": QueuePolicy,
    "restart": RestartPolicy,
    "placement": Placement,
}


def check_node(report: Problems, path: Path, name: str, table: Any, targets: dict[str, Any]) -> NodeSpec:
    """The node ``name`` as far as its table is sound (a problem reported for every other part);
    the code of a Python node goes into ``targets`` when it loads."""
    spec = NodeSpec(name)
    if not NAME_PATTERN.match(name):
        report.problem("node names use letters, digits, _ and -, and start with a letter", name)
    if not isinstance(table, dict):
        report.problem("must be a table: [nodes.NAME] with run or command", name)
        return spec
    good = report.fields(table, NODE_FIELDS, name, f"[nodes.{name}]")
    for key in ("run", "command", "args", *NODE_OPTIONS):
        if key in good:
            setattr(spec, key, NODE_VOCABULARIES[key](good[key]) if key in NODE_VOCABULARIES else good[key])
    if ("run" in table) == ("command" in table):
        report.problem('give exactly one of "run" (a Python node) or "command" (any executable)', name, "run")
    if "max_message" in good:
        spec.max_message = byte_size(good["max_message"])
    if "outputs" in good and "run" in table:
        report.problem(
            "a Python node declares its output ports in its class (the `outputs` attribute); "
            "this field is for command nodes",
            name,
            "outputs",
        )
    if "resources" in good:
        spec.resources, problems = resources_from_table(good["resources"])
        for field_name, message in problems:
            report.problem(message, name, field_name)
    if "inputs" in good:
        spec.inputs, spec.keyword_ports = _input_ports(report, name, good["inputs"])
    if spec.cwd is not None and not (path.parent / spec.cwd).is_dir():
        report.problem(f'no folder "{spec.cwd}" (relative to the manifest\'s folder {path.parent})', name, "cwd")
    elif spec.command and not _executable(path, spec):
        report.problem(f'no executable "{spec.command[0]}" (looked in PATH and the node\'s folder)', name, "command")
    if spec.run:
        try:
            targets[name] = load_target(spec.run, path.parent)
        except LoadError as error:
            report.problem(str(error), name, "run")
    return spec


def _executable(path: Path, spec: NodeSpec) -> bool:
    program = spec.command[0]  # type: ignore[index]
    folder = path.parent / (spec.cwd or "")
    if "/" in program:
        return (folder / program).is_file()
    return shutil.which(program) is not None


def _input_ports(report: Problems, name: str, value: list[str] | dict[str, str]) -> tuple[list[InputSpec], bool]:
    """The input ports a list of sources or a table of named ports declares; True when named."""
    entries = list(value.items()) if isinstance(value, dict) else [(source, source) for source in value]
    ports: list[InputSpec] = []
    for port, reference in entries:
        source, _, source_port = reference.partition("/")
        if any(existing.port == port for existing in ports):
            report.problem(f'"{port}" is listed twice', name, "inputs")
        ports.append(InputSpec(port, source, source_port or "out"))
    return ports, isinstance(value, dict)
