"""CurveZMQ on every tcp socket of a flow: encrypted, and open only to the flow's own processes.

A launcher makes a fresh key pair for each run (the *flow key*) and hands it to every node
with its configuration, never on a command line: in the environment of a local process, over
the agent's encrypted channel to another host. Every process of the flow then uses a
:class:`FlowContext`, whose sockets secure themselves when they meet a tcp endpoint:

* ``bind("tcp://...")`` makes the socket a CURVE server with the flow key, and a ZAP handler
  in the process (pyzmq's ``zmq.auth``) admits only clients that present the flow key;
* ``connect("tcp://...")`` makes it a CURVE client that expects the flow key from the server
  and presents the flow key itself.

ipc and inproc endpoints are left alone: they never leave the host, and the run folder that
holds ipc sockets is private to the user. Sockets with their own keys (a launcher's link to a
host agent) set them before connecting and are left as they are.

What this protects (docs/PROTOCOL.md, section "Security"): the content of items, commands and
reports on the network, from anyone on the path; and the flow's sockets from any peer that does
not hold the flow key (its connection fails the handshake; nothing it sends reaches a node).
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import zmq
import zmq.utils.z85

if TYPE_CHECKING:  # imported when a tcp socket binds (it brings asyncio): ipc-only nodes start without it
    from zmq.auth.thread import ThreadAuthenticator

#: The ZAP domain of a flow's sockets.
ZAP_DOMAIN = "flujo"


@dataclass(frozen=True)
class KeyPair:
    """A CURVE key pair, both halves Z85 text (40 characters)."""

    public: bytes
    secret: bytes

    @classmethod
    def generate(cls) -> KeyPair:
        public, secret = zmq.curve_keypair()
        return cls(public, secret)

    def to_config(self) -> dict[str, str]:
        return {"public": self.public.decode("ascii"), "secret": self.secret.decode("ascii")}

    @classmethod
    def from_config(cls, data: Mapping[str, Any] | None) -> KeyPair | None:
        """The key pair a configuration carries; ``None`` when it carries none (plain sockets).
        Raises ValueError for anything that is not a pair of Z85 keys."""
        if data is None:
            return None
        try:
            public, secret = (str(data[half]).encode("ascii") for half in ("public", "secret"))
        except (KeyError, TypeError, UnicodeEncodeError) as error:
            raise ValueError(f"a CURVE key pair needs a public and a secret Z85 key: {error}") from None
        if not all(is_public_key(half.decode("ascii")) for half in (public, secret)):
            raise ValueError("a CURVE key is 40 characters of Z85 text")
        if zmq.curve_public(secret) != public:
            raise ValueError("the CURVE public key does not belong to the secret key")
        return cls(public, secret)


def is_public_key(text: str) -> bool:
    """Whether ``text`` is a CURVE key in Z85 (40 characters)."""
    try:
        return len(text) == 40 and len(zmq.utils.z85.decode(text.encode("ascii"))) == 32
    except (ValueError, KeyError, UnicodeEncodeError):  # pyzmq's decoder raises KeyError off the alphabet
        return False


def is_tcp(endpoint: str) -> bool:
    return endpoint.startswith("tcp://")


def make_server(socket: zmq.Socket, keys: KeyPair) -> None:
    """Make ``socket`` a CURVE server with ``keys`` (before it binds)."""
    socket.curve_secretkey = keys.secret
    socket.curve_publickey = keys.public
    socket.curve_server = True
    socket.zap_domain = ZAP_DOMAIN.encode()


def make_client(socket: zmq.Socket, keys: KeyPair, server_public: bytes) -> None:
    """Make ``socket`` a CURVE client presenting ``keys`` to a server known by its public key."""
    socket.curve_secretkey = keys.secret
    socket.curve_publickey = keys.public
    socket.curve_serverkey = server_public


class _AllowedKeys:
    """ZAP credentials provider: admits the listed client keys, counts the others."""

    def __init__(self, keys: set[bytes]) -> None:
        self.keys = keys
        self.refused = 0

    def callback(self, domain: str, key: bytes) -> bool:
        if key in self.keys:
            return True
        self.refused += 1
        return False


class Gatekeeper:
    """One ZAP handler per process (pyzmq's ThreadAuthenticator), started on first need."""

    def __init__(self, context: zmq.Context, allowed: set[bytes]) -> None:
        self._context = context
        self._allowed = _AllowedKeys(allowed)
        self._authenticator: ThreadAuthenticator | None = None
        self._lock = threading.Lock()

    @property
    def refused(self) -> int:
        """Handshakes refused so far: peers that did not present an allowed key."""
        return self._allowed.refused

    def start(self) -> None:
        with self._lock:
            if self._authenticator is None:
                from zmq.auth.thread import ThreadAuthenticator

                authenticator = ThreadAuthenticator(self._context)
                authenticator.start()
                authenticator.configure_curve_callback(domain=ZAP_DOMAIN, credentials_provider=self._allowed)
                self._authenticator = authenticator

    def stop(self) -> None:
        with self._lock:
            if self._authenticator is not None:
                self._authenticator.stop()
                self._authenticator = None


class FlowSocket(zmq.Socket):
    """A socket that secures itself with its context's flow key on tcp endpoints."""

    def bind(self, addr: str) -> Any:
        context = self.context
        if (
            isinstance(context, FlowContext)
            and context.flow_keys is not None
            and is_tcp(addr)
            and self.mechanism == zmq.NULL
        ):
            context.gatekeeper.start()
            make_server(self, context.flow_keys)
        return super().bind(addr)

    def connect(self, addr: str) -> Any:
        keys = getattr(self.context, "flow_keys", None)
        if keys is not None and is_tcp(addr) and self.mechanism == zmq.NULL:
            make_client(self, keys, keys.public)
        return super().connect(addr)


class FlowContext(zmq.Context):
    """A context whose sockets use CURVE with the flow key on tcp (plain when ``keys`` is None)."""

    _socket_class = FlowSocket
    # Declared here: pyzmq takes any other attribute set on a context for a socket option.
    flow_keys: KeyPair | None
    gatekeeper: Gatekeeper

    def __init__(self, keys: KeyPair | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.flow_keys = keys
        self.gatekeeper = Gatekeeper(self, {keys.public} if keys else set())

    def destroy(self, linger: int | None = None) -> None:
        self.gatekeeper.stop()
        super().destroy(linger=linger)

    def term(self) -> None:
        self.gatekeeper.stop()
        super().term()
