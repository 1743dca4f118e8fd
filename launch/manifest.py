"""Read and validate a flow manifest (TOML) into a FlowSpec, reporting every problem at once.

Nothing here starts a process: the launcher only runs a manifest that validated whole.
"""

from __future__ import annotations

import inspect
import math
import re
import shutil
import tomllib
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

from flujo.api import declared_kind, declared_outputs
from flujo.config import CONTROL_MAX_MESSAGE, DATA_MAX_MESSAGE
from flujo.launch.agent_wire import DEFAULT_HOST_TIMEOUT
from flujo.launch.errors import ManifestError, Problem, did_you_mean
from flujo.launch.resources import Resources, resources_from_table
from flujo.loader import LoadError, load_target
from flujo.vocab import ErrorPolicy, Join, NodeKind, QueuePolicy, RestartPolicy

#: Node names (also the names of log files and of control topics).
NAME_PATTERN = re.compile(r"^[A-Za-z_][A-Za-z0-9_-]{0,63}$")
#: Flow names (also a folder in the runs folder): no "/", no leading ".", nothing a shell must quote.
FLOW_NAME_PATTERN = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}$")
#: Upper bounds of numbers: past these a value is a mistake, and some (queue) would overflow later.
MAX_QUEUE = 1_000_000
MAX_REPLICAS = 256
MAX_RESTARTS = 1_000_000
MAX_SECONDS = 7 * 24 * 3600.0


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


#: Node fields whose value is one of a closed vocabulary: the manifest spells a member's value.
NODE_VOCABULARIES: dict[str, type[StrEnum]] = {
    "join": Join,
    "on_error": ErrorPolicy,
    "policy": QueuePolicy,
    "restart": RestartPolicy,
    "placement": Placement,
}
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
        17): a Python sender (it binds the credit socket), a reader that sends them (Python nodes
        do unless ``credits = false``; command nodes only with ``credits = true``), and waits
        for room (a realtime reader drops instead), with nodes the launcher places."""
        sends = reader.credits if reader.credits is not None else reader.run is not None
        return sends and sender.run is not None and reader.policy == QueuePolicy.BLOCK and self.engine == Engine.LOCAL

    def max_message_of(self, node: NodeSpec) -> int:
        return node.max_message if node.max_message is not None else self.max_message


# -- field checks: each returns an error message or None -----------------------------------
def _string(value: Any) -> str | None:
    return None if isinstance(value, str) and value else "must be a non-empty string"


def _count(limit: int) -> Callable[[Any], str | None]:
    def check(value: Any) -> str | None:
        if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= limit:
            return f"must be a whole number from 1 to {limit:,}, got {value!r}"
        return None

    return check


def _one_of(choices: Iterable[str]) -> Callable[[Any], str | None]:
    allowed = tuple(choices)

    def check(value: Any) -> str | None:
        if value in allowed:
            return None
        hint = did_you_mean(value, allowed) if isinstance(value, str) else ""
        return f"must be one of {', '.join(allowed)}, got {value!r}{hint}"

    return check


def _seconds(value: Any) -> str | None:
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float))
        or not 0 < value <= MAX_SECONDS
        or not math.isfinite(value)
    ):
        return f"must be a positive number of seconds, at most {MAX_SECONDS:g}, got {value!r}"
    return None


def _flow_name(value: Any) -> str | None:
    if isinstance(value, str) and FLOW_NAME_PATTERN.match(value):
        return None
    return (
        f"flow names use letters, digits, _, - and ., start with a letter, digit or _, and have at most "
        f"64 characters, got {value!r}"
    )


def _flag(value: Any) -> str | None:
    return None if isinstance(value, bool) else "must be true or false"


def _curve_key(value: Any) -> str | None:
    from flujo.curve import is_public_key  # the manifest's only use of ZeroMQ

    if isinstance(value, str) and is_public_key(value):
        return None
    return 'must be a CURVE public key: the 40 characters an agent prints as "key: ..." when it starts'


def _ssh_destination(value: Any) -> str | None:
    if not isinstance(value, str) or not value.strip():
        return 'must be where ssh logs in, for example "user@10.0.0.2" (or a Host of ~/.ssh/config)'
    if value.startswith("-") or any(c.isspace() for c in value):
        return f'must be one ssh destination such as "user@10.0.0.2", got {value!r}'
    return None


def _table(value: Any) -> str | None:
    return None if isinstance(value, dict) else "must be a table, for example { key = 1 }"


def _string_table(value: Any) -> str | None:
    if isinstance(value, dict) and all(isinstance(v, str) for v in value.values()):
        return None
    return 'must be a table of strings, for example { NAME = "value" }'


def _string_list(value: Any) -> str | None:
    if isinstance(value, list) and value and all(isinstance(v, str) and v for v in value):
        return None
    return 'must be a non-empty list of strings, for example ["python3", "node.py"]'


def _port_number(value: Any) -> str | None:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 < value < 65536:
        return f"must be a TCP port number (1-65535), got {value!r}"
    return None


def _inputs(value: Any) -> str | None:
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return None
    if isinstance(value, dict) and all(isinstance(v, str) for v in value.values()):
        return None
    return 'must be a list of node names, or a table of named ports: { a = "node", b = "node/port" }'


_SIZE_UNITS = {
    "": 1,
    "B": 1,
    "KB": 1 << 10,
    "KIB": 1 << 10,
    "MB": 1 << 20,
    "MIB": 1 << 20,
    "GB": 1 << 30,
    "GIB": 1 << 30,
}
#: Frame size limits a manifest may set: room for a header, at most what one message may sanely hold.
MIN_MESSAGE, MAX_MESSAGE = 4096, 1 << 34


def byte_size(value: Any) -> int | None:
    """Bytes from an int or a string like "64MB" (units of 1024: KB, MB, GB); None if not a size."""
    if type(value) is int:
        return value
    if isinstance(value, str):
        match = re.fullmatch(r"\s*(\d+)\s*([A-Za-z]*)\s*", value)
        if match and match.group(2).upper() in _SIZE_UNITS:
            return int(match.group(1)) * _SIZE_UNITS[match.group(2).upper()]
    return None


def _size(value: Any) -> str | None:
    size = byte_size(value)
    if size is None:
        return 'must be a size in bytes: a number, or a string like "64MB" (KB, MB, GB: units of 1024)'
    if not MIN_MESSAGE <= size <= MAX_MESSAGE:
        return f"must be between {MIN_MESSAGE} bytes and {MAX_MESSAGE >> 30} GB"
    return None


FLOW_FIELDS: dict[str, Callable[[Any], str | None]] = {
    "name": _flow_name,
    "queue": _count(MAX_QUEUE),
    "transport": _one_of(Transport),
    "host": _string,
    "insecure": _flag,
    "engine": _one_of(Engine),
    "ray_address": _string,
    "shm": _flag,
    "lossless": _flag,
    "max_message": _size,
    "max_control_message": _size,
}
NODE_FIELDS: dict[str, Callable[[Any], str | None]] = {
    "run": _string,
    "command": _string_list,
    "args": _table,
    "inputs": _inputs,
    "join": _one_of(Join),
    "replicas": _count(MAX_REPLICAS),
    "queue": _count(MAX_QUEUE),
    "env": _string_table,
    "cwd": _string,
    "outputs": _string_list,
    "on_error": _one_of(ErrorPolicy),
    "policy": _one_of(QueuePolicy),
    "restart": _one_of(RestartPolicy),
    "max_restarts": _count(MAX_RESTARTS),
    "restart_window": _seconds,
    "stop_timeout": _seconds,
    "host": _string,
    "max_message": _size,
    "shm": _flag,
    "credits": _flag,
    "resources": _table,
    "placement": _one_of(Placement),
}
#: The node fields that are options of how a node runs (not what it runs, its arguments or its inputs):
#: the manifest's [nodes.NAME] keys and, the same, the keywords of flujo.Flow.add.
NODE_OPTIONS: tuple[str, ...] = tuple(key for key in NODE_FIELDS if key not in ("run", "command", "args", "inputs"))
HOST_FIELDS: dict[str, Callable[[Any], str | None]] = {
    "address": _string,
    "agent_port": _port_number,
    "key": _curve_key,
    "timeout": _seconds,
    "ssh": _ssh_destination,
    "sync": _flag,
    "python": _string,
}
SECTIONS = ("flow", "hosts", "nodes")


def load_manifest(path: str | Path) -> FlowSpec:
    """Parse and validate; raises ManifestError listing every problem."""
    path = Path(path)
    file = str(path)
    try:
        data = tomllib.loads(path.read_bytes().decode("utf-8"))
    except FileNotFoundError:
        raise ManifestError([Problem(file, "no such file")]) from None
    except OSError as error:
        raise ManifestError([Problem(file, f"cannot read it: {error.strerror or error}")]) from None
    except UnicodeDecodeError as error:
        raise ManifestError([Problem(file, f"not a text file: byte {error.start} is not UTF-8")]) from None
    except tomllib.TOMLDecodeError as error:
        raise ManifestError([Problem(file, f"TOML syntax error: {error}")]) from None
    return validate(data, path.resolve(), file)


def validate(data: dict[str, Any], path: Path, file: str) -> FlowSpec:
    """Validate a manifest already parsed into a dict; ``path`` anchors relative references,
    ``file`` is how problems name where they are."""
    return _Validator(path, file).flow(data)


class _Validator:
    def __init__(self, path: Path, file: str) -> None:
        self.path, self.file = path, file
        self.problems: list[Problem] = []
        self.targets: dict[str, Any] = {}

    def problem(self, message: str, node: str | None = None, field_name: str | None = None) -> None:
        self.problems.append(Problem(self.file, message, node, field_name))

    def fields(
        self,
        table: dict[str, Any],
        known: dict[str, Callable[[Any], str | None]],
        node: str | None,
        where: str,
        say_where: bool = False,
    ) -> dict[str, Any]:
        """The fields of ``table`` whose values pass their checks; a problem for each other one
        (its message starts with ``where`` when ``say_where``: a table that is not a node's)."""
        good = {}
        for key, value in table.items():
            if key not in known:
                self.problem(f"unknown field in {where}{did_you_mean(key, known)}", node, key)
            elif (message := known[key](value)) is not None:
                self.problem(f"{where}: {message}" if say_where else message, node, key)
            else:
                good[key] = value
        return good

    def flow(self, data: dict[str, Any]) -> FlowSpec:
        for key in data:
            if key not in SECTIONS:
                self.problem(f"unknown section [{key}]{did_you_mean(key, SECTIONS)}")
        flow_table = data.get("flow", {})
        if not isinstance(flow_table, dict):
            self.problem("[flow] must be a table", field_name="flow")
            flow_table = {}
        settings = self.fields(flow_table, FLOW_FIELDS, None, "[flow]")
        nodes_table = data.get("nodes")
        if not isinstance(nodes_table, dict) or not nodes_table:
            self.problem("no nodes: add at least one [nodes.NAME] table")
            nodes_table = {}
        nodes = {name: self.node(name, table) for name, table in nodes_table.items()}
        hosts = self.hosts(data.get("hosts", {}))
        name = settings.get("name")
        if name is None and "name" not in flow_table:
            name = self.path.stem  # a flow is named after its file unless [flow] name says otherwise
            if _flow_name(name) is not None:
                self.problem(
                    f"the file's name {name!r} cannot name the flow (letters, digits, _, - and .): give [flow] a name",
                    field_name="name",
                )
        flow = FlowSpec(
            name=name or self.path.stem,
            path=self.path,
            nodes=nodes,
            queue=settings.get("queue", DEFAULT_QUEUE),
            transport=Transport(settings.get("transport", Transport.IPC)),
            host=settings.get("host", "127.0.0.1"),
            hosts=hosts,
            insecure=settings.get("insecure", False),
            shm=settings.get("shm", True),
            lossless=settings.get("lossless", False),
            engine=Engine(settings.get("engine", Engine.LOCAL)),
            ray_address=settings.get("ray_address"),
        )
        for key in ("max_message", "max_control_message"):
            if key in settings:
                setattr(flow, key, byte_size(settings[key]))
        self.placement(flow, "transport" in settings)
        self.engine(flow, "transport" in settings)
        # Each check runs on what the earlier ones left sound, so one mistake hides no other.
        if self.graph(flow):
            self.kinds(flow)
        self.arguments(flow)
        if self.problems:
            raise ManifestError(self.problems)
        return flow

    def node(self, name: str, table: Any) -> NodeSpec:
        spec = NodeSpec(name)
        if not NAME_PATTERN.match(name):
            self.problem("node names use letters, digits, _ and -, and start with a letter", name)
        if not isinstance(table, dict):
            self.problem("must be a table: [nodes.NAME] with run or command", name)
            return spec
        good = self.fields(table, NODE_FIELDS, name, f"[nodes.{name}]")
        for key in ("run", "command", "args", *NODE_OPTIONS):
            if key in good:
                setattr(spec, key, NODE_VOCABULARIES[key](good[key]) if key in NODE_VOCABULARIES else good[key])
        if ("run" in table) == ("command" in table):
            self.problem('give exactly one of "run" (a Python node) or "command" (any executable)', name, "run")
        if "max_message" in good:
            spec.max_message = byte_size(good["max_message"])
        if "outputs" in good and "run" in table:
            self.problem(
                "a Python node declares its output ports in its class (the `outputs` attribute); "
                "this field is for command nodes",
                name,
                "outputs",
            )
        if "resources" in good:
            spec.resources, problems = resources_from_table(good["resources"])
            for field_name, message in problems:
                self.problem(message, name, field_name)
        if "inputs" in good:
            spec.inputs, spec.keyword_ports = self.inputs(name, good["inputs"])
        if spec.cwd is not None and not (self.path.parent / spec.cwd).is_dir():
            self.problem(f'no folder "{spec.cwd}" (relative to the manifest\'s folder {self.path.parent})', name, "cwd")
        elif spec.command and not self.executable(spec):
            self.problem(f'no executable "{spec.command[0]}" (looked in PATH and the node\'s folder)', name, "command")
        if spec.run:
            try:
                self.targets[name] = load_target(spec.run, self.path.parent)
            except LoadError as error:
                self.problem(str(error), name, "run")
        return spec

    def hosts(self, table: Any) -> dict[str, HostSpec]:
        if not isinstance(table, dict):
            self.problem("[hosts] must be a table of [hosts.NAME] tables", field_name="hosts")
            return {}
        hosts = {}
        for name, entry in table.items():
            where = f"[hosts.{name}]"
            if not isinstance(entry, dict):
                self.problem(f'{where} must be a table, for example {{ address = "10.0.0.2" }}', field_name=name)
                continue
            good = self.fields(entry, HOST_FIELDS, None, where, say_where=True)
            if "address" not in entry:
                self.problem(f"{where} needs the address its agent listens on and its nodes bind", field_name="address")
            for needs_ssh in ("sync", "python"):
                if needs_ssh in good and "ssh" not in entry:
                    self.problem(
                        f'{where}: {needs_ssh} is for agents started over ssh: add ssh = "user@host"',
                        field_name=needs_ssh,
                    )
            if "ssh" in good and "key" in good:
                self.problem(
                    f"{where}: an agent started over ssh makes a new key for each run and tells it over "
                    "ssh: remove key",
                    field_name="key",
                )
            if "address" in good:
                # An agent started over ssh takes any free port (it says which) unless agent_port names one.
                port = good.get("agent_port", 0 if "ssh" in good else DEFAULT_AGENT_PORT)
                hosts[name] = HostSpec(
                    name,
                    good["address"],
                    port,
                    good.get("key"),
                    good.get("timeout", DEFAULT_HOST_TIMEOUT),
                    good.get("ssh"),
                    good.get("sync", False),
                    good.get("python"),
                )
        return hosts

    def placement(self, flow: FlowSpec, transport_given: bool) -> None:
        """Nodes on other hosts need tcp everywhere and a launcher address those hosts reach."""
        remote = [node for node in flow.nodes.values() if node.host is not None]
        for node in remote:
            if node.host is not None and node.host not in flow.hosts:
                known = f" (declared: {', '.join(flow.hosts)})" if flow.hosts else " (add a [hosts.NAME] table)"
                self.problem(
                    f'no host named "{node.host}"{did_you_mean(node.host, flow.hosts)}{known}', node.name, "host"
                )
        if not remote:
            return
        if transport_given and flow.transport != Transport.TCP:
            self.problem(
                f'node "{remote[0].name}" runs on host "{remote[0].host}": nodes on other hosts '
                'talk over tcp; remove transport or set transport = "tcp"',
                field_name="transport",
            )
        flow.transport = Transport.TCP
        if flow.host in LOOPBACK:
            self.problem(
                f'node "{remote[0].name}" runs on host "{remote[0].host}", which cannot reach the '
                f"launcher at {flow.host}: set [flow] host to this machine's address on their network",
                field_name="host",
            )

    def engine(self, flow: FlowSpec, transport_given: bool) -> None:
        """A flow on Ray places every node there: tcp between them, no [hosts] placement."""
        if flow.engine != Engine.RAY:
            return
        for node in flow.nodes.values():
            if node.host is not None:
                self.problem(
                    'a flow with engine = "ray" places every node on the Ray cluster; remove host', node.name, "host"
                )
        if transport_given and flow.transport != Transport.TCP:
            self.problem(
                'nodes on a Ray cluster talk over tcp; remove transport or set transport = "tcp"',
                field_name="transport",
            )
        flow.transport = Transport.TCP

    def executable(self, spec: NodeSpec) -> bool:
        program = spec.command[0]  # type: ignore[index]
        folder = self.path.parent / (spec.cwd or "")
        if "/" in program:
            return (folder / program).is_file()
        return shutil.which(program) is not None

    def inputs(self, name: str, value: list[str] | dict[str, str]) -> tuple[list[InputSpec], bool]:
        entries = list(value.items()) if isinstance(value, dict) else [(source, source) for source in value]
        ports: list[InputSpec] = []
        for port, reference in entries:
            source, _, source_port = reference.partition("/")
            if any(existing.port == port for existing in ports):
                self.problem(f'"{port}" is listed twice', name, "inputs")
            ports.append(InputSpec(port, source, source_port or "out"))
        return ports, isinstance(value, dict)

    def graph(self, flow: FlowSpec) -> bool:
        """Check that every input names an output; True when the graph is whole and has no cycle."""
        whole = True
        for node in flow.nodes.values():
            for port in node.inputs:
                source = flow.nodes.get(port.source)
                if source is None:
                    self.problem(
                        f'no node named "{port.source}"{did_you_mean(port.source, flow.nodes)}', node.name, "inputs"
                    )
                    whole = False
                    continue
                if source.run and source.name not in self.targets:
                    continue  # its class did not load (reported): its ports are unknown
                outputs = self.outputs_of(source)
                if port.source_port not in outputs:
                    self.problem(
                        f'node "{source.name}" has no output port "{port.source_port}" '
                        f"(it has: {', '.join(outputs)}){did_you_mean(port.source_port, outputs)}",
                        node.name,
                        "inputs",
                    )
                    whole = False
        return whole and not self.cycles(flow)

    def outputs_of(self, node: NodeSpec) -> list[str]:
        if node.name in self.targets:
            return list(declared_outputs(self.targets[node.name]))
        return node.outputs

    def cycles(self, flow: FlowSpec) -> bool:
        state: dict[str, int] = {}  # 1 = on the current path, 2 = done

        def visit(name: str, path: list[str]) -> bool:
            state[name] = 1
            for port in flow.nodes[name].inputs:
                if state.get(port.source) == 1:
                    cycle = [*path[path.index(port.source) :], port.source] if port.source in path else [name]
                    self.problem(f"the inputs form a cycle: {' <- '.join(cycle)}", name, "inputs")
                    return True
                if port.source not in state and visit(port.source, [*path, port.source]):
                    return True
            state[name] = 2
            return False

        return any(name not in state and visit(name, [name]) for name in flow.nodes)

    def kinds(self, flow: FlowSpec) -> None:
        for node in flow.nodes.values():
            declared = declared_kind(self.targets[node.name]) if node.name in self.targets else None
            feeds = flow.downstream(node.name)
            if declared == NodeKind.PRODUCER and node.inputs:
                self.problem(f'"{node.run}" is a producer, which takes no inputs', node.name, "inputs")
            elif declared in (NodeKind.PROCESSOR, NodeKind.CONSUMER) and not node.inputs:
                self.problem(f'"{node.run}" is a {declared}, which needs inputs', node.name, "inputs")
            if declared == NodeKind.CONSUMER and feeds:
                readers = ", ".join(f'"{reader.name}"' for reader, _ in feeds)
                self.problem(
                    f'"{node.run}" is a consumer, which sends nothing on, yet {readers} reads it', node.name, "run"
                )
            node.kind = declared or (
                NodeKind.PRODUCER if not node.inputs else NodeKind.PROCESSOR if feeds else NodeKind.CONSUMER
            )
            if node.on_error == ErrorPolicy.SKIP and node.kind == NodeKind.PRODUCER:
                self.problem(
                    'a producer cannot skip an item its generator failed on: use on_error = "fail" '
                    "and a restart policy",
                    node.name,
                    "on_error",
                )
            if node.replicas > 1 and node.kind == NodeKind.PRODUCER:
                self.problem(
                    "a producer runs as one process (its items form one numbered sequence)", node.name, "replicas"
                )
            if node.replicas > 1 and len(node.inputs) > 1:
                self.problem(
                    "a node that joins several inputs runs as one process, so the items of each "
                    "sequence number meet in one place",
                    node.name,
                    "replicas",
                )

    def arguments(self, flow: FlowSpec) -> None:
        """``args`` must fit the node's constructor (a class) or its keywords (a function), so a
        typo is found here rather than in every process after the flow has started."""
        for node in flow.nodes.values():
            target = self.targets.get(node.name)
            if target is None:
                continue
            try:
                signature = inspect.signature(target)
            except (TypeError, ValueError):
                continue  # a builtin or an extension without a signature: it will say so itself
            try:
                if inspect.isclass(target) or NodeKind.PRODUCER in (node.kind, declared_kind(target)):
                    signature.bind(**node.args)  # called with exactly these
                else:
                    signature.bind_partial(**node.args)  # the items come as the other arguments
            except TypeError as error:
                known = [
                    name
                    for name, parameter in signature.parameters.items()
                    if parameter.kind in (parameter.POSITIONAL_OR_KEYWORD, parameter.KEYWORD_ONLY)
                ]
                hint = "".join(did_you_mean(key, known) for key in node.args if key not in known)[:200]
                takes = ", ".join(known) or "no arguments"
                self.problem(f'do not fit "{node.run}": {error}{hint} (it takes: {takes})', node.name, "args")
