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
"""

from __future__ import annotations

import collections
import contextlib
import os
import shlex
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import replace
from pathlib import Path

from flujo.curve import KeyPair, is_public_key
from flujo.launch.manifest import FlowSpec, HostSpec
from flujo.launch.remote import AgentError, AgentLink

SSH_COMMAND_ENV = "FLUJO_SSH_COMMAND"
#: ssh logs in and Python starts Flujo within this time, or the flow does not start.
START_TIMEOUT = 60.0
#: ssh gives up reaching a host after this long (unless FLUJO_SSH_COMMAND sets ConnectTimeout).
CONNECT_TIMEOUT = 20.0
#: A host whose session ended: log in again this often until its agent is back.
RENEW_INTERVAL = 5.0
#: When the launcher ends, the agent gets this long to end its processes before ssh is killed.
CLOSE_TIMEOUT = 10.0
_KEY_PREFIX = "flujo-agent: key: "
_LISTENING_PREFIX = "flujo-agent: listening on "
_EXCLUDED = "__pycache__"


def ssh_command() -> list[str]:
    """The ssh client and the user's options: $FLUJO_SSH_COMMAND, or plain ``ssh``."""
    configured = os.environ.get(SSH_COMMAND_ENV, "").strip()
    return shlex.split(configured) if configured else ["ssh"]


def _ssh(host: HostSpec, remote_command: list[str]) -> list[str]:
    # -T: no terminal (the agent's output is read line by line; a closed stdin is its end);
    # BatchMode: never wait for a password nobody can type (the launcher owns the terminal);
    # ConnectTimeout: an unreachable host is reported by ssh itself, well within START_TIMEOUT.
    assert host.ssh is not None
    return [
        *ssh_command(),
        "-T",
        "-o",
        "BatchMode=yes",
        "-o",
        f"ConnectTimeout={CONNECT_TIMEOUT:g}",
        host.ssh,
        shlex.join(remote_command),
    ]


def _failure(host: HostSpec, what: str, code: int, output: str) -> AgentError:
    """An error carrying the ssh client's (or the remote command's) own words."""
    text = output.strip() or "(no message)"
    hint = ""
    if code == 255:
        hint = " (ssh could not connect or log in: check the address, the user and the SSH keys)"
    elif code in (126, 127) or "No module named" in text:
        hint = (
            f" (is Flujo installed there at {host.python or sys.executable}? set [hosts.{host.name}] python "
            "to the interpreter that has it)"
        )
    return AgentError(f"{what} over ssh to {host.ssh} failed with status {code}{hint}: {text}")


def sync_folder(host: HostSpec, folder: Path) -> None:
    """Copy ``folder`` to the same path on ``host`` through its ssh; raises AgentError."""
    assert host.ssh is not None
    path = str(folder)
    if shutil.which("rsync"):
        command = [
            "rsync",
            "-a",
            f"--exclude={_EXCLUDED}",
            "-e",
            shlex.join(ssh_command()),
            f"--rsync-path=mkdir -p {shlex.quote(path)} && rsync",
            f"{path}/",
            f"{host.ssh}:{path}/",
        ]
        done = subprocess.run(command, stdin=subprocess.DEVNULL, capture_output=True, text=True, start_new_session=True)
        if done.returncode != 0:
            raise _failure(host, f"copying {path} with rsync", done.returncode, done.stderr)
        return
    unpack = ["sh", "-c", f"mkdir -p {shlex.quote(path)} && exec tar -C {shlex.quote(path)} -xf -"]
    with subprocess.Popen(
        ["tar", "-C", path, f"--exclude={_EXCLUDED}", "-cf", "-", "."],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
    ) as packing:
        done = subprocess.run(
            _ssh(host, unpack), stdin=packing.stdout, capture_output=True, text=True, start_new_session=True
        )
        assert packing.stdout is not None and packing.stderr is not None
        packing.stdout.close()
        packing_errors = packing.stderr.read().decode(errors="replace")
    if done.returncode != 0:  # first: a failed login also makes tar fail, on a broken pipe
        raise _failure(host, f"copying {path}", done.returncode, done.stderr)
    if packing.returncode != 0:
        raise AgentError(f"copying {path}: tar failed with status {packing.returncode}: {packing_errors.strip()}")


class SshAgent:
    """``flujo-launch agent --session`` on a host, run through ssh for this launcher alone.

    ``start`` returns once the agent listens; ``host`` and ``keys`` then say where to reach it
    and with which keys (see the module docstring). ``close`` ends the session and, with it,
    the agent and everything it started."""

    def __init__(self, flow: FlowSpec, host: HostSpec, launcher_key: KeyPair | None = None) -> None:
        self.spec = host  # as the manifest gives it
        self.launcher_key = (launcher_key or KeyPair.generate()) if flow.secure else None
        python = host.python or sys.executable
        remote = [
            python,
            "-m",
            "flujo.launch",
            "agent",
            "--session",
            "--bind",
            f"tcp://{host.address}:{host.agent_port}",
        ]
        remote += ["--authorize", self.launcher_key.public.decode()] if self.launcher_key else ["--insecure"]
        self.command = _ssh(host, ["exec", *remote])
        self._lines: collections.deque[str] = collections.deque(maxlen=200)  # the session's last lines
        self._said = threading.Condition()
        self._process: subprocess.Popen[str] | None = None
        self._readers: list[threading.Thread] = []
        self.host: HostSpec = host  # once started: the port it listens on, and its key
        self.agent_key: bytes | None = None

    @property
    def keys(self) -> tuple[KeyPair, bytes] | None:
        """This launcher's key pair and the agent's public key (None for an insecure flow)."""
        if self.launcher_key is None:
            return None
        assert self.agent_key is not None
        return self.launcher_key, self.agent_key

    def start(self) -> None:
        """Log in, start the agent, learn its port and key; raises AgentError with ssh's words."""
        # Its own session: a terminal's Ctrl-C goes to the launcher, which stops the flow first.
        self._process = subprocess.Popen(
            self.command,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )
        for stream in (self._process.stdout, self._process.stderr):
            reader = threading.Thread(target=self._read, args=(stream,), daemon=True, name=f"ssh {self.spec.name}")
            reader.start()
            self._readers.append(reader)
        deadline = time.monotonic() + START_TIMEOUT
        with self._said:
            while (endpoint := self._said_line(_LISTENING_PREFIX)) is None:
                finished = self._process.poll() is not None and not any(r.is_alive() for r in self._readers)
                left = deadline - time.monotonic()
                if finished or left <= 0:
                    break
                self._said.wait(min(left, 0.5))
            key = (self._said_line(_KEY_PREFIX) or "").partition(" ")[0]  # "KEY  (serving 1 ...)"
        if endpoint is None:
            code = self._process.poll()
            self.close()
            if code is None:
                raise AgentError(
                    f"the agent started over ssh to {self.spec.ssh} did not say it listens within "
                    f"{START_TIMEOUT:g} s: {self._output()}"
                )
            raise _failure(self.spec, "starting the agent", code, self._output())
        port = endpoint.rpartition(":")[2]
        if not port.isdigit() or not 0 < int(port) < 65536:
            self.close()
            raise AgentError(f"the agent started over ssh to {self.spec.ssh} told no valid endpoint: {self._output()}")
        if self.launcher_key is not None:
            if not is_public_key(key):
                self.close()
                raise AgentError(f"the agent started over ssh to {self.spec.ssh} told no valid key: {self._output()}")
            self.agent_key = key.encode("ascii")
        self.host = replace(self.spec, agent_port=int(port), key=self.agent_key.decode() if self.agent_key else None)

    def _read(self, stream: object) -> None:
        for line in stream:  # type: ignore[attr-defined]
            with self._said:
                self._lines.append(line.rstrip("\n"))
                self._said.notify_all()
        with self._said:
            self._said.notify_all()

    def _said_line(self, prefix: str) -> str | None:
        """The rest of the first line the agent printed that starts with ``prefix`` (hold ``_said``)."""
        for line in self._lines:
            if line.startswith(prefix):
                return line[len(prefix) :].strip()
        return None

    def _output(self) -> str:
        with self._said:
            return "\n".join(self._lines)

    def ended(self) -> str | None:
        """Why the session is over while the flow runs (ssh's status and last words), or None."""
        code = self._process.poll() if self._process is not None else None
        if code is None:
            return None
        with self._said:
            last = " / ".join(list(self._lines)[-3:]) or "(no message)"
        return f"its ssh session to {self.spec.ssh} ended (status {code}): {last}"

    def close(self) -> None:
        """Close the session's input: the agent ends its processes and exits, then ssh does."""
        if self._process is None:
            return
        process, self._process = self._process, None
        if process.stdin is not None:
            with contextlib.suppress(OSError):
                process.stdin.close()
        try:
            process.wait(CLOSE_TIMEOUT)
        except subprocess.TimeoutExpired:
            process.kill()  # the channel closes with it: the agent still sees its input end
            process.wait()
        for reader in self._readers:
            reader.join(1.0)


def start_agent(flow: FlowSpec, host: HostSpec, launcher_key: KeyPair | None = None) -> SshAgent:
    """Copy the flow's folder if ``sync``, then start ``host``'s agent over ssh (serving
    ``launcher_key``, default a new one); raises AgentError."""
    if host.sync:
        sync_folder(host, flow.base_dir)
    agent = SshAgent(flow, host, launcher_key)
    agent.start()
    return agent


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
