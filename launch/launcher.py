"""The launcher: runs one flow to its end (`flujo-launch run`, flujo.Flow).

It sets the run up (its private folder, keys, the other hosts, the plan, the sockets, the
announcement), spawns every replica, and runs one single-threaded loop that hands each event
to the supervisor; then it tears everything down, whatever happened. The jobs live apart:
launch/channels.py (sockets), supervisor.py (exit and restart policy), ladder.py (stop ladder),
spawner.py (processes), handover.py (graceful restarts), replica.py (the life-cycle machine),
command_table.py (commands), snapshot.py (status), hosts.py (agents, Ray), display.py (what a
person sees), signals.py (Ctrl-C).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import tempfile
import time
from pathlib import Path
from typing import IO, Any

import zmq

from flujo.curve import FlowContext, KeyPair
from flujo.launch.channels import Channels
from flujo.launch.command_table import answer
from flujo.launch.display import REFRESH_MS, Display
from flujo.launch.errors import EXIT_KILLED, EXIT_NODE_FAILED, LaunchError
from flujo.launch.fork_client import ForkServer
from flujo.launch.hosts import Hosts
from flujo.launch.logstore import new_run, stamp
from flujo.launch.manifest import FlowSpec
from flujo.launch.parent import ParentPipe
from flujo.launch.plan import delivery_report, plan, run_id
from flujo.launch.process import OutputRelay
from flujo.launch.reaper import Reaper
from flujo.launch.replica import Key, Replica
from flujo.launch.restarts import RestartBudget
from flujo.launch.runs import ANNOUNCEMENT, UnsafeFolderError, announce, private_runs_folder, running_flows
from flujo.launch.signals import Interrupts
from flujo.launch.snapshot import flow_status
from flujo.launch.supervisor import Supervisor
from flujo.launch.timers import Timers
from flujo.shm_wire import cleanup_flow_segments, segment_prefix


class Launcher:
    """Runs one flow to its end. ``run()`` returns the exit status for the command line."""

    def __init__(
        self,
        flow: FlowSpec,
        output: IO[str] | None = None,
        messages: IO[str] | None = None,
        json_status: str | None = None,
        quiet: bool = False,
        metrics_port: int | None = None,
        metrics_address: str = "127.0.0.1",
        forks: ForkServer | None = None,
        parent: ParentPipe | None = None,
    ) -> None:
        """``forks``: the fork server its Python nodes start from (launch/fork_server.py; the
        caller closes it once this has run); without one, each starts its own interpreter.
        ``parent``: the program's lifeline (flujo.Flow), else taken from the environment."""
        self.flow = flow
        self._forks = forks
        self._metrics_at = (metrics_address, metrics_port) if metrics_port is not None else None
        self._json_status = json_status
        self._display = Display(flow.name, output, messages, quiet)
        self.replicas: dict[Key, Replica] = {}
        self._timers = Timers()
        self._parent = parent or ParentPipe.from_environment()  # started by a program: ends with it
        self._relay: OutputRelay | None = None  # node output, once the terminal is set up
        self._hosts = Hosts(flow, self.replicas, self._timers, self._say, lambda: self._relay)
        self._supervisor: Supervisor | None = None  # while the flow runs

    # -- public ------------------------------------------------------------------------------------
    def run(self) -> int:
        try:
            self._run()
        except LaunchError as error:
            if error.message:
                self._say(error.message)
            return error.code
        return 0

    def status(self) -> dict[str, Any]:
        """The flow's state, one entry per replica (launch/snapshot.py)."""
        supervisor = self._supervisor
        return flow_status(
            self.flow,
            self.replicas,
            self._hosts.states(),
            supervisor is not None and supervisor.started,
            supervisor is not None and supervisor.stopping,
        )

    # -- what commands act on (launch/command_table.py) --------------------------------------------
    @property
    def flow_name(self) -> str:
        return self.flow.name

    @property
    def node_names(self) -> list[str]:
        return list(self.flow.nodes)

    @property
    def producers(self) -> list[str]:
        return self.flow.producers()

    def stop(self, nodes: list[str] | None = None) -> None:
        """Stop the given nodes (default: every producer); the rest drains organically."""
        self._running().stop(nodes)

    def restart(self, node: str) -> list[str]:
        """Replace the node's replicas one after the other, each drained first; their labels."""
        return self._running().restart(node)

    def ended(self, node: str) -> str:
        return self._running().ended(node)

    def states(self, node: str) -> list[str]:
        return [str(r.state) for r in self.replicas.values() if r.config.node == node]

    def _running(self) -> Supervisor:
        if self._supervisor is None:
            raise RuntimeError("the flow is not running")
        return self._supervisor

    # -- a run, set up and torn down ---------------------------------------------------------------
    def _run(self) -> None:
        try:
            if self.flow.name in running_flows():
                raise LaunchError(
                    EXIT_NODE_FAILED,
                    f'a flow named "{self.flow.name}" is already running; give this one another [flow] name',
                )
            flow_folder = private_runs_folder(self.flow.name)
        except UnsafeFolderError as error:
            raise LaunchError(EXIT_NODE_FAILED, str(error)) from None
        run_dir = Path(tempfile.mkdtemp(prefix="flujo-"))
        flow_run = run_id(run_dir, self.flow.name)  # names its shared-memory segments
        announcement = flow_folder / ANNOUNCEMENT
        reaper = Reaper()  # kills every node's process group if this process dies, however
        reaper.unlink_on_exit(segment_prefix(flow_run))  # ... and unlinks the run's shared memory
        if (forks := self._forks) is not None:
            reaper.watch(forks.pid)
        # A fresh key pair per run: every tcp socket of the flow uses CURVE with it (flujo/curve.py).
        flow_keys = KeyPair.generate() if self.flow.secure else None
        if self.flow.transport == "tcp" and not flow_keys:
            self._say(
                "warning: insecure = true: this flow's tcp traffic is neither encrypted nor authenticated; "
                "anyone on the network can read it and inject into it"
            )
        context = FlowContext(flow_keys)
        try:
            with Interrupts() as interrupts:
                try:
                    self._start(context, run_dir, flow_run, flow_keys, announcement, reaper, forks, interrupts)
                finally:
                    self._kill_all()
        finally:
            announcement.unlink(missing_ok=True)
            self._hosts.close()
            self._display.close()
            self._write_json_status()
            if self._parent is not None:
                self._parent.close()
            if self._relay is not None:
                self._relay.close()
            context.destroy(linger=0)
            self._hosts.close_sessions()  # each session ends: its agent ends what it still runs
            shutil.rmtree(run_dir, ignore_errors=True)  # made by mkdtemp above: this run's own
            cleanup_flow_segments(flow_run)
            reaper.close()  # every node has exited: kills only what they left behind

    def _start(
        self,
        context: zmq.Context,
        run_dir: Path,
        flow_run: str,
        flow_keys: KeyPair | None,
        announcement: Path,
        reaper: Reaper,
        forks: ForkServer | None,
        interrupts: Interrupts,
    ) -> None:
        remote_ports, placed = self._hosts.connect(context)  # LaunchError: nothing started
        endpoints, configs = plan(self.flow, run_dir, remote_ports, flow_keys, placed)
        for line in delivery_report(self.flow):
            self._say(line)
        commands = f"ipc://{run_dir / 'commands'}"
        channels = Channels(
            context, endpoints.control, endpoints.status, commands, self.flow.max_control_message, self._say
        )
        metrics_url = self._display.serve_metrics(*self._metrics_at) if self._metrics_at is not None else None
        announce(
            announcement,
            {
                "flow": self.flow.name,
                "pid": os.getpid(),
                "endpoint": commands,
                "started": stamp(time.time()),
                "manifest": str(self.flow.path),
                "nodes": len(self.flow.nodes),
                "processes": len(configs),
                "metrics": metrics_url,
            },
        )
        for key, config in configs.items():
            spec = self.flow.nodes[config.node]
            self.replicas[key] = Replica(config, RestartBudget(spec.restart, spec.max_restarts, spec.restart_window))
        labels = [replica.config.label for replica in self.replicas.values()]
        logs = new_run(self.flow.name, {"manifest": str(self.flow.path), "labels": labels})
        with self._display.terminal(max(map(len, labels)), self.status) as show:
            self._relay = OutputRelay(show, logs)
            self._supervisor = Supervisor(
                self.flow,
                self.replicas,
                channels,
                self._hosts,
                self._timers,
                self._say,
                self._relay,
                reaper,
                flow_run,
                forks,
            )
            self._supervisor.spawn_all()
            self._loop(self._supervisor, channels, interrupts)
            self._kill_all()  # also waits for the last output lines, while the view still shows them
        if self._supervisor.failures:
            for failure in self._supervisor.failures:
                self._say(failure)
            raise LaunchError(EXIT_NODE_FAILED)

    def _loop(self, supervisor: Supervisor, channels: Channels, interrupts: Interrupts) -> None:
        """Wait for the next event, hand it on; until every replica has ended for good."""
        poller = zmq.Poller()
        links = self._hosts.readable()
        for socket in (*channels.sockets, *links):
            poller.register(socket, zmq.POLLIN)
        poller.register(interrupts.fd, zmq.POLLIN)
        parent = self._parent.fd if self._parent is not None else None
        if parent is not None:
            poller.register(parent, zmq.POLLIN)
        while supervisor.running:
            timeout = self._timers.timeout_ms()
            if self._display.wants_refresh:  # fresh even when nothing happens
                self._display.refresh(self.status)
                timeout = min(timeout, REFRESH_MS) if timeout is not None else REFRESH_MS
            events = dict(poller.poll(timeout))
            self._timers.run_due()
            if interrupts.fd in events:
                interrupts.acknowledge()
                self._interrupted(supervisor, interrupts.count)
            if parent is not None and parent in events and self._parent is not None and self._parent.readable():
                poller.unregister(parent)
                parent = None
                self._say("the program that started this flow ended: stopping the flow")
                if not supervisor.stopping:
                    supervisor.stop()
            if channels.control in events:
                supervisor.on_subscription()
            if channels.status in events:
                channels.receive_status(supervisor.on_status)
            if channels.exits in events:
                supervisor.on_local_exit()
            if channels.commands in events:
                channels.serve_command(lambda request: answer(self, request))
            for socket, link in links.items():
                if socket in events:
                    link.handle()

    def _interrupted(self, supervisor: Supervisor, count: int) -> None:
        if count == 1 and not supervisor.stopping:
            self._say("stopping: producers stop and the pipes drain (interrupt again to kill)")
            supervisor.stop()
        elif count >= 2:
            self._say("killing every node")
            self._kill_all()
            raise LaunchError(EXIT_KILLED)

    def _kill_all(self) -> None:
        for replica in self.replicas.values():
            if replica.process is not None and replica.exit_code is None:
                replica.process.signal(signal.SIGKILL)
        for replica in self.replicas.values():
            if replica.process is not None:
                replica.process.join()

    def _write_json_status(self) -> None:
        if self._json_status:
            Path(self._json_status).write_text(json.dumps(self.status(), indent=2))

    def _say(self, text: str) -> None:
        self._display.say(text)
