"""Closed vocabularies (flujo/vocab.py, launch/agent_wire.py) where they are read and written: the
manifest, the node configuration and the agent channel give enum members, and spell them on the
wire and in files exactly as before. Pure logic: no processes, no sockets."""

from __future__ import annotations

import json
from pathlib import Path

import msgpack
import pytest

from flujo.api import Node, Producer, declared_kind, processor
from flujo.config import CONFIG_ENV, InputConfig, NodeConfig, OutputConfig
from flujo.launch.agent_wire import AgentReply, AgentRequest, pack
from flujo.launch.errors import ManifestError
from flujo.launch.manifest import Engine, Placement, Transport, validate
from flujo.testing import drive
from flujo.vocab import ErrorPolicy, Join, NodeKind, QueuePolicy, RestartPolicy, zips_several
from flujo.wire_check import ProtocolError, check_agent_reply, check_agent_request

pytestmark = pytest.mark.timeout(10)


def _config(**fields: object) -> NodeConfig:
    inputs = (InputConfig("in", "ipc://i", 4, "up", "out", 1, policy=QueuePolicy.DROP_OLDEST),)
    outputs = (OutputConfig("out", "down", "in", ("ipc://o",), 4, policy=QueuePolicy.DROP_NEWEST),)
    base: dict = {
        "flow": "f",
        "node": "n",
        "replica": 0,
        "replicas": 1,
        "kind": NodeKind.PROCESSOR,
        "control": "ipc://c",
        "status": "ipc://s",
        "inputs": inputs,
        "outputs": outputs,
        "join": Join.MERGE,
        "on_error": ErrorPolicy.SKIP,
        "restart": RestartPolicy.ON_FAILURE,
    }
    return NodeConfig(**{**base, **fields})


def test_node_configuration_spells_the_wire_values_and_reads_back_enums() -> None:
    text = _config().to_json()
    data = json.loads(text)
    assert (data["kind"], data["join"], data["on_error"], data["restart"]) == (
        "processor",
        "merge",
        "skip",
        "on-failure",
    )
    assert data["inputs"][0]["policy"] == "drop-oldest" and data["outputs"][0]["policy"] == "drop-newest"
    parsed = NodeConfig.from_json(text)
    assert parsed == _config()
    assert type(parsed.kind) is NodeKind and type(parsed.join) is Join and type(parsed.restart) is RestartPolicy
    assert type(parsed.on_error) is ErrorPolicy and type(parsed.inputs[0].policy) is QueuePolicy
    assert type(parsed.outputs[0].policy) is QueuePolicy
    assert parsed.to_json() == text  # a round trip changes nothing


def test_a_value_outside_a_vocabulary_is_a_clear_configuration_error(monkeypatch: pytest.MonkeyPatch) -> None:
    data = json.loads(_config().to_json())
    data["inputs"][0]["policy"] = "drop-random"
    with pytest.raises(ValueError, match="'drop-random' is not a valid QueuePolicy"):
        NodeConfig.from_json(json.dumps(data))
    monkeypatch.setenv(CONFIG_ENV, json.dumps({**data, "kind": "transformer"}))
    with pytest.raises(SystemExit, match=f"bad configuration in {CONFIG_ENV}: .*'transformer'"):
        NodeConfig.from_environment()
    monkeypatch.setenv(CONFIG_ENV, "{not json")
    with pytest.raises(SystemExit, match=f"bad configuration in {CONFIG_ENV}"):
        NodeConfig.from_environment()


def test_the_manifest_gives_enum_members_and_refuses_other_spellings(tmp_path: Path) -> None:
    data = {
        "nodes": {
            "src": {"run": "flujo.nodes.basic:Count", "args": {"n": 3}, "restart": "always"},
            "other": {"run": "flujo.nodes.basic:Count", "args": {"n": 3}},
            "join": {
                "run": "flujo.nodes.basic:Collect",
                "args": {"path": "x"},
                "inputs": ["src", "other"],
                "join": "merge",
                "policy": "drop-newest",
                "on_error": "skip",
            },
        }
    }
    flow = validate(data, tmp_path / "m.toml", "m.toml")
    src, join = flow.nodes["src"], flow.nodes["join"]
    assert (src.kind, src.restart, src.join, src.policy) == (
        NodeKind.PRODUCER,
        RestartPolicy.ALWAYS,
        Join.ZIP,
        QueuePolicy.BLOCK,
    )
    assert type(src.restart) is RestartPolicy and type(join.join) is Join and type(join.policy) is QueuePolicy
    assert (join.kind, join.on_error) == (NodeKind.CONSUMER, ErrorPolicy.SKIP) and type(join.kind) is NodeKind
    assert (flow.transport, flow.engine, src.placement) == (Transport.IPC, Engine.LOCAL, Placement.FAIL)
    data["flow"] = {"transport": "tcp", "engine": "ray"}
    data["nodes"]["src"]["placement"] = "wait"
    flow = validate(data, tmp_path / "m.toml", "m.toml")
    assert flow.transport is Transport.TCP and flow.engine is Engine.RAY
    assert flow.nodes["src"].placement is Placement.WAIT
    data["nodes"]["join"]["policy"] = "drop_newest"
    with pytest.raises(ManifestError) as caught:
        validate(data, tmp_path / "m.toml", "m.toml")
    assert "must be one of block, drop-newest, drop-oldest, got 'drop_newest' (did you mean \"drop-newest\"?)" in str(
        caught.value
    )


def test_the_zip_rule_needs_a_zip_of_several_ports() -> None:
    assert zips_several(Join.ZIP, 2) and zips_several("zip", 3)
    assert not zips_several(Join.ZIP, 1) and not zips_several(Join.MERGE, 2)


def test_agent_messages_are_checked_into_their_enum() -> None:
    identity, kind, payload = check_agent_request([b"id", pack(AgentRequest.HELLO, {"flow": "f"})])
    assert (identity, kind, payload) == (b"id", AgentRequest.HELLO, {"flow": "f"}) and type(kind) is AgentRequest
    kind, payload = check_agent_reply(pack(AgentReply.EXIT, {"token": 1, "code": 0}), "agent")
    assert kind is AgentReply.EXIT and payload == {"token": 1, "code": 0}
    assert msgpack.unpackb(pack(AgentReply.LINE, None)) == ["line", None]  # spelled as before
    with pytest.raises(ProtocolError, match="unknown message kind 'welcome'"):
        check_agent_request([b"id", pack(AgentReply.WELCOME, {})])  # a reply is no request


def test_node_kinds_declared_by_classes_and_functions() -> None:
    def numbers():  # a generator function: a producer
        yield 1

    @processor
    def double(x: int) -> int:
        return 2 * x

    assert declared_kind(Producer) is NodeKind.PRODUCER and declared_kind(numbers) is NodeKind.PRODUCER
    assert declared_kind(double) is NodeKind.PROCESSOR and declared_kind(Node) is None
    assert declared_kind(lambda x: x) is None  # its place in the graph decides


def test_drive_refuses_a_node_of_no_kind() -> None:
    with pytest.raises(TypeError, match="Node is not a Producer, Processor or Consumer"):
        drive(Node(), [1])
