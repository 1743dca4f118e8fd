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
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import msgpack
import zmq

from flujo.launch.ray_actor import FOLLOW_WAIT, MAX_UNREAD_LINES, NodeHost
from flujo.launch.ray_cluster import (
    CLIENT_ATTEMPTS,
    CONNECT_TIMEOUT,
    RayError,
    connect,
    reachable,
)
from flujo.launch.ray_process import EXIT_HOST_LOST, RayProcess, apply_event
from flujo.launch.ray_watcher import UNREACHABLE_FOR, Watched, watch
from flujo.launch.resources import Resources, unplaceable

if TYPE_CHECKING:
    from flujo.launch.manifest import FlowSpec
    from flujo.launch.process import OutputRelay

__all__ = [
    "CLIENT_ATTEMPTS",
    "CONNECT_TIMEOUT",
    "EXIT_HOST_LOST",
    "FOLLOW_WAIT",
    "MAX_UNREAD_LINES",
    "PLACE_TIMEOUT",
    "UNREACHABLE_FOR",
    "NodeHost",
    "RayError",
    "RayLink",
    "RayProcess",
    "connect",
    "place_flow",
]

#: How long the launcher waits for the first placement of every replica before it says why not.
PLACE_TIMEOUT = 60.0


class RayLink:
    """The launcher's connection to a Ray cluster, and the actors it placed there."""

    def __init__(
        self,
        context: zmq.Context,
        address: str,
        flow: str,
        relay: Callable[[], OutputRelay | None],
        pending_after: float,
    ) -> None:
        """Connect to the cluster at ``address`` for flow ``flow``; a replica whose placement takes
        longer than ``pending_after`` seconds is said to be pending (the manifest's
        ``ray_pending_after``)."""
        try:
            import ray
        except ImportError:
            raise RayError("Ray is not installed: pip install 'flujo[ray]'") from None
        self._ray = ray
        local = reachable(address)
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
        self._pending_after = pending_after
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

        A replica that waits (``wait``) and is not placed within ``pending_after`` seconds (or that no Ray
        node could hold yet: ``known`` says why) is left pending: its actor is kept, and
        ``spawn`` starts it once Ray places it, while the rest of the flow is up (and its
        status says why it waits). Any other replica is waited for up to ``timeout``."""
        known = known or {}
        actors = {key: self._new_actor(resources) for key, (resources, _, _) in wanted.items()}
        asked = {key: actor.where.remote() for key, actor in actors.items() if key not in known}
        placed_soon = (
            set(self._ray.wait(list(asked.values()), num_returns=len(asked), timeout=self._pending_after)[0])
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
            target=watch,
            args=(self._watched(), process, resources, ports, label, argv, cwd),
            name=f"ray-{label}",
            daemon=True,
        ).start()
        return process

    def _watched(self) -> Watched:
        return Watched(self._ray, self._context, self._endpoint, self._closing, self._kill_all, self._pending_after)

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
            apply_event(process, kind, payload, self._relay())

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
