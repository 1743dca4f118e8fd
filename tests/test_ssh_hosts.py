"""Agents started over ssh: the launcher in host A logs in to an sshd in host B and starts the agent itself.

Each test runs Debian's sshd inside host B's network namespace, with a host key, a client key
and an authorized_keys made for the test (root logs in with the test's key only). The launcher
reaches it through FLUJO_SSH_COMMAND, as a user would point ssh at a key and a known-hosts file.
"""

from __future__ import annotations

import contextlib
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import psutil
import pytest
from conftest import FlowRunner, poll_for
from flow_nodes import line_count, read_lines
from netns import Host, can_make_namespaces, two_hosts

from flujo.curve import KeyPair
from flujo.launch.keys import AUTHORIZED_KEYS, create_identity

SSHD = "/usr/sbin/sshd"
_why_not = can_make_namespaces() or (None if os.path.exists(SSHD) else f"no {SSHD} (Debian's openssh-server)")
needs_sshd = pytest.mark.skipif(_why_not is not None, reason=_why_not or "")


@dataclass
class Sshd:
    """An sshd serving in ``host``'s namespace on ``port``; ``log`` collects what it says."""

    host: Host
    port: int
    folder: Path
    process: subprocess.Popen
    log: list[str] = field(default_factory=list)

    def ssh_command(self, key: str = "client_key") -> str:
        """FLUJO_SSH_COMMAND for this server: the test's key, its own known-hosts file, no user config."""
        return (
            f"ssh -F none -i {self.folder / key} -o IdentitiesOnly=yes -p {self.port} "
            f"-o StrictHostKeyChecking=accept-new -o UserKnownHostsFile={self.folder / 'known_hosts'}"
        )


def _keygen(path: Path) -> None:
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(path)], check=True, timeout=30)


@contextmanager
def running_sshd(host: Host, folder: Path, mount_namespace: Path | None = None) -> Iterator[Sshd]:
    """sshd in ``host``'s network namespace (and in ``mount_namespace``'s view of the files, if given)."""
    folder.mkdir(mode=0o700)
    for key in ("host_key", "client_key", "stranger_key"):
        _keygen(folder / key)
    (folder / "authorized_keys").write_text((folder / "client_key.pub").read_text())  # not the stranger's
    Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)  # Debian's sshd needs its privilege separation folder
    port = random.randint(20000, 60000)  # the namespace is this test's alone: any port is free there
    (folder / "sshd_config").write_text(f"""
Port {port}
ListenAddress {host.address}
HostKey {folder / "host_key"}
PidFile none
PermitRootLogin prohibit-password
AuthorizedKeysFile {folder / "authorized_keys"}
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
StrictModes no
""")
    command = host.command(SSHD, "-D", "-e", "-f", str(folder / "sshd_config"))
    if mount_namespace is not None:
        command = ["nsenter", f"--mount={mount_namespace}", "--", *command]
    process = subprocess.Popen(command, stdin=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    sshd = Sshd(host, port, folder, process)

    def read() -> None:
        for line in process.stderr:  # type: ignore[union-attr]
            sshd.log.append(line)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        poll_for(
            lambda: any("Server listening on" in line for line in sshd.log) or process.poll() is not None, timeout=20
        )
        assert process.poll() is None, "".join(sshd.log)
        yield sshd
    finally:
        process.kill()
        process.wait()
        reader.join(5)


@pytest.fixture
def hosts() -> Iterator[tuple[Host, Host]]:
    with two_hosts() as pair:
        yield pair


@pytest.fixture
def sshd(hosts: tuple[Host, Host], tmp_path: Path) -> Iterator[Sshd]:
    with running_sshd(hosts[1], tmp_path / "sshd") as server:
        yield server


CHAIN = """
    host = "{launcher}"
    [hosts.b]
    address = "{remote}"
    ssh = "root@{remote}"
    {host_extra}
    [nodes.numbers]
    run = "{{nodes}}:{producer}"
    args = {{ n = {n}, pause = 0.0005 {gate} }}
    [nodes.where]
    run = "{where}"
    inputs = ["numbers"]
    replicas = 2
    host = "b"
    {where_extra}
    [nodes.sink]
    run = "{{nodes}}:Collect"
    inputs = ["where"]
    args = {{ path = "{out}" }}
"""


def _manifest(
    flow: FlowRunner,
    hosts: tuple[Host, Host],
    sshd: Sshd,
    n: int,
    host_extra: str = "",
    where: str = "{nodes}:where",
    gate: str = "",
    where_extra: str = "",
) -> Path:
    """The chain numbers -> where (2 replicas, on host b over ssh) -> sink; with ``gate``, the
    stream holds open until that file exists."""
    # The launcher has no Flujo keys at all: an agent started over ssh needs none.
    flow.env.update(FLUJO_HOME=str(flow.folder / "empty-home"), FLUJO_SSH_COMMAND=sshd.ssh_command())
    body = CHAIN.format(
        launcher=hosts[0].address,
        remote=hosts[1].address,
        n=n,
        out=flow.path("out.jsonl"),
        host_extra=host_extra,
        where=where,
        producer="Gated" if gate else "Paced",
        gate=f', gate = "{gate}"' if gate else "",
        where_extra=where_extra,
    )
    return flow.manifest(body, flow="queue = 4")


def _await_only_sshd_left(host: Host, sshd: Sshd, timeout: float = 15) -> None:
    """Wait until sshd is the only process in ``host`` (`ip netns exec` execs: sshd keeps its pid)."""
    try:
        poll_for(lambda: host.pids() == {sshd.process.pid}, timeout=timeout)
    except AssertionError:
        left = {}
        for pid in host.pids() - {sshd.process.pid}:
            with contextlib.suppress(psutil.Error):  # ended meanwhile
                left[pid] = " ".join(psutil.Process(pid).cmdline())
        raise AssertionError(
            f"still running in host {host.namespace}: {left}; sshd said: {''.join(sshd.log)}"
        ) from None


@needs_sshd
@pytest.mark.timeout(120)
def test_one_command_runs_the_flow_with_an_agent_started_over_ssh(
    flow: FlowRunner, hosts: tuple[Host, Host], sshd: Sshd
) -> None:
    n = 1000
    result = flow.start(_manifest(flow, hosts, sshd, n), on=hosts[0])
    _, stderr = result.communicate(timeout=90)
    assert result.returncode == 0, stderr + "".join(sshd.log)
    items = read_lines(flow.path("out.jsonl"))
    assert [item["n"] for item in items] == list(range(n))  # every item, in order
    assert {item["net"] for item in items} == {hosts[1].namespace_inode()}  # worked on in host B
    assert os.stat("/proc/self/ns/net").st_ino != hosts[1].namespace_inode()
    assert any("Accepted publickey for root" in line for line in sshd.log)  # it came in through sshd
    assert not (flow.folder / "empty-home").exists()  # no Flujo key pair was needed, nor made
    _await_only_sshd_left(hosts[1], sshd)  # the agent and its nodes ended


@needs_sshd
@pytest.mark.timeout(120)
def test_killing_the_launcher_closes_the_session_and_the_agent_ends_its_nodes(
    flow: FlowRunner, hosts: tuple[Host, Host], sshd: Sshd
) -> None:
    out = flow.path("out.jsonl")
    launcher = flow.start(_manifest(flow, hosts, sshd, 10**7), on=hosts[0])
    poll_for(lambda: line_count(out) >= 100, timeout=60)
    replicas = flow.replicas()
    assert {replicas["where.0"]["pid"], replicas["where.1"]["pid"]} <= hosts[1].pids()  # running there
    os.killpg(launcher.pid, signal.SIGKILL)  # the launcher's group only: ssh runs in its own session
    launcher.communicate()
    # The host timeout is 30 s: ending within 15 s shows the closed session ended them, not silence.
    _await_only_sshd_left(hosts[1], sshd)
    poll_for(lambda: not hosts[0].pids(), timeout=15)  # nor an ssh client left behind here


@needs_sshd
@pytest.mark.timeout(120)
def test_a_session_that_ends_mid_flow_loses_the_host_at_once_with_sshs_words(
    flow: FlowRunner, hosts: tuple[Host, Host], sshd: Sshd
) -> None:
    out = flow.path("out.jsonl")
    launcher = flow.start(_manifest(flow, hosts, sshd, 10**7), on=hosts[0])
    poll_for(lambda: line_count(out) >= 100, timeout=60)
    agents = _session_agents(hosts[1])
    assert len(agents) == 1
    os.kill(agents[0], signal.SIGKILL)  # the agent dies (its reaper ends its nodes); the session ends with it
    _, stderr = launcher.communicate(timeout=20)  # well before the 30 s host timeout
    assert launcher.returncode == 1
    assert f'host "b" lost: its ssh session to root@{hosts[1].address} ended (status ' in stderr
    assert 'node "where.0" failed: host "b" lost: its ssh session' in stderr
    _await_only_sshd_left(hosts[1], sshd)


@needs_sshd
@pytest.mark.timeout(150)
def test_a_lost_session_is_started_again_and_the_nodes_restart_there_by_policy(
    flow: FlowRunner, hosts: tuple[Host, Host], sshd: Sshd
) -> None:
    n, out, gate = 3000, flow.path("out.jsonl"), Path(flow.path("gate"))
    manifest = _manifest(flow, hosts, sshd, n, gate=str(gate), where_extra='restart = "on-failure"')
    launcher = flow.start(manifest, on=hosts[0])
    poll_for(lambda: line_count(out) >= 300, timeout=60)
    first_agent = _session_agents(hosts[1])
    os.kill(first_agent[0], signal.SIGKILL)  # the session ends with its agent
    poll_for(
        lambda: all(
            r["restarts"] == 1 and r["state"] == "running"
            for label, r in flow.replicas().items()
            if label.startswith("where")
        ),
        timeout=60,
    )
    second_agent = _session_agents(hosts[1])
    assert len(second_agent) == 1 and second_agent != first_agent  # a new session, a new agent
    assert {r["pid"] for label, r in flow.replicas().items() if label.startswith("where")} <= hosts[1].pids()
    gate.touch()
    _, stderr = launcher.communicate(timeout=90)
    assert launcher.returncode == 0, stderr
    assert 'host "b": its agent started again over ssh' in stderr
    items = read_lines(out)
    values = [item["n"] for item in items]
    assert values == sorted(set(values)) and values[-1] == n - 1  # in order, no duplicates, to the end
    assert n - len(values) <= n // 2, n - len(values)  # at most once across the crash (PROTOCOL.md section 9)
    assert {item["net"] for item in items} == {hosts[1].namespace_inode()}
    _await_only_sshd_left(hosts[1], sshd)


def _session_agents(host: Host) -> list[int]:
    """The pids of the session agents running in ``host``."""
    found = []
    for pid in host.pids():
        try:
            if "--session" in psutil.Process(pid).cmdline():
                found.append(pid)
        except psutil.Error:
            pass  # ended meanwhile
    return found


def _failed_launch(flow: FlowRunner, hosts: tuple[Host, Host], manifest: Path) -> str:
    result = flow.start(manifest, on=hosts[0])
    _, stderr = result.communicate(timeout=60)
    assert result.returncode == 2, stderr
    assert f"{manifest}: [hosts.b]: " in stderr
    assert not os.path.exists(flow.path("out.jsonl"))  # no node ran
    return stderr


@needs_sshd
@pytest.mark.timeout(120)
def test_ssh_failures_stop_the_launch_with_the_ssh_clients_own_words(
    flow: FlowRunner, hosts: tuple[Host, Host], sshd: Sshd
) -> None:
    manifest = _manifest(flow, hosts, sshd, 10)
    flow.env["FLUJO_SSH_COMMAND"] = sshd.ssh_command().replace(f"-p {sshd.port}", f"-p {sshd.port + 1}")
    stderr = _failed_launch(flow, hosts, manifest)
    assert f"over ssh to root@{hosts[1].address} failed with status 255" in stderr
    assert "Connection refused" in stderr

    flow.env["FLUJO_SSH_COMMAND"] = sshd.ssh_command("stranger_key")  # a key root's authorized_keys lacks
    stderr = _failed_launch(flow, hosts, manifest)
    assert "Permission denied (publickey)" in stderr and "check the address, the user and the SSH keys" in stderr

    flow.env["FLUJO_SSH_COMMAND"] = sshd.ssh_command()
    stderr = _failed_launch(flow, hosts, _manifest(flow, hosts, sshd, 10, 'python = "/nowhere/bin/python3"'))
    assert "failed with status 127" in stderr and "/nowhere/bin/python3: No such file or directory" in stderr
    assert "is Flujo installed there" in stderr
    bare = sshd.folder / "bare-python"  # an interpreter that exists but has no Flujo (no site-packages)
    bare.write_text(f'#!/bin/sh\nexec {sys.executable} -I -S "$@"\n')
    bare.chmod(0o755)
    stderr = _failed_launch(flow, hosts, _manifest(flow, hosts, sshd, 10, f'python = "{bare}"'))
    assert "No module named 'flujo'" in stderr and "is Flujo installed there" in stderr
    _await_only_sshd_left(hosts[1], sshd)


@contextmanager
def remote_view(hidden: Path) -> Iterator[Path]:
    """A mount namespace in which ``hidden`` is an empty tmpfs: the "other host's" filesystem.

    Both network namespaces share this machine's files, so a copy to "the same path" would prove
    nothing; sshd runs in this mount namespace instead, so everything done over ssh (the copy,
    the agent, its nodes) sees only what reached it through ssh. Returns the namespace's file
    (for nsenter --mount)."""
    folder = Path(tempfile.mkdtemp(prefix="flujo-mnt-"))
    namespace = folder / "mnt"
    subprocess.run(["mount", "--bind", str(folder), str(folder)], check=True, timeout=10)
    try:
        subprocess.run(["mount", "--make-private", str(folder)], check=True, timeout=10)
        namespace.touch()
        subprocess.run(
            [
                "unshare",
                f"--mount={namespace}",
                "--propagation",
                "private",
                "mount",
                "-t",
                "tmpfs",
                "flujo-test-host",
                str(hidden),
            ],
            check=True,
            timeout=10,
        )
        yield namespace
    finally:
        subprocess.run(["umount", str(namespace)], capture_output=True, timeout=10)
        subprocess.run(["umount", str(folder)], capture_output=True, timeout=10)
        shutil.rmtree(folder, ignore_errors=True)


STAMP = '''
import os

def where(number):
    """The number, the network namespace, and the device of the file this code was read from."""
    return {"n": number, "net": os.stat("/proc/self/ns/net").st_ino, "dev": os.stat(__file__).st_dev}
'''


def _without_rsync(flow: FlowRunner, folder: Path) -> None:
    """Make the launcher's machine look as if it had no rsync: a PATH with tar (and ip) only."""
    folder.mkdir()
    (folder / "tar").symlink_to(shutil.which("tar"))  # type: ignore[arg-type]
    (folder / "ssh").symlink_to(shutil.which("ssh"))  # type: ignore[arg-type]
    flow.env["PATH"] = f"{folder}:{Path(shutil.which('ip')).parent}"  # type: ignore[arg-type]


@needs_sshd
@pytest.mark.timeout(150)
@pytest.mark.parametrize("copier", ["rsync", "tar"])
def test_sync_copies_the_flow_folder_to_a_host_that_does_not_have_it(
    flow: FlowRunner, hosts: tuple[Host, Host], tmp_path: Path, copier: str
) -> None:
    if copier == "rsync" and not shutil.which("rsync"):
        pytest.skip("no rsync here: the tar stream is the copier")
    apps = tmp_path / "apps"
    flow.folder = apps / "counter"  # the flow's folder: its manifest and its code
    flow.folder.mkdir(parents=True)
    (flow.folder / "stamp.py").write_text(STAMP)
    (flow.folder / "__pycache__").mkdir()
    (flow.folder / "__pycache__" / "junk.pyc").write_bytes(b"left out")
    with remote_view(apps) as namespace:

        def there(*argv: str) -> subprocess.CompletedProcess:
            return subprocess.run(
                ["nsenter", f"--mount={namespace}", "--", *argv], capture_output=True, text=True, timeout=10
            )

        with running_sshd(hosts[1], tmp_path / "sshd", namespace) as server:
            assert there("test", "-e", str(flow.folder)).returncode == 1  # the "host" lacks the folder
            manifest = _manifest(flow, hosts, server, 500, "sync = true", where="stamp.py:where")
            flow.env["FLUJO_SSH_COMMAND"] = server.ssh_command()
            if copier == "tar":
                _without_rsync(flow, tmp_path / "bin")
            result = flow.start(manifest, on=hosts[0])
            _, stderr = result.communicate(timeout=120)
            assert result.returncode == 0, stderr + "".join(server.log)
            items = read_lines(flow.path("out.jsonl"))
            assert [item["n"] for item in items] == list(range(500))
            assert {item["net"] for item in items} == {hosts[1].namespace_inode()}
            copy_device = int(there("stat", "-c", "%d", str(flow.folder / "stamp.py")).stdout)
            assert {item["dev"] for item in items} == {copy_device}  # the nodes ran the copy ...
            assert copy_device != os.stat(flow.folder / "stamp.py").st_dev  # ... not this machine's file
            assert there("cat", str(flow.folder / "manifest.toml")).stdout == manifest.read_text()
            assert there("test", "-e", str(flow.folder / "__pycache__" / "junk.pyc")).returncode == 1  # left out
            _await_only_sshd_left(hosts[1], server)


def _session_agent(home: Path, *options: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "flujo.launch", "agent", "--session", "--bind", "tcp://127.0.0.1:0", *options],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "FLUJO_HOME": str(home)},
    )


@pytest.mark.timeout(60)
def test_a_session_agent_has_its_own_key_serves_whom_it_is_told_and_ends_with_its_input(tmp_path: Path) -> None:
    identity, _ = create_identity(tmp_path)  # this host's own key pair and trusted launcher: not for a session
    (tmp_path / AUTHORIZED_KEYS).write_text(f"{KeyPair.generate().public.decode()}\n")
    agent = _session_agent(tmp_path, "--authorize", KeyPair.generate().public.decode())
    try:
        first = agent.stdout.readline()  # type: ignore[union-attr]
        assert first.startswith("flujo-agent: key: ") and "(serving 1 authorized launcher key(s))" in first
        assert identity.public.decode() not in first  # a key pair made for this session
        assert agent.stdout.readline().startswith("flujo-agent: listening on tcp://127.0.0.1:")  # type: ignore
        agent.stdin.close()  # type: ignore[union-attr]  # what a closed ssh session looks like to it
        assert agent.wait(timeout=20) == 0
        assert "the session's input closed: ending" in agent.stdout.read()  # type: ignore[union-attr]
    finally:
        agent.kill()
        agent.wait()
        for stream in (agent.stdin, agent.stdout, agent.stderr):
            stream.close()  # type: ignore[union-attr]


@pytest.mark.timeout(60)
def test_a_session_agent_needs_a_valid_launcher_key(tmp_path: Path) -> None:
    nobody = _session_agent(tmp_path)
    _, stderr = nobody.communicate(timeout=20)
    assert nobody.returncode == 2 and "--session serves only the launcher keys given with --authorize" in stderr
    garbage = _session_agent(tmp_path, "--authorize", "not-a-key")
    _, stderr = garbage.communicate(timeout=20)
    assert garbage.returncode == 2 and "--authorize 'not-a-key': not a public key" in stderr
