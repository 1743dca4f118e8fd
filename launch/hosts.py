"""The flow's other hosts and its Ray cluster: connect before planning, keep the links alive,
and count a host that falls silent as lost (its nodes as crashed)."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from typing import Any

import zmq

from flujo.launch.agent_wire import HEARTBEAT_INTERVAL
from flujo.launch.errors import EXIT_BAD_MANIFEST, LaunchError
from flujo.launch.manifest import FlowSpec
from flujo.launch.plan import ports_needed
from flujo.launch.process import OutputRelay
from flujo.launch.ray_engine import RayError, RayLink, place_flow
from flujo.launch.remote import AgentError, AgentLink, agent_keys
from flujo.launch.replica import Key, Replica
from flujo.launch.ssh import SshSessions
from flujo.launch.timers import Timers

LOOPBACK = ("127.0.0.1", "localhost", "::1")


class Hosts:
    """Agent links by host name, the Ray link (engine = "ray"), and the ssh sessions started for them."""

    def __init__(
        self,
        flow: FlowSpec,
        replicas: dict[Key, Replica],
        timers: Timers,
        say: Callable[[str], None],
        relay: Callable[[], OutputRelay | None],
    ) -> None:
        self._flow, self._replicas, self._timers, self._say, self._relay = flow, replicas, timers, say, relay
        self.links: dict[str, AgentLink] = {}  # host name -> its agent, for nodes on other hosts
        self.ray: RayLink | None = None  # the Ray cluster every node is placed on (engine = "ray")
        self._ssh = SshSessions(flow, say)  # agents this launcher starts over ssh, ended with it

    def connect(self, context: zmq.Context) -> tuple[dict[str, list[int]], dict[Key, tuple[str, list[int]]]]:
        """Reach every agent and the Ray cluster: (free ports per other host, Ray placements).
        Raises LaunchError (exit 2, nothing started) when one cannot be reached."""
        try:
            return self._connect_agents(context), self._connect_ray(context)
        except (AgentError, RayError) as error:
            raise LaunchError(EXIT_BAD_MANIFEST, str(error)) from None

    def _connect_agents(self, context: zmq.Context) -> dict[str, list[int]]:
        """Reach the agent of every other host the flow uses, and get free ports there."""
        needed = ports_needed(self._flow)
        ports = {}
        for name in dict.fromkeys(spec.host for spec in self._flow.nodes.values() if spec.host):
            host = self._flow.hosts[name]
            try:
                if host.ssh:  # started here and now; its port and key come over ssh
                    ssh_agent = self._ssh.start(host)
                    host, keys = ssh_agent.host, ssh_agent.keys
                else:
                    keys = agent_keys(self._flow, host)
                link = self.links[name] = AgentLink(context, host, self._relay, keys, self._flow.max_control_message)
                link.introduce(self._flow.name)
                if needed.get(name):
                    ports[name] = link.free_ports(needed[name])
            except AgentError as error:
                raise AgentError(f"{self._flow.path}: [hosts.{name}]: {error}") from None
        if self.links:
            self._timers.after(HEARTBEAT_INTERVAL, self._heartbeat)
        return ports

    def _connect_ray(self, context: zmq.Context) -> dict[Key, tuple[str, list[int]]]:
        """engine = "ray": connect to the cluster and place every replica (launch/ray_engine.py)."""
        if self._flow.engine != "ray":
            return {}
        self.ray = RayLink(
            context,
            self._flow.ray_address or os.environ.get("RAY_ADDRESS") or "auto",
            self._flow.name,
            self._relay,
            pending_after=self._flow.ray_pending_after,
        )
        if self._flow.host in LOOPBACK:
            self._flow.host = self.ray.own_address  # where nodes on other machines reach this launcher
        return place_flow(self.ray, self._flow, self._say)

    def readable(self) -> dict[zmq.Socket, Any]:
        """The socket of each link, for the loop's poller: socket -> link (``handle()`` reads it)."""
        links: dict[zmq.Socket, Any] = {link.socket: link for link in self.links.values()}
        if self.ray is not None:
            links[self.ray.socket] = self.ray
        return links

    def _heartbeat(self) -> None:
        """Heartbeats to each agent (hellos to lost ones); a host silent past its timeout is lost."""
        for link in self.links.values():
            link.beat()
            if not link.lost and link.silent():
                self.lose(link)
        self._ssh.watch(self.links, self.lose)  # a session that ended: lost now, and started again
        self._timers.after(HEARTBEAT_INTERVAL, self._heartbeat)

    def lose(self, link: AgentLink, why: str | None = None) -> None:
        why = why or f"its agent sent nothing for {link.host.timeout:g} s"
        reason = f'host "{link.host.name}" lost: {why}'
        self._say(f"{reason}; its nodes count as crashed")
        for replica in self._replicas.values():
            if self._flow.nodes[replica.config.node].host == link.host.name and replica.exit_code is None:
                replica.failed_with({"message": reason})  # the reason given if no restart follows
        link.lose()  # each of its processes exits now, as far as this launcher is concerned

    def states(self) -> list[dict[str, Any]]:
        """Each agent link's state, for the status snapshot."""
        monotonic = time.monotonic()
        return [
            {
                "name": name,
                "state": link.state,
                "silent": round(monotonic - link.heard, 1),
                "rtt_ms": None if link.rtt is None else round(link.rtt * 1000, 2),
            }
            for name, link in self.links.items()
        ]

    def close(self) -> None:
        for link in self.links.values():
            link.close()
        if self.ray is not None:
            self.ray.close()

    def close_sessions(self) -> None:
        """Each ssh session ends: its agent ends what it still runs."""
        self._ssh.close()
