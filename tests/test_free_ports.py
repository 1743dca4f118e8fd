"""The ports an agent or a Ray actor offers for inputs bound on its host (launch/agent_peers.py).

A port chosen there is bound later by the node, so it must not be one the kernel hands out to
outgoing connections meanwhile: a Ray head makes many, and one took a node's port in CI.
"""

from __future__ import annotations

import random
import socket
from collections.abc import Iterator

import pytest

from flujo.launch.agent_peers import assignable_ports, free_ports

pytestmark = pytest.mark.timeout(30)


def _ephemeral() -> range:
    with open("/proc/sys/net/ipv4/ip_local_port_range") as text:
        low, high = (int(word) for word in text.read().split())
    return range(low, high + 1)


def test_ports_are_distinct_and_outside_the_kernels_ephemeral_range() -> None:
    ports = free_ports("127.0.0.1", 20)
    assert len(set(ports)) == 20
    ephemeral = _ephemeral()
    assert all(port in assignable_ports() and port not in ephemeral for port in ports)


class _Scripted(random.Random):
    """Chooses the given ports in turn."""

    def __init__(self, ports: list[int]) -> None:
        super().__init__()
        self._ports: Iterator[int] = iter(ports)

    def choice(self, seq):  # type: ignore[no-untyped-def, override]
        return next(self._ports)


@pytest.fixture
def taken() -> Iterator[int]:
    """A port in the assignable range that something else holds."""
    holder = socket.socket()
    holder.bind(("127.0.0.1", free_ports("127.0.0.1", 1)[0]))
    holder.listen()
    try:
        yield holder.getsockname()[1]
    finally:
        holder.close()


def test_a_taken_port_is_skipped(taken: int) -> None:
    other = free_ports("127.0.0.1", 1)[0]  # free, so not the taken one
    assert free_ports("127.0.0.1", 1, _Scripted([taken, taken, other])) == [other]


def test_no_free_port_is_an_error_that_says_where(taken: int) -> None:
    with pytest.raises(OSError, match=r"no 1 free ports on 127\.0\.0\.1 in 20000-"):
        free_ports("127.0.0.1", 1, _Scripted([taken] * 1000))
