"""A node replica's configuration, as the launcher hands it over (JSON, see docs/PROTOCOL.md).

Node code never invents endpoints: everything it binds or connects to is in here.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from typing import Any

from flujo.protocol import CONFIG_ENV

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
    policy: str = "block"  # "block" | "drop-newest" | "drop-oldest" (see docs/PROTOCOL.md)
    shm: bool = False  # this port accepts shared-memory descriptors from its senders
    max_message: int = DATA_MAX_MESSAGE  # bytes: a larger frame is refused (its connection dropped)


@dataclass(frozen=True, slots=True)
class OutputConfig:
    """One output edge: a downstream node's input port, one endpoint per downstream replica."""

    port: str  # this node's output port
    target: str  # downstream node
    target_port: str
    endpoints: tuple[str, ...]
    hwm: int
    policy: str = "block"  # the reader's: "block" waits for room; "drop-*": a full queue drops
    aligned: bool = False  # the reader zips several ports: a graceful restart agrees on where to pause
    shm: bool = False  # large arrays go as shared-memory descriptors (same host, reader accepts them)
    max_message: int = DATA_MAX_MESSAGE  # the reader's limit: a larger frame is an error here, not a silent loss

def _known(cls: type, data: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in data.items() if key in cls.__slots__}


@dataclass(frozen=True, slots=True)
class NodeConfig:
    flow: str
    node: str
    replica: int
    replicas: int
    kind: str  # producer | processor | consumer
    control: str  # launcher's PUB endpoint (connect a SUB)
    status: str  # launcher's PULL endpoint (connect a PUSH)
    inputs: tuple[InputConfig, ...] = ()
    outputs: tuple[OutputConfig, ...] = ()
    join: str = "zip"
    keyword_ports: bool = False  # named ports in the manifest: items are passed as keyword arguments
    on_error: str = "fail"  # "skip": an item whose processing raises is counted, logged and skipped
    restart: str = "no"  # the launcher's restart policy: "on-failure" or "always" restart a failed node
    seq_start: int = 0  # producers: first sequence number (a restarted producer continues past the last)
    generation: int = 0  # how many processes ran this replica before this one (restarts)
    run: str | None = None  # "module:attr" or "file.py:attr", for Python nodes
    base_dir: str = "."  # folder that relative "file.py:attr" paths start from
    args: dict[str, Any] = field(default_factory=dict)
    curve: dict[str, str] | None = None  # the flow key pair: tcp sockets use CURVE (flujo/curve.py)
    protocol: int = 1
    shm_run: str = ""  # the flow run's id, in its shared-memory segment names ("" : no shared memory)
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
        data = _known(cls, json.loads(text))
        data["inputs"] = tuple(InputConfig(**_known(InputConfig, item)) for item in data.get("inputs", ()))
        data["outputs"] = tuple(OutputConfig(**{**_known(OutputConfig, item), "endpoints": tuple(item["endpoints"])})
                                for item in data.get("outputs", ()))
        return cls(**data)

    @classmethod
    def from_environment(cls) -> NodeConfig:
        try:
            return cls.from_json(os.environ[CONFIG_ENV])
        except KeyError:
            raise SystemExit(f"flujo node: no configuration; the launcher sets {CONFIG_ENV}") from None
