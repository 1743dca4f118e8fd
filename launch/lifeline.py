"""Lifelines: how an agent tells a dead launcher from a cut link.

Both look the same on the agent channel: silence. But a launcher that dies, however (SIGKILL
included), has its connections closed by its kernel, while a cut link closes nothing. So each
launcher also holds one plain TCP connection to each agent it uses, which carries nothing but
a token at its start. When that connection ends, the agent ends the launcher's processes at
once; when the link is only cut, it waits up to the host's timeout as usual.

The token travels first in the launcher's ``hello``, over the encrypted agent channel, so only
that launcher can tie a connection to itself. An observer on the path could read the token
from the plain connection and open one of its own, whose closing would end that launcher's
processes: no more than such an observer could do by cutting the link.
"""

from __future__ import annotations

import secrets
import socket
from collections.abc import Callable

TOKEN_BYTES = 16


def new_token() -> str:
    return secrets.token_hex(TOKEN_BYTES)


class Lifeline:
    """The launcher's end: a connection held open for the launcher's whole life."""

    def __init__(self, address: str, port: int, token: str, timeout: float = 5.0) -> None:
        self._socket = socket.create_connection((address, port), timeout=timeout)
        self._socket.sendall(token.encode("ascii"))
        self._socket.settimeout(None)

    def close(self) -> None:
        self._socket.close()


class LifelineListener:
    """The agent's end: accepts lifelines, and reports the token of each one that closes.

    Not threaded: the agent's loop polls ``sockets()`` and calls ``readable(sock)``.
    """

    def __init__(self, address: str, on_closed: Callable[[str], None]) -> None:
        self._listener = socket.create_server((address, 0))
        self._listener.setblocking(False)
        self._on_closed = on_closed
        self._expected: set[str] = set()
        self._tokens: dict[socket.socket, str | None] = {}  # an accepted connection -> its token, once read
        self._partial: dict[socket.socket, bytes] = {}

    @property
    def port(self) -> int:
        return int(self._listener.getsockname()[1])

    def expect(self, token: str) -> None:
        """A launcher announced this token (over the encrypted channel): its lifeline may come."""
        self._expected.add(token)

    def sockets(self) -> list[socket.socket]:
        return [self._listener, *self._tokens]

    def readable(self, sock: socket.socket) -> None:
        if sock is self._listener:
            try:
                connection, _ = self._listener.accept()
            except BlockingIOError:
                return
            connection.setblocking(False)
            self._tokens[connection] = None
            self._partial[connection] = b""
            return
        try:
            data = sock.recv(64)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if not data:
            self._drop(sock)
            return
        if self._tokens.get(sock) is None:
            received = self._partial[sock] + data
            if len(received) < 2 * TOKEN_BYTES:
                self._partial[sock] = received
                return
            token = received[: 2 * TOKEN_BYTES].decode("ascii", "replace")
            if token not in self._expected:
                self._drop(sock, report=False)  # not a lifeline any launcher announced
                return
            self._expected.discard(token)  # one connection per token
            self._tokens[sock] = token
            self._partial.pop(sock, None)

    def _drop(self, sock: socket.socket, report: bool = True) -> None:
        token = self._tokens.pop(sock, None)
        self._partial.pop(sock, None)
        sock.close()
        if report and token is not None:
            self._on_closed(token)

    def close(self) -> None:
        for connection in list(self._tokens):
            connection.close()
        self._tokens.clear()
        self._listener.close()
