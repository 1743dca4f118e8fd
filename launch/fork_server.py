"""A copy of the launcher, forked before anything started, that forks node processes on request.

Starting ``python -m flujo.node`` costs about 0.13 s of CPU on a small machine (the interpreter,
site-packages, pyzmq, msgpack, Flujo), paid again at every restart. The launcher's command
(and an agent's) forks one fork server as its first act instead, before any thread or socket
exists, and each Python node is a fork of that: a few milliseconds, and a restarted node is
back as soon as its predecessor is gone. The child is made to look like a fresh ``python -m
flujo.node``: its own session, stdout and stderr to the pipe the launcher reads, the node's
working folder first on ``sys.path``, its environment, the parent-death signal. It then runs
the node and raises SystemExit with its status, which unwinds through nothing but the
command's own frames (the server never returns into them) and ends the interpreter as any
ends: atexit handlers, flushed streams. launch/fork_client.py is the launcher's side and says
which nodes may fork (their environment must be the server's).

Wire (a private SOCK_SEQPACKET socket pair, one JSON object per message):
``{"cwd", "env", "title"}`` with the node's stdout as an attached descriptor; the reply is
``{"pid": N}`` or ``{"error": "..."}``; ``{"exit": PID, "code": C}`` reports a child's exit
(C as subprocess.Popen.returncode: negative for a signal). When the socket closes, the server
exits, and the kernel ends its children (their parent-death signal), as it ends nodes whose
launcher died.
"""

from __future__ import annotations

import contextlib
import gc
import io
import json
import os
import selectors
import signal
import socket
import sys
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from typing import NoReturn, Protocol, TextIO, TypeVar

from setproctitle import setproctitle

from flujo.launch.parent_death import end_with_parent

#: Largest request (the node's environment, its configuration included) and reply, in bytes.
MAX_MESSAGE = 4 * 1024 * 1024


@dataclass(frozen=True)
class NodeRequest:
    """What a forked child needs to become a node."""

    cwd: str
    env: dict[str, str]
    title: str
    stdout: int  # the descriptor of the pipe's write end

    @property
    def fds(self) -> list[int]:
        """The descriptors that came with it (the server closes its copies once it forked)."""
        return [self.stdout]


class Request(Protocol):
    """What ``serve`` needs of a request: the descriptors that came with it."""

    @property
    def fds(self) -> list[int]: ...


R = TypeVar("R", bound=Request)


def serve(channel: socket.socket, parse: Callable[[bytes, list[int]], R | None], max_fds: int = 1) -> R | None:
    """Fork a child per request (``parse`` of the message and its descriptors; None refuses it)
    until the channel closes (returns None); in each child, return its request."""
    wake_read, wake_write = os.pipe()
    os.set_blocking(wake_write, False)
    signal.signal(signal.SIGCHLD, lambda *_: None)  # a handler, so that the wake-up fd is written
    signal.set_wakeup_fd(wake_write)
    selector = selectors.DefaultSelector()
    selector.register(channel, selectors.EVENT_READ)
    selector.register(wake_read, selectors.EVENT_READ)
    while True:
        for key, _ in selector.select():
            if key.fileobj is channel:
                message, fds, _, _ = socket.recv_fds(channel, MAX_MESSAGE, max_fds)
                if not message:
                    return None  # the launcher closed its end, or died
                request = parse(message, fds)
                if request is None:
                    reply(channel, {"error": "malformed request"})
                    continue
                try:
                    pid = os.fork()
                except OSError as error:
                    for fd in request.fds:
                        os.close(fd)
                    reply(channel, {"error": f"{type(error).__name__}: {error}"})
                    continue
                if pid == 0:  # the child: leave the server behind
                    selector.close()
                    signal.set_wakeup_fd(-1)
                    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
                    os.close(wake_read)
                    os.close(wake_write)
                    channel.close()
                    return request
                for fd in request.fds:
                    os.close(fd)
                reply(channel, {"pid": pid})
            else:
                while os.read(wake_read, 512) == 512:
                    pass
        _report_exits(channel)


def parse_request(message: bytes, fds: list[int]) -> NodeRequest | None:
    """The request, or None (its descriptors closed) if it is not one."""
    try:
        fields = json.loads(message)
        request = NodeRequest(fields["cwd"], dict(fields["env"]), str(fields["title"]), fds[0])
        if isinstance(request.cwd, str) and all(isinstance(v, str) for v in request.env.values()):
            for extra in fds[1:]:
                os.close(extra)
            return request
    except (ValueError, KeyError, TypeError, IndexError):
        pass
    for fd in fds:
        os.close(fd)
    return None


def reply(channel: socket.socket, fields: dict[str, object]) -> None:
    """One message to the client (launch/fork_client.py)."""
    with contextlib.suppress(OSError):  # the launcher is gone: the next read sees the closed channel
        channel.send(json.dumps(fields).encode())


def _report_exits(channel: socket.socket) -> None:
    while True:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        reply(channel, {"exit": pid, "code": os.waitstatus_to_exitcode(status)})


def become_node(request: NodeRequest, server: int) -> None:
    """Turn this freshly forked child into what ``python -m flujo.node`` would have started."""
    os.setsid()  # its own session and process group, as the launcher's other children
    end_with_parent()  # with the server, which ends with the launcher
    if os.getppid() != server:  # the server died before the line above: so must this child
        os._exit(1)
    take_over(request.stdout, request.stdout, request.cwd, request.env, request.title)
    sys.path[0] = os.getcwd()  # what `python -m` puts first: the node's folder, for its imports
    sys.argv = [sys.modules["flujo.node"].__file__ or "flujo.node"]


def take_over(stdout: int, stderr: int, cwd: str, env: dict[str, str], title: str) -> None:
    """What a forked child takes in place of its server's: stdin from /dev/null, stdout and
    stderr on these descriptors (closed here), unbuffered; the folder, environment and title."""
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.dup2(stdout, 1)
    os.dup2(stderr, 2)
    for fd in {null, stdout, stderr}:
        os.close(fd)
    sys.stdout, sys.stderr = unbuffered(sys.stdout, 1), unbuffered(sys.stderr, 2)
    os.chdir(cwd)
    os.environ.clear()
    os.environ.update(env)
    setproctitle(title)  # what ps and top show (its command line is the server's otherwise)


def unbuffered(stream: TextIO, fd: int) -> TextIO:
    """A text stream on ``fd`` that writes through at once, as PYTHONUNBUFFERED makes the
    streams of the interpreter a node would otherwise have had (the launcher relays lines as
    they come)."""
    raw = io.FileIO(fd, "w", closefd=False)
    return io.TextIOWrapper(raw, encoding=stream.encoding, errors=stream.errors, write_through=True)


def run_server(channel: socket.socket, title: str, creator: int) -> NoReturn:
    """The life of a process just forked from ``creator``: serve until the channel closes, then
    exit at once, never returning into the creator's code; in each node forked from here, run
    the node and raise SystemExit with its exit status."""
    try:
        os.setsid()  # a Ctrl-C on the launcher's terminal is the launcher's to handle
        end_with_parent()
        if os.getppid() != creator:
            os._exit(1)
        gc.freeze()  # what was the creator's is never collected here, so no finalizer of it runs
        keep = channel.fileno()
        os.closerange(3, keep)  # nothing of the creator's stays open in the nodes
        os.closerange(keep + 1, os.sysconf("SC_OPEN_MAX"))
        for signum in (signal.SIGTERM, signal.SIGHUP, signal.SIGUSR1, signal.SIGUSR2):
            signal.signal(signum, signal.SIG_DFL)  # as in a fresh interpreter
        signal.signal(signal.SIGINT, signal.default_int_handler)
        setproctitle(title)
        server = os.getpid()
        import flujo.node  # noqa: F401  # the point of this process: every node starts with it imported

        request = serve(channel, parse_request)
    except BaseException:
        traceback.print_exc()
        os._exit(1)
    if request is None:
        os._exit(0)
    become_node(request, server)
    from flujo.node import main as run_node

    raise SystemExit(run_node())
