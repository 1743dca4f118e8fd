"""The ``flujo-launch`` command line: ``flujo-launch manifest.toml`` runs a flow.

The manifest form is shorthand for ``flujo-launch run manifest.toml``, so commands that act on
running flows can sit beside it as subcommands. Options may come before or after the
arguments, and a mistyped subcommand gets a suggestion instead of "no such file".

Each command lives with those of its kind: cli_manifest (run, check, graph), cli_running (stop,
restart, status/ps, ls), cli_logs (logs) and cli_host (agent, keys, conform); this module is the
group that dispatches to them.
"""

from __future__ import annotations

from pathlib import Path

import click

from flujo.launch.cli_host import agent, conform, keys
from flujo.launch.cli_logs import logs
from flujo.launch.cli_manifest import check, graph, run
from flujo.launch.cli_running import list_flows, restart, status, stop
from flujo.launch.fork_client import OWN_PROCESS

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


def entry() -> None:
    """The flujo-launch program (and ``python -m flujo.launch``): main, in a process of its own,
    so that a flow's Python nodes may start as forks of it (launch/fork_server.py)."""
    main(obj=OWN_PROCESS)


for command in (run, check, graph, stop, logs, list_flows, restart, status, agent, conform, keys):
    main.add_command(command)
main.add_command(status, name="ps")

__all__ = [
    "agent",
    "check",
    "conform",
    "entry",
    "graph",
    "keys",
    "list_flows",
    "logs",
    "main",
    "restart",
    "run",
    "status",
    "stop",
]
