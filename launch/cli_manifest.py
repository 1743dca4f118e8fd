"""The commands that read a manifest: ``run`` (start a flow and run it to its end), ``check``
(validate only) and ``graph`` (draw it)."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from flujo.launch.errors import EXIT_BAD_MANIFEST, ManifestError
from flujo.launch.manifest import Engine, FlowSpec, Transport, load_manifest
from flujo.vocab import NodeKind


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


@click.command()
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
    from flujo.launch.fork_client import OWN_PROCESS, fork_server_for
    from flujo.launch.launcher import Launcher
    from flujo.launch.parent import ParentPipe

    flow = _load(manifest)
    if engine is not None:
        _place_on(flow, manifest, engine)
    # Out of the environment before the fork server copies it: the nodes' environment is its.
    parent = ParentPipe.from_environment()
    # First, before anything starts: its nodes come back from this call as they end (SystemExit).
    forks = fork_server_for(flow) if click.get_current_context().find_root().obj == OWN_PROCESS else None
    try:
        code = Launcher(
            flow,
            json_status=json_status,
            quiet=quiet,
            metrics_port=metrics_port,
            metrics_address=metrics_address,
            forks=forks,
            parent=parent,
        ).run()
    finally:
        if forks is not None:
            forks.close()  # every node it forked has exited
    sys.exit(code)


@click.command()
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


@click.command()
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
