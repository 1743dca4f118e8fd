"""The thread that watches one Ray-run node process: it has the actor placed (saying so when that
takes a while), starts the node once the launcher gives its environment, relays its output lines
and exit, and rides out a short loss of contact. It tells the launcher's loop through one inproc
socket (``RayLink.handle`` reads it); it never touches launcher state itself."""

from __future__ import annotations

import contextlib
import itertools
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import msgpack
import zmq

from flujo.launch.ray_actor import FOLLOW_WAIT
from flujo.launch.ray_cluster import first_line, unavailable
from flujo.launch.ray_process import RayProcess
from flujo.launch.resources import Resources, unplaceable

#: An actor Ray cannot reach for this long (without knowing it dead) counts as lost.
UNREACHABLE_FOR = 10.0
_events = itertools.count(1)


@dataclass(frozen=True)
class Watched:
    """What a watcher thread needs of its link: Ray, where to tell, whether the link is closing,
    and how to free an actor."""

    ray: Any
    context: zmq.Context
    endpoint: str
    closing: threading.Event
    kill_all: Callable[[Any], None]
    pending_after: float  # seconds: a first placement that takes longer is said to be pending


def watch(
    link: Watched, process: RayProcess, resources: Resources, ports: int, label: str, argv: list[str] | None, cwd: str
) -> None:
    """One thread per process: place (if needed), start, then relay lines and the exit."""
    sender = link.context.socket(zmq.PUSH)
    sender.connect(link.endpoint)
    ray = link.ray

    def tell(kind: str, payload: Any = None) -> None:
        sender.send(msgpack.packb([process.token, next(_events), kind, payload]))

    try:
        actor = process.actor
        try:
            if process.environment.empty():  # a new actor: where did Ray put it?
                asked = actor.where.remote()
                if process.pending is None and not ray.wait([asked], timeout=link.pending_after)[0]:
                    tell(
                        "pending",
                        unplaceable(resources, ray.nodes())
                        or f"waiting for a Ray node with {resources.describe()} free",
                    )
                where = ray.get(asked)  # waits while Ray finds it a place
                free = ray.get(actor.free_ports.remote(ports)) if ports else []
                tell("placed", {**where, "ports": free})
            env = None
            while env is None and not link.closing.is_set():
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
            while code is None and not link.closing.is_set():
                try:
                    lines, code = ray.get(actor.follow.remote())
                    unreachable = 0.0
                except unavailable(ray) as error:  # alive, maybe: a network hiccup is ridden out
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
            if not link.closing.is_set():
                tell("lost", first_line(error))
    finally:
        sender.close(linger=1000)
        if not link.closing.is_set():
            link.kill_all([process.actor])  # its process has ended: free its resources
