"""The ``flujo-launch`` command line: ``flujo-launch manifest.toml`` runs a flow.

The manifest form is shorthand for ``flujo-launch run manifest.toml``, so commands that act on
running flows can sit beside it as subcommands.
"""
from __future__ import annotations

import sys

import click

from flujo.launch.errors import ManifestError
from flujo.launch.launcher import Launcher
from flujo.launch.manifest import load_manifest


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
def run(manifest: str) -> None:
    """Validate MANIFEST, start every node, and run the flow until it ends.

    Ctrl-C stops the producers and lets the pipes drain; a second Ctrl-C kills every node.
    Exit status: 0 when every node exited 0, 1 when a node failed, 2 for a bad manifest.
    """
    try:
        flow = load_manifest(manifest)
    except ManifestError as error:
        for problem in error.problems:
            click.echo(f"error: {problem}", err=True)
        sys.exit(error.exit_code)
    sys.exit(Launcher(flow).run())
