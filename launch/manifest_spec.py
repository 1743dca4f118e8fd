"""The validated shape of a flow: FlowSpec and its nodes, ports and hosts, and the launcher's own
vocabularies (transport, engine, placement).

Built only by the manifest's validation (launch/manifest.py); everything else reads them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

from flujo.config import CONTROL_MAX_MESSAGE, DATA_MAX_MESSAGE
from flujo.launch.agent_wire import DEFAULT_HOST_TIMEOUT
from flujo.launch.resources import Resources
from flujo.vocab import ErrorPolicy, Join, NodeKind, QueuePolicy, RestartPolicy


# The launcher's own vocabularies (the node runtime's are in flujo/vocab.py).
class Transport(StrEnum):
    """How the flow's sockets reach each other."""

    IPC = "ipc"  # Unix domain sockets: every node on the launcher's machine
    TCP = "tcp"  # any host; CURVE-encrypted unless the flow is insecure


class Engine(StrEnum):
    """What starts and places the flow's nodes."""

    LOCAL = "local"  # the launcher, and the agents of [hosts]
    RAY = "ray"  # a Ray cluster (launch/ray_engine.py)


class Placement(StrEnum):
    """What becomes of a node a cluster cannot place now."""

    FAIL = "fail"  # the flow fails before anything starts
    WAIT = "wait"  # it is pending until the cluster grows


DEFAULT_QUEUE = 16
DEFAULT_AGENT_PORT = 7700
LOOPBACK = ("127.0.0.1", "localhost", "::1")


@dataclass(frozen=True)
class InputSpec:
    """One input port: which node's output feeds it."""

    port: str
    source: str
    source_port: str = "out"


@dataclass(frozen=True)
class HostSpec:
    """Another machine, where `flujo-launch agent` starts this flow's nodes."""

    name: str
    address: str  # where its nodes bind their inputs, and its agent listens
    agent_port: int = DEFAULT_AGENT_PORT
    key: str | None = None  # the agent's CURVE public key (else looked up in known_hosts)
    timeout: float = DEFAULT_HOST_TIMEOUT  # silent this long (a link cut), its nodes count as crashed
    ssh: str | None = None  # "user@host": the launcher starts the agent itself, over ssh (launch/ssh.py)
    sync: bool = False  # with ssh: copy the flow's folder to the same path there first
    python: str | None = None  # with ssh: the interpreter that runs the agent there (default: the launcher's)

    @property
    def agent(self) -> str:
        return f"tcp://{self.address}:{self.agent_port}"


@dataclass
class NodeSpec:
    name: str
    run: str | None = None
    command: list[str] | None = None
    args: dict[str, Any] = field(default_factory=dict)
    inputs: list[InputSpec] = field(default_factory=list)
    keyword_ports: bool = False  # inputs given as a table of named ports
    join: Join = Join.ZIP
    replicas: int = 1
    queue: int | None = None
    env: dict[str, str] = field(default_factory=dict)
    cwd: str | None = None
    outputs: list[str] = field(default_factory=lambda: ["out"])
    on_error: ErrorPolicy = ErrorPolicy.FAIL
    policy: QueuePolicy = QueuePolicy.BLOCK  # what a full input queue does: wait, or drop the newest or oldest
    restart: RestartPolicy = RestartPolicy.NO
    max_restarts: int = 5  # at most this many restarts ...
    restart_window: float = 60.0  # ... within this many seconds, else the node counts as failed
    stop_timeout: float = 10.0  # grace after a stop before SIGTERM, then as long again before SIGKILL
    host: str | None = None  # a [hosts] entry: the node runs there; None: on the launcher's machine
    shm: bool | None = None  # its inputs accept shared-memory arrays; None: Python nodes do, commands not
    credits: bool | None = None  # its inputs send credits (section 18); None: Python nodes do, commands not
    max_message: int | None = None  # bytes per frame on its input ports; None: the flow's
    resources: Resources = field(default_factory=Resources)  # what each replica asks a cluster engine for
    placement: Placement = Placement.FAIL  # a cluster that cannot place it: fail before anything starts, or wait
    # Resolved during validation, from the code or from the node's place in the graph (the default
    # is never seen outside: a flow whose kinds cannot be resolved does not validate).
    kind: NodeKind = NodeKind.PROCESSOR


@dataclass
class FlowSpec:
    name: str
    path: Path
    nodes: dict[str, NodeSpec]
    queue: int = DEFAULT_QUEUE
    transport: Transport = Transport.IPC
    host: str = "127.0.0.1"  # the launcher's address for tcp endpoints (reachable from every host)
    hosts: dict[str, HostSpec] = field(default_factory=dict)
    max_message: int = DATA_MAX_MESSAGE  # bytes per frame on data sockets (ZMQ_MAXMSGSIZE)
    max_control_message: int = CONTROL_MAX_MESSAGE  # bytes per frame on control, status and command sockets
    insecure: bool = False  # plain tcp, on purpose: no encryption, no authentication
    shm: bool = True  # arrays between nodes on this host may go through shared memory
    lossless: bool = False  # opt in: edges that can acknowledge and replay do (docs/PROTOCOL.md, section 9)
    engine: Engine = Engine.LOCAL
    ray_address: str | None = None  # what ray.init connects to: HOST:PORT, ray://HOST:PORT or auto
    #: Seconds a replica's placement may take before the launcher says it is pending (and, with
    #: placement = "wait", leaves it out while the rest of the flow starts).
    ray_pending_after: float = 5.0

    @property
    def base_dir(self) -> Path:
        return self.path.parent

    @property
    def secure(self) -> bool:
        """Whether the flow's tcp sockets use CURVE (every tcp flow, unless ``insecure``)."""
        return self.transport == Transport.TCP and not self.insecure

    def downstream(self, name: str) -> list[tuple[NodeSpec, InputSpec]]:
        """Every (node, input port) that reads an output of ``name``."""
        return [(node, port) for node in self.nodes.values() for port in node.inputs if port.source == name]

    def producers(self) -> list[str]:
        return [name for name, node in self.nodes.items() if node.kind == NodeKind.PRODUCER]

    def queue_of(self, node: NodeSpec) -> int:
        return node.queue if node.queue is not None else self.queue

    def shared_memory(self, sender: NodeSpec, reader: NodeSpec) -> bool:
        """Whether arrays on that edge go through shared memory: both ends on this host (ipc),
        not turned off for the flow, and the reader accepts descriptors."""
        accepts = reader.shm if reader.shm is not None else reader.run is not None
        return (
            self.shm
            and accepts
            and self.transport == Transport.IPC
            and self.engine == Engine.LOCAL
            and sender.host is None
            and reader.host is None
        )

    def credited(self, sender: NodeSpec, reader: NodeSpec) -> bool:
        """Whether the edge from ``sender`` to ``reader`` is bounded in items by credits (section
        18): a Python sender (it binds the credit socket), a reader that sends them (Python nodes
        do unless ``credits = false``; command nodes only with ``credits = true``), and waits
        for room (a realtime reader drops instead), with nodes the launcher places; lossless
        flows too (docs/PROTOCOL.md, section 18)."""
        sends = reader.credits if reader.credits is not None else reader.run is not None
        return sends and sender.run is not None and reader.policy == QueuePolicy.BLOCK and self.engine == Engine.LOCAL

    def max_message_of(self, node: NodeSpec) -> int:
        return node.max_message if node.max_message is not None else self.max_message
