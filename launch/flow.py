"""Define a flow in Python: a manifest in memory, run by the same launcher and runtime.

    flow = Flow("people-counter", queue=8)
    reader = flow.add(VideoReader, source="samples/data/vtest.avi")
    people = flow.add(PeopleDetector, reader, replicas=2)
    tracks = flow.add(Tracker, people)
    flow.add(Annotator, frame=reader, tracks=tracks)          # named input ports
    flow.start(); ...; flow.stop("reader"); results = flow.join()

``add(target, *inputs, **keywords)``: ``target`` is a node class or a module-level function
(also one defined in the user's own script); positional inputs are upstream nodes (or
``node.output("name")`` for a named output); keyword values that are nodes are named input
ports, every other keyword is an argument of the node. A few keywords belong to the flow
rather than the node: ``name``, ``replicas``, ``queue``, ``join``, ``env``, ``cwd``, ``host``
(a machine declared with ``add_host``, where ``flujo-launch agent`` runs).

Every ``add`` validates the graph so far with the manifest's own rules, so misuse raises
where the flow is defined, not when it runs. Cycles cannot be written: a node's inputs
must exist before it.
"""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import tomli_w

from flujo.api import declared_outputs
from flujo.commands import CommandError, request, running_flows
from flujo.launch.errors import ManifestError, did_you_mean
from flujo.launch.manifest import FlowSpec, validate

#: How long ``start`` waits for the launcher to announce itself.
START_TIMEOUT = 30.0


class FlowDefinitionError(ValueError):
    """The flow, as defined so far, could not run."""


@dataclass(frozen=True)
class Port:
    """An output port of a node in a flow; what ``add`` takes as an input."""

    flow: "Flow"
    node: str
    port: str = "out"

    @property
    def reference(self) -> str:
        return self.node if self.port == "out" else f"{self.node}/{self.port}"


class NodeRef(Port):
    """A node added to a flow. Use it as an input (its default output) or call ``output(name)``."""

    def output(self, name: str) -> Port:
        outputs = self.flow._outputs[self.node]
        if name not in outputs:
            raise FlowDefinitionError(f'node "{self.node}" has no output port "{name}" '
                                      f"(it has: {', '.join(outputs)}){did_you_mean(name, outputs)}")
        return Port(self.flow, self.node, name)


def _reference(target: Any) -> str:
    """The ``run`` reference that loads ``target`` in a node process."""
    qualname = getattr(target, "__qualname__", "")
    if not callable(target) or not qualname or "<" in qualname:
        raise FlowDefinitionError(f"{target!r} is not a module-level class or function, so another "
                                  "process cannot load it")
    module = sys.modules.get(target.__module__)
    file = getattr(module, "__file__", None)
    if target.__module__ == "__main__" or target.__module__.startswith("flujo_user_"):
        if not file:
            raise FlowDefinitionError(f"{qualname} is defined interactively; define it in a file")
        return f"{Path(file).resolve()}:{qualname}"
    return f"{target.__module__}:{qualname}"


def _default_name(target: Any) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", target.__name__).lower()


class Flow:
    """A flow defined in Python. ``start``/``stop``/``join`` run it like ``flujo-launch``."""

    def __init__(self, name: str, *, queue: int = 16, transport: str | None = None, host: str = "127.0.0.1") -> None:
        """``transport``: "ipc" (the default on one machine) or "tcp" (the default once a node
        runs on another host); ``host``: the launcher's address for tcp endpoints."""
        self.name = name
        self._settings: dict[str, Any] = {"name": name, "queue": queue, "host": host}
        if transport is not None:
            self._settings["transport"] = transport
        self._nodes: dict[str, dict[str, Any]] = {}
        self._hosts: dict[str, dict[str, Any]] = {}
        self._outputs: dict[str, tuple[str, ...]] = {}
        self._folder: Path | None = None
        self._launcher: subprocess.Popen | None = None

    # -- definition ------------------------------------------------------------------------
    def add_host(self, name: str, address: str, agent_port: int | None = None, *, ssh: str | None = None,
                 python: str | None = None) -> None:
        """Declare another machine; nodes added with ``host=name`` run there (its agent starts them).

        ``agent_port``: where its agent listens (default 7700, or any free port for ``ssh``);
        ``ssh``: "user@host" to have the launcher start the agent there over ssh, with the
        interpreter ``python`` (default: this one's path), as ``[hosts.NAME]`` in a manifest."""
        table: dict[str, Any] = {"address": address}
        for field_name, value in (("agent_port", agent_port), ("ssh", ssh), ("python", python)):
            if value is not None:
                table[field_name] = value
        self._hosts[name] = table

    def add(self, target: Any, *inputs: Port, name: str | None = None, replicas: int = 1,
            queue: int | None = None, join: str = "zip", env: dict[str, str] | None = None,
            cwd: str | None = None, host: str | None = None, **keywords: Any) -> NodeRef:
        """Add a node reading ``inputs``; returns its reference. See the module docstring."""
        reference = _reference(target)
        name = name or self._unique_name(_default_name(target))
        if name in self._nodes:
            raise FlowDefinitionError(f'flow "{self.name}" already has a node named "{name}"')
        ports = {key: value for key, value in keywords.items() if isinstance(value, Port)}
        args = {key: value for key, value in keywords.items() if not isinstance(value, Port)}
        if inputs and ports:
            raise FlowDefinitionError(f'node "{name}": give inputs either positionally or as named ports, not both')
        for upstream in [*inputs, *ports.values()]:
            if not isinstance(upstream, Port):
                raise FlowDefinitionError(f'node "{name}": input {upstream!r} is not a node of a flow')
            if upstream.flow is not self:
                raise FlowDefinitionError(f'node "{name}": input "{upstream.node}" belongs to another flow')
        table: dict[str, Any] = {"run": reference, "cwd": str(Path(cwd or os.getcwd()).resolve())}
        if inputs:
            table["inputs"] = [port.reference for port in inputs]
        if ports:
            table["inputs"] = {key: port.reference for key, port in ports.items()}
        if args:
            table["args"] = self._checked_args(name, args)
        options = {"replicas": replicas if replicas != 1 else None, "queue": queue,
                   "join": join if join != "zip" else None, "env": env, "host": host}
        table.update({key: value for key, value in options.items() if value is not None})
        self._nodes[name] = table
        self._outputs[name] = declared_outputs(target)
        try:
            self.spec()
        except FlowDefinitionError:
            del self._nodes[name], self._outputs[name]
            raise
        return NodeRef(self, name)

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
                raise FlowDefinitionError(f'node "{node}": argument "{key}" = {value!r} cannot be written to a '
                                          "manifest (use strings, numbers, booleans, lists and tables)") from None
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
        try:
            return validate(self.manifest(), Path.cwd() / f"{self.name}.toml", f'flow "{self.name}"')
        except ManifestError as error:
            raise FlowDefinitionError("\n".join(str(problem) for problem in error.problems)) from None

    def to_manifest(self, path: str | Path) -> Path:
        """Write the flow as a manifest file that ``flujo-launch`` runs as is."""
        self.spec()
        path = Path(path)
        path.write_text(f"# Flow {self.name}, written by flujo.Flow.to_manifest\n" + tomli_w.dumps(self.manifest()))
        return path

    # -- running ---------------------------------------------------------------------------
    def start(self) -> None:
        """Start every node (in its own process, under a launcher process) and return."""
        if self._launcher is not None:
            raise RuntimeError(f'flow "{self.name}" was already started')
        self._folder = Path(tempfile.mkdtemp(prefix=f"flujo-flow-{self.name}-"))
        manifest = self.to_manifest(self._folder / "manifest.toml")
        self._launcher = subprocess.Popen([sys.executable, "-m", "flujo.launch", "run", str(manifest),
                                           "--json-status", str(self._folder / "status.json")])

    def stop(self, *nodes: str) -> None:
        """Stop the named nodes (default: every producer); what depends on them alone drains."""
        unknown = [node for node in nodes if node not in self._nodes]
        if unknown:
            raise FlowDefinitionError(f'flow "{self.name}" has no node "{unknown[0]}"'
                                      f"{did_you_mean(unknown[0], self._nodes)}")
        self._wait_announced()
        request(self.name, "stop", nodes=list(nodes))

    def restart(self, node: str) -> list[str]:
        """Replace the node's processes one by one, each drained first (nothing lost); returns
        the replicas being restarted."""
        if node not in self._nodes:
            raise FlowDefinitionError(f'flow "{self.name}" has no node "{node}"{did_you_mean(node, self._nodes)}')
        self._wait_announced()
        return request(self.name, "restart", node=node)["restarting"]

    def status(self) -> dict[str, Any]:
        """The running flow's state, one entry per node replica."""
        self._wait_announced()
        return request(self.name, "status")

    def join(self, timeout: float | None = None) -> dict[str, int]:
        """Wait for the flow to end; returns each replica's exit status by label."""
        if self._launcher is None or self._folder is None:
            raise RuntimeError(f'flow "{self.name}" was not started')
        self._launcher.wait(timeout)
        status_file = self._folder / "status.json"
        if not status_file.exists():
            return {"launcher": self._launcher.returncode}
        return {node["label"]: node["exit_code"] for node in json.loads(status_file.read_text())["nodes"]}

    def run(self, timeout: float | None = None) -> dict[str, int]:
        """Start, then join."""
        self.start()
        return self.join(timeout)

    @property
    def returncode(self) -> int | None:
        """The launcher's exit status once it ended (0: every node exited 0)."""
        return None if self._launcher is None else self._launcher.poll()

    def _wait_announced(self) -> None:
        if self._launcher is None:
            raise RuntimeError(f'flow "{self.name}" was not started')
        deadline = time.monotonic() + START_TIMEOUT
        while self.name not in running_flows():
            if self._launcher.poll() is not None:
                raise CommandError(f'flow "{self.name}" is no longer running')
            if time.monotonic() > deadline:
                raise CommandError(f'flow "{self.name}" did not start within {START_TIMEOUT} s')
            time.sleep(0.02)  # the launcher is another process: its announcement file is what we can watch
