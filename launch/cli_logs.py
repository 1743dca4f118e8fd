"""``flujo-launch logs``: the kept output of a flow's nodes, interleaved by time, and followed
while the flow runs."""

from __future__ import annotations

import collections
import time
from collections.abc import Iterator
from pathlib import Path

import click

from flujo.launch import logstore
from flujo.launch.cli_running import flow_option
from flujo.launch.runs import CommandError, find_flow, running_flows, runs_folder


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


@click.command()
@click.argument("node", required=False)
@flow_option
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
