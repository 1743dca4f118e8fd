"""Turn a validated FlowSpec into one NodeConfig per replica: allocate every endpoint.

Endpoints are ipc sockets in the run's private folder by default, or loopback/host tcp
ports chosen at run time when the manifest says ``transport = "tcp"``. A node on another
host binds on that host's address, at a port its agent found free there; a replica placed
on a Ray cluster, on its machine's address, at a port its actor found free there.
"""

from __future__ import annotations

import socket
from dataclasses import dataclass
from pathlib import Path

from flujo.config import InputConfig, NodeConfig, OutputConfig
from flujo.curve import KeyPair
from flujo.launch.manifest import FlowSpec, NodeSpec
from flujo.vocab import QueuePolicy, zips_several


@dataclass(frozen=True)
class Endpoints:
    """Where the launcher binds its control (PUB) and status (PULL) sockets."""

    control: str
    status: str


class EndpointAllocator:
    """Hands out endpoints: a Ray placement's port, another host's free port, an ipc path in the
    run's folder, or a loopback tcp port free right now."""

    def __init__(
        self,
        flow: FlowSpec,
        run_dir: Path,
        remote_ports: dict[str, list[int]],
        placed: dict[tuple[str, int], tuple[str, list[int]]],
    ) -> None:
        self._flow, self._run_dir = flow, run_dir
        self._remote_ports = {host: list(ports) for host, ports in remote_ports.items()}
        self._placed = {key: (address, list(ports)) for key, (address, ports) in placed.items()}

    def allocate(self, name: str, host: str | None = None, replica: tuple[str, int] | None = None) -> str:
        """The endpoint for ``name`` (its ipc file name), bound on ``host`` or by ``replica`` if given."""
        if replica is not None and replica in self._placed:
            address, ports = self._placed[replica]
            return f"tcp://{address}:{ports.pop()}"
        if host is not None:
            return f"tcp://{self._flow.hosts[host].address}:{self._remote_ports[host].pop()}"
        if self._flow.transport == "ipc":
            return f"ipc://{self._run_dir / name}"
        address = self._flow.host
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:  # a port free right now
            probe.bind((address, 0))
            return f"tcp://{address}:{probe.getsockname()[1]}"


def run_id(run_dir: Path, flow_name: str) -> str:
    """The flow run's id, as its shared-memory segments are named (flujo/shm_wire.py):
    ``<flow>_<run folder's random part>`` in the characters a segment's run id may have, so
    /dev/shm says which flow a segment is of. (The folder's own name stays short: ipc paths in
    it must fit in 107 bytes.)"""
    return f"{flow_name}_{run_dir.name.removeprefix('flujo-')}".replace("-", "_").replace(".", "_")


def at_most_once_because(flow: FlowSpec, sender: NodeSpec, reader: NodeSpec) -> str | None:
    """Why the edge from ``sender`` to ``reader`` is at most once across a crash, or None when
    it is lossless: it keeps, is acknowledged and replays (section 9). Wired so far: Python nodes
    placed by the launcher (on this host or another's agent, over ipc or tcp), a reader that
    waits for room (``block``) and reads one port, zips several or merges them (a merge logs
    its numbering, ``merge_log``), arrays inline or in shared memory (a kept message keeps its
    slot), in a flow that opts in with ``lossless = true``."""
    if not flow.lossless:
        return "the flow does not ask for it (lossless = true in [flow])"
    if flow.engine != "local":
        return "nodes placed by Ray"
    if sender.run is None or reader.run is None:
        return "a node in another language (its library does not acknowledge yet)"
    if reader.policy != QueuePolicy.BLOCK:
        return f"a realtime reader ({reader.policy})"
    return None


def lossless(flow: FlowSpec, sender: NodeSpec, reader: NodeSpec) -> bool:
    """Whether the edge from ``sender`` to ``reader`` keeps, acknowledges and replays (section 9)."""
    return at_most_once_because(flow, sender, reader) is None


def delivery_report(flow: FlowSpec) -> list[str]:
    """What a flow that asks for lossless edges says at start: which edges are, and why the
    others are not (section 9)."""
    if not flow.lossless:
        return []
    edges = [(node, reader) for node in flow.nodes.values() for reader, _ in flow.downstream(node.name)]
    kept = [f"{node.name} -> {reader.name}" for node, reader in edges if lossless(flow, node, reader)]
    lines = [f"lossless across a crash: {', '.join(kept) or 'no edge'}"]
    for node, reader in edges:
        why = at_most_once_because(flow, node, reader)
        if why is not None:
            lines.append(f"at most once across a crash: {node.name} -> {reader.name} ({why})")
    return lines


def ports_needed(flow: FlowSpec) -> dict[str, int]:
    """How many endpoints each other host binds: one per input port per replica, and one
    acknowledgement socket per replica with a lossless output."""
    needed: dict[str, int] = {}
    for node in flow.nodes.values():
        if node.host is not None:
            ports = len(node.inputs) + (1 if _acknowledged(flow, node) else 0) + (1 if _credited(flow, node) else 0)
            needed[node.host] = needed.get(node.host, 0) + ports * node.replicas
    return needed


def _acknowledged(flow: FlowSpec, node: NodeSpec) -> bool:
    """Whether the node has a lossless output: each replica binds an acknowledgement socket."""
    return any(lossless(flow, node, reader) for reader, _ in flow.downstream(node.name))


def _credited(flow: FlowSpec, node: NodeSpec) -> bool:
    """Whether the node has a credited output: each replica binds a credit socket (section 18)."""
    return any(flow.credited(node, reader) for reader, _ in flow.downstream(node.name))


def plan(
    flow: FlowSpec,
    run_dir: Path,
    remote_ports: dict[str, list[int]] | None = None,
    flow_keys: KeyPair | None = None,
    placed: dict[tuple[str, int], tuple[str, list[int]]] | None = None,
) -> tuple[Endpoints, dict[tuple[str, int], NodeConfig]]:
    """(launcher endpoints, {(node, replica): config}); ``remote_ports``: free ports on each
    other host, as many as ``ports_needed`` says; ``flow_keys``: the CURVE key pair every
    process of a secure flow uses on tcp; ``placed``: for replicas placed on a cluster, their
    machine's address and one free port there per input port."""
    allocate = EndpointAllocator(flow, run_dir, remote_ports or {}, placed or {}).allocate
    endpoints = Endpoints(control=allocate("control"), status=allocate("status"))
    # Every input port of every replica binds its own endpoint.
    bound: dict[tuple[str, str, int], str] = {}
    for index, node in enumerate(flow.nodes.values()):
        for port_index, port in enumerate(node.inputs):
            for replica in range(node.replicas):
                bound[(node.name, port.port, replica)] = allocate(
                    f"n{index}.p{port_index}.r{replica}", node.host, (node.name, replica)
                )
    # A replica with shared-memory outputs binds a release socket: its readers hand slots back there.
    releases: dict[tuple[str, int], str] = {}
    for index, node in enumerate(flow.nodes.values()):
        if any(flow.shared_memory(node, reader) for reader, _ in flow.downstream(node.name)):
            for replica in range(node.replicas):
                releases[(node.name, replica)] = allocate(f"n{index}.r{replica}.release")
    # A replica with lossless outputs binds an acknowledgement socket, on its own host: its
    # readers acknowledge there.
    acks: dict[tuple[str, int], str] = {}
    for index, node in enumerate(flow.nodes.values()):
        if _acknowledged(flow, node):
            for replica in range(node.replicas):
                acks[(node.name, replica)] = allocate(f"n{index}.r{replica}.ack", node.host)
    # A replica with credited outputs binds a credit socket, on its own host: its readers say there
    # how many items they took (section 18).
    credits: dict[tuple[str, int], str] = {}
    for index, node in enumerate(flow.nodes.values()):
        if _credited(flow, node):
            for replica in range(node.replicas):
                credits[(node.name, replica)] = allocate(f"n{index}.r{replica}.credit", node.host)
    owners = {f"{node}.{replica}": endpoint for (node, replica), endpoint in releases.items()}
    configs = {}
    for node in flow.nodes.values():
        outputs = tuple(
            OutputConfig(
                port=port.source_port,
                target=reader.name,
                target_port=port.port,
                endpoints=tuple(bound[(reader.name, port.port, r)] for r in range(reader.replicas)),
                hwm=flow.queue_of(reader),
                policy=reader.policy,
                aligned=zips_several(reader.join, len(reader.inputs)),
                shm=flow.shared_memory(node, reader),
                max_message=flow.max_message_of(reader),
                lossless=lossless(flow, node, reader),
                credits=flow.credited(node, reader),
            )
            for reader, port in flow.downstream(node.name)
        )
        for replica in range(node.replicas):
            inputs = tuple(
                InputConfig(
                    port=port.port,
                    endpoint=bound[(node.name, port.port, replica)],
                    hwm=flow.queue_of(node),
                    source=port.source,
                    source_port=port.source_port,
                    senders=flow.nodes[port.source].replicas,
                    policy=node.policy,
                    shm=flow.shared_memory(flow.nodes[port.source], node),
                    max_message=flow.max_message_of(node),
                    ack_endpoints=tuple(acks[(port.source, r)] for r in range(flow.nodes[port.source].replicas))
                    if lossless(flow, flow.nodes[port.source], node)
                    else (),
                    credit_endpoints=tuple(credits[(port.source, r)] for r in range(flow.nodes[port.source].replicas))
                    if flow.credited(flow.nodes[port.source], node)
                    else (),
                )
                for port in node.inputs
            )
            configs[(node.name, replica)] = NodeConfig(
                flow=flow.name,
                node=node.name,
                replica=replica,
                replicas=node.replicas,
                kind=node.kind,
                control=endpoints.control,
                status=endpoints.status,
                inputs=inputs,
                outputs=outputs,
                join=node.join,
                keyword_ports=node.keyword_ports,
                on_error=node.on_error,
                restart=node.restart,
                run=node.run,
                base_dir=str(flow.base_dir),
                args=node.args,
                shm_run=run_id(run_dir, flow.name),
                ack_endpoint=acks.get((node.name, replica), ""),
                credit_endpoint=credits.get((node.name, replica), ""),
                merge_log=str(run_dir / f"{node.name}.{replica}.merge")
                if any(port.ack_endpoints for port in inputs)
                and not zips_several(node.join, len(node.inputs))
                and len(node.inputs) > 1
                else "",
                shm_release=releases.get((node.name, replica), ""),
                shm_owners=owners if any(port.shm for port in inputs) else {},
                curve=flow_keys.to_config() if flow_keys else None,
                max_control_message=flow.max_control_message,
            )
    return endpoints, configs
