"""The commands that act on running flows through their launchers' command sockets: ``stop``,
``restart``, ``status`` (also ``ps``) and ``ls``."""

from __future__ import annotations

import json
import sys
from datetime import datetime
from typing import Any

import click

from flujo.launch import logstore
from flujo.launch.command_client import request
from flujo.launch.runs import CommandError, running_flows
from flujo.launch.status_table import format_status, host_line

flow_option = click.option("--flow", "flow_name", help="Which running flow (default: the only one).")


def _ask(flow_name: str | None, command: str, **fields: Any) -> dict:
    try:
        return request(flow_name, command, **fields)
    except CommandError as error:
        raise click.ClickException(str(error)) from None


@click.command()
@click.argument("nodes", nargs=-1)
@flow_option
def stop(nodes: tuple[str, ...], flow_name: str | None) -> None:
    """Stop NODES of a running flow, or every producer when none is named.

    Stopped nodes end their streams; what depends on them alone drains and exits.
    """
    reply = _ask(flow_name, "stop", nodes=list(nodes))
    if reply["stopping"]:
        click.echo(f"stopping {', '.join(reply['stopping'])}")
    ended = reply.get("ended") or {}
    for node, how in ended.items():
        click.echo(f'Error: node "{node}" has already ended ({how}): nothing to stop', err=True)
    if ended:
        sys.exit(1)


@click.command(name="ls")
@click.option("--json", "as_json", is_flag=True, help="Print each flow's announcement as JSON.")
def list_flows(as_json: bool) -> None:
    """List the running flows: name, launcher pid, start time, nodes and processes."""
    try:
        flows = running_flows()
    except CommandError as error:  # an unsafe runs folder
        raise click.ClickException(str(error)) from None
    if as_json:
        click.echo(json.dumps([flows[name] for name in sorted(flows)], indent=2))
        return
    if not flows:
        click.echo("no flow is running")
        return
    rows = [("FLOW", "PID", "STARTED", "UP", "NODES", "PROCESSES", "MANIFEST")]
    now = datetime.now().astimezone()
    for name, announcement in sorted(flows.items()):
        started, up = "?", "?"
        if announcement.get("started"):
            when = logstore.parse_stamp(announcement["started"]).astimezone()
            started, up = when.strftime("%Y-%m-%d %H:%M:%S"), _duration((now - when).total_seconds())
        rows.append(
            (
                name,
                str(announcement["pid"]),
                started,
                up,
                str(announcement.get("nodes", "?")),
                str(announcement.get("processes", "?")),
                announcement.get("manifest", ""),
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        click.echo("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip())


def _duration(seconds: float) -> str:
    seconds = int(max(0, seconds))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


@click.command()
@click.argument("node")
@flow_option
def restart(node: str, flow_name: str | None) -> None:
    """Replace NODE's processes one by one while the rest of the flow runs.

    Each replica drains first: its senders pause it, it finishes what they had sent and
    hands over, so nothing is lost. Its input endpoints stay the same, so upstream nodes
    reconnect and resume by themselves. A replica that does not drain within its
    stop_timeout is ended and replaced all the same (at most once; docs/PROTOCOL.md).
    """
    reply = _ask(flow_name, "restart", node=node)
    click.echo(f"restarting {', '.join(reply['restarting'])}")


@click.command()
@flow_option
@click.option("--json", "as_json", is_flag=True, help="Print the status as JSON.")
def status(flow_name: str | None, as_json: bool) -> None:
    """Show every node replica of a running flow: state, pid, restarts, items, rate, queue, busy."""
    reply = _ask(flow_name, "status")
    if as_json:
        reply.pop("ok", None)
        click.echo(json.dumps(reply, indent=2))
        return
    click.echo(f"flow {reply['flow']}")
    click.echo(format_status(reply["nodes"]))
    if reply.get("bottleneck"):
        click.echo(f"bottleneck: {reply['bottleneck']}")
    for host in reply.get("hosts", ()):
        click.echo(f"host {host_line(host)}")
    for node in reply["nodes"]:  # a replica a cluster has not placed yet, and why
        if node.get("pending"):
            click.echo(f"{node['label']} pending: {node['pending']}")
