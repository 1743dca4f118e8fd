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

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import deque
from pathlib import Path
from typing import IO, Any

from flujo.launch import parent
from flujo.launch.command_client import request
from flujo.launch.flow_builder import FlowBuilder, NodeRef, Port
from flujo.launch.flow_errors import FlowDefinitionError, FlowError, flow_failure
from flujo.launch.runs import CommandError, running_flows

__all__ = ["Flow", "FlowDefinitionError", "FlowError", "NodeRef", "Port"]

#: How long ``start`` waits for the launcher to announce itself.
START_TIMEOUT = 30.0
#: After an exception in a ``with Flow(...)`` block: how long the flow may take to drain
#: (beyond the longest stop_timeout) before every node is killed.
ABORT_GRACE = 5.0
#: Lines of the launcher's messages kept for a FlowError when the flow could not run.
MESSAGES_KEPT = 20


class Flow(FlowBuilder):
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
        super().__init__(name, queue=queue, transport=transport, host=host)
        self._folder: Path | None = None
        self._launcher: subprocess.Popen | None = None
        self._parent_pipe: int | None = None  # our end of the pipe whose closing ends the launcher
        self._ended: tuple[dict[str, int], dict[str, Any]] | None = None
        self._messages: threading.Thread | None = None  # copies the launcher's messages to sys.stderr
        self._last_messages: deque[str] = deque(maxlen=MESSAGES_KEPT)  # ... and keeps the last ones

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
        raise flow_failure(self.name, code, results, status, self._last_messages)

    def _release(self) -> None:
        if self._parent_pipe is not None:
            os.close(self._parent_pipe)
            self._parent_pipe = None
        if self._folder is not None:
            shutil.rmtree(self._folder, ignore_errors=True)

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
