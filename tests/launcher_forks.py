"""Launchers for the tests, forked from a Python that has imported flujo-launch already.

A run of the suite starts about 200 launchers; each as an interpreter of its own cost about
0.2 s of CPU (Python, site-packages, click, pyzmq, the launcher's modules). One server per
test worker, started with its first launcher, forks them instead, the way launch/fork_server.py
forks nodes (and with the same wire): each child becomes what ``flujo-launch ARGS`` would have
started (its own session, stdout and stderr to the test's pipes, the test's environment) and
runs the program's entry point, which forks the launcher's own node fork server in turn. A
launcher meant for another "host" (tests/netns.py) enters that network namespace first, as
``ip netns exec`` would have put a fresh one there, and takes a niceness if asked (``nice -n``).
``ForkedLauncher`` stands in for the subprocess.Popen the tests used to get.

Run as ``python launcher_forks.py FD``: the server.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import signal
import socket
import subprocess
import sys
import threading
from dataclasses import dataclass
from typing import IO

from setproctitle import setproctitle

from flujo.launch.fork_client import ForkChannel
from flujo.launch.fork_server import MAX_MESSAGE, serve, take_over


@dataclass(frozen=True)
class LaunchRequest:
    argv: list[str]
    env: dict[str, str]
    cwd: str
    title: str
    namespace: str | None
    nice: int
    stdout: int
    stderr: int

    @property
    def fds(self) -> list[int]:
        return [self.stdout, self.stderr]


def _parse(message: bytes, fds: list[int]) -> LaunchRequest | None:
    if len(fds) != 2:
        for fd in fds:
            os.close(fd)
        return None
    fields = json.loads(message)  # from the test's own process
    return LaunchRequest(
        fields["argv"], fields["env"], fields["cwd"], fields["title"], fields["namespace"], fields["nice"], *fds
    )


#: setns(2)'s type for a network namespace (Python 3.11's os module has no setns).
CLONE_NEWNET = 0x40000000


def enter_namespace(name: str) -> None:
    """Move this (single-threaded) process into the network namespace ``ip netns add`` named."""
    fd = os.open(f"/run/netns/{name}", os.O_RDONLY)
    try:
        if ctypes.CDLL(None, use_errno=True).setns(fd, CLONE_NEWNET) != 0:
            raise OSError(ctypes.get_errno(), f"setns into {name}")
    finally:
        os.close(fd)


def _become_launcher(request: LaunchRequest) -> None:
    os.setsid()  # as Popen(start_new_session=True): the test signals the launcher's group
    take_over(request.stdout, request.stderr, request.cwd, request.env, request.title)
    if request.namespace:  # after take_over: a failure is said on the test's pipe
        enter_namespace(request.namespace)
    if request.nice:
        os.nice(request.nice)
    sys.argv = ["flujo-launch", *request.argv]


class LauncherForks:
    """The test worker's handle on its server (one per worker, for the whole run)."""

    def __init__(self) -> None:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        for end in (ours, theirs):
            end.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, MAX_MESSAGE)
        self._process = subprocess.Popen(
            [sys.executable, __file__, str(theirs.fileno())],
            pass_fds=(theirs.fileno(),),
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        theirs.close()
        self._channel = ForkChannel(ours, reply_timeout=30)

    def start(
        self, argv: list[str], env: dict[str, str], title: str, namespace: str | None = None, nice: int = 0
    ) -> ForkedLauncher:
        """A launcher with these arguments and environment, in network namespace ``namespace``
        (None: this one) at niceness ``nice``."""
        out_read, out_write = os.pipe()
        err_read, err_write = os.pipe()
        launcher = ForkedLauncher(os.fdopen(out_read), os.fdopen(err_read))
        fields = {"argv": argv, "env": env, "cwd": os.getcwd(), "title": title, "namespace": namespace, "nice": nice}
        try:
            pid = self._channel.request(fields, [out_write, err_write], lambda _, code: launcher.exited(code))
        finally:
            os.close(out_write)
            os.close(err_write)
        if pid is None:
            raise OSError(f"the launcher fork server could not start {argv}")
        launcher.pid = pid
        return launcher


class ForkedLauncher:
    """What the tests use of a subprocess.Popen: pid, stdout, stderr (text), returncode, poll,
    wait, communicate, send_signal, kill."""

    def __init__(self, stdout: IO[str], stderr: IO[str]) -> None:
        self.pid, self.stdout, self.stderr = 0, stdout, stderr  # pid: once forked
        self.returncode: int | None = None
        self._ended = threading.Event()
        self._readers: list[threading.Thread] = []
        self._read: dict[str, list[str]] = {"stdout": [], "stderr": []}

    def exited(self, code: int) -> None:
        self.returncode = code
        self._ended.set()

    def poll(self) -> int | None:
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        if not self._ended.wait(timeout):
            raise subprocess.TimeoutExpired(["flujo-launch"], timeout or 0)
        return self.returncode  # type: ignore[return-value]

    def communicate(self, timeout: float | None = None) -> tuple[str, str]:
        """Everything left on stdout and stderr once both ended, as Popen.communicate."""
        if not self._readers:
            for name, stream in (("stdout", self.stdout), ("stderr", self.stderr)):
                reader = threading.Thread(target=self._drain, args=(name, stream), daemon=True)
                reader.start()
                self._readers.append(reader)
        for reader in self._readers:
            reader.join(timeout)
            if reader.is_alive():
                raise subprocess.TimeoutExpired(["flujo-launch"], timeout or 0)
        self.wait(timeout)
        return "".join(self._read["stdout"]), "".join(self._read["stderr"])

    def _drain(self, name: str, stream: IO[str]) -> None:
        with stream:
            self._read[name].append(stream.read())

    def send_signal(self, signum: int) -> None:
        if self.returncode is None:  # gone, but its exit not reported yet: as Popen, nothing to do
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signum)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)

    def terminate(self) -> None:
        self.send_signal(signal.SIGTERM)


def _main() -> None:
    import flujo.node  # noqa: F401  # and what each launcher's node fork server imports
    from flujo.launch import cli, launcher  # noqa: F401  # what every launcher imports: once, here

    setproctitle("flujo-test launcher forks")
    request = serve(socket.socket(fileno=int(sys.argv[1])), _parse, max_fds=2)
    if request is None:
        sys.exit(0)  # the test worker ended
    _become_launcher(request)
    cli.entry()


if __name__ == "__main__":
    _main()
