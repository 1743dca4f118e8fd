"""A Python that has already imported the node runtime and forks node processes on request.

Starting ``python -m flujo.node`` costs about 0.13 s of CPU on a small machine (the interpreter,
site-packages, pyzmq, msgpack, Flujo), paid again at every restart. The launcher (and an agent)
starts one fork server instead, and each Python node is a fork of it: a few milliseconds, and
a restarted node is back as soon as its predecessor is gone. The child is made to look like a
fresh ``python -m flujo.node``: its own session, stdout and stderr to the pipe the launcher
reads, the node's working folder first on ``sys.path``, its environment, and the parent-death
signal; then it returns out of the server loop and runs the node, so it exits like any
interpreter (atexit handlers, flushed streams). launch/fork_client.py is the launcher's side and
says which nodes may fork (their environment must be the server's).

Wire (a private SOCK_SEQPACKET socket pair, one JSON object per message):
``{"cwd", "env", "title"}`` with the node's stdout as an attached descriptor; the reply is
``{"pid": N}`` or ``{"error": "..."}``; ``{"exit": PID, "code": C}`` reports a child's exit
(C as subprocess.Popen.returncode: negative for a signal). When the socket closes, the server
exits, and the kernel ends its children (their parent-death signal), as it ends nodes whose
launcher died.

Run as ``python -m flujo.launch.fork_server FD TITLE``.
"""

from __future__ import annotations

import contextlib
import json
import os
import selectors
import signal
import socket
import sys
from dataclasses import dataclass

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


def serve(channel: socket.socket) -> NodeRequest | None:
    """Fork a child per request until the channel closes (returns None); in each child,
    return its request (the caller turns it into the node)."""
    import flujo.node  # noqa: F401  # the point of this process: every child starts with it imported

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
                message, fds, _, _ = socket.recv_fds(channel, MAX_MESSAGE, 1)
                if not message:
                    return None  # the launcher closed its end, or died
                request = parse_request(message, fds)
                if request is None:
                    _reply(channel, {"error": "malformed request"})
                    continue
                try:
                    pid = os.fork()
                except OSError as error:
                    os.close(request.stdout)
                    _reply(channel, {"error": f"{type(error).__name__}: {error}"})
                    continue
                if pid == 0:  # the child: leave the server behind
                    selector.close()
                    signal.set_wakeup_fd(-1)
                    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
                    os.close(wake_read)
                    os.close(wake_write)
                    channel.close()
                    return request
                os.close(request.stdout)
                _reply(channel, {"pid": pid})
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


def _reply(channel: socket.socket, fields: dict[str, object]) -> None:
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
        _reply(channel, {"exit": pid, "code": os.waitstatus_to_exitcode(status)})


def become_node(request: NodeRequest, server: int) -> None:
    """Turn this freshly forked child into what ``python -m flujo.node`` would have started."""
    os.setsid()  # its own session and process group, as the launcher's other children
    end_with_parent()  # with the server, which ends with the launcher
    if os.getppid() != server:  # the server died before the line above: so must this child
        os._exit(1)
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.dup2(request.stdout, 1)
    os.dup2(request.stdout, 2)
    os.close(null)
    os.close(request.stdout)
    os.chdir(request.cwd)
    os.environ.clear()
    os.environ.update(request.env)
    sys.path[0] = os.getcwd()  # what `python -m` puts first: the node's folder, for its imports
    sys.argv = [sys.modules["flujo.node"].__file__ or "flujo.node"]
    _set_title(request.title)


def _set_title(title: str) -> None:
    """What ps and top show for this process (its command line is the server's otherwise)."""
    try:
        from setproctitle import setproctitle
    except ImportError:
        return
    setproctitle(title)


def main() -> int:
    channel = socket.socket(fileno=int(sys.argv[1]))
    _set_title(sys.argv[2])
    server = os.getpid()
    request = serve(channel)
    if request is None:
        return 0
    become_node(request, server)
    from flujo.node import main as run_node

    return run_node()


if __name__ == "__main__":
    sys.exit(main())
