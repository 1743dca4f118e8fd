"""The commands about this host rather than a flow: ``agent`` (serve launchers of other hosts),
``keys`` (this user's CURVE key pair) and ``conform`` (check a node program against the protocol)."""

from __future__ import annotations

import sys
from pathlib import Path

import click

keys_option = click.option(
    "--keys",
    "keys_dir",
    type=click.Path(file_okay=False),
    default=None,
    help="Folder of the key pair and trust files (default: $FLUJO_HOME or ~/.config/flujo).",
)


@click.command()
@click.option(
    "--bind",
    required=True,
    metavar="tcp://ADDRESS:PORT",
    help="Where launchers reach this agent: the address and agent_port of this host's [hosts] entry.",
)
@keys_option
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
    from flujo.launch.fork_client import OWN_PROCESS, ForkServer, wanted
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
    # First, before anything starts: the nodes it forks come back from this call as they end.
    own_process = click.get_current_context().find_root().obj == OWN_PROCESS
    forks = ForkServer(f"flujo-fork-server agent={bind}") if own_process and wanted() else None
    try:
        folder = Path(keys_dir) if keys_dir else keys_folder()
        keys = tuple(key.encode("ascii") for key in authorize)
        agent = Agent(bind, folder, insecure, authorize=keys, session=session, max_message=size, forks=forks)
        code = agent.run()
    except AgentSetupError as error:
        click.echo(f"flujo-agent: {error}", err=True)
        code = 2
    finally:
        if forks is not None:
            forks.close()  # every node it forked has exited
    sys.exit(code)


@click.command(add_help_option=False, context_settings={"ignore_unknown_options": True})
@click.argument("arguments", nargs=-1, type=click.UNPROCESSED)
def conform(arguments: tuple[str, ...]) -> None:
    """Check a node program against the wire protocol: conform [--level basic|full|restartable] -- COMMAND...

    Runs the program as the launcher and its neighbours would, through every clause of
    docs/PROTOCOL.md, and prints one line per clause and the level reached (exit 0 when the
    asked level is reached). `flujo-launch conform --help` lists every option.
    """
    from flujo.conformance.cli import main as run_kit

    sys.exit(run_kit(list(arguments)))


@click.command()
@keys_option
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
