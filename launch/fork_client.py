"""The launcher's (or an agent's) handle on its fork server (launch/fork_server.py).

``ForkServer.fork(cwd, env, title, on_exit)`` returns a new node process's pid and the read end of its
output pipe, or None when this node cannot fork: its environment is not the server's (a
manifest ``env`` can change what the interpreter or a library reads when it starts, which a
fork would not see), or the server is gone. The caller then starts the node as before, with
its own interpreter. Exits are reported through ``on_exit(pid, code)`` callbacks, from the
thread that reads the server's messages.
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import signal
import socket
import sys
import threading
from collections.abc import Callable

from flujo.launch.fork_server import MAX_MESSAGE, run_server
from flujo.launch.manifest import FlowSpec
from flujo.launch.manifest_spec import Engine
from flujo.protocol import CONFIG_ENV

#: How long a fork may take before the server counts as stuck (nodes then start without it).
REPLY_TIMEOUT = 20.0
#: The exit code reported for the children of a server that died: the kernel killed them.
KILLED = -signal.SIGKILL

ExitCallback = Callable[[int, int], None]
#: Set to 0 in the launcher's (or agent's) environment, every Python node starts its own
#: interpreter: for a library that must start fresh in each process, or to read a node's
#: configuration in /proc/PID/environ (a fork's shows the server's environment).
SWITCH = "FLUJO_FORK_SERVER"


#: The click ``obj`` of the flujo-launch program (launch/cli.py:entry): its commands run in a
#: process of their own, which a fork server may copy. In-process callers (click's test runner,
#: a program calling main) pass none, and their nodes start their own interpreters.
OWN_PROCESS = "flujo-launch, a process of its own"


def wanted() -> bool:
    """Python nodes start as forks of a server, unless the environment says not to, or threads
    run already (a fork copies only the thread that forks, not a lock another one holds)."""
    return os.environ.get(SWITCH, "1") != "0" and threading.active_count() == 1


def fork_server_for(flow: FlowSpec) -> ForkServer | None:
    """A fork server for the flow's Python nodes on this host, if it has any (and may). Call it
    only from a command's own code, before anything started: each node forked from the server
    returns from this call by raising SystemExit, as its interpreter ends."""
    local_python = any(spec.run and spec.host is None for spec in flow.nodes.values())
    if not wanted() or flow.engine != Engine.LOCAL or not local_python:
        return None
    return ForkServer(f"flujo-fork-server flow={flow.name}")


class ForkChannel:
    """The requesting end of a fork server's channel (the wire in launch/fork_server.py): one
    request at a time, each child's exit reported to the callback given with its request, from
    a reader thread. When the server ends, the children it still had are reported KILLED."""

    def __init__(self, channel: socket.socket, reply_timeout: float = REPLY_TIMEOUT) -> None:
        self._channel, self._reply_timeout = channel, reply_timeout
        self._replies: queue.Queue[dict[str, object]] = queue.Queue()
        self._requesting = threading.Lock()  # one request at a time: replies come in order
        self._lock = threading.Lock()  # the exit tables (never held while waiting: the reader needs it)
        self._exits: dict[int, ExitCallback] = {}
        self._early: dict[int, int] = {}  # exits reported before their callback was registered
        self.alive = True
        self._reader = threading.Thread(target=self._read, daemon=True, name="fork server")
        self._reader.start()

    def request(self, fields: dict[str, object], fds: list[int], on_exit: ExitCallback) -> int | None:
        """The pid of the child forked for ``fields`` (``fds`` go with them; the caller closes
        its own copies), or None: refused, too large, or the server gone. TimeoutError: no
        reply within the timeout (the server is stuck)."""
        message = json.dumps(fields).encode()
        with self._requesting:
            if not self.alive:
                return None
            try:
                socket.send_fds(self._channel, [message], fds)
            except OSError:
                return None
            try:
                reply = self._replies.get(timeout=self._reply_timeout)
            except queue.Empty:
                self.alive = False
                raise TimeoutError(f"no reply from the fork server within {self._reply_timeout:g} s") from None
        pid = reply.get("pid")
        if type(pid) is not int:
            return None
        with self._lock:
            early = self._early.pop(pid, None)
            if early is None:
                self._exits[pid] = on_exit
        if early is not None:
            on_exit(pid, early)
        return pid

    def _read(self) -> None:
        while True:
            try:
                message = self._channel.recv(MAX_MESSAGE)
            except OSError:
                message = b""
            if not message:
                break
            try:
                fields = json.loads(message)
            except ValueError:
                continue
            if "exit" not in fields:
                self._replies.put(fields)
                continue
            pid, code = fields["exit"], fields["code"]
            with self._lock:
                callback = self._exits.pop(pid, None)
                if callback is None:
                    self._early[pid] = code
            if callback is not None:
                callback(pid, code)
        # The server is gone (or closed): the kernel killed its children with it.
        self.alive = False
        self._replies.put({})
        with self._lock:
            orphans, self._exits = self._exits, {}
        for pid, callback in orphans.items():
            callback(pid, KILLED)

    def close(self, timeout: float = 5.0) -> bool:
        """End the channel; True once the server has closed its end too (it has exited)."""
        self.alive = False
        with contextlib.suppress(OSError):
            self._channel.shutdown(socket.SHUT_WR)  # the server reads the end, and exits
        self._reader.join(timeout)
        self._channel.close()
        return not self._reader.is_alive()


class ForkServer:
    """Forks the server at once, from this process, which must be single-threaded; each node the
    server forks returns from this constructor by raising SystemExit as it ends (call it only
    where that unwinds nothing but the caller's own start-up). The first fork waits until the
    server has imported the runtime."""

    def __init__(self, title: str, reply_timeout: float = REPLY_TIMEOUT) -> None:
        if threading.active_count() > 1:
            raise RuntimeError("a fork server is forked from a single-threaded process only (see wanted())")
        self.env = {**os.environ, "PYTHONUNBUFFERED": "1"}  # what a node's environment must be
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        for end in (ours, theirs):
            end.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, MAX_MESSAGE)
        creator = os.getpid()
        sys.stdout.flush()  # or what the buffers hold would be written again by every node
        sys.stderr.flush()
        self.pid = os.fork()
        if self.pid == 0:
            ours.close()
            os.environ["PYTHONUNBUFFERED"] = "1"
            run_server(theirs, title, creator)  # returns never; in a node, raises SystemExit at its end
        theirs.close()
        self._channel = ForkChannel(ours, reply_timeout)

    def fits(self, env: dict[str, str]) -> bool:
        """A node with this environment may be forked: it is the server's, apart from the
        node's own configuration."""
        return {name: value for name, value in env.items() if name != CONFIG_ENV} == self.env

    def fork(self, cwd: str, env: dict[str, str], title: str, on_exit: ExitCallback) -> tuple[int, int] | None:
        """(pid, read end of its stdout and stderr) of a new node process, or None if it could
        not be forked here (the caller starts it another way)."""
        if not self.fits(env):
            return None
        read_end, write_end = os.pipe()
        try:
            pid = self._channel.request({"cwd": cwd, "env": env, "title": title}, [write_end], on_exit)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signal.SIGKILL)  # stuck: its nodes go with it, and start afresh
            pid = None
        finally:
            os.close(write_end)
        if pid is None:
            os.close(read_end)
            return None
        return pid, read_end

    def close(self) -> None:
        """End the server (call once its children have exited: it takes them along)."""
        if not self._channel.close():  # it exits as soon as it reads the end of the channel
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signal.SIGKILL)
        os.waitpid(self.pid, 0)
