"""The ``flujo-launch`` command line: ``flujo-launch manifest.toml`` runs a flow.

The manifest form is shorthand for ``flujo-launch run manifest.toml``, so commands that act on
running flows can sit beside it as subcommands.
"""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import click

from flujo.commands import CommandError, find_flow, logs_folder, request, running_flows, runs_folder
from flujo.launch.errors import ManifestError
from flujo.launch.launcher import Launcher
from flujo.launch.manifest import DEFAULT_AGENT_PORT, load_manifest


class _ManifestOrCommand(click.Group):
    """A group whose first argument may be a manifest path instead of a subcommand."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        if args and args[0] not in self.commands and not args[0].startswith("-"):
            args = ["run", *args]
        return super().parse_args(ctx, args)


@click.group(cls=_ManifestOrCommand, context_settings={"help_option_names": ["-h", "--help"]})
def main() -> None:
    """Run and steer Flujo flows: flujo-launch MANIFEST.toml"""


@main.command()
@click.argument("manifest", type=click.Path(dir_okay=False))
@click.option("--json-status", type=click.Path(dir_okay=False), help="Write the final status of every node here.")
@click.option("-q", "--quiet", is_flag=True, help="Show no node output nor live table (logs still kept).")
def run(manifest: str, json_status: str | None, quiet: bool) -> None:
    """Validate MANIFEST, start every node, and run the flow until it ends.

    On a terminal a live table shows every node; otherwise each output line is prefixed
    with its node's name. Every node's output is also kept in a log file (flujo-launch logs).

    Ctrl-C stops the producers and lets the pipes drain; a second Ctrl-C kills every node.
    Exit status: 0 when every node exited 0, 1 when a node failed, 2 for a bad manifest.
    """
    try:
        flow = load_manifest(manifest)
    except ManifestError as error:
        for problem in error.problems:
            click.echo(f"error: {problem}", err=True)
        sys.exit(error.exit_code)
    sys.exit(Launcher(flow, json_status=json_status, quiet=quiet).run())


_flow_option = click.option("--flow", "flow_name", help="Which running flow (default: the only one).")


def _ask(flow_name: str | None, command: str, **fields: object) -> dict:
    try:
        return request(flow_name, command, **fields)
    except CommandError as error:
        raise click.ClickException(str(error)) from None


@main.command()
@click.argument("nodes", nargs=-1)
@_flow_option
def stop(nodes: tuple[str, ...], flow_name: str | None) -> None:
    """Stop NODES of a running flow, or every producer when none is named.

    Stopped nodes end their streams; what depends on them alone drains and exits.
    """
    reply = _ask(flow_name, "stop", nodes=list(nodes))
    click.echo(f"stopping {', '.join(reply['stopping'])}")


def _flow_with_logs(flow_name: str | None) -> str:
    """The named flow, or the only one running, or the only one that left logs."""
    if flow_name:
        return flow_name
    try:
        return find_flow(None)["flow"]
    except CommandError:
        folders = sorted(path.parent.name for path in runs_folder().glob("*/logs"))
        if len(folders) == 1:
            return folders[0]
        raise click.ClickException("name the flow with --flow" + (f" (logs kept for: {', '.join(folders)})"
                                                                  if folders else ": no logs found")) from None


@main.command()
@click.argument("node", required=False)
@_flow_option
@click.option("-f", "--follow", is_flag=True, help="Keep printing new lines until the flow ends.")
def logs(node: str | None, flow_name: str | None, follow: bool) -> None:
    """Print the output of NODE's replicas (default: every node), kept in the flow's run folder."""
    name = _flow_with_logs(flow_name)
    folder = logs_folder(name)

    def node_files() -> list[Path]:
        files = sorted(folder.glob("*.log"))
        return [path for path in files if not node or node in (path.stem, path.stem.rsplit(".", 1)[0])]

    files = node_files()
    if not files and not follow:
        raise click.ClickException(f'no logs for node "{node}" in flow "{name}"' if node
                                   else f'no logs for flow "{name}"')
    positions: dict[Path, int] = {}
    while True:
        last_pass = not follow or name not in running_flows()  # decided before reading: no line is missed
        files = node_files()  # a replica's file appears with its first line
        width = max((len(path.stem) for path in files), default=0)
        for path in files:
            positions.setdefault(path, 0)
            if path.stat().st_size < positions[path]:
                positions[path] = 0  # rotated since the last look: a new file
            with path.open() as log:
                log.seek(positions[path])
                for text in log:
                    click.echo(f"{path.stem:<{width}} | {text.rstrip()}" if len(files) > 1 else text.rstrip())
                positions[path] = log.tell()
        if last_pass:
            return
        time.sleep(0.2)  # following a file another process writes: look again shortly


@main.command()
@click.argument("node")
@_flow_option
def restart(node: str, flow_name: str | None) -> None:
    """Replace NODE's processes one by one while the rest of the flow runs.

    Each replica drains first: its senders pause it, it finishes what they had sent and
    hands over, so nothing is lost. Its input endpoints stay the same, so upstream nodes
    reconnect and resume by themselves. A replica that does not drain within its
    stop_timeout is ended and replaced all the same (at most once; docs/PROTOCOL.md).
    """
    reply = _ask(flow_name, "restart", node=node)
    click.echo(f"restarting {', '.join(reply['restarting'])}")


@main.command()
@_flow_option
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


main.add_command(status, name="ps")


@main.command()
@click.option("--bind", default=f"tcp://0.0.0.0:{DEFAULT_AGENT_PORT}", show_default=True,
              help="Where launchers reach this agent: the address and agent_port of this host's [hosts] entry.")
@click.option("--max-message", default="4MB", show_default=True,
              help="Largest frame accepted from any peer (bytes, or KB/MB/GB): a larger one drops its connection.")
def agent(bind: str, max_message: str) -> None:
    """Serve launchers on other hosts: start the nodes they place on this host.

    Run one on every host that a manifest's [hosts] table names, with the flow's code at the
    same path as on the launcher's host. Nodes started here end when the agent ends, and
    when their launcher falls silent (killed, or its host lost) for a few seconds.

    With FLUJO_AGENT_TOKEN set, only launchers with the same FLUJO_AGENT_TOKEN are served.
    The channel is not encrypted: keep agents on trusted networks.
    """
    from flujo.launch.agent import Agent
    from flujo.launch.manifest import MAX_MESSAGE, MIN_MESSAGE, byte_size

    size = byte_size(max_message)
    if size is None or not MIN_MESSAGE <= size <= MAX_MESSAGE:
        raise click.BadParameter(f"{max_message!r} is not a size from {MIN_MESSAGE} bytes to 16GB",
                                 param_hint="--max-message")
    sys.exit(Agent(bind, max_message=size).run())


STATUS_COLUMNS = ("node", "state", "pid", "restarts", "in", "out", "items/s", "queue", "busy", "dropped",
                  "rejected")


def status_row(node: dict) -> tuple[str, ...]:
    """One replica's row of the status table (also used by the live view)."""
    return (node["label"], node["state"], process_id(node), str(node["restarts"]), str(node["items_in"]),
            str(node["items_out"]), f"{node['rate']:.1f}", f"{node['queue']:.0%}", f"{node['busy']:.0%}",
            str(node.get("dropped", 0)), str(node.get("rejected", 0)))


def process_id(node: dict) -> str:
    """The replica's pid, and "@host" when it runs on another host."""
    pid = str(node.get("pid") or "")
    return f"{pid}@{node['host']}" if node.get("host") else pid


def format_status(nodes: list[dict]) -> str:
    rows = [STATUS_COLUMNS, *(status_row(node) for node in nodes)]
    widths = [max(len(row[i]) for row in rows) for i in range(len(STATUS_COLUMNS))]
    return "\n".join("  ".join(cell.ljust(width) if i < 2 else cell.rjust(width)
                               for i, (cell, width) in enumerate(zip(row, widths))) for row in rows)
