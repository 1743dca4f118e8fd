"""Define a flow in Python: a manifest in memory, run by the same launcher and runtime.

    with Flow("people-counter") as flow:
        reader = flow.add(VideoReader, source="samples/data/vtest.avi")
        people = flow.add(PeopleDetector, reader, replicas=2, restart="on-failure")
        tracks = flow.add(Tracker, people)
        flow.add(Annotator, frame=reader, tracks=tracks)          # named input ports
        flow.start(); ...; flow.stop(reader)
    # leaving the block waits for the flow to end, and raises FlowError if a node failed

``add(target, *inputs, **keywords)``: ``target`` is a node class, a module-level function
(also one defined in the user's own script or a notebook) or a command (a list of strings:
any executable speaking docs/PROTOCOL.md). Positional inputs are upstream nodes (or
``node.output("name")`` for a named output); keyword values that are nodes are named input
ports; the keywords ``name`` and the manifest's node options (``NODE_OPTIONS``: ``replicas``,
``queue``, ``policy``, ``join``, ``on_error``, ``restart``, ``max_restarts``,
``restart_window``, ``stop_timeout``, ``host``, ``env``, ``cwd``, ``outputs``) configure the
node, checked by the manifest's own rules; every other keyword must be an argument of the
target (a constructor or function parameter), else it is refused by name. An argument that
shares its name with an option (or ``name``) goes in ``args={...}``.

A node's name is ``name=`` or, by default, its class or function name in snake_case
(``VideoReader`` -> ``video_reader``); ``stop``, ``restart`` and ``status`` take the
reference ``add`` returned as well as the name.

Every ``add`` validates the graph so far with the manifest's own rules, so misuse raises
where the flow is defined, not when it runs. Cycles cannot be written: a node's inputs
must exist before it.
"""

from __future__ import annotations

import inspect
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import tomli_w

from flujo.api import declared_outputs
from flujo.launch import parent
from flujo.launch.command_client import request
from flujo.launch.errors import ManifestError, did_you_mean
from flujo.launch.manifest import NODE_OPTIONS, FlowSpec, validate
from flujo.launch.runs import CommandError, running_flows

#: How long ``start`` waits for the launcher to announce itself.
START_TIMEOUT = 30.0
#: After an exception in a ``with Flow(...)`` block: how long the flow may take to drain
#: (beyond the longest stop_timeout) before every node is killed.
ABORT_GRACE = 5.0
#: Lines of the launcher's messages kept for a FlowError when the flow could not run.
MESSAGES_KEPT = 20


class FlowDefinitionError(ValueError):
    """The flow, as defined so far, could not run."""


class FlowError(RuntimeError):
    """The flow ran and failed; the message names each failed node and its error.

    ``results`` has each replica's exit status by label (empty if the launcher itself could
    not start the flow); ``status`` is the launcher's final state, as ``Flow.status()``.
    """

    def __init__(self, message: str, results: dict[str, int], status: dict[str, Any]) -> None:
        super().__init__(message)
        self.results, self.status = results, status


@dataclass(frozen=True)
class Port:
    """An output port of a node in a flow; what ``add`` takes as an input."""

    flow: Flow
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


def _is_interactive(target: Any) -> bool:
    """Defined in a notebook, a REPL or ``python -c``: no file another process could load it from."""
    if getattr(target, "__module__", None) != "__main__":
        return False
    file = getattr(sys.modules.get("__main__"), "__file__", None)
    return not file or not Path(file).is_file()  # "<stdin>", or none at all


def _reference(target: Any) -> str:
    """The ``run`` reference that loads ``target`` in a node process (an interactive target is
    referred to through ``__main__`` until ``start`` pickles it)."""
    qualname = getattr(target, "__qualname__", "")
    if not callable(target) or not qualname or "<" in qualname:
        raise FlowDefinitionError(
            f"{target!r} is not a module-level class or function, so another process cannot load it"
        )
    if _is_interactive(target):
        return f"__main__:{qualname}"
    module = sys.modules.get(target.__module__)
    file = getattr(module, "__file__", None)
    if target.__module__ == "__main__" or target.__module__.startswith("flujo_user_"):
        return f"{Path(file).resolve()}:{qualname}"  # type: ignore[arg-type]
    return f"{target.__module__}:{qualname}"


def _default_name(target: Any) -> str:
    if isinstance(target, (list, tuple)):  # a command: its script's or program's name
        words = [word for word in target[1:] if not word.startswith("-")] or list(target[:1])
        base = Path(str(words[0])).stem
        return re.sub(r"[^A-Za-z0-9_-]", "_", base).lstrip("-0123456789") or "command"
    return re.sub(r"(?<!^)(?=[A-Z])", "_", target.__name__).lower()


def _arguments_of(target: Any) -> list[str] | None:
    """The keyword arguments ``target`` takes (a class: its constructor's); None: any."""
    try:
        parameters = inspect.signature(target).parameters.values()
    except (TypeError, ValueError):
        return None
    if any(parameter.kind is inspect.Parameter.VAR_KEYWORD for parameter in parameters):
        return None
    return [
        parameter.name
        for parameter in parameters
        if parameter.kind in (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    ]


class Flow:
    """A flow defined in Python. ``start``/``stop``/``join`` run it like ``flujo-launch``.

    Use it as a context manager: leaving the block waits for the flow to end (raising
    FlowError if a node failed); an exception in the block stops it (every node ends within
    its stop_timeout, else it is killed); Ctrl-C stops it the way it stops ``flujo-launch``
    (producers stop, the pipes drain) and the program goes on after the block. In every case
    the launcher, the nodes and the flow's temporary folder are gone afterwards. Without the
    block, the flow still ends when the program that started it ends.
    """

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
        self._interactive: dict[str, Any] = {}  # node name -> target defined interactively
        self._folder: Path | None = None
        self._launcher: subprocess.Popen | None = None
        self._parent_pipe: int | None = None  # our end of the pipe whose closing ends the launcher
        self._ended: tuple[dict[str, int], dict[str, Any]] | None = None
        self._messages: threading.Thread | None = None  # copies the launcher's messages to sys.stderr
        self._last_messages: deque[str] = deque(maxlen=MESSAGES_KEPT)  # ... and keeps the last ones

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
        name = name or self._unique_name(_default_name(target))
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
        if not command and _is_interactive(target) and options.get("host"):
            raise FlowDefinitionError(
                f'node "{name}": {target.__qualname__} is defined interactively, so it cannot '
                "run on another host; define it in a file present on both"
            )
        table: dict[str, Any] = {"command": [str(word) for word in target]} if command else {"run": _reference(target)}
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
        if not command and _is_interactive(target):
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
        accepted = [] if isinstance(target, (list, tuple)) else _arguments_of(target)
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

    # -- running ---------------------------------------------------------------------------
    def start(self) -> None:
        """Start every node (in its own process, under a launcher process) and return. The
        launcher stops the flow if this program ends first."""
        if self._launcher is not None:
            raise RuntimeError(f'flow "{self.name}" was already started')
        self._folder = Path(tempfile.mkdtemp(prefix=f"flujo-flow-{self.name}-"))
        read_end = None
        try:
            manifest = self.to_manifest(self._folder / "manifest.toml")
            read_end, self._parent_pipe = os.pipe()  # ours stays here; the kernel closes it when we end
            env = {**os.environ, parent.FD_ENV: str(read_end), parent.FOLDER_ENV: str(self._folder)}
            # Its own session: a terminal's Ctrl-C reaches this program, which decides what to stop.
            self._launcher = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "flujo.launch",
                    "run",
                    str(manifest),
                    "--json-status",
                    str(self._folder / "status.json"),
                ],
                env=env,
                pass_fds=(read_end,),
                start_new_session=True,
                stderr=subprocess.PIPE,
            )
            self._messages = threading.Thread(
                target=self._relay_messages,
                args=(self._launcher.stderr,),
                daemon=True,
                name=f"flow {self.name} messages",
            )
            self._messages.start()
        except BaseException:
            self._release()
            raise
        finally:
            if read_end is not None:
                os.close(read_end)

    def stop(self, *nodes: str | NodeRef) -> None:
        """Stop the given nodes (default: every producer); what depends on them alone drains."""
        names = [self._name(node) for node in nodes]
        self._wait_announced()
        request(self.name, "stop", nodes=names)

    def restart(self, node: str | NodeRef) -> list[str]:
        """Replace the node's processes one by one, each drained first (nothing lost); returns
        the replicas being restarted."""
        name = self._name(node)
        self._wait_announced()
        return request(self.name, "restart", node=name)["restarting"]

    def status(self, node: str | NodeRef | None = None) -> dict[str, Any]:
        """The running flow's state, one entry per node replica; for one ``node``, its replicas'
        counters added up: ``{"node", "items_in", "items_out", "errors", "restarts", "replicas"}``."""
        name = None if node is None else self._name(node)
        self._wait_announced()
        status = request(self.name, "status")
        if name is None:
            return status
        replicas = [entry for entry in status["nodes"] if entry["node"] == name]
        totals = {
            key: sum(entry.get(key) or 0 for entry in replicas)
            for key in ("items_in", "items_out", "errors", "restarts")
        }
        return {"node": name, **totals, "replicas": replicas}

    def join(self, timeout: float | None = None) -> dict[str, int]:
        """Wait for the flow to end; returns each replica's exit status by label. Raises
        FlowError naming the failed nodes and their errors if the flow failed, and
        ``subprocess.TimeoutExpired`` if it is still running after ``timeout`` seconds.
        Ctrl-C while waiting stops the flow (a second one kills it) and returns once it ended."""
        if self._launcher is None:
            raise RuntimeError(f'flow "{self.name}" was not started')
        try:
            self._launcher.wait(timeout)
        except KeyboardInterrupt:
            self._interrupt()
        return self._outcome()

    def run(self, timeout: float | None = None) -> dict[str, int]:
        """Start, then join (see ``join``); the flow is stopped if the wait is cut short."""
        self.start()
        try:
            return self.join(timeout)
        except subprocess.TimeoutExpired:
            self._abort()
            raise

    def __enter__(self) -> Flow:
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None, trace: Any) -> bool:
        if self._launcher is None or self._ended is not None:
            self._release()
            return False
        if kind is None:
            self.join()  # raises FlowError if a node failed
            return False
        if issubclass(kind, KeyboardInterrupt):
            self._interrupt()  # a clean stop, as Ctrl-C gives flujo-launch; the program goes on
            self._finish()
            return True
        self._abort()
        return False

    @property
    def summaries(self) -> dict[str, dict[str, Any]]:
        """Once the flow ended: what each replica reported at its end (``Node.summary()``),
        by label; replicas that reported nothing are left out."""
        if self._ended is None:
            raise RuntimeError(f'flow "{self.name}" has not ended yet: join() first')
        return {node["label"]: node["summary"] for node in self._ended[1].get("nodes", []) if node.get("summary")}

    @property
    def returncode(self) -> int | None:
        """The launcher's exit status once it ended (0: every node exited 0)."""
        return None if self._launcher is None else self._launcher.poll()

    # -- ending ----------------------------------------------------------------------------
    def _interrupt(self) -> None:
        """Ctrl-C: ask the launcher to stop the flow; another Ctrl-C has it kill every node."""
        assert self._launcher is not None
        self._launcher.send_signal(signal.SIGINT)
        while True:
            try:
                self._launcher.wait()
                return
            except KeyboardInterrupt:
                self._launcher.send_signal(signal.SIGINT)

    def _abort(self) -> None:
        """Stop the flow after an error in this program: drain, within a bound, else kill."""
        assert self._launcher is not None
        launcher = self._launcher
        grace = max((table.get("stop_timeout", 10.0) for table in self._nodes.values()), default=10.0) + ABORT_GRACE
        try:
            if launcher.poll() is None:
                launcher.send_signal(signal.SIGTERM)  # producers stop, the pipes drain
                try:
                    launcher.wait(grace)
                except subprocess.TimeoutExpired:
                    launcher.send_signal(signal.SIGTERM)  # the second one kills every node
                    try:
                        launcher.wait(ABORT_GRACE)
                    except subprocess.TimeoutExpired:
                        launcher.kill()  # its nodes end with it (the kernel's parent-death signal)
                        launcher.wait()
        finally:
            self._finish()

    def _relay_messages(self, stream: IO[bytes]) -> None:
        """The launcher's messages go on to this program's stderr (a notebook shows them) and
        the last few are kept for the error raised if the flow could not run."""
        with stream:
            for raw in stream:
                text = raw.decode(errors="replace")
                self._last_messages.append(text.rstrip("\n"))
                try:
                    sys.stderr.write(text)
                    sys.stderr.flush()
                except (OSError, ValueError):
                    pass  # our stderr is closed: keep reading, or the launcher would block

    def _finish(self) -> tuple[dict[str, int], dict[str, Any]]:
        """Read the launcher's final status once it has exited, then remove the flow's folder."""
        if self._messages is not None:
            self._messages.join(5)  # every message is out before the outcome is told
        if self._ended is None:
            status: dict[str, Any] = {}
            if self._folder is not None and (self._folder / "status.json").exists():
                status = json.loads((self._folder / "status.json").read_text())
            results = {node["label"]: node["exit_code"] for node in status.get("nodes", [])}
            self._ended = results, status
            self._release()
        return self._ended

    def _outcome(self) -> dict[str, int]:
        results, status = self._finish()
        code = self._launcher.returncode if self._launcher is not None else None
        if code == 0:
            return results
        failed = [
            node for node in status.get("nodes", []) if node.get("error") or node.get("exit_code") not in (0, None)
        ]
        if failed:
            reasons = [
                f'node "{node["label"]}" failed: '
                f"{node.get('error') or 'exited with status ' + str(node.get('exit_code'))}"
                for node in failed
            ]
        elif status:
            reasons = [f"killed (the launcher exited with status {code})"]
        else:
            said = [line for line in self._last_messages if line.strip()]
            reasons = [
                f"the launcher exited with status {code} before the flow ran"
                + (": " + " / ".join(said[-3:]) if said else "")
            ]
        raise FlowError(f'flow "{self.name}" failed: ' + "; ".join(reasons), results, status)

    def _release(self) -> None:
        if self._parent_pipe is not None:
            os.close(self._parent_pipe)
            self._parent_pipe = None
        if self._folder is not None:
            shutil.rmtree(self._folder, ignore_errors=True)

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
