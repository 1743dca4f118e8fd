"""Read and validate a flow manifest (TOML) into a FlowSpec, reporting every problem at once.

Nothing here starts a process: the launcher only runs a manifest that validated whole. This module
loads the file and runs the checks in order; the checks themselves live by job in manifest_fields
(single fields), manifest_nodes (one node), manifest_hosts (where nodes run) and manifest_graph (the
graph as a whole), the validated shapes in manifest_spec. Every name that was defined here before
that split is still importable from here.
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

from flujo.launch.errors import ManifestError, Problem, did_you_mean
from flujo.launch.manifest_fields import (
    FLOW_FIELDS,
    FLOW_NAME_PATTERN,
    HOST_FIELDS,
    MAX_MESSAGE,
    MAX_QUEUE,
    MAX_REPLICAS,
    MAX_RESTARTS,
    MAX_SECONDS,
    MIN_MESSAGE,
    NAME_PATTERN,
    NODE_FIELDS,
    NODE_OPTIONS,
    SECTIONS,
    Problems,
    byte_size,
)
from flujo.launch.manifest_graph import check_arguments, check_graph, check_kinds
from flujo.launch.manifest_hosts import check_engine, check_hosts, check_placement
from flujo.launch.manifest_nodes import NODE_VOCABULARIES, check_node
from flujo.launch.manifest_spec import (
    DEFAULT_AGENT_PORT,
    DEFAULT_QUEUE,
    LOOPBACK,
    Engine,
    FlowSpec,
    HostSpec,
    InputSpec,
    NodeSpec,
    Placement,
    Transport,
)

__all__ = [
    "DEFAULT_AGENT_PORT",
    "DEFAULT_QUEUE",
    "FLOW_FIELDS",
    "FLOW_NAME_PATTERN",
    "HOST_FIELDS",
    "LOOPBACK",
    "MAX_MESSAGE",
    "MAX_QUEUE",
    "MAX_REPLICAS",
    "MAX_RESTARTS",
    "MAX_SECONDS",
    "MIN_MESSAGE",
    "NAME_PATTERN",
    "NODE_FIELDS",
    "NODE_OPTIONS",
    "NODE_VOCABULARIES",
    "SECTIONS",
    "Engine",
    "FlowSpec",
    "HostSpec",
    "InputSpec",
    "NodeSpec",
    "Placement",
    "Transport",
    "byte_size",
    "load_manifest",
    "validate",
]


def load_manifest(path: str | Path) -> FlowSpec:
    """Parse and validate; raises ManifestError listing every problem."""
    path = Path(path)
    file = str(path)
    try:
        data = tomllib.loads(path.read_bytes().decode("utf-8"))
    except FileNotFoundError:
        raise ManifestError([Problem(file, "no such file")]) from None
    except OSError as error:
        raise ManifestError([Problem(file, f"cannot read it: {error.strerror or error}")]) from None
    except UnicodeDecodeError as error:
        raise ManifestError([Problem(file, f"not a text file: byte {error.start} is not UTF-8")]) from None
    except tomllib.TOMLDecodeError as error:
        raise ManifestError([Problem(file, f"TOML syntax error: {error}")]) from None
    return validate(data, path.resolve(), file)


def validate(data: dict[str, Any], path: Path, file: str) -> FlowSpec:
    """Validate a manifest already parsed into a dict; ``path`` anchors relative references,
    ``file`` is how problems name where they are."""
    report = Problems(file)
    targets: dict[str, Any] = {}  # the loaded code of each Python node, by node name
    for key in data:
        if key not in SECTIONS:
            report.problem(f"unknown section [{key}]{did_you_mean(key, SECTIONS)}")
    flow_table = data.get("flow", {})
    if not isinstance(flow_table, dict):
        report.problem("[flow] must be a table", field_name="flow")
        flow_table = {}
    settings = report.fields(flow_table, FLOW_FIELDS, None, "[flow]")
    nodes_table = data.get("nodes")
    if not isinstance(nodes_table, dict) or not nodes_table:
        report.problem("no nodes: add at least one [nodes.NAME] table")
        nodes_table = {}
    nodes = {name: check_node(report, path, name, table, targets) for name, table in nodes_table.items()}
    hosts = check_hosts(report, data.get("hosts", {}))
    name = settings.get("name")
    if name is None and "name" not in flow_table:
        name = path.stem  # a flow is named after its file unless [flow] name says otherwise
        if FLOW_FIELDS["name"](name) is not None:
            report.problem(
                f"the file's name {name!r} cannot name the flow (letters, digits, _, - and .): give [flow] a name",
                field_name="name",
            )
    flow = FlowSpec(
        name=name or path.stem,
        path=path,
        nodes=nodes,
        queue=settings.get("queue", DEFAULT_QUEUE),
        transport=Transport(settings.get("transport", Transport.IPC)),
        host=settings.get("host", "127.0.0.1"),
        hosts=hosts,
        insecure=settings.get("insecure", False),
        shm=settings.get("shm", True),
        lossless=settings.get("lossless", False),
        engine=Engine(settings.get("engine", Engine.LOCAL)),
        ray_address=settings.get("ray_address"),
    )
    if "ray_pending_after" in settings:
        flow.ray_pending_after = float(settings["ray_pending_after"])
    for key in ("max_message", "max_control_message"):
        if key in settings:
            setattr(flow, key, byte_size(settings[key]))
    check_placement(report, flow, "transport" in settings)
    check_engine(report, flow, "transport" in settings)
    # Each check runs on what the earlier ones left sound, so one mistake hides no other.
    if check_graph(report, flow, targets):
        check_kinds(report, flow, targets)
    check_arguments(report, flow, targets)
    if report.found:
        raise ManifestError(report.found)
    return flow
