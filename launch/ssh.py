"""Agents started for the launcher over ssh: ``[hosts.NAME] ssh = "user@host"``.

For such a host the launcher runs, through the system's ``ssh`` client (so the user's SSH keys,
agent, ~/.ssh/config and known hosts apply)::

    ssh -T -o BatchMode=yes -o ConnectTimeout=20 user@host exec PYTHON -m flujo.launch agent \\
        --session --bind tcp://ADDRESS:PORT --authorize LAUNCHER_KEY

(PORT is the host's agent_port if the manifest gives one, else 0: the agent takes a free port
and says which.) An ssh failure (no route, refused login, no Flujo there) is an AgentError
carrying ssh's own words, and nothing starts.

``FLUJO_SSH_COMMAND`` replaces ``ssh`` and its options, like git's GIT_SSH_COMMAND, for example
``ssh -i ~/.ssh/edge -p 2222 -o StrictHostKeyChecking=accept-new``; the options above come after it,
so options it sets win (the first value of an ``-o`` option is the one ssh uses).

PYTHON is the launcher's own interpreter path (``sys.executable``) unless ``[hosts.NAME] python``
names another: a flow's code must already sit at the same path on every host, and a virtual
environment at the same path is the same convention for Flujo itself, whereas a bare ``python3``
on the host's PATH seldom has Flujo installed (never a virtual environment's).

The CURVE identities are exchanged over that ssh channel, so no key needs setting up on either
side and no known_hosts entry is needed: the agent makes a key pair for this session only and
prints its public key, which the launcher reads from the session's output; the launcher makes
one for this run and names its public key with ``--authorize``. Public keys are not secret (one
cannot speak for a key without its secret half, which never leaves its process), so it does
not matter that the launcher's shows in the host's process list; what matters is that each
side gets the other's genuine key, and ssh guarantees that: it has authenticated the host (its
host key) and the user (their SSH key), and what travels in the session is encrypted and
integrity-protected. The agent serves that one launcher key and nobody else; anyone else who
reaches its port fails the CURVE handshake.

The agent lives as long as the session: when the launcher ends, or is killed, the session's
standard input closes and the agent ends every process it started (``--session``). A session
that ends while the flow runs has taken the agent with it: the launcher counts the host as
lost at once, and logs in again until a new agent takes the host's nodes back (SshSessions).
ssh runs in its own session, so a Ctrl-C at the terminal reaches only the launcher, which stops
the flow in order before it closes the session.

``sync = true`` first copies the flow's folder (the manifest's folder) to the same path on the
host: with rsync when the launcher's machine has it (only changed files travel), else as a tar
stream through the same ssh command. (Not ``scp -r``: scp spells ssh's ``-p PORT`` as ``-P``,
so a FLUJO_SSH_COMMAND could not be reused as it is, and it nests the folder when the target
exists.) ``__pycache__`` folders are left out.

The ssh command line and folder copies are in ssh_client, one agent's session in ssh_agent; this
module keeps a launcher's sessions (SshSessions) and re-exports the names it had.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping

from flujo.launch.manifest import FlowSpec, HostSpec
from flujo.launch.remote import AgentError, AgentLink
from flujo.launch.ssh_agent import CLOSE_TIMEOUT, START_TIMEOUT, SshAgent, start_agent
from flujo.launch.ssh_client import CONNECT_TIMEOUT, SSH_COMMAND_ENV, ssh_command, sync_folder

__all__ = [
    "CLOSE_TIMEOUT",
    "CONNECT_TIMEOUT",
    "RENEW_INTERVAL",
    "SSH_COMMAND_ENV",
    "START_TIMEOUT",
    "SshAgent",
    "SshSessions",
    "ssh_command",
    "start_agent",
    "sync_folder",
]

#: A host whose session ended: log in again this often until its agent is back.
RENEW_INTERVAL = 5.0


class _Renewal:
    """A new session for a host whose session ended, started in a thread: logging in may take
    ssh's ConnectTimeout, and the launcher's loop must not wait for it."""

    def __init__(self, flow: FlowSpec, ended: SshAgent) -> None:
        self.agent: SshAgent | None = None
        self.error: AgentError | None = None
        self._cancelled = False
        self._thread = threading.Thread(
            target=self._run, args=(flow, ended), daemon=True, name=f"ssh renewal {ended.host.name}"
        )
        self._thread.start()

    def _run(self, flow: FlowSpec, ended: SshAgent) -> None:
        try:
            # The same launcher key: the link to the host keeps its socket, only the agent's key changes.
            agent = start_agent(flow, ended.spec, ended.launcher_key)
        except AgentError as error:
            self.error = error
            return
        if self._cancelled:
            agent.close()
        self.agent = agent

    @property
    def finished(self) -> bool:
        return not self._thread.is_alive()

    def cancel(self) -> None:
        self._cancelled = True
        if self.finished and self.agent is not None:
            self.agent.close()


class SshSessions:
    """The agents a launcher starts over ssh, by host name: started, watched, renewed, closed.

    A session that ends while the flow runs has taken its agent and nodes with it: ``watch``
    counts that host as lost at once, then logs in again every RENEW_INTERVAL until a new agent
    listens, and points the host's link at it; the launcher's usual hello then has the host's
    nodes started again there (as their restart policy says)."""

    def __init__(self, flow: FlowSpec, say: Callable[[str], None]) -> None:
        self._flow, self._say = flow, say
        self._agents: dict[str, SshAgent] = {}
        self._renewals: dict[str, _Renewal] = {}
        self._next_try: dict[str, float] = {}

    def start(self, host: HostSpec) -> SshAgent:
        """Start ``host``'s agent (after copying the flow if ``sync``); raises AgentError."""
        agent = self._agents[host.name] = start_agent(self._flow, host)
        return agent

    def watch(self, links: Mapping[str, AgentLink], lose: Callable[[AgentLink, str], None]) -> None:
        """Each heartbeat: lose the hosts whose session ended, and start new sessions for them."""
        for name, agent in self._agents.items():
            link = links.get(name)
            why = agent.ended()
            if link is None or why is None:
                continue
            if not link.lost:
                lose(link, why)
            self._renew(name, link)

    def _renew(self, name: str, link: AgentLink) -> None:
        renewal = self._renewals.get(name)
        if renewal is None:
            if time.monotonic() >= self._next_try.get(name, 0.0):
                self._renewals[name] = _Renewal(self._flow, self._agents[name])
            return
        if not renewal.finished:
            return
        del self._renewals[name]
        if renewal.agent is None:
            self._say(
                f'host "{name}": starting its agent again failed ({renewal.error}); '
                f"trying again in {RENEW_INTERVAL:g} s"
            )
            self._next_try[name] = time.monotonic() + RENEW_INTERVAL
            return
        self._agents[name].close()
        self._agents[name] = renewal.agent
        self._say(f'host "{name}": its agent started again over ssh')
        link.repoint(renewal.agent.host, renewal.agent.agent_key)

    def close(self) -> None:
        """End every session: each agent ends what it still runs."""
        for renewal in self._renewals.values():
            renewal.cancel()
        for agent in self._agents.values():
            agent.close()
