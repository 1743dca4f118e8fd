"""The ``flujo-launch`` command line: ``flujo-launch manifest.toml`` runs a flow.

The manifest form is shorthand for ``flujo-launch run manifest.toml``, so commands that act on
running flows can sit beside it as subcommands. Options may come before or after the
arguments, and a mistyped subcommand gets a suggestion instead of "no such file".
"""

from __future__ import annotations

import collections
import json
import sys
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import click

from flujo.launch import logstore
from flujo.launch.command_client import request
from flujo.launch.errors import EXIT_BAD_MANIFEST, ManifestError
from flujo.launch.manifest import Engine, FlowSpec, Transport, load_manifest
from flujo.launch.runs import CommandError, find_flow, running_flows, runs_folder
from flujo.launch.status_table import format_status, host_line
from flujo.vocab import NodeKind

_GROUP_OPTIONS = ("-h", "--help", "--version")


class _ManifestOrCommand(click.Group):
    """A group whose first argument may be a manifest path instead of a subcommand, and whose
    commands take their options anywhere on the line (``flujo-launch -q m.toml``)."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        if args and not all(arg in _GROUP_OPTIONS for arg in args):
            position = self._first_argument(args)
            if position is not None:
                word = args[position]
                if _looks_like_manifest(word) and word not in self.commands:
                    args = ["run", *args]
                else:  # a command (or a mistyped one) goes in front of the options given before it
                    args = [word, *args[:position], *args[position + 1 :]]
            elif args[0].startswith("-"):
                args = ["run", *args]  # run's options without a manifest: run says what is missing
        return super().parse_args(ctx, args)

    def resolve_command(
        self, ctx: click.Context, args: list[str]
    ) -> tuple[str | None, click.Command | None, list[str]]:
        try:
            return super().resolve_command(ctx, args)
        except click.exceptions.NoSuchCommand as error:
            if error.possibilities:
                raise  # "No such command 'stpo'. Did you mean 'stop'?"
            raise click.UsageError(
                f"No such command {args[0]!r}, nor a manifest file of that name "
                f"(commands: {', '.join(sorted(self.commands))})",
                ctx,
            ) from None

    def _first_argument(self, args: list[str]) -> int | None:
        """Index of the first word that is neither an option nor an option's value."""
        takes_value = {
            name
            for command in self.commands.values()
            for param in command.params
            if isinstance(param, click.Option) and not param.is_flag and not param.count
            for name in param.opts + param.secondary_opts
        }
        index = 0
        while index < len(args):
            arg = args[index]
            if arg == "--":
                return index + 1 if index + 1 < len(args) else None
            if not arg.startswith("-") or arg == "-":
                return index
            index += 2 if arg in takes_value else 1  # "--opt=value" is one word
        return None


def _looks_like_manifest(word: str) -> bool:
    """A path rather than a subcommand: it exists, ends in .toml, or has a folder in it."""
    return Path(word).exists() or word.endswith(".toml") or "/" in word


@click.group(cls=_ManifestOrCommand, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="flujo", prog_name="flujo-launch", message="%(prog)s %(version)s")
def main() -> None:
    """Run and steer Flujo flows: flujo-launch MANIFEST.toml"""


def _load(manifest: str, consequence: str = ", nothing started") -> FlowSpec:
    """The validated manifest, or every problem on stderr and exit status 2."""
    try:
        return load_manifest(manifest)
    except ManifestError as error:
        for problem in error.problems:
            click.echo(f"error: {problem}", err=True)
        count = len(error.problems)
        click.echo(f"{manifest}: {count} problem{'s' if count != 1 else ''}{consequence}", err=True)
        sys.exit(error.exit_code)


def _place_on(flow: FlowSpec, manifest: str, engine: str) -> None:
    """``run --on``: the flow's nodes go to a Ray cluster, whatever the manifest's engine."""
    if engine not in ("ray", "auto") and not engine.startswith("ray://") and ":" not in engine:
        click.echo(f"error: --on {engine}: give ray, auto, HOST:PORT or ray://HOST:PORT", err=True)
        sys.exit(EXIT_BAD_MANIFEST)
    hosted = [name for name, node in flow.nodes.items() if node.host is not None]
    if hosted:
        click.echo(
            f'error: {manifest}: node "{hosted[0]}": field "host": --on places every node on the Ray '
            "cluster; remove host",
            err=True,
        )
        sys.exit(EXIT_BAD_MANIFEST)
    flow.engine, flow.transport = Engine.RAY, Transport.TCP
    if engine != Engine.RAY:
        flow.ray_address = engine


@main.command()
@click.argument("manifest", type=click.Path(dir_okay=False))
@click.option("--json-status", type=click.Path(dir_okay=False), help="Write the final status of every node here.")
@click.option("-q", "--quiet", is_flag=True, help="Show no node output nor live table (logs still kept).")
@click.option(
    "--metrics-port",
    type=click.IntRange(0, 65535),
    metavar="PORT",
    help="Serve Prometheus metrics at http://ADDRESS:PORT/metrics (0: a free port, printed).",
)
@click.option(
    "--metrics-address",
    default="127.0.0.1",
    show_default=True,
    metavar="ADDRESS",
    help="Where the metrics endpoint listens (0.0.0.0: every interface).",
)
@click.option(
    "--on",
    "engine",
    metavar="ray|auto|HOST:PORT|ray://HOST:PORT",
    help="Place every node on a Ray cluster: HOST:6379 (its head; run from a machine of the cluster), "
    "ray://HOST:10001 (through Ray Client, from another machine the cluster's machines can "
    "reach), auto (the cluster this machine is part of), or ray (the manifest's ray_address, "
    "else RAY_ADDRESS or auto).",
)
def run(
    manifest: str,
    json_status: str | None,
    quiet: bool,
    metrics_port: int | None,
    metrics_address: str,
    engine: str | None,
) -> None:
    """Validate MANIFEST, start every node, and run the flow until it ends.

    On a terminal a live table shows every node; otherwise each output line is prefixed
    with its node's name. Every node's output is also kept in a log file (flujo-launch logs).

    Ctrl-C stops the producers and lets the pipes drain; a second Ctrl-C kills every node.
    Exit status: 0 when every node exited 0, 1 when a node failed, 2 for a bad manifest.
    """
    from flujo.launch.launcher import Launcher

    flow = _load(manifest)
    if engine is not None:
        _place_on(flow, manifest, engine)
    sys.exit(
        Launcher(
            flow, json_status=json_status, quiet=quiet, metrics_port=metrics_port, metrics_address=metrics_address
        ).run()
    )


@main.command()
@click.argument("manifest", type=click.Path(dir_okay=False))
def check(manifest: str) -> None:
    """Validate MANIFEST without starting anything: every problem, or a short summary.

    Exit status: 0 when it would run, 2 when it has problems (each names the file, node and field).
    """
    flow = _load(manifest, consequence="")
    processes = sum(spec.replicas for spec in flow.nodes.values())
    edges = sum(len(spec.inputs) for spec in flow.nodes.values())
    kinds = {kind: sum(1 for spec in flow.nodes.values() if spec.kind == kind) for kind in NodeKind}
    hosts = sorted({spec.host for spec in flow.nodes.values() if spec.host})
    summary = ", ".join(f"{count} {kind}{'s' if count != 1 else ''}" for kind, count in kinds.items() if count)
    click.echo(
        f'{manifest}: ok: flow "{flow.name}": {len(flow.nodes)} nodes ({summary}), '
        f"{processes} processes, {edges} edges" + (f", hosts: {', '.join(hosts)}" if hosts else "")
    )


@main.command()
@click.argument("manifest", type=click.Path(dir_okay=False))
@click.option(
    "--format",
    "output_format",
    type=click.Choice(["mermaid", "dot", "svg", "html"]),
    default="mermaid",
    show_default=True,
    help="Mermaid or DOT text, an SVG (Graphviz), an HTML page.",
)
@click.option("-o", "--output", type=click.Path(dir_okay=False), help="Write here instead of standard output.")
def graph(manifest: str, output_format: str, output: str | None) -> None:
    """Draw MANIFEST's graph: nodes, replicas, ports, joins, hosts and queue policies.

    Mermaid text renders in GitHub Markdown; `--format svg` needs Graphviz's dot
    (apt-get install graphviz); `--format html` draws the Mermaid text in a browser.
    """
    from flujo.launch.graph import RENDERERS, GraphvizMissing

    flow = _load(manifest)
    try:
        text = RENDERERS[output_format](flow)
    except GraphvizMissing as error:
        raise click.ClickException(str(error)) from None
    if output:
        Path(output).write_text(text)
    else:
        click.echo(text, nl=False)


_flow_option = click.option("--flow", "flow_name", help="Which running flow (default: the only one).")


def _ask(flow_name: str | None, command: str, **fields: Any) -> dict:
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
    if reply["stopping"]:
        click.echo(f"stopping {', '.join(reply['stopping'])}")
    ended = reply.get("ended") or {}
    for node, how in ended.items():
        click.echo(f'Error: node "{node}" has already ended ({how}): nothing to stop', err=True)
    if ended:
        sys.exit(1)


def _flow_with_logs(flow_name: str | None) -> str:
    """The named flow, or the only one running, or the only one that left logs."""
    if flow_name:
        return flow_name
    try:
        return find_flow(None)["flow"]
    except CommandError:
        folders = sorted(path.parent.name for path in runs_folder().glob("*/logs") if path.is_dir())
        if len(folders) == 1:
            return folders[0]
        raise click.ClickException(
            "name the flow with --flow" + (f" (logs kept for: {', '.join(folders)})" if folders else ": no logs found")
        ) from None


def _selected_labels(folder: Path, node: str | None, flow: str) -> list[str]:
    """The run's labels that NODE names (a node, or one replica "node.N"); every label without NODE."""
    known = logstore.run_info(folder).get("labels") or logstore.labels_in(folder)
    if node is None:
        return sorted(set(known) | set(logstore.labels_in(folder)))
    chosen = [label for label in known if node in (label, label.split(".")[0])]
    if not chosen:
        nodes = sorted({label.split(".")[0] for label in known})
        raise click.ClickException(f'no node "{node}" in flow "{flow}" (run {folder.name}; nodes: {", ".join(nodes)})')
    return chosen


def _show(line: logstore.LogLine, width: int, timestamps: bool, prefix: bool) -> None:
    parts = []
    if timestamps:
        parts.append(line.at or " " * len(logstore.stamp(0)))
    if prefix:
        parts.append(f"{line.label:<{width}} |")
    parts.append(line.text)
    click.echo(" ".join(parts))


@main.command()
@click.argument("node", required=False)
@_flow_option
@click.option("-f", "--follow", is_flag=True, help="Keep printing new lines until the flow ends.")
@click.option("-n", "--tail", type=click.IntRange(min=0), metavar="N", help="Only the last N lines.")
@click.option(
    "--since",
    metavar="WHEN",
    help="Only lines from then on: a duration back (30s, 5m, 2h, 1d) or a time (2026-11-26T15:30, local).",
)
@click.option(
    "--run",
    "run_name",
    metavar="RUN",
    help="A kept run other than the latest: its name (see --runs), or N for N runs before the latest.",
)
@click.option("--runs", "list_runs", is_flag=True, help="List the flow's kept runs, oldest first.")
@click.option("--no-timestamps", is_flag=True, help="Leave out the time each line was relayed.")
def logs(
    node: str | None,
    flow_name: str | None,
    follow: bool,
    tail: int | None,
    since: str | None,
    run_name: str | None,
    list_runs: bool,
    no_timestamps: bool,
) -> None:
    """Print the output of NODE's replicas (default: every node), interleaved by time.

    Each line carries the UTC time the launcher relayed it. The last few runs of each flow
    are kept (--runs lists them); the latest is shown unless --run picks another.
    """
    name = _flow_with_logs(flow_name)
    if list_runs:
        for run_id in logstore.runs(name):
            info = logstore.run_info(logstore.logs_root(name) / run_id)
            click.echo(f"{run_id}  started {info.get('started', '?')}  {info.get('manifest', '')}")
        return
    try:
        folder = logstore.run_folder(name, run_name)
        after = logstore.parse_since(since) if since else ""
    except (LookupError, ValueError) as error:
        raise click.ClickException(str(error)) from None
    labels = _selected_labels(folder, node, name)
    width = max(map(len, labels), default=0)
    prefix = len(labels) > 1
    lines: Iterator[logstore.LogLine] = (line for line in logstore.merged(folder, labels) if line.at >= after)
    if tail is not None:
        lines = iter(list(collections.deque(lines, maxlen=tail)) if tail else [])
    for line in lines:
        _show(line, width, not no_timestamps, prefix)
    if not follow:
        return
    # Follow: read what each file gains, oldest first; lines of one look are merged by time.
    positions = {label: _size(folder / f"{label}.log") for label in labels}
    while True:
        last_pass = name not in running_flows() or logstore.run_folder(name) != folder  # before reading
        fresh: list[logstore.LogLine] = []
        for label in labels:
            path = folder / f"{label}.log"
            size = _size(path)
            if size < positions[label]:
                positions[label] = 0  # rotated since the last look: a new file
            if size > positions[label]:
                with path.open("rb") as log:
                    log.seek(positions[label])
                    data = log.read()
                complete = data[: data.rfind(b"\n") + 1]  # a line being written waits for the next look
                positions[label] += len(complete)
                fresh.extend(
                    logstore.parse_line(label, raw) for raw in complete.decode("utf-8", errors="replace").splitlines()
                )
        for line in sorted(fresh):
            if line.at >= after:
                _show(line, width, not no_timestamps, prefix)
        if last_pass:
            return
        time.sleep(0.2)  # following files another process writes: look again shortly


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0


@main.command(name="ls")
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
    for host in reply.get("hosts", ()):
        click.echo(f"host {host_line(host)}")
    for node in reply["nodes"]:  # a replica a cluster has not placed yet, and why
        if node.get("pending"):
            click.echo(f"{node['label']} pending: {node['pending']}")


main.add_command(status, name="ps")


_keys_option = click.option(
    "--keys",
    "keys_dir",
    type=click.Path(file_okay=False),
    default=None,
    help="Folder of the key pair and trust files (default: $FLUJO_HOME or ~/.config/flujo).",
)


@main.command()
@click.option(
    "--bind",
    required=True,
    metavar="tcp://ADDRESS:PORT",
    help="Where launchers reach this agent: the address and agent_port of this host's [hosts] entry.",
)
@_keys_option
@click.option("--insecure", is_flag=True, help="Serve anyone who reaches the port, in clear text (warns).")
@click.option(
    "--authorize", multiple=True, metavar="KEY", help="Also serve the launcher with this public key (may be repeated)."
)
@click.option(
    "--session",
    is_flag=True,
    help="Serve over an ssh session (how a launcher starts an agent for [hosts] ssh): a new key pair for "
    "this run, only --authorize keys served, and the agent ends when its standard input closes.",
)
@click.option(
    "--max-message",
    default="4MB",
    show_default=True,
    help="Largest frame accepted from any peer (bytes, or KB/MB/GB): a larger one drops its connection.",
)
def agent(
    bind: str, keys_dir: str | None, insecure: bool, authorize: tuple[str, ...], session: bool, max_message: str
) -> None:
    """Serve launchers on other hosts: start the nodes they place on this host.

    Run one on every host that a manifest's [hosts] table names, with the flow's code at the
    same path as on the launcher's host. Nodes started here end when the agent ends, and
    when their launcher falls silent (killed, or its host lost).

    Closed by default: the agent speaks CURVE with this host's key pair (flujo-launch keys) and
    serves only the launchers whose public keys are listed in authorized_keys in the keys folder.
    It prints its own public key: put it in the manifest's [hosts.NAME] key, or in the
    launcher's known_hosts.

    A launcher whose manifest gives the host an ssh destination starts its own agent there
    (--session); nobody needs to start one by hand then.
    """
    from flujo.curve import is_public_key
    from flujo.launch.agent import Agent, AgentSetupError
    from flujo.launch.keys import keys_folder
    from flujo.launch.manifest import MAX_MESSAGE, MIN_MESSAGE, byte_size

    size = byte_size(max_message)
    if size is None or not MIN_MESSAGE <= size <= MAX_MESSAGE:
        raise click.BadParameter(
            f"{max_message!r} is not a size from {MIN_MESSAGE} bytes to 16GB", param_hint="--max-message"
        )
    for key in authorize:
        if not is_public_key(key):
            click.echo(
                f"flujo-agent: --authorize {key[:50]!r}: not a public key (the 40 characters "
                "`flujo-launch keys` prints)",
                err=True,
            )
            sys.exit(2)
    try:
        folder = Path(keys_dir) if keys_dir else keys_folder()
        keys = tuple(key.encode("ascii") for key in authorize)
        sys.exit(Agent(bind, folder, insecure, authorize=keys, session=session, max_message=size).run())
    except AgentSetupError as error:
        click.echo(f"flujo-agent: {error}", err=True)
        sys.exit(2)


@main.command(add_help_option=False, context_settings={"ignore_unknown_options": True})
@click.argument("arguments", nargs=-1, type=click.UNPROCESSED)
def conform(arguments: tuple[str, ...]) -> None:
    """Check a node program against the wire protocol: conform [--level basic|full|restartable] -- COMMAND...

    Runs the program as the launcher and its neighbours would, through every clause of
    docs/PROTOCOL.md, and prints one line per clause and the level reached (exit 0 when the
    asked level is reached). `flujo-launch conform --help` lists every option.
    """
    from flujo.conformance.cli import main as run_kit

    sys.exit(run_kit(list(arguments)))


@main.command()
@_keys_option
def keys(keys_dir: str | None) -> None:
    """Make this user's CURVE key pair (once) and print its public key.

    A launcher presents it to agents (add it to their authorized_keys); an agent serves with it
    (put it in the manifest's [hosts.NAME] key, or the launcher's known_hosts).
    """
    from flujo.launch.keys import AUTHORIZED_KEYS, KNOWN_HOSTS, KeyFileError, create_identity, keys_folder

    folder = Path(keys_dir) if keys_dir else keys_folder()
    try:
        identity, new = create_identity(folder)
    except KeyFileError as error:
        click.echo(f"error: {error}", err=True)
        sys.exit(2)
    click.echo(f"{'created' if new else 'existing'} key pair in {folder}")
    click.echo(f"public key: {identity.public.decode()}")
    click.echo(f"trust files: {folder / AUTHORIZED_KEYS} (on agents), {folder / KNOWN_HOSTS} (on launchers)")
