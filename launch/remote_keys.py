"""What a launcher needs to reach a host's agent over CURVE: its own key pair and the agent's
public key (from the manifest or known_hosts), and AgentError for an agent it cannot reach."""

from __future__ import annotations

from flujo.curve import KeyPair
from flujo.launch.keys import KNOWN_HOSTS, KeyFileError, keys_folder, known_host_key, load_identity
from flujo.launch.manifest import FlowSpec, HostSpec


class AgentError(Exception):
    """An agent cannot be reached or refused: the flow does not start."""


def agent_keys(flow: FlowSpec, host: HostSpec) -> tuple[KeyPair, bytes] | None:
    """This launcher's key pair and the agent's public key, for a secure flow (None: insecure).

    Raises AgentError naming what is missing and how to provide it."""
    if not flow.secure:
        return None
    folder = keys_folder()
    try:
        identity = load_identity(folder)
    except KeyFileError as error:
        raise AgentError(str(error)) from None
    if identity is None:
        raise AgentError(
            f"this launcher has no key pair in {folder}: run `flujo-launch keys`, then add the public "
            f'key it prints to the authorized_keys of host "{host.name}"\'s agent'
        )
    agent_key = host.key.encode("ascii") if host.key else known_host_key(folder, host.address, host.agent_port)
    if agent_key is None:
        raise AgentError(
            f'no key known for the agent of host "{host.name}" ({host.agent}): add key = "..." (the '
            f"key the agent prints when it starts) to [hosts.{host.name}], or a line "
            f'"{host.address}:{host.agent_port} KEY" to {folder / KNOWN_HOSTS}'
        )
    return identity, agent_key
