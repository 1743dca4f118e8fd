"""The launcher's run loop: spawn every replica, relay control, end when every process has.

Sockets (all bound here; nodes connect):
    control   XPUB  commands to nodes; its subscription messages tell which nodes listen
    status    PULL  reports from nodes: ready, released, finished, error
    exits     PULL  (inproc) exit statuses from the threads that wait on each child

Every command that changes the flow's state (start, stop, released, gone) is also kept and
replayed to a replica when its subscription arrives, so a node that connects late, or is
restarted, sees the same flow as everyone else. That replaces any sleep for slow joiners.
"""
from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import shutil
import signal
import sys
import tempfile
import time
from pathlib import Path
from typing import IO, Any, Callable, Iterator

import msgpack
import zmq

from flujo.commands import ANNOUNCEMENT, UnsafeFolderError, private_runs_folder, running_flows
from flujo.curve import FlowContext, KeyPair
from flujo.launch.agent_wire import HEARTBEAT_INTERVAL
from flujo.launch.errors import EXIT_BAD_MANIFEST, EXIT_NODE_FAILED
from flujo.launch.handover import Handovers
from flujo.launch.parent import ParentPipe
from flujo.launch.manifest import FlowSpec
from flujo.launch.metrics import bottleneck, busy_fraction, drops, queue_fill
from flujo.launch.plan import plan, ports_needed, run_id
from flujo.launch.logstore import new_run, stamp
from flujo.launch.process import NodeProcess, OutputRelay, local_argv, plain_lines
from flujo.launch.ray_engine import RayError, RayLink, RayProcess, place_flow
from flujo.launch.reaper import Reaper
from flujo.launch.remote import AgentError, AgentLink, RemoteProcess, agent_keys
from flujo.launch.replica import Replica
from flujo.launch.restarts import RestartBudget
from flujo.launch.ssh import SshSessions
from flujo.launch.timers import Timers
from flujo.protocol import CONFIG_ENV, Control, ProtocolError, Status, control_frames, identity_topic
from flujo.wire_check import RefusalLog, check_command, check_status
from flujo.shm_wire import cleanup_flow_segments, cleanup_process_segments, segment_prefix

EXIT_KILLED = 130
LIVE_REFRESH_PER_SECOND = 4
_EXITS_ENDPOINT = "inproc://exits"
#: A restarted producer numbers its items from this far past its predecessor's last report,
#: so that no sequence number is used twice (readers skip the gap).
SEQ_JUMP = 1 << 24
#: How long a node's exit (status > 0) waits for its error report, which travels another way.
ERROR_REPORT_WAIT = 0.5
#: A node whose inputs ended is stuck once its counters stood still this long (they come twice a second).
READING_CHECK = 1.0


class Launcher:
    """Runs one flow to its end. ``run()`` returns the exit status for the command line."""

    def __init__(self, flow: FlowSpec, output: IO[str] | None = None, messages: IO[str] | None = None,
                 json_status: str | None = None, quiet: bool = False, metrics_port: int | None = None,
                 metrics_address: str = "127.0.0.1") -> None:
        self.flow = flow
        self._metrics_at = (metrics_address, metrics_port) if metrics_port is not None else None
        self._metrics: Any = None  # the MetricsServer while one serves
        self._json_status = json_status
        self._quiet = quiet
        self._view: Any = None  # the LiveView while one is shown
        self._snapshot: dict[str, Any] = {"flow": flow.name, "nodes": []}
        self._snapshot_due = 0.0
        self._output = output or sys.stdout
        self._messages = messages or sys.stderr
        self.replicas: dict[tuple[str, int], Replica] = {}
        self._started = False
        self._stopping = False
        self._interrupts = 0
        self._history: list[list[bytes]] = []  # state-changing commands, replayed to late subscribers
        self._failures: list[str] = []
        self._timers = Timers()
        self._handovers = Handovers(self.replicas, self._publish, self._say, self._start_grace)
        self._links: dict[str, AgentLink] = {}  # host name -> its agent, for nodes on other hosts
        self._parent = ParentPipe.from_environment()  # started by a program (flujo.Flow): ends with it
        self._refusals = RefusalLog("", self._say)  # malformed or forged messages on its sockets
        self._ray: RayLink | None = None  # the Ray cluster every node is placed on (engine = "ray")
        self._ssh = SshSessions(flow, self._say)  # agents this launcher starts over ssh, ended with it

    # -- public ----------------------------------------------------------------------------
    def run(self) -> int:
        try:
            if self.flow.name in running_flows():
                self._say(f"a flow named \"{self.flow.name}\" is already running; give this one another [flow] name")
                return EXIT_NODE_FAILED
            flow_folder = private_runs_folder(self.flow.name)
        except UnsafeFolderError as error:
            self._say(str(error))
            return EXIT_NODE_FAILED
        run_dir = Path(tempfile.mkdtemp(prefix="flujo-"))
        self.run_id = run_id(run_dir)  # names its shared-memory segments
        announcement = flow_folder / ANNOUNCEMENT
        self._reaper = Reaper()  # kills every node's process group if this process dies, however
        self._reaper.unlink_on_exit(segment_prefix(self.run_id))  # ... and unlinks the run's shared memory
        # A fresh key pair per run: every tcp socket of the flow uses CURVE with it (flujo/curve.py).
        flow_keys = KeyPair.generate() if self.flow.secure else None
        if self.flow.transport == "tcp" and not flow_keys:
            self._say("warning: insecure = true: this flow's tcp traffic is neither encrypted nor authenticated; "
                      "anyone on the network can read it and inject into it")
        context = FlowContext(flow_keys)
        wakeup_read, wakeup_write = os.pipe()
        os.set_blocking(wakeup_write, False)
        previous = {signum: signal.signal(signum, self._on_signal) for signum in (signal.SIGINT, signal.SIGTERM)}
        previous_fd = signal.set_wakeup_fd(wakeup_write)
        try:
            try:
                remote_ports = self._connect_agents(context)
                placed = self._connect_ray(context)
            except (AgentError, RayError) as error:
                self._say(str(error))
                return EXIT_BAD_MANIFEST  # nothing started
            endpoints, configs = plan(self.flow, run_dir, remote_ports, flow_keys, placed)
            self._control = context.socket(zmq.XPUB)
            self._control.setsockopt(zmq.XPUB_VERBOSE, 1)
            self._control.linger = 0
            self._control.maxmsgsize = self.flow.max_control_message
            self._control.bind(endpoints.control)
            self._status = context.socket(zmq.PULL)
            self._status.linger = 0
            self._status.maxmsgsize = self.flow.max_control_message
            self._status.bind(endpoints.status)
            self._exits = context.socket(zmq.PULL)
            self._exits.bind(_EXITS_ENDPOINT)
            self._commands = context.socket(zmq.REP)
            self._commands.linger = 0
            self._commands.maxmsgsize = self.flow.max_control_message
            self._commands.bind(f"ipc://{run_dir / 'commands'}")
            metrics_url = self._serve_metrics()
            if metrics_url is False:
                return EXIT_BAD_MANIFEST  # nothing started
            _write_whole(announcement, json.dumps({"flow": self.flow.name, "pid": os.getpid(),
                                                   "endpoint": f"ipc://{run_dir / 'commands'}",
                                                   "started": stamp(time.time()), "manifest": str(self.flow.path),
                                                   "nodes": len(self.flow.nodes), "processes": len(configs),
                                                   "metrics": metrics_url}))
            self._context = context
            self.replicas.update((key, Replica(config)) for key, config in configs.items())
            for replica in self.replicas.values():
                spec = self.flow.nodes[replica.config.node]
                replica.budget = RestartBudget(spec.restart, spec.max_restarts, spec.restart_window)
            width = max(len(replica.config.label) for replica in self.replicas.values())
            labels = [replica.config.label for replica in self.replicas.values()]
            logs = new_run(self.flow.name, {"manifest": str(self.flow.path), "labels": labels})
            with self._terminal(width) as show:
                self._relay = OutputRelay(show, logs)
                self._spawn_all()
                self._loop(wakeup_read)
                self._kill_all()  # also waits for the last output lines, while the view still shows them
            return self._result()
        finally:
            self._kill_all()
            signal.set_wakeup_fd(previous_fd)
            for signum, handler in previous.items():
                signal.signal(signum, handler)
            os.close(wakeup_read)
            os.close(wakeup_write)
            announcement.unlink(missing_ok=True)
            for link in self._links.values():
                link.close()
            if self._ray is not None:
                self._ray.close()
            if self._metrics is not None:
                self._metrics.close()
            self._write_json_status()
            if self._parent is not None:
                self._parent.close()
            if hasattr(self, "_relay"):
                self._relay.close()
            context.destroy(linger=0)
            self._ssh.close()  # each session ends: its agent ends what it still runs
            shutil.rmtree(run_dir, ignore_errors=True)  # made by mkdtemp above: this run's own
            cleanup_flow_segments(self.run_id)
            self._reaper.close()  # every node has exited: kills only what they left behind

    def _connect_agents(self, context: zmq.Context) -> dict[str, list[int]]:
        """Reach the agent of every other host the flow uses, and get free ports there."""
        needed = ports_needed(self.flow)
        ports = {}
        for name in dict.fromkeys(spec.host for spec in self.flow.nodes.values() if spec.host):
            host = self.flow.hosts[name]
            try:
                if host.ssh:  # started here and now; its port and key come over ssh
                    ssh_agent = self._ssh.start(host)
                    host, keys = ssh_agent.host, ssh_agent.keys
                else:
                    keys = agent_keys(self.flow, host)
                link = self._links[name] = AgentLink(context, host, lambda: getattr(self, "_relay", None), keys,
                                                     self.flow.max_control_message)
                link.introduce(self.flow.name)
                if needed.get(name):
                    ports[name] = link.free_ports(needed[name])
            except AgentError as error:
                raise AgentError(f"{self.flow.path}: [hosts.{name}]: {error}") from None
        if self._links:
            self._timers.after(HEARTBEAT_INTERVAL, self._heartbeat)
        return ports

    def _connect_ray(self, context: zmq.Context) -> dict[tuple[str, int], tuple[str, list[int]]]:
        """engine = "ray": connect to the cluster and place every replica (launch/ray_engine.py)."""
        if self.flow.engine != "ray":
            return {}
        self._ray = RayLink(context, self.flow.ray_address or os.environ.get("RAY_ADDRESS") or "auto",
                            self.flow.name, lambda: getattr(self, "_relay", None))
        if self.flow.host in ("127.0.0.1", "localhost", "::1"):
            self.flow.host = self._ray.own_address  # where nodes on other machines reach this launcher
        return place_flow(self._ray, self.flow, self._say)

    def _serve_metrics(self) -> str | None | bool:
        """Start the Prometheus endpoint if asked; its URL, None when not asked, False when it cannot."""
        if self._metrics_at is None:
            return None
        from flujo.launch.exporter import MetricsServer  # prometheus_client loads only when asked for

        address, port = self._metrics_at
        try:
            self._metrics = MetricsServer(lambda: self._snapshot, port, address)
        except OSError as error:
            self._say(f"cannot serve metrics on {address}:{port}: {error.strerror or error}")
            return False
        host = f"[{address}]" if ":" in address else address
        url = f"http://{host}:{self._metrics.port}/metrics"
        self._say(f"metrics: {url}")
        return url

    def _heartbeat(self) -> None:
        """Heartbeats to each agent (hellos to lost ones); a host silent past its timeout is lost."""
        for link in self._links.values():
            link.beat()
            if not link.lost and link.silent():
                self._host_lost(link)
        self._ssh.watch(self._links, self._host_lost)  # a session that ended: lost now, and started again
        self._timers.after(HEARTBEAT_INTERVAL, self._heartbeat)

    def _host_lost(self, link: AgentLink, why: str | None = None) -> None:
        why = why or f"its agent sent nothing for {link.host.timeout:g} s"
        reason = f'host "{link.host.name}" lost: {why}'
        self._say(f"{reason}; its nodes count as crashed")
        for replica in self.replicas.values():
            if self.flow.nodes[replica.config.node].host == link.host.name and replica.exit_code is None:
                replica.error = {"message": reason}  # the reason given if no restart follows
        link.lose()  # each of its processes exits now, as far as this launcher is concerned

    @contextlib.contextmanager
    def _terminal(self, width: int) -> Iterator[Callable[[str, str], None]]:
        """Where node output goes: a live table on a terminal, plain prefixed lines otherwise."""
        if self._quiet:
            yield lambda label, text: None  # still in the log files
        elif self._output.isatty():
            from flujo.launch.live import LiveView  # rich loads only when a terminal will show it

            from flujo.launch.live import render_summary

            with LiveView(self.flow.name, lambda: self._snapshot, label_width=width) as view:
                self._view = view
                try:
                    yield view.line
                finally:
                    self._refresh_snapshot(force=True)
                    self._view = None
            view.console.print(render_summary(self.status()))  # below the final table and every line
        else:
            yield plain_lines(self._output, width)
            from flujo.launch.live import plain_summary

            self._say("summary:\n  " + "\n  ".join(plain_summary(self.status())))

    def _refresh_snapshot(self, force: bool = False) -> None:
        """The live view reads this copy from its own thread, a few times a second."""
        now = time.monotonic()
        if force or now >= self._snapshot_due:
            self._snapshot = self.status()
            self._snapshot_due = now + 1 / LIVE_REFRESH_PER_SECOND

    def stop(self, nodes: list[str] | None = None) -> None:
        """Stop the given nodes (default: every producer); the rest drains organically."""
        names = nodes if nodes is not None else self.flow.producers()
        if nodes is None:
            self._stopping = True
        self._publish(Control.STOP, *names)
        for replica in self.replicas.values():
            if replica.config.node in names:
                replica.stopped = True
                self._start_grace(replica)
        self._watch_readers()

    def restart(self, node: str) -> list[str]:
        """Replace the node's replicas one after the other, each drained first; the rest of
        the flow runs on. Returns the replicas' labels."""
        return self._handovers.restart(node)

    # -- spawning --------------------------------------------------------------------------
    def _spawn_all(self) -> None:
        for replica in self.replicas.values():
            try:
                replica.process = self._spawn(replica)
            except OSError as error:
                self._say(f'node "{replica.config.label}" could not start: {error}')
                raise SystemExit(EXIT_NODE_FAILED) from None

    def _spawn(self, replica: Replica) -> NodeProcess | RemoteProcess | RayProcess:
        config = replica.config
        if replica.started_at is None:
            replica.started_at = time.time()
        spec = self.flow.nodes[config.node]
        env = {**spec.env, CONFIG_ENV: config.to_json(), "PYTHONUNBUFFERED": "1"}
        cwd = str(self.flow.base_dir / spec.cwd) if spec.cwd else str(self.flow.base_dir)
        key = replica.key
        if self._ray is not None:  # an actor Ray places runs it, with that machine's Python
            ray_process = self._ray.spawn(key, spec.resources, len(config.inputs), config.label,
                                          list(spec.command) if spec.command else None, env, cwd,
                                          on_placed=lambda address, ports: self._placed_at(key, address, ports),
                                          on_exit=lambda code: self._on_remote_exit(key, ray_process, code))
            return ray_process
        if spec.host is not None:  # its agent starts it, with that host's Python, at the same path
            command = list(spec.command) if spec.command else None
            remote = self._links[spec.host].spawn(config.label, command, env, cwd,
                                                  on_exit=lambda code: self._on_remote_exit(key, remote, code))
            return remote
        argv = [sys.executable, "-m", "flujo.node"] if spec.run else local_argv(spec.command or [])
        return NodeProcess(config.label, argv, {**os.environ, **env}, cwd, self._relay,
                           on_exit=lambda pid, code: self._notify_exit(key, pid, code), reaper=self._reaper)

    def _placed_at(self, key: tuple[str, int], address: str, ports: list[int]) -> dict[str, str]:
        """A restarted replica's new actor runs on ``address``: if that is another machine, its
        inputs bind there (at ``ports``), and its senders are told to connect there. Returns the
        environment to start it with."""
        replica = self.replicas[key]
        config = replica.config
        if config.inputs and not config.inputs[0].endpoint.startswith(f"tcp://{address}:"):
            free = list(ports)
            inputs = tuple(dataclasses.replace(port, endpoint=f"tcp://{address}:{free.pop()}") for port in config.inputs)
            replica.config = dataclasses.replace(config, inputs=inputs)
            for port in inputs:
                self._publish(Control.MOVED, *key, port.port, port.endpoint)
            for sender in self.replicas.values():  # their own restarts connect to the new place
                sender.config = dataclasses.replace(sender.config, outputs=tuple(
                    dataclasses.replace(edge, endpoints=tuple(
                        next((p.endpoint for p in inputs if p.port == edge.target_port), endpoint)
                        if edge.target == key[0] and index == key[1] else endpoint
                        for index, endpoint in enumerate(edge.endpoints)))
                    for edge in sender.config.outputs))
        spec = self.flow.nodes[key[0]]
        return {**spec.env, CONFIG_ENV: replica.config.to_json(), "PYTHONUNBUFFERED": "1"}

    def _on_remote_exit(self, key: tuple[str, int], process: RemoteProcess | RayProcess, code: int) -> None:
        """Called in the loop when an agent reports an exit (or its host is lost)."""
        replica = self.replicas[key]
        if replica.process is process:
            self._on_exit(replica, code)

    def _respawn(self, replica: Replica) -> None:
        """Start a new process for a replica that died: same endpoints, so its peers reconnect."""
        config = replica.config
        seq_start = config.seq_start
        if config.kind == "producer":
            next_seq = replica.sample.stats.get("next_seq", seq_start)
            # A drained producer reported its next number exactly; a dead one may have sent more.
            seq_start = next_seq if replica.drained is not None else next_seq + SEQ_JUMP
        replica.config = dataclasses.replace(config, seq_start=seq_start, generation=config.generation + 1)
        replica.subscribed = replica.ready = replica.finished = replica.grace_started = False
        replica.restarting = replica.restart_requested = replica.dismissed = False
        replica.drained = None
        replica.released_ports.clear()
        replica.exit_code, replica.error, replica.escalated = None, None, ""
        replica.restarts += 1
        # Senders that already ended their stream towards the dead process will not send it again.
        for port in replica.config.inputs:
            for index in range(port.senders):
                sender = self.replicas[(port.source, index)]
                if sender.finished or sender.exit_code is not None:
                    self._publish(Control.GONE, port.source, index, *replica.key)
        replica.process = self._spawn(replica)
        self._watch_readers()  # its senders may have ended meanwhile

    def _notify_exit(self, key: tuple[str, int], pid: int, code: int) -> None:
        """Called from a watcher thread: hand the exit to the loop through its own socket."""
        try:
            sender = self._context.socket(zmq.PUSH)
        except zmq.ZMQError:
            return  # the launcher is already gone
        try:
            sender.connect(_EXITS_ENDPOINT)
            sender.send(msgpack.packb([key[0], key[1], pid, code]))
        finally:
            sender.close(linger=-1)

    # -- the loop --------------------------------------------------------------------------
    def _loop(self, wakeup_fd: int) -> None:
        poller = zmq.Poller()
        links: dict[zmq.Socket, AgentLink | RayLink] = {link.socket: link for link in self._links.values()}
        if self._ray is not None:
            links[self._ray.socket] = self._ray
        for socket in (self._control, self._status, self._exits, self._commands, *links):
            poller.register(socket, zmq.POLLIN)
        poller.register(wakeup_fd, zmq.POLLIN)
        parent = self._parent.fd if self._parent is not None else None
        if parent is not None:
            poller.register(parent, zmq.POLLIN)
        while any(r.exit_code is None or r.restarting for r in self.replicas.values()):
            timeout = self._timers.timeout_ms()
            if self._view is not None or self._metrics is not None:  # fresh even when nothing happens
                self._refresh_snapshot()
                timeout = min(timeout, 250) if timeout is not None else 250
            events = dict(poller.poll(timeout))
            self._timers.run_due()
            if wakeup_fd in events:
                os.read(wakeup_fd, 64)
                self._handle_interrupts()
            if parent is not None and parent in events and self._parent.readable():  # type: ignore[union-attr]
                poller.unregister(parent)
                parent = None
                self._say("the program that started this flow ended: stopping the flow")
                if not self._stopping:
                    self.stop()
            if self._control in events:
                self._on_subscription(self._control.recv())
            if self._status in events:
                self._receive_status()
            if self._exits in events:
                node, index, pid, code = msgpack.unpackb(self._exits.recv())
                replica = self.replicas[(node, index)]
                if replica.process is not None and replica.process.pid == pid:  # not an earlier process
                    self._on_exit(replica, code)
            if self._commands in events:
                self._receive_command()
            for socket, link in links.items():
                if socket in events:
                    link.handle()

    # -- untrusted sockets: whatever arrives is checked (flujo/wire_check.py), bad frames logged and ignored
    def _receive_status(self) -> None:
        try:
            frames = self._status.recv_multipart(zmq.NOBLOCK)
        except zmq.Again:
            return
        try:
            kind, node, index, payload = check_status(frames)
            self._on_status(Status(kind), node, index, payload)
        except ProtocolError as refused:
            self._refusals.refused(refused, "the status socket")
        except (KeyError, IndexError, TypeError, ValueError, AttributeError) as error:
            # Well-formed but impossible here (a forged report): ignored, like a malformed one.
            self._refusals.refused(ProtocolError("status", f"report could not be applied ({type(error).__name__}: "
                                                           f"{str(error)[:80]})"), "the status socket")

    def _receive_command(self) -> None:
        """Every request gets exactly one reply (a REP socket), an error for a malformed one."""
        try:  # a REP socket may have signalled a request it then discarded (no envelope): never block
            frames = self._commands.recv_multipart(zmq.NOBLOCK)
        except zmq.Again:
            return
        try:
            reply = self._on_command(check_command(frames))
        except ProtocolError as refused:
            self._refusals.refused(refused, "the command socket")
            reply = {"ok": False, "error": f"malformed command: {refused.reason}"}
        self._commands.send(msgpack.packb(reply))

    # -- commands from other processes (flujo-launch stop/status, Flow.stop) ---------------
    def _on_command(self, request: dict[str, Any]) -> dict[str, Any]:
        command = request.get("command")
        if command == "status":
            return {"ok": True, **self.status()}
        if command == "stop":
            nodes = request.get("nodes") or None
            unknown = [name for name in nodes or () if name not in self.flow.nodes]
            if unknown:
                return {"ok": False, "error": f'no node named "{unknown[0]}" in flow "{self.flow.name}"'}
            ended = [name for name in nodes or () if self._ended(name)]
            live = [name for name in nodes or () if name not in ended]
            if live or not nodes:
                self.stop(live or None)
            return {"ok": True, "stopping": live if nodes else self.flow.producers(),
                    "ended": {name: self._ended(name) for name in ended}}
        if command == "restart":
            node = request.get("node")
            if node not in self.flow.nodes:
                return {"ok": False, "error": f'no node named "{node}" in flow "{self.flow.name}"'}
            ended = self._ended(node)
            if ended:
                return {"ok": False, "error": f'node "{node}" has already ended ({ended}): nothing to restart'}
            labels = self.restart(node)
            if not labels:
                states = ", ".join(sorted({r.state for r in self.replicas.values() if r.config.node == node}))
                return {"ok": False, "error": f'node "{node}" has no running process to restart ({states})'}
            return {"ok": True, "restarting": labels}
        return {"ok": False, "error": f"unknown command {command!r}"}

    def _ended(self, node: str) -> str:
        """How the node ended (e.g. "exit status 0"), or "" while any of its replicas runs or will restart."""
        replicas = [r for r in self.replicas.values() if r.config.node == node]
        if any(r.exit_code is None or r.restarting for r in replicas):
            return ""
        codes = sorted({r.exit_code for r in replicas})
        return f"exit status {', '.join(map(str, codes))}"

    def status(self) -> dict[str, Any]:
        """The flow's state, one entry per replica (what `flujo-launch status` shows). Counters
        add up every process a replica has had, so they never go backwards across restarts."""
        samples = {key: replica.sample for key, replica in self.replicas.items()}
        fills = {name: queue_fill(self.flow, name, samples) for name in self.flow.nodes}
        dropped = {name: drops(self.flow, name, samples) for name in self.flow.nodes}
        monotonic = time.monotonic()
        hosts = [{"name": name, "state": link.state, "silent": round(monotonic - link.heard, 1),
                  "rtt_ms": None if link.rtt is None else round(link.rtt * 1000, 2)}
                 for name, link in self._links.items()]
        now = time.time()
        nodes = []
        for r in self.replicas.values():
            totals = r.sample.totals
            rate = r.sample.rate("items_out" if r.config.kind == "producer" else "items_in")
            total = r.sample.stats.get("total")  # a producer that knows its length
            pending = getattr(r.process, "pending", None)  # a Ray placement waiting for room
            left = max(0, total - totals.get("items_out", 0)) if isinstance(total, int) else None
            nodes.append({
                "label": r.config.label, "node": r.config.node, "replica": r.config.replica,
                "host": self.flow.nodes[r.config.node].host or getattr(r.process, "machine", None),
                "pid": r.process.pid if r.process else None, "exit_code": r.exit_code,
                "state": "pending" if pending and r.exit_code is None
                else "running" if r.state == "ready" and self._started else r.state,
                **({"pending": pending} if pending else {}),
                "restarts": r.restarts, "error": (r.error or {}).get("message"),
                "items_in": totals.get("items_in", 0), "items_out": totals.get("items_out", 0),
                "errors": totals.get("errors", 0),
                "rejected": totals.get("rejected", 0), "rejected_by": totals.get("rejected_by", {}),
                "rate": rate, "queue": fills[r.config.node], "busy": busy_fraction(r.sample),
                "dropped": dropped[r.config.node],
                "total": total, "eta": left / rate if left is not None and rate > 0 and r.exit_code is None else None,
                "seconds": ((r.ended_at if r.exit_code is not None and r.ended_at else now) - r.started_at
                            if r.started_at is not None else None),
                "summary": r.sample.stats.get("summary")})
        return {"flow": self.flow.name, "started": self._started, "stopping": self._stopping,
                "hosts": hosts, "bottleneck": bottleneck(self.flow, samples), "nodes": nodes}

    def _write_json_status(self) -> None:
        if self._json_status:
            Path(self._json_status).write_text(json.dumps(self.status(), indent=2))

    def _on_subscription(self, message: bytes) -> None:
        if not message or message[0] != 1:
            return  # an unsubscription
        for replica in self.replicas.values():
            if message[1:] == identity_topic(*replica.key):
                replica.subscribed = True
                for frames in self._history:  # bring this replica up to date
                    self._control.send_multipart(frames)
                self._handovers.back(replica)
        self._start_when_ready()

    def _on_status(self, kind: Status, node: str, index: int, payload: Any) -> None:
        replica = self.replicas.get((node, index))
        if replica is None:
            return
        if kind is Status.READY:
            replica.ready = True
            self._start_when_ready()
            self._handovers.back(replica)
        elif kind is Status.ENDING:
            self._start_grace(replica)
        elif kind is Status.RELEASED:
            self._release(replica, payload or [port.port for port in replica.config.inputs])
            self._handovers.progress()
        elif kind is Status.STATS:
            replica.sample.update(payload, time.time())
        elif kind is Status.FINISHED:
            replica.finished = True
            replica.sample.update(payload or {}, time.time())
            self._handovers.progress()
            self._watch_readers()
        elif kind is Status.DRAINED:
            replica.drained = payload
            replica.sample.update(payload["stats"], time.time())
            self._handovers.progress()
        elif kind is Status.POSITION:
            self._handovers.on_position(replica.key, payload)
        elif kind is Status.PAUSE_SEEN:
            self._handovers.on_pause_seen(replica.key, payload)
        elif kind is Status.ERROR:
            replica.error = payload
            for line in payload.get("traceback", "").rstrip("\n").splitlines():
                self._relay.line(replica.config.label, line)  # the failure itself is judged at its exit

    def _on_exit(self, replica: Replica, code: int) -> None:
        replica.exit_code = code
        replica.ended_at = time.time()
        # Its shared memory: senders take back what it held, its own segments go.
        self._publish(Control.EXITED, *replica.key)
        if isinstance(replica.process, NodeProcess):
            cleanup_process_segments(self.run_id, *replica.key, replica.process.pid)
        if code > 0 and replica.error is None and (replica.config.run or replica.subscribed):
            self._await_error_report(replica)  # a node that speaks the protocol may have said why
        if replica.restart_requested and not replica.finished:
            if replica.drained is None:
                self._say(f'node "{replica.config.label}" exited with status {code} before it had drained; '
                          "restarting it (what its queues held may be lost)")
            self._respawn(replica)
            return
        self._handovers.progress()  # an exit may be what a handover waited for
        if replica.restart_requested:  # it ended its stream while draining: nothing to restart
            replica.restart_requested = False
            self._handovers.back(replica, ended=True)
        if self._should_restart(replica, code):
            return
        self._release(replica, [port.port for port in replica.config.inputs])
        if replica.config.outputs:
            self._publish(Control.GONE, *replica.key)  # readers count it as ended, if they have not yet
        self._watch_readers()
        self._start_when_ready()  # a node that ended before it was ready does not hold the others back
        if replica.escalated:
            self._fail(replica, f"did not end within its stop timeout and needed {replica.escalated}")
        elif replica.error is not None:
            self._fail(replica, replica.error.get("message", "failed"))
        elif code != 0:
            self._fail(replica, f"exited with status {code}")

    def _await_error_report(self, replica: Replica) -> None:
        """A failing node sends its error report before it exits, but the report comes over the
        status socket and the exit another way: give the report a moment, so the failure keeps
        its reason and traceback."""
        deadline = time.monotonic() + ERROR_REPORT_WAIT
        while replica.error is None and (left := deadline - time.monotonic()) > 0:
            if self._status.poll(int(left * 1000) + 1):
                self._receive_status()  # checked like every other report

    def _should_restart(self, replica: Replica, code: int) -> bool:
        """Apply the node's restart policy to a death mid-stream; True when a restart is scheduled."""
        budget = replica.budget
        if replica.finished or replica.escalated or budget is None or not budget.wants_restart(code):
            return False
        if self._failures:
            return False  # the flow is already stopping because of a failure
        delay = budget.next_delay(time.monotonic())
        label = replica.config.label
        if delay is None:
            spec = self.flow.nodes[replica.config.node]
            self._fail(replica, f"exited with status {code} and was already restarted {spec.max_restarts} "
                                f"times within {spec.restart_window:g} s")
            return False
        self._say(f'node "{label}" exited with status {code}; restarting in {delay:.1f} s '
                  f"(restart {budget.total})")
        replica.restarting = True
        self._timers.after(delay, lambda: self._respawn(replica))
        return True

    def _start_grace(self, replica: Replica, reading: bool = False) -> None:
        """The replica should end soon: give it stop_timeout, then SIGTERM, then SIGKILL.

        ``reading``: its inputs have ended or been stopped, and it may still be reading what
        they sent: the ladder starts once it has taken or sent no item for its stop_timeout
        (at least READING_CHECK, as it reports its counters twice a second), or when it says
        it is ending (the plain ladder)."""
        if replica.finished or replica.exit_code is not None:
            return
        if replica.grace_started and (reading or not replica.grace_reading or replica.escalated):
            return
        if getattr(replica.process, "pending", None):  # its cluster never placed it: nothing to end gracefully
            replica.process.withdraw()  # type: ignore[union-attr]
            return
        replica.grace_started, replica.grace_reading = True, reading
        ladder = replica.ladder = object()  # a later ladder for the same process supersedes this one
        process, timeout = replica.process, self.flow.nodes[replica.config.node].stop_timeout
        wait = max(timeout, READING_CHECK) if reading else timeout

        def moved() -> tuple[Any, Any]:
            return replica.sample.stats.get("items_in"), replica.sample.stats.get("items_out")

        last = moved()

        def escalate(signum: int) -> None:
            nonlocal last
            if replica.process is not process or replica.ladder is not ladder or replica.finished \
                    or replica.exit_code is not None:
                return
            if reading and signum == signal.SIGTERM:
                if moved() != last:  # still moving items: not stuck
                    last = moved()
                    self._timers.after(wait, lambda: escalate(signal.SIGTERM))
                    return
                self._say(f'node "{replica.config.label}" moved no item for {wait:g} s after its inputs '
                          "ended or were stopped: sending SIGTERM")
            else:
                doing = "drain" if replica.restart_requested else "end"
                self._say(f'node "{replica.config.label}" did not {doing} within {timeout:g} s: sending '
                          f"{signal.Signals(signum).name}")
            name = signal.Signals(signum).name
            replica.escalated = name
            process.signal(signum)
            if signum == signal.SIGTERM:
                self._timers.after(timeout, lambda: escalate(signal.SIGKILL))

        self._timers.after(wait, lambda: escalate(signal.SIGTERM))

    def _watch_readers(self) -> None:
        """Start the stop ladder of every replica whose inputs have all ended or been stopped
        (any one input of a zip): a node that never reads, or hangs, must not hold the flow."""
        for replica in self.replicas.values():
            if replica.config.inputs and not replica.grace_started and replica.exit_code is None \
                    and not replica.finished and self._inputs_ended(replica):
                self._start_grace(replica, reading=True)

    def _inputs_ended(self, replica: Replica) -> bool:
        def ended(sender: Replica) -> bool:
            return sender.finished or sender.stopped or (sender.exit_code is not None and not sender.restarting)

        ports = [all(ended(self.replicas[(port.source, index)]) for index in range(port.senders))
                 for port in replica.config.inputs]
        return all(ports) if replica.config.join == "merge" else any(ports)

    def _start_when_ready(self) -> None:
        if self._started or self._stopping:
            return
        if all((replica.ready and replica.subscribed) or (replica.exit_code is not None and not replica.restarting)
               for replica in self.replicas.values()):
            self._started = True
            self._publish(Control.START)

    def _release(self, replica: Replica, ports: list[str]) -> None:
        for port in ports:
            if port not in replica.released_ports:
                replica.released_ports.add(port)
                self._publish(Control.RELEASED, *replica.key, port)

    def _fail(self, replica: Replica, reason: str) -> None:
        self._failures.append(f'node "{replica.config.label}" failed: {reason}')
        self._say(f'node "{replica.config.label}" failed: {reason}; stopping the flow')
        if not self._stopping:
            self.stop()

    def _publish(self, topic: Control, *payload: Any) -> None:
        frames = control_frames(topic, *payload)
        self._history.append(frames)
        self._control.send_multipart(frames)

    # -- signals and the end ---------------------------------------------------------------
    def _on_signal(self, signum: int, frame: Any) -> None:
        self._interrupts += 1  # acted on in the loop, woken by the wakeup fd

    def _handle_interrupts(self) -> None:
        if self._interrupts == 1 and not self._stopping:
            self._say("stopping: producers stop and the pipes drain (interrupt again to kill)")
            self.stop()
        elif self._interrupts >= 2:
            self._say("killing every node")
            self._kill_all()
            raise SystemExit(EXIT_KILLED)

    def _kill_all(self) -> None:
        for replica in self.replicas.values():
            if replica.process is not None and replica.exit_code is None:
                replica.process.signal(signal.SIGKILL)
        for replica in self.replicas.values():
            if replica.process is not None:
                replica.process.join()

    def _result(self) -> int:
        if self._failures:
            for failure in self._failures:
                self._say(failure)
            return EXIT_NODE_FAILED
        return 0

    def _say(self, text: str) -> None:
        if self._view is not None:
            self._view.line("flujo-launch", text)
            return
        self._messages.write(f"flujo-launch: {self.flow.name}: {text}\n")
        self._messages.flush()


def _write_whole(path: Path, text: str) -> None:
    """Write a file readers see whole or not at all (a reader may look at any moment), mode 0600."""
    partial = path.with_name(f".{path.name}.{os.getpid()}")
    descriptor = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    with os.fdopen(descriptor, "w") as file:
        file.write(text)
    os.replace(partial, path)
