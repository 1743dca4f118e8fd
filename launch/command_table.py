"""The launcher's command server: every command in one table, with its arguments, reply and errors.

A request is a msgpack map ``{"command": NAME, ...arguments}`` on the REP socket a running launcher
announces (launch/runs.py); the reply is a msgpack map, ``{"ok": true, ...reply fields}`` or
``{"ok": false, "code": CODE, "error": SENTENCE}``. docs/PROTOCOL.md (section 17) documents this
table: keep them in step (tests/test_command_table.py checks that it names every command and code).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Protocol


class ErrorCode(StrEnum):
    """Why a command was refused (the reply's ``code``)."""

    MALFORMED = "malformed"  # not a msgpack map with a "command" string, or an argument of the wrong type
    UNKNOWN_COMMAND = "unknown-command"
    UNKNOWN_NODE = "unknown-node"  # the flow has no node of that name
    ALREADY_ENDED = "already-ended"  # restart: every replica of the node has ended for good
    NOTHING_TO_RESTART = "nothing-to-restart"  # restart: no replica has a running process (all restarting)


class Refused(Exception):
    """A command that cannot be carried out: answered with ``ok: false``, its code and sentence."""

    def __init__(self, code: ErrorCode, message: str) -> None:
        super().__init__(message)
        self.code, self.message = code, message


class Controlled(Protocol):
    """What commands act on: the running flow."""

    @property
    def flow_name(self) -> str: ...

    @property
    def node_names(self) -> list[str]: ...

    @property
    def producers(self) -> list[str]: ...

    def status(self) -> dict[str, Any]: ...

    def stop(self, nodes: list[str] | None = None) -> None: ...

    def restart(self, node: str) -> list[str]: ...

    def ended(self, node: str) -> str: ...

    def states(self, node: str) -> list[str]: ...


@dataclass(frozen=True)
class Command:
    """One command: what it takes, what it answers, how it can be refused, and what carries it out."""

    name: str
    arguments: str
    reply: str
    errors: tuple[ErrorCode, ...]
    run: Callable[[Controlled, dict[str, Any]], dict[str, Any]]


def _known_node(flow: Controlled, name: Any) -> str:
    if name not in flow.node_names:
        raise Refused(ErrorCode.UNKNOWN_NODE, f'no node named "{name}" in flow "{flow.flow_name}"')
    return str(name)


def _status(flow: Controlled, request: dict[str, Any]) -> dict[str, Any]:
    return flow.status()


def _stop(flow: Controlled, request: dict[str, Any]) -> dict[str, Any]:
    nodes = [_known_node(flow, name) for name in request.get("nodes") or ()]
    ended = [name for name in nodes if flow.ended(name)]
    live = [name for name in nodes if name not in ended]
    if live or not nodes:
        flow.stop(live or None)
    return {"stopping": live if nodes else flow.producers, "ended": {name: flow.ended(name) for name in ended}}


def _restart(flow: Controlled, request: dict[str, Any]) -> dict[str, Any]:
    node = _known_node(flow, request.get("node"))
    ended = flow.ended(node)
    if ended:
        raise Refused(ErrorCode.ALREADY_ENDED, f'node "{node}" has already ended ({ended}): nothing to restart')
    labels = flow.restart(node)
    if not labels:
        states = ", ".join(sorted(set(flow.states(node))))
        raise Refused(ErrorCode.NOTHING_TO_RESTART, f'node "{node}" has no running process to restart ({states})')
    return {"restarting": labels}


COMMANDS: dict[str, Command] = {
    command.name: command
    for command in (
        Command(
            "status",
            arguments="none",
            reply="the flow's state: flow, started, stopping, hosts, bottleneck, nodes (one map per replica)",
            errors=(),
            run=_status,
        ),
        Command(
            "stop",
            arguments='"nodes": list of node names (optional; none or empty: every producer, the whole flow)',
            reply='"stopping": the nodes told to stop; "ended": {node: how it ended} for named nodes that had '
            "already ended (not stopped again)",
            errors=(ErrorCode.UNKNOWN_NODE,),
            run=_stop,
        ),
        Command(
            "restart",
            arguments='"node": a node name',
            reply='"restarting": the labels of the replicas that will be replaced, one after the other',
            errors=(ErrorCode.UNKNOWN_NODE, ErrorCode.ALREADY_ENDED, ErrorCode.NOTHING_TO_RESTART),
            run=_restart,
        ),
    )
}


def answer(flow: Controlled, request: dict[str, Any]) -> dict[str, Any]:
    """The reply to one checked request (flujo/wire_check.py checked its shape and argument types)."""
    name = request.get("command")
    command = COMMANDS.get(name) if isinstance(name, str) else None
    if command is None:
        return {"ok": False, "code": ErrorCode.UNKNOWN_COMMAND.value, "error": f"unknown command {name!r}"}
    try:
        return {"ok": True, **command.run(flow, request)}
    except Refused as refused:
        return {"ok": False, "code": refused.code.value, "error": refused.message}
