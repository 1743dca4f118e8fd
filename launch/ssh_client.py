"""The system's ssh client as the launcher uses it (launch/ssh.py tells the whole story): the
command line (``FLUJO_SSH_COMMAND`` or ``ssh``, then the launcher's options), errors in ssh's own
words, and copying a flow's folder to a host (``sync = true``)."""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

from flujo.launch.manifest import HostSpec
from flujo.launch.remote_keys import AgentError

SSH_COMMAND_ENV = "FLUJO_SSH_COMMAND"
#: ssh gives up reaching a host after this long (unless FLUJO_SSH_COMMAND sets ConnectTimeout).
CONNECT_TIMEOUT = 20.0
_EXCLUDED = "__pycache__"


def ssh_command() -> list[str]:
    """The ssh client and the user's options: $FLUJO_SSH_COMMAND, or plain ``ssh``."""
    configured = os.environ.get(SSH_COMMAND_ENV, "").strip()
    return shlex.split(configured) if configured else ["ssh"]


def ssh_argv(host: HostSpec, remote_command: list[str]) -> list[str]:
    # -T: no terminal (the agent's output is read line by line; a closed stdin is its end);
    # BatchMode: never wait for a password nobody can type (the launcher owns the terminal);
    # ConnectTimeout: an unreachable host is reported by ssh itself, well within START_TIMEOUT.
    assert host.ssh is not None
    return [
        *ssh_command(),
        "-T",
        "-o",
        "BatchMode=yes",
        "-o",
        f"ConnectTimeout={CONNECT_TIMEOUT:g}",
        host.ssh,
        shlex.join(remote_command),
    ]


def ssh_failure(host: HostSpec, what: str, code: int, output: str) -> AgentError:
    """An error carrying the ssh client's (or the remote command's) own words."""
    text = output.strip() or "(no message)"
    hint = ""
    if code == 255:
        hint = " (ssh could not connect or log in: check the address, the user and the SSH keys)"
    elif code in (126, 127) or "No module named" in text:
        hint = (
            f" (is Flujo installed there at {host.python or sys.executable}? set [hosts.{host.name}] python "
            "to the interpreter that has it)"
        )
    return AgentError(f"{what} over ssh to {host.ssh} failed with status {code}{hint}: {text}")


def sync_folder(host: HostSpec, folder: Path) -> None:
    """Copy ``folder`` to the same path on ``host`` through its ssh; raises AgentError."""
    assert host.ssh is not None
    path = str(folder)
    if shutil.which("rsync"):
        command = [
            "rsync",
            "-a",
            f"--exclude={_EXCLUDED}",
            "-e",
            shlex.join(ssh_command()),
            f"--rsync-path=mkdir -p {shlex.quote(path)} && rsync",
            f"{path}/",
            f"{host.ssh}:{path}/",
        ]
        done = subprocess.run(command, stdin=subprocess.DEVNULL, capture_output=True, text=True, start_new_session=True)
        if done.returncode != 0:
            raise ssh_failure(host, f"copying {path} with rsync", done.returncode, done.stderr)
        return
    unpack = ["sh", "-c", f"mkdir -p {shlex.quote(path)} && exec tar -C {shlex.quote(path)} -xf -"]
    with subprocess.Popen(
        ["tar", "-C", path, f"--exclude={_EXCLUDED}", "-cf", "-", "."],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
    ) as packing:
        done = subprocess.run(
            ssh_argv(host, unpack), stdin=packing.stdout, capture_output=True, text=True, start_new_session=True
        )
        assert packing.stdout is not None and packing.stderr is not None
        packing.stdout.close()
        packing_errors = packing.stderr.read().decode(errors="replace")
    if done.returncode != 0:  # first: a failed login also makes tar fail, on a broken pipe
        raise ssh_failure(host, f"copying {path}", done.returncode, done.stderr)
    if packing.returncode != 0:
        raise AgentError(f"copying {path}: tar failed with status {packing.returncode}: {packing_errors.strip()}")
