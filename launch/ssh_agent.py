"""One agent started over ssh for this launcher alone (``flujo-launch agent --session``): logging
in, learning the port and key it tells, noticing the session's end, and closing it. Why this is
safe and how the keys travel: launch/ssh.py."""

from __future__ import annotations

import collections
import contextlib
import subprocess
import sys
import threading
import time
from dataclasses import replace

from flujo.curve import KeyPair, is_public_key
from flujo.launch.manifest import FlowSpec, HostSpec
from flujo.launch.remote_keys import AgentError
from flujo.launch.ssh_client import ssh_argv, ssh_failure, sync_folder

#: ssh logs in and Python starts Flujo within this time, or the flow does not start.
START_TIMEOUT = 60.0
#: When the launcher ends, the agent gets this long to end its processes before ssh is killed.
CLOSE_TIMEOUT = 10.0
_KEY_PREFIX = "flujo-agent: key: "
_LISTENING_PREFIX = "flujo-agent: listening on "


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
        self.command = ssh_argv(host, ["exec", *remote])
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
            raise ssh_failure(self.spec, "starting the agent", code, self._output())
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
