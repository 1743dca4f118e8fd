"""Two "hosts" on one machine: network namespaces joined by a veth pair, made and removed by tests."""

from __future__ import annotations

import contextlib
import functools
import os
import random
import signal
import subprocess
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass


@dataclass(frozen=True)
class Host:
    namespace: str
    address: str

    def command(self, *argv: str) -> list[str]:
        """``argv`` run inside this host's network namespace."""
        return ["ip", "netns", "exec", self.namespace, *argv]

    def pids(self) -> set[int]:
        """Every process living in this host's network namespace."""
        done = subprocess.run(["ip", "netns", "pids", self.namespace], capture_output=True, text=True)
        return {int(pid) for pid in done.stdout.split()}

    def cut(self) -> None:
        """Unplug this host: its end of the link goes down, and every packet is lost."""
        _ip("-n", self.namespace, "link", "set", "veth0", "down")

    def mend(self) -> None:
        _ip("-n", self.namespace, "link", "set", "veth0", "up")

    def namespace_inode(self) -> int:
        return os.stat(f"/run/netns/{self.namespace}").st_ino


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, text=True)


def make_hosts() -> tuple[Host, Host]:
    """Two namespaces on a private /24 picked at random, so parallel runs do not collide."""
    tag = uuid.uuid4().hex[:8]
    subnet = f"10.{random.randint(100, 250)}.{random.randint(0, 255)}"
    first, second = Host(f"flujo-{tag}-a", f"{subnet}.1"), Host(f"flujo-{tag}-b", f"{subnet}.2")
    try:
        for host in (first, second):
            _ip("netns", "add", host.namespace)
            _ip("-n", host.namespace, "link", "set", "lo", "up")
        _ip(
            "-n",
            first.namespace,
            "link",
            "add",
            "veth0",
            "type",
            "veth",
            "peer",
            "name",
            "veth0",
            "netns",
            second.namespace,
        )
        for host in (first, second):
            _ip("-n", host.namespace, "addr", "add", f"{host.address}/24", "dev", "veth0")
            _ip("-n", host.namespace, "link", "set", "veth0", "up")
    except subprocess.CalledProcessError:
        remove_hosts(first, second)
        raise
    return first, second


@contextmanager
def two_hosts() -> Iterator[tuple[Host, Host]]:
    """Two hosts for the length of a test; whatever a failed test left running in them is killed."""
    first, second = make_hosts()
    try:
        yield first, second
    finally:
        for host in (first, second):
            for pid in host.pids():
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
        remove_hosts(first, second)


def remove_hosts(*hosts: Host) -> None:
    """Deleting a namespace deletes its end of the veth pair, and so the pair."""
    for host in hosts:
        subprocess.run(["ip", "netns", "del", host.namespace], capture_output=True)


@functools.cache
def can_make_namespaces() -> str | None:
    """None when this machine lets tests create network namespaces, else why not. Asked once
    per process: six test modules ask when collected, and each check makes two namespaces."""
    if os.geteuid() != 0:
        return "network namespaces need root"
    try:
        hosts = make_hosts()
    except (OSError, subprocess.CalledProcessError) as error:
        return f"cannot create network namespaces here: {getattr(error, 'stderr', '') or error}"
    remove_hosts(*hosts)
    return None
