"""A node replica's configuration, as the launcher hands it over (JSON, see docs/PROTOCOL.md).

Node code never invents endpoints: everything it binds or connects to is in here.
"""

from __future__ import annotations

import json
import os
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from flujo.protocol import CONFIG_ENV
from flujo.vocab import ErrorPolicy, Join, NodeKind, QueuePolicy, RestartPolicy

#: Default size limits (ZMQ_MAXMSGSIZE, per frame) of the sockets a node binds or connects:
#: data ports fit a 4K RGB frame (3840 x 2160 x 3 = 24.9 MB) with room for 4K RGBA or 16-bit
#: frames; the control plane (control, status, commands, agents) carries small maps.
DATA_MAX_MESSAGE = 64 * 1024 * 1024
CONTROL_MAX_MESSAGE = 4 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class InputConfig:
    """One input port of this replica: a PULL socket it binds."""

    port: str
    endpoint: str
    hwm: int
    source: str  # upstream node name
    source_port: str  # upstream output port
    senders: int  # upstream replicas: one end-of-stream marker expected from each
    policy: QueuePolicy = QueuePolicy.BLOCK  # what a full queue does (see docs/PROTOCOL.md)
    shm: bool = False  # this port accepts shared-memory descriptors from its senders
    max_message: int = DATA_MAX_MESSAGE  # bytes: a larger frame is refused (its connection dropped)
    ack_endpoints: tuple[str, ...] = ()  # a lossless port: each sender replica's ack endpoint (section 9.2)
    credit_endpoints: tuple[str, ...] = ()  # a credited port: each sender replica's credit endpoint (section 18)


@dataclass(frozen=True, slots=True)
class OutputConfig:
    """One output edge: a downstream node's input port, one endpoint per downstream replica."""

    port: str  # this node's output port
    target: str  # downstream node
    target_port: str
    endpoints: tuple[str, ...]
    hwm: int
    policy: QueuePolicy = QueuePolicy.BLOCK  # the reader's: BLOCK waits for room; DROP_*: a full queue drops
    aligned: bool = False  # the reader zips several ports: a graceful restart agrees on where to pause
    shm: bool = False  # large arrays go as shared-memory descriptors (same host, reader accepts them)
    max_message: int = DATA_MAX_MESSAGE  # the reader's limit: a larger frame is an error here, not a silent loss
    lossless: bool = False  # the reader acknowledges: keep what was sent until then, replay on its crash (9.3)
    credits: bool = False  # the reader sends credits: at most 2 x hwm items in flight to each replica (18)


def _known(fields: Collection[str], data: dict[str, Any]) -> dict[str, Any]:
    """The entries of ``data`` that are among ``fields`` (a newer launcher may send more)."""
    return {key: value for key, value in data.items() if key in fields}


def _vocabulary(data: dict[str, Any], enums: Mapping[str, type[StrEnum]]) -> dict[str, Any]:
    """``data`` with the values of closed vocabularies as their enum members (a value this version
    does not know is a ValueError that names it)."""
    return {key: enums[key](value) if key in enums else value for key, value in data.items()}


_NODE_ENUMS: dict[str, type[StrEnum]] = {
    "kind": NodeKind,
    "join": Join,
    "on_error": ErrorPolicy,
    "restart": RestartPolicy,
}
_PORT_ENUMS: dict[str, type[StrEnum]] = {"policy": QueuePolicy}


@dataclass(frozen=True, slots=True)
class NodeConfig:
    flow: str
    node: str
    replica: int
    replicas: int
    kind: NodeKind
    control: str  # launcher's PUB endpoint (connect a SUB)
    status: str  # launcher's PULL endpoint (connect a PUSH)
    inputs: tuple[InputConfig, ...] = ()
    outputs: tuple[OutputConfig, ...] = ()
    join: Join = Join.ZIP
    keyword_ports: bool = False  # named ports in the manifest: items are passed as keyword arguments
    on_error: ErrorPolicy = ErrorPolicy.FAIL  # SKIP: an item whose processing raises is counted, logged and skipped
    restart: RestartPolicy = RestartPolicy.NO  # the launcher's: ON_FAILURE or ALWAYS restart a failed node
    seq_start: int = 0  # producers: first sequence number (a restarted producer continues past the last)
    resume_at: int | None = None  # producers: after a crash, ask resume_from(this) and number from it
    restore_state: list[Any] | None = None  # [through, base64 msgpack]: restore(state) first (section 9.6)
    generation: int = 0  # how many processes ran this replica before this one (restarts)
    run: str | None = None  # "module:attr" or "file.py:attr", for Python nodes
    base_dir: str = "."  # folder that relative "file.py:attr" paths start from
    args: dict[str, Any] = field(default_factory=dict)
    curve: dict[str, str] | None = None  # the flow key pair: tcp sockets use CURVE (flujo/curve.py)
    protocol: int = 1
    shm_run: str = ""  # the flow run's id, in its shared-memory segment names ("" : no shared memory)
    ack_endpoint: str = ""  # where this replica binds its acknowledgement socket (lossless outputs, 9.2)
    credit_endpoint: str = ""  # where this replica binds its credit socket (credited outputs, section 18)
    merge_log: str = ""  # a lossless merge: the file its numbering is logged in (9.5)
    shm_release: str = ""  # where this replica binds its release socket (it has shared-memory outputs)
    shm_owners: dict[str, str] = field(default_factory=dict)  # "node.replica" -> release endpoint, for
    # every replica whose segments may reach this one (also through processors that send arrays on)
    max_control_message: int = CONTROL_MAX_MESSAGE  # bytes, for the control (SUB) socket

    @property
    def label(self) -> str:
        """How logs name this replica: "node" or "node.replica" when replicated."""
        return self.node if self.replicas == 1 else f"{self.node}.{self.replica}"

    def to_json(self) -> str:
        data = {name: getattr(self, name) for name in self.__slots__}
        data["inputs"] = [{n: getattr(i, n) for n in InputConfig.__slots__} for i in self.inputs]
        data["outputs"] = [{n: getattr(o, n) for n in OutputConfig.__slots__} for o in self.outputs]
        return json.dumps(data)

    @classmethod
    def from_json(cls, text: str) -> NodeConfig:
        """Parse the configuration; fields this version does not know are ignored
        (docs/PROTOCOL.md, section 2), so a newer launcher can add some."""
        data = _vocabulary(_known(cls.__slots__, json.loads(text)), _NODE_ENUMS)
        data["inputs"] = tuple(
            InputConfig(
                **{
                    **_vocabulary(_known(InputConfig.__slots__, item), _PORT_ENUMS),
                    "ack_endpoints": tuple(item.get("ack_endpoints", ())),
                    "credit_endpoints": tuple(item.get("credit_endpoints", ())),
                }
            )
            for item in data.get("inputs", ())
        )
        data["outputs"] = tuple(
            OutputConfig(
                **{
                    **_vocabulary(_known(OutputConfig.__slots__, item), _PORT_ENUMS),
                    "endpoints": tuple(item["endpoints"]),
                }
            )
            for item in data.get("outputs", ())
        )
        return cls(**data)

    @classmethod
    def from_environment(cls) -> NodeConfig:
        text = os.environ.get(CONFIG_ENV)
        if text is None:
            raise SystemExit(f"flujo node: no configuration; the launcher sets {CONFIG_ENV}")
        try:
            return cls.from_json(text)
        except (ValueError, KeyError, TypeError) as error:  # not JSON, a field missing, a value unknown
            raise SystemExit(f"flujo node: bad configuration in {CONFIG_ENV}: {error!r}") from None
