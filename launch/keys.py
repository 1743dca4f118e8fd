"""Long-lived CURVE keys of launchers and agents, and whom each trusts.

One folder per user (``$FLUJO_HOME``, default ``~/.config/flujo``), mode 0700::

    identity.key          this user's public key (ZeroMQ certificate format, pyzmq zmq.auth)
    identity.key_secret   the key pair, mode 0600
    authorized_keys       on an agent's host: the launchers allowed to start processes here,
                          one public key per line (text after the key is a comment)
    known_hosts           on a launcher's host: agents' keys, "ADDRESS:PORT KEY" per line
                          (a manifest's [hosts.NAME] key = "..." takes precedence)

``flujo-launch keys`` makes the key pair and prints the public key to hand to the other side.
Lines starting with ``#`` and blank lines are ignored everywhere.
"""

from __future__ import annotations

import os
from pathlib import Path

from flujo.curve import KeyPair, is_public_key

IDENTITY = "identity"
AUTHORIZED_KEYS = "authorized_keys"
KNOWN_HOSTS = "known_hosts"


class KeyFileError(Exception):
    """A key file is missing or malformed; the message says which and how to fix it."""


def keys_folder() -> Path:
    configured = os.environ.get("FLUJO_HOME")
    return Path(configured) if configured else Path.home() / ".config" / "flujo"


def create_identity(folder: Path) -> tuple[KeyPair, bool]:
    """This user's key pair, made now if there is none; returns it and whether it is new."""
    existing = load_identity(folder)
    if existing is not None:
        return existing, False
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    import zmq.auth  # here, not at the top: it brings asyncio, and every launcher imports this module

    _, secret_file = zmq.auth.create_certificates(str(folder), IDENTITY)
    os.chmod(secret_file, 0o600)
    identity = load_identity(folder)
    assert identity is not None
    return identity, True


def load_identity(folder: Path) -> KeyPair | None:
    """The key pair in ``folder``, or None when there is none."""
    secret_file = folder / f"{IDENTITY}.key_secret"
    if not secret_file.exists():
        return None
    import zmq.auth  # (see create_identity)

    try:
        public, secret = zmq.auth.load_certificate(str(secret_file))
    except (OSError, ValueError) as error:
        raise KeyFileError(
            f"{secret_file}: not a key pair ({error}); move it away and run `flujo-launch keys`"
        ) from error
    if secret is None:
        raise KeyFileError(f"{secret_file}: holds no secret key; move it away and run `flujo-launch keys`")
    return KeyPair(public, secret)


def _entries(path: Path) -> list[list[str]]:
    if not path.exists():
        return []
    lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
    return [line.split() for line in lines if line.strip() and not line.lstrip().startswith("#")]


def authorized_keys(folder: Path) -> set[bytes]:
    """The launcher keys an agent serves; raises KeyFileError on a line that is not a key."""
    path = folder / AUTHORIZED_KEYS
    keys = set()
    for number, fields in enumerate(_entries(path), 1):
        if not is_public_key(fields[0]):
            raise KeyFileError(
                f"{path}, entry {number}: {fields[0][:50]!r} is not a public key "
                "(the 40 characters `flujo-launch keys` prints)"
            )
        keys.add(fields[0].encode("ascii"))
    return keys


def known_host_key(folder: Path, address: str, port: int) -> bytes | None:
    """The agent key known_hosts records for ``address:port``, if any."""
    path = folder / KNOWN_HOSTS
    for fields in _entries(path):
        if len(fields) >= 2 and fields[0] == f"{address}:{port}" and is_public_key(fields[1]):
            return fields[1].encode("ascii")
    return None
