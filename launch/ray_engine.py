"""The launcher's side of a Ray cluster: Ray places and watches node processes, ZeroMQ carries the data.

Each node replica gets its own Ray actor (``NodeHost``), created with the node's resource
requests (``resources = {...}`` in the manifest), so Ray picks the machine. The actor starts
the node as an ordinary subprocess on that machine (the same ``python -m flujo.node`` a
local launcher or an agent starts), relays its output lines and exit status, and forwards
signals. The node then talks ZeroMQ (CURVE, with the flow key) to its peers and to the
launcher, exactly as on any other host: Ray never carries an item.

Why an actor that supervises a subprocess rather than the node runtime inside the actor:
the node stays the same OS process everywhere (its own session and process group, its own
signals and exit status, the stop ladder and crash semantics of docs/PROTOCOL.md), one node
cannot take an actor worker (or Ray's own threads and signal handlers) down with it, and a
node in another language runs the same way.

A ``RayProcess`` stands in for a local NodeProcess (signal, join, pid, returncode), like
``RemoteProcess`` does for agents, so the launcher supervises, restarts and stops nodes the
same way. A lost Ray node (or a killed actor) is the exit of its process, with status
``EXIT_HOST_LOST``; a restart places a new actor, wherever Ray finds room. A replica with
inputs restarted on another machine binds them there, at ports its new actor found free, and
the launcher tells its senders to connect there (``Control.MOVED``).

Events from the watcher threads (one per process, each blocked in ``ray.get``) reach the
launcher's loop through one inproc socket (``RayLink.socket``), handled by ``RayLink.handle``.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import os
import queue
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import msgpack
import zmq

from flujo.launch.resources import Resources, unplaceable

if TYPE_CHECKING:
    from flujo.launch.manifest import FlowSpec
    from flujo.launch.process import OutputRelay

#: The exit status of a process whose actor or Ray node was lost: it cannot be known.
EXIT_HOST_LOST = -1
#: How long the launcher waits for the first placement of every replica before it says why not.
PLACE_TIMEOUT = 60.0
#: A first placement that takes longer than this is said to be pending.
PENDING_AFTER = 5.0
#: An actor Ray cannot reach for this long (without knowing it dead) counts as lost.
UNREACHABLE_FOR = 10.0
#: How long the launcher tries to reach the cluster's address before it gives up.
CONNECT_TIMEOUT = 5.0
#: Ray Client connections tried before giving up, when its server fails to start a session.
CLIENT_ATTEMPTS = 3
#: How long an actor's ``follow`` waits for news before it answers anyway.
FOLLOW_WAIT = 1.0
_tokens = itertools.count(1)
_events = itertools.count(1)
#: Output lines an actor keeps for a launcher that has not fetched them (older ones are dropped, counted).
MAX_UNREAD_LINES = 10_000


class RayError(Exception):
    """Ray is missing, the cluster cannot be reached, or a node cannot be placed: nothing starts."""


class NodeHost:
    """The Ray actor that runs one node process on its machine (a threaded actor: ``follow``
    blocks while ``signal`` must still get through)."""

    def __init__(self) -> None:
        from flujo.launch.reaper import Reaper

        self._lines: list[str] = []  # not yet fetched by ``follow``
        self._dropped = 0  # lines dropped since the last ``follow``
        self._code: int | None = None
        self._changed = threading.Condition()
        self._process: Any = None
        self._reaper = Reaper()  # the node's process group dies with this actor, however it dies

    def where(self) -> dict[str, Any]:
        """This machine: the Ray node's address (nodes bind there), its name, its process id."""
        import ray

        return {
            "address": ray.util.get_node_ip_address(),
            "hostname": socket.gethostname(),
            "pid": os.getpid(),
            "gpus": os.environ.get("CUDA_VISIBLE_DEVICES"),
        }

    def free_ports(self, count: int) -> list[int]:
        import ray

        from flujo.launch.agent import free_ports

        return free_ports(ray.util.get_node_ip_address(), count)

    def start(self, label: str, argv: list[str] | None, env: dict[str, str], cwd: str) -> dict[str, Any]:
        from flujo.launch.process import NodeProcess, local_argv

        command = local_argv(argv) if argv else [sys.executable, "-m", "flujo.node"]
        # The actor's environment carries what Ray set for it (CUDA_VISIBLE_DEVICES: its own GPUs).
        try:
            self._process = NodeProcess(
                label,
                command,
                {**os.environ, **env},
                cwd,
                self,  # type: ignore[arg-type]
                on_exit=self._exited,
                reaper=self._reaper,
            )
        except OSError as error:
            return {"error": f"{type(error).__name__}: {error}"}
        return {"pid": self._process.pid}

    def line(self, label: str, text: str) -> None:  # the NodeProcess relay interface
        with self._changed:
            self._lines.append(text)
            if len(self._lines) > MAX_UNREAD_LINES:  # a launcher that cannot keep up: keep the newest
                dropped = len(self._lines) - MAX_UNREAD_LINES // 2
                del self._lines[:dropped]
                self._dropped += dropped
            self._changed.notify_all()

    def _exited(self, pid: int, code: int) -> None:
        with self._changed:
            self._code = code
            self._changed.notify_all()

    def follow(self) -> tuple[list[str], int | None]:
        """The output lines not fetched yet, and the exit status once known (after every
        line); waits up to FOLLOW_WAIT for news."""
        with self._changed:
            if not self._lines and self._code is None:
                self._changed.wait(FOLLOW_WAIT)
            lines, self._lines = self._lines, []
            if self._dropped:
                lines.insert(0, f"({self._dropped} output lines dropped here: the launcher fell behind)")
                self._dropped = 0
            return lines, self._code

    def signal(self, signum: int) -> None:
        if self._process is not None and self._process.returncode is None:
            self._process.signal(signum)


class RayProcess:
    """A node process that a Ray actor runs and watches."""

    def __init__(self, link: RayLink, label: str, on_exit: Callable[[int], None]) -> None:
        self.label = label
        self.token = next(_tokens)
        self.pid: int | None = None  # known once the actor says it started
        self.machine: str | None = None  # the Ray node's address, once placed
        self.pending: str | None = None  # why it waits for a place, while it does
        self.returncode: int | None = None
        self.actor: Any = None
        self.environment: queue.Queue[dict[str, str]] = queue.Queue()  # what to start it with, once known
        self.on_placed: Callable[[str, list[int]], dict[str, str]] = lambda address, ports: {}
        self._link, self._on_exit = link, on_exit

    def signal(self, signum: int) -> None:
        if self.returncode is not None:
            return
        if self.actor is None or self.pid is None:
            # Not started yet: it never will be. One still waiting for a place has nothing to
            # end gracefully either, so a stop ends it at once.
            if signum == signal.SIGKILL or (self.pending is not None and signum in (signal.SIGTERM, signal.SIGINT)):
                self._link.abandon(self)
            return
        self.actor.signal.remote(signum)

    def withdraw(self) -> None:
        """It is told to end before Ray ever placed it: it ends, with status 0 (it had nothing to do)."""
        if self.returncode is None:
            self._link.abandon(self, 0, "ended before a Ray node could hold it (it was pending)")

    def join(self, timeout: float = 5.0) -> None:
        self._link.pump_until(lambda: self.returncode is not None, timeout)

    def exited(self, code: int) -> None:
        if self.returncode is None:
            self.returncode = code
            self._on_exit(code)


class RayLink:
    """The launcher's connection to a Ray cluster, and the actors it placed there."""

    def __init__(self, context: zmq.Context, address: str, flow: str, relay: Callable[[], OutputRelay | None]) -> None:
        try:
            import ray
        except ImportError:
            raise RayError("Ray is not installed: pip install 'flujo[ray]'") from None
        self._ray = ray
        local = _reachable(address)
        connect(ray, address, flow)
        self.address = address
        #: This machine's address as the cluster sees it: where the launcher's sockets can be reached.
        #: A driver on a machine of the cluster has its Ray node's address. A Ray Client driver
        #: (ray://) has none: Ray would guess from the route to a public address (127.0.0.1
        #: where there is none), so it is the address this machine reached the head from.
        self.own_address: str = local if address.startswith("ray://") and local else ray.util.get_node_ip_address()
        self._actor_class = ray.remote(NodeHost)
        self._relay = relay
        self._endpoint = f"inproc://ray-events-{id(self)}"
        self._context = context
        self.socket = context.socket(zmq.PULL)
        self.socket.bind(self._endpoint)
        self._processes: dict[int, RayProcess] = {}
        self._placed: dict[Any, tuple[Any, dict[str, Any]]] = {}  # replica key -> first actor and its place
        self._waiting: dict[Any, tuple[Any, str]] = {}  # replica key -> first actor, not placed yet, and why
        self._closing = threading.Event()

    # -- before the flow starts ---------------------------------------------------------------
    def check(self, wanted: dict[Any, Resources]) -> dict[Any, str]:
        """For each replica key whose resources no live Ray node has, why (nothing is placed)."""
        nodes = self._ray.nodes()
        problems = {}
        for key, resources in wanted.items():
            reason = unplaceable(resources, nodes)
            if reason:
                problems[key] = reason
        return problems

    def place(
        self,
        wanted: dict[Any, tuple[Resources, int, bool]],
        say: Callable[[str], None],
        known: dict[Any, str] | None = None,
        timeout: float = PLACE_TIMEOUT,
    ) -> dict[Any, tuple[str, list[int]]]:
        """Create an actor per replica key (``(resources, ports it binds, wait)``) and, for each
        Ray has placed, ask it for its machine's address and free ports there.

        A replica that waits (``wait``) and is not placed within PENDING_AFTER (or that no Ray
        node could hold yet: ``known`` says why) is left pending: its actor is kept, and
        ``spawn`` starts it once Ray places it, while the rest of the flow is up (and its
        status says why it waits). Any other replica is waited for up to ``timeout``."""
        known = known or {}
        actors = {key: self._new_actor(resources) for key, (resources, _, _) in wanted.items()}
        asked = {key: actor.where.remote() for key, actor in actors.items() if key not in known}
        placed_soon = (
            set(self._ray.wait(list(asked.values()), num_returns=len(asked), timeout=PENDING_AFTER)[0])
            if asked
            else set()
        )
        places = {}
        deadline = time.monotonic() + timeout
        for key, actor in actors.items():
            resources, ports, wait = wanted[key]
            if key in known or (wait and asked[key] not in placed_soon):
                reason = known.get(key) or f"waiting for a Ray node with {resources.describe()} free"
                self._waiting[key] = (actor, reason)
                if key not in known:
                    say(f"replica {key[0]}.{key[1]} pending: {reason}")
                continue
            try:
                if asked[key] not in placed_soon:
                    say(f"replica {key[0]}.{key[1]} pending: waiting for a Ray node with {resources.describe()} free")
                where = self._ray.get(asked[key], timeout=max(0.1, deadline - time.monotonic()))
                free = self._ray.get(actor.free_ports.remote(ports), timeout=30)
            except self._ray.exceptions.GetTimeoutError:
                self._kill_all(actors.values())
                raise RayError(
                    f"replica {key[0]}.{key[1]} was not placed within {timeout:g} s "
                    "(the cluster is busy: its resources are taken by other work)"
                ) from None
            except self._ray.exceptions.RayError as error:
                self._kill_all(actors.values())
                raise RayError(f"replica {key[0]}.{key[1]} could not be placed: {error}") from None
            self._placed[key] = (actor, where)
            places[key] = (where["address"], free)
        return places

    def _new_actor(self, resources: Resources) -> Any:
        # No restart by Ray: a death is an exit the launcher's restart policy judges.
        return self._actor_class.options(max_restarts=0, max_concurrency=4, **resources.actor_options()).remote()

    def _kill_all(self, actors: Any) -> None:
        for actor in actors:
            with contextlib.suppress(Exception):
                self._ray.kill(actor)

    # -- while it runs --------------------------------------------------------------------------
    def spawn(
        self,
        key: Any,
        resources: Resources,
        ports: int,
        label: str,
        argv: list[str] | None,
        env: dict[str, str],
        cwd: str,
        on_placed: Callable[[str, list[int]], dict[str, str]],
        on_exit: Callable[[int], None],
    ) -> RayProcess:
        """Start a replica's process: on its first actor (placed before planning) with ``env``,
        or (a restart) on a new actor wherever Ray places it: then ``on_placed(address, ports)``,
        in the launcher's loop, gives the environment to start it with (``ports``: as many
        free ports on that machine as asked, for its inputs, should it have moved)."""
        process = RayProcess(self, label, on_exit)
        process.on_placed = on_placed
        self._processes[process.token] = process
        first, waiting = self._placed.pop(key, None), self._waiting.pop(key, None)
        if first is not None:
            process.actor, where = first
            process.machine = where["address"]
            process.environment.put(env)
        elif waiting is not None:  # its first actor, still waiting for a place
            process.actor, process.pending = waiting
        else:
            process.actor = self._new_actor(resources)
        threading.Thread(
            target=self._watch, args=(process, resources, ports, label, argv, cwd), name=f"ray-{label}", daemon=True
        ).start()
        return process

    def _watch(
        self, process: RayProcess, resources: Resources, ports: int, label: str, argv: list[str] | None, cwd: str
    ) -> None:
        """One thread per process: place (if needed), start, then relay lines and the exit."""
        sender = self._context.socket(zmq.PUSH)
        sender.connect(self._endpoint)
        ray = self._ray

        def tell(kind: str, payload: Any = None) -> None:
            sender.send(msgpack.packb([process.token, next(_events), kind, payload]))

        try:
            actor = process.actor
            try:
                if process.environment.empty():  # a new actor: where did Ray put it?
                    asked = actor.where.remote()
                    if process.pending is None and not ray.wait([asked], timeout=PENDING_AFTER)[0]:
                        tell(
                            "pending",
                            unplaceable(resources, ray.nodes())
                            or f"waiting for a Ray node with {resources.describe()} free",
                        )
                    where = ray.get(asked)  # waits while Ray finds it a place
                    free = ray.get(actor.free_ports.remote(ports)) if ports else []
                    tell("placed", {**where, "ports": free})
                env = None
                while env is None and not self._closing.is_set():
                    with contextlib.suppress(queue.Empty):
                        env = process.environment.get(timeout=0.5)
                if env is None or process.returncode is not None:
                    return
                started = ray.get(actor.start.remote(label, argv, env, cwd))
                if "error" in started:
                    tell("failed", f"could not start on {where['address']}: {started['error']}")
                    return
                tell("started", started["pid"])
                code, unreachable = None, 0.0
                while code is None and not self._closing.is_set():
                    try:
                        lines, code = ray.get(actor.follow.remote())
                        unreachable = 0.0
                    except _unavailable(ray) as error:  # alive, maybe: a network hiccup is ridden out
                        unreachable = unreachable or time.monotonic()
                        if time.monotonic() - unreachable > UNREACHABLE_FOR:
                            raise error
                        time.sleep(FOLLOW_WAIT / 2)
                        continue
                    for text in lines:
                        tell("line", text)
                if code is not None:
                    tell("exit", code)
            except ray.exceptions.RayError as error:
                if not self._closing.is_set():
                    tell("lost", _first_line(error))
        finally:
            sender.close(linger=1000)
            if not self._closing.is_set():
                self._kill_all([process.actor])  # its process has ended: free its resources

    def handle(self) -> None:
        """Apply every event the watcher threads have sent (in the launcher's loop)."""
        while True:
            try:
                frame = self.socket.recv(zmq.NOBLOCK)
            except zmq.Again:
                return
            token, _, kind, payload = msgpack.unpackb(frame)
            process = self._processes.get(token)
            if process is None or (process.returncode is not None and kind != "line"):
                continue  # one it gave up on (abandoned) reports its actor's death: not news
            relay = self._relay()
            if kind == "pending":
                process.pending = payload
                if relay is not None:
                    relay.line(process.label, f"pending: {payload}")
            elif kind == "placed":
                process.machine, process.pending = payload["address"], None
                if relay is not None:
                    gpus = f" (GPUs {payload['gpus']})" if payload.get("gpus") else ""
                    relay.line(process.label, f"placed on {payload['address']}{gpus}")
                process.environment.put(process.on_placed(payload["address"], payload["ports"]))
            elif kind == "started":
                process.pid = payload
            elif kind == "line":
                if relay is not None:
                    relay.line(process.label, payload)
            elif kind == "failed":
                if relay is not None:
                    relay.line(process.label, payload)
                process.exited(127)
            elif kind == "lost":
                if relay is not None:
                    relay.line(process.label, f"its Ray actor or Ray node on {process.machine} was lost: {payload}")
                process.exited(EXIT_HOST_LOST)
            elif kind == "exit":
                process.exited(payload)

    def pump_until(self, done: Callable[[], bool], timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while not done() and (left := deadline - time.monotonic()) > 0:
            if self.socket.poll(int(left * 1000) + 1):
                self.handle()

    def abandon(self, process: RayProcess, code: int = EXIT_HOST_LOST, why: str = "") -> None:
        """A process that never started is not wanted any more (the flow is ending)."""
        self._kill_all([process.actor])
        relay = self._relay()
        if why and relay is not None:
            relay.line(process.label, why)
        process.pending = None
        process.exited(code)

    def close(self) -> None:
        """Kill every actor left (their node processes die with them) and leave the cluster."""
        self._closing.set()
        self._kill_all([actor for actor, _ in [*self._placed.values(), *self._waiting.values()]])
        self._kill_all([process.actor for process in self._processes.values() if process.actor is not None])
        self.socket.close(linger=0)
        with contextlib.suppress(Exception):
            self._ray.shutdown()


def place_flow(link: RayLink, flow: FlowSpec, say: Callable[[str], None]) -> dict[Any, tuple[str, list[int]]]:
    """Place every replica of the flow on the cluster, before anything starts; where each is.

    A node no live Ray node could hold raises RayError naming it (``placement = "fail"``, the
    default). With ``placement = "wait"`` it is said to be pending, and is left out: the flow
    starts without it (its senders wait for it), and it starts once Ray places it."""
    wanted = {(name, replica): spec.resources for name, spec in flow.nodes.items() for replica in range(spec.replicas)}
    problems = link.check(wanted)
    for (name, replica), reason in problems.items():
        if replica == 0 and flow.nodes[name].placement == "fail":
            raise RayError(
                f'{flow.path}: node "{name}": field "resources": {reason}; nothing started '
                '(placement = "wait" waits for such a node to join)'
            )
    for (name, replica), reason in problems.items():
        if replica == 0:
            say(f'node "{name}" pending: {reason}; waiting for the cluster to grow (placement = "wait")')
    return link.place(
        {
            key: (resources, len(flow.nodes[key[0]].inputs), flow.nodes[key[0]].placement == "wait")
            for key, resources in wanted.items()
        },
        say,
        known=problems,
    )


def connect(ray: Any, address: str, flow: str, pause: Callable[[float], None] = time.sleep) -> None:
    """``ray.init`` for the flow's namespace; RayError with Ray's own words when it cannot.

    Ray Client's proxy can fail to start a session's server for a passing reason (it inspects a
    process of an earlier session that has just ended), so that failure is tried again.
    """
    for attempt in range(1, CLIENT_ATTEMPTS + 1):
        try:
            ray.init(
                address=address,
                namespace=f"flujo-{flow}",
                log_to_driver=False,
                logging_level=logging.ERROR,
                configure_logging=False,
            )
            return
        except Exception as error:  # ConnectionError, RuntimeError, ValueError: Ray's own words say why
            if attempt < CLIENT_ATTEMPTS and "Initialization failure from server" in str(error):
                with contextlib.suppress(Exception):
                    ray.shutdown()  # whatever the failed attempt left connected
                pause(1.0)
                continue
            raise RayError(f"cannot connect to the Ray cluster at {address}: {error}") from None


def _reachable(address: str) -> str | None:
    """Fail fast, and clearly, when nothing listens at a HOST:PORT (Ray itself retries for a
    minute); the local address this machine reached it from (None for "auto" and the like)."""
    host, _, port = address.removeprefix("ray://").rpartition(":")
    if not host or not port.isdigit():
        return None  # "auto", or a form Ray resolves itself
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=CONNECT_TIMEOUT) as connection:
            return str(connection.getsockname()[0])
    except OSError as error:
        raise RayError(
            f"cannot connect to the Ray cluster at {address}: {error.strerror or error} "
            "(start one with `ray start --head`, or give its address)"
        ) from None


def _unavailable(ray: Any) -> type[BaseException]:
    """Ray's error for an actor it cannot reach right now (not known dead), where Ray has one."""
    return getattr(ray.exceptions, "ActorUnavailableError", ()) or type("_Never", (Exception,), {})


def _first_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return text[0] if text else type(error).__name__
