"""How an agent admits launchers: CURVE with this host's key pair (or, with ``--session``, one made
for this run) and only the launcher keys it is told to serve; or, ``--insecure``, anyone."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import zmq

from flujo.curve import Gatekeeper, KeyPair, make_server
from flujo.launch.keys import AUTHORIZED_KEYS, KeyFileError, authorized_keys, load_identity


class AgentSetupError(Exception):
    """The agent cannot serve safely (no key pair, nobody authorized); the message says how to fix it."""


def secure_router(
    context: zmq.Context,
    router: zmq.Socket,
    keys: Path,
    *,
    insecure: bool,
    session: bool,
    authorize: set[bytes],
    say: Callable[[str], None],
) -> Gatekeeper | None:
    """Make ``router`` a CURVE server that admits only authorized launchers (see ``Agent``); the
    running gatekeeper that checks them, None for an insecure agent. Raises AgentSetupError."""
    if insecure:
        say(
            "warning: --insecure: anyone who reaches this port can start processes here, and "
            "everything travels in clear text"
        )
        return None
    identity: KeyPair | None
    if session:
        identity, allowed = KeyPair.generate(), set(authorize)  # this session's, known to no file
    else:
        try:
            identity, allowed = load_identity(keys), authorized_keys(keys) | authorize
        except KeyFileError as error:
            raise AgentSetupError(str(error)) from None
    if identity is None:
        raise AgentSetupError(f"no key pair in {keys}: run `flujo-launch keys` on this host first")
    if not allowed and session:
        raise AgentSetupError("--session serves only the launcher keys given with --authorize: name one")
    if not allowed:
        raise AgentSetupError(
            f"no launcher may use this agent: add each launcher's public key (run "
            f"`flujo-launch keys` on its host) to {keys / AUTHORIZED_KEYS}, one per line"
        )
    make_server(router, identity)
    gatekeeper = Gatekeeper(context, allowed)
    gatekeeper.start()
    say(f"key: {identity.public.decode()}  (serving {len(allowed)} authorized launcher key(s))")
    return gatekeeper
