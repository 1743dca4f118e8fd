"""The launcher's command table and the status table, without sockets or processes: every
command's replies and error codes, the protocol document naming each, and the one table
definition `flujo-launch status` and the live view share."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import msgpack
import pytest

from flujo.launch.channels import Channels
from flujo.launch.command_table import COMMANDS, ErrorCode, answer
from flujo.launch.status_table import COLUMNS, format_status, shown_columns

pytestmark = pytest.mark.timeout(10)
PROTOCOL = Path(__file__).parents[1] / "docs" / "PROTOCOL.md"


class FakeFlow:
    """A running flow as the command table sees it: nodes "src" (a producer) and "sink"."""

    def __init__(self, ended: dict[str, str] | None = None, restartable: bool = True) -> None:
        self.flow_name, self.node_names, self.producers = "demo", ["src", "sink"], ["src"]
        self._ended = ended or {}
        self._restartable = restartable
        self.stopped: list[list[str] | None] = []
        self.restarted: list[str] = []

    def status(self) -> dict[str, Any]:
        return {"flow": "demo", "nodes": []}

    def stop(self, nodes: list[str] | None = None) -> None:
        self.stopped.append(nodes)

    def restart(self, node: str) -> list[str]:
        self.restarted.append(node)
        return [f"{node}.0", f"{node}.1"] if self._restartable else []

    def ended(self, node: str) -> str:
        return self._ended.get(node, "")

    def states(self, node: str) -> list[str]:
        return ["restarting", "restarting"]


def test_status_replies_with_the_flow_state() -> None:
    assert answer(FakeFlow(), {"command": "status"}) == {"ok": True, "flow": "demo", "nodes": []}


@pytest.mark.parametrize(
    ("nodes", "told", "reply"),
    [
        (None, [None], {"stopping": ["src"], "ended": {}}),  # the whole flow: its producers
        ([], [None], {"stopping": ["src"], "ended": {}}),
        (["sink"], [["sink"]], {"stopping": ["sink"], "ended": {}}),
        (["src", "sink"], [["sink"]], {"stopping": ["sink"], "ended": {"src": "exit status 0"}}),
        (["src"], [], {"stopping": [], "ended": {"src": "exit status 0"}}),  # nothing left to stop
    ],
)
def test_stop(nodes: list[str] | None, told: list[Any], reply: dict[str, Any]) -> None:
    flow = FakeFlow(ended={"src": "exit status 0"})
    assert answer(flow, {"command": "stop", **({"nodes": nodes} if nodes is not None else {})}) == {"ok": True, **reply}
    assert flow.stopped == told


def test_restart_replies_with_the_labels_it_replaces() -> None:
    flow = FakeFlow()
    assert answer(flow, {"command": "restart", "node": "sink"}) == {"ok": True, "restarting": ["sink.0", "sink.1"]}
    assert flow.restarted == ["sink"]


@pytest.mark.parametrize(
    ("request_", "flow", "code", "error"),
    [
        ({"command": "launch"}, FakeFlow(), "unknown-command", "unknown command 'launch'"),
        (
            {"command": "stop", "nodes": ["src", "nope"]},
            FakeFlow(),
            "unknown-node",
            'no node named "nope" in flow "demo"',
        ),
        ({"command": "restart"}, FakeFlow(), "unknown-node", 'no node named "None" in flow "demo"'),
        (
            {"command": "restart", "node": "src"},
            FakeFlow(ended={"src": "exit status 1"}),
            "already-ended",
            'node "src" has already ended (exit status 1): nothing to restart',
        ),
        (
            {"command": "restart", "node": "sink"},
            FakeFlow(restartable=False),
            "nothing-to-restart",
            'node "sink" has no running process to restart (restarting)',
        ),
    ],
)
def test_refusals_carry_a_code_and_a_sentence(request_: dict[str, Any], flow: FakeFlow, code: str, error: str) -> None:
    assert answer(flow, request_) == {"ok": False, "code": code, "error": error}
    assert flow.stopped == []  # nothing stopped; only a restart that found nothing to hold was tried
    assert flow.restarted == (["sink"] if code == "nothing-to-restart" else [])


def test_every_error_code_a_command_declares_is_one_it_can_return() -> None:
    declared = {code for command in COMMANDS.values() for code in command.errors}
    assert declared == {ErrorCode.UNKNOWN_NODE, ErrorCode.ALREADY_ENDED, ErrorCode.NOTHING_TO_RESTART}


def test_the_protocol_document_names_every_command_and_code() -> None:
    section = PROTOCOL.read_text().split("## 17. Command channel")[1]
    assert set(re.findall(r"^\| `([a-z-]+)` \|", section, re.MULTILINE)) == set(COMMANDS) | {c.value for c in ErrorCode}
    for command in COMMANDS.values():
        row = next(line for line in section.splitlines() if line.startswith(f"| `{command.name}` |"))
        assert all(f"`{code}`" in row for code in command.errors), row


def test_a_malformed_request_gets_a_malformed_reply(tmp_path: Path) -> None:
    import zmq

    context = zmq.Context()
    try:
        said: list[str] = []
        channels = Channels(
            context, f"ipc://{tmp_path}/c", f"ipc://{tmp_path}/s", f"ipc://{tmp_path}/k", 1 << 20, said.append
        )
        client = context.socket(zmq.REQ)
        client.linger = 0
        client.connect(f"ipc://{tmp_path}/k")
        client.send(b"\xc1 not msgpack")
        assert channels.commands.poll(5000)
        channels.serve_command(lambda request: pytest.fail("a malformed request reached the table"))
        reply = msgpack.unpackb(client.recv())
        assert reply == {"ok": False, "code": "malformed", "error": "malformed command: command is not msgpack"}
        assert said and "command" in said[0]
    finally:
        context.destroy(linger=0)


# -- the status table ----------------------------------------------------------------------------
NODE = {
    "label": "square.1",
    "node": "square",
    "state": "running",
    "pid": 42,
    "host": "gpu",
    "restarts": 2,
    "items_in": 10,
    "items_out": 9,
    "rate": 12.345,
    "queue": 0.5,
    "busy": 0.93,
    "dropped": 0,
    "rejected": 3,
}


def test_the_printed_table_has_every_column_in_order() -> None:
    header, row = (line.split() for line in format_status([NODE]).splitlines())
    assert header == [
        "node",
        "state",
        "pid",
        "restarts",
        "in",
        "out",
        "items/s",
        "queue",
        "busy",
        "dropped",
        "rejected",
    ]
    assert row == ["square.1", "running", "42@gpu", "2", "10", "9", "12.3", "50%", "93%", "0", "3"]


def test_missing_values_show_as_dashes_and_keep_the_columns() -> None:
    header, row = (line.split() for line in format_status([{"label": "lonely"}]).splitlines())
    assert len(row) == len(header) == len(COLUMNS) and row[0] == "lonely" and set(row[1:]) == {"–"}


def test_the_live_view_leaves_out_optional_columns_nobody_has_a_value_in() -> None:
    assert [column.title for column in shown_columns([NODE], compact=True)][-2:] == ["busy", "rejected"]
    assert [column.title for column in shown_columns([NODE], compact=False)][-2:] == ["dropped", "rejected"]
