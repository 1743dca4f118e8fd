"""The definition half of a Python-defined flow (``flujo.Flow``): nodes, ports and hosts added
one by one, each addition validated with the manifest's own rules, and the manifest they make.
Running it is the other half (launch/flow.py)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import tomli_w

from flujo.api import declared_outputs
from flujo.launch.errors import ManifestError, did_you_mean
from flujo.launch.flow_errors import FlowDefinitionError
from flujo.launch.flow_targets import arguments_of, default_name, is_interactive, run_reference
from flujo.launch.manifest import NODE_OPTIONS, FlowSpec, validate


@dataclass(frozen=True)
class Port:
    """An output port of a node in a flow; what ``add`` takes as an input."""

    flow: FlowBuilder
    node: str
    port: str = "out"

    @property
    def reference(self) -> str:
        return self.node if self.port == "out" else f"{self.node}/{self.port}"


class NodeRef(Port):
    """A node added to a flow. Use it as an input (its default output) or call ``output(name)``;
    ``name`` is what status tables and ``flujo-launch`` commands call it."""

    @property
    def name(self) -> str:
        return self.node

    def output(self, name: str) -> Port:
        outputs = self.flow._outputs[self.node]
        if name not in outputs:
            raise FlowDefinitionError(
                f'node "{self.node}" has no output port "{name}" '
                f"(it has: {', '.join(outputs)}){did_you_mean(name, outputs)}"
            )
        return Port(self.flow, self.node, name)

    def __str__(self) -> str:
        return self.node


class FlowBuilder:
    """A flow's definition: what ``add`` and ``add_host`` declared, as a manifest. ``flujo.Flow``
    adds running it."""

    def __init__(self, name: str, *, queue: int = 16, transport: str | None = None, host: str = "127.0.0.1") -> None:
        self.name = name
        self._settings: dict[str, Any] = {"name": name, "queue": queue, "host": host}
        if transport is not None:
            self._settings["transport"] = transport
        self._nodes: dict[str, dict[str, Any]] = {}
        self._hosts: dict[str, dict[str, Any]] = {}
        self._outputs: dict[str, tuple[str, ...]] = {}
        self._interactive: dict[str, Any] = {}  # node name -> target defined interactively

    # -- definition ------------------------------------------------------------------------
    def add_host(
        self,
        name: str,
        address: str,
        agent_port: int | None = None,
        *,
        ssh: str | None = None,
        python: str | None = None,
    ) -> None:
        """Declare another machine; nodes added with ``host=name`` run there (its agent starts them).

        ``agent_port``: where its agent listens (default 7700, or any free port for ``ssh``);
        ``ssh``: "user@host" to have the launcher start the agent there over ssh, with the
        interpreter ``python`` (default: this one's path), as ``[hosts.NAME]`` in a manifest."""
        table: dict[str, Any] = {"address": address}
        for field_name, value in (("agent_port", agent_port), ("ssh", ssh), ("python", python)):
            if value is not None:
                table[field_name] = value
        self._hosts[name] = table

    def add(self, target: Any, *inputs: Port, name: str | None = None, **keywords: Any) -> NodeRef:
        """Add a node reading ``inputs``; returns its reference. See the module docstring."""
        command = isinstance(target, (list, tuple))
        name = name or self._unique_name(default_name(target))
        if name in self._nodes:
            raise FlowDefinitionError(f'flow "{self.name}" already has a node named "{name}"')
        ports = {key: value for key, value in keywords.items() if isinstance(value, Port)}
        options = {key: value for key, value in keywords.items() if key in NODE_OPTIONS and key not in ports}
        args = self._arguments(
            name, target, {key: value for key, value in keywords.items() if key not in ports and key not in options}
        )
        if inputs and ports:
            raise FlowDefinitionError(f'node "{name}": give inputs either positionally or as named ports, not both')
        for upstream in [*inputs, *ports.values()]:
            if not isinstance(upstream, Port):
                raise FlowDefinitionError(f'node "{name}": input {upstream!r} is not a node of a flow')
            if upstream.flow is not self:
                raise FlowDefinitionError(f'node "{name}": input "{upstream.node}" belongs to another flow')
        if not command and is_interactive(target) and options.get("host"):
            raise FlowDefinitionError(
                f'node "{name}": {target.__qualname__} is defined interactively, so it cannot '
                "run on another host; define it in a file present on both"
            )
        table: dict[str, Any] = (
            {"command": [str(word) for word in target]} if command else {"run": run_reference(target)}
        )
        table["cwd"] = str(Path(options.pop("cwd", None) or os.getcwd()).resolve())
        if inputs:
            table["inputs"] = [port.reference for port in inputs]
        if ports:
            table["inputs"] = {key: port.reference for key, port in ports.items()}
        if args:
            table["args"] = self._checked_args(name, args)
        table.update({key: value for key, value in options.items() if value is not None})
        self._nodes[name] = table
        self._outputs[name] = tuple(options.get("outputs") or ("out",)) if command else declared_outputs(target)
        if not command and is_interactive(target):
            self._interactive[name] = target
        try:
            self.spec()
        except FlowDefinitionError:
            del self._nodes[name], self._outputs[name]
            self._interactive.pop(name, None)
            raise
        return NodeRef(self, name)

    def _arguments(self, node: str, target: Any, keywords: dict[str, Any]) -> dict[str, Any]:
        """The node's arguments: ``args={...}`` and the keywords the target takes; any other
        keyword is a mistake, named with the closest option or argument."""
        args = dict(keywords.pop("args", None) or {})
        accepted = [] if isinstance(target, (list, tuple)) else arguments_of(target)
        for key, value in keywords.items():
            if accepted is not None and key not in accepted:
                what = "a command" if isinstance(target, (list, tuple)) else getattr(target, "__qualname__", target)
                takes = f"takes: {', '.join(accepted)}" if accepted else "takes no arguments"
                raise FlowDefinitionError(
                    f'node "{node}": unknown keyword "{key}"{did_you_mean(key, [*NODE_OPTIONS, *accepted])}: '
                    f"not a node option ({', '.join(NODE_OPTIONS)}) nor an argument of {what} ({takes})"
                )
            args[key] = value
        return args

    def _unique_name(self, base: str) -> str:
        name, number = base, 2
        while name in self._nodes:
            name, number = f"{base}_{number}", number + 1
        return name

    def _checked_args(self, node: str, args: dict[str, Any]) -> dict[str, Any]:
        checked = {}
        for key, value in args.items():
            if value is None:
                continue  # TOML has no null: an argument left out takes its default
            try:
                tomli_w.dumps({key: value})
            except TypeError:
                raise FlowDefinitionError(
                    f'node "{node}": argument "{key}" = {value!r} cannot be written to a '
                    "manifest (use strings, numbers, booleans, lists and tables)"
                ) from None
            checked[key] = value
        return checked

    def manifest(self) -> dict[str, Any]:
        """The manifest, as the dict a TOML file would parse to."""
        manifest: dict[str, Any] = {"flow": dict(self._settings)}
        if self._hosts:
            manifest["hosts"] = {name: dict(table) for name, table in self._hosts.items()}
        manifest["nodes"] = {name: dict(table) for name, table in self._nodes.items()}
        return manifest

    def spec(self) -> FlowSpec:
        """Validate with the manifest's rules; raises FlowDefinitionError naming node and field."""
        return self._validate(self.manifest())

    def _validate(self, manifest: dict[str, Any], path: Path | None = None) -> FlowSpec:
        try:
            return validate(manifest, path or Path.cwd() / f"{self.name}.toml", f'flow "{self.name}"')
        except ManifestError as error:
            raise FlowDefinitionError("\n".join(str(problem) for problem in error.problems)) from None

    def to_manifest(self, path: str | Path) -> Path:
        """Write the flow as a manifest file that ``flujo-launch`` runs as is. Nodes defined
        interactively are pickled next to it (``NAME.pkl``), since no file defines them."""
        path = Path(path)
        manifest = self.manifest()
        if self._interactive:
            import cloudpickle  # classes of a notebook travel by value; the node runs the same Python

            for name, target in self._interactive.items():
                pickled = path.parent / f"{path.stem}.{name}.pkl"
                pickled.write_bytes(cloudpickle.dumps(target))
                manifest["nodes"][name]["run"] = f"{pickled.resolve()}:{target.__qualname__}"
        self._validate(manifest, path.resolve())
        path.write_text(f"# Flow {self.name}, written by flujo.Flow.to_manifest\n" + tomli_w.dumps(manifest))
        return path

    def _name(self, node: str | NodeRef) -> str:
        if isinstance(node, Port):
            if node.flow is not self:
                raise FlowDefinitionError(f'node "{node.node}" belongs to another flow')
            return node.node
        if node not in self._nodes:
            raise FlowDefinitionError(
                f'flow "{self.name}" has no node "{node}"{did_you_mean(node, self._nodes)} '
                f"(its nodes: {', '.join(self._nodes)})"
            )
        return node
