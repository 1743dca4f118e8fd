"""Talking to a running launcher from another process: where it announces itself, and the request format.

A launcher writes ``<runs>/<flow>/launcher.json`` while it runs ({"flow", "pid", "endpoint",
"started" (UTC), "manifest", "nodes", "processes", "metrics" (its URL, or null)}), where
``<runs>`` is ``$FLUJO_RUNS`` or ``<tmp>/flujo-<uid>/runs``; its node logs are kept under
``<runs>/<flow>/logs/`` (flujo.launch.logstore). Every folder of that chain that Flujo
makes is its user's alone (mode 0700); one that is a symbolic link or belongs to someone
else is refused, never used: another user could read node output or plant links.
Requests go to that
endpoint over REQ/REP as one msgpack map ``{"command": name, ...}``; the reply is a msgpack
map with ``"ok": true`` and the command's fields, or ``"ok": false`` and ``"error"``.
"""
from __future__ import annotations

import json
import os
import stat
import tempfile
from pathlib import Path
from typing import Any

import msgpack
import zmq

ANNOUNCEMENT = "launcher.json"


class CommandError(Exception):
    """No launcher to talk to, or it refused the request."""


class UnsafeFolderError(CommandError):
    """A folder Flujo keeps its runs in is a symbolic link or belongs to another user."""


def _private_root() -> Path | None:
    """The per-user folder above the default runs folder (None when $FLUJO_RUNS says where)."""
    return None if os.environ.get("FLUJO_RUNS") else Path(tempfile.gettempdir()) / f"flujo-{os.getuid()}"


def runs_folder() -> Path:
    configured = os.environ.get("FLUJO_RUNS")
    return Path(configured) if configured else _private_root() / "runs"  # type: ignore[operator]


def private_folder(path: Path, create: bool = True) -> bool:
    """Make sure ``path`` is a real folder of this user's that nobody else may enter (mode 0700),
    creating it when missing (with ``create``) and tightening the mode of one of this user's own.
    Returns whether it exists; raises UnsafeFolderError for a symbolic link, something that is
    not a folder, or a folder owned by someone else."""
    if create:
        try:
            os.mkdir(path, 0o700)
        except FileExistsError:
            pass
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        return False
    if stat.S_ISLNK(info.st_mode):
        raise UnsafeFolderError(f"refusing to use {path}: it is a symbolic link (remove it, or set FLUJO_RUNS "
                                "to a folder of your own)")
    if not stat.S_ISDIR(info.st_mode):
        raise UnsafeFolderError(f"refusing to use {path}: it is not a folder")
    if info.st_uid != os.getuid():
        raise UnsafeFolderError(f"refusing to use {path}: it belongs to user id {info.st_uid}, not to you "
                                f"({os.getuid()}); remove it, or set FLUJO_RUNS to a folder of your own")
    if info.st_mode & 0o077:
        os.chmod(path, 0o700, follow_symlinks=False)
    return True


def private_runs_folder(flow: str | None = None, create: bool = True) -> Path:
    """The runs folder (or the flow's folder in it), each folder on the way checked and private."""
    root, runs = _private_root(), runs_folder()
    if root is not None:
        private_folder(root, create)
    elif create:
        runs.parent.mkdir(parents=True, exist_ok=True)  # where $FLUJO_RUNS points is the user's choice
    private_folder(runs, create)
    if flow is None:
        return runs
    private_folder(runs / flow, create)
    return runs / flow




def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def running_flows() -> dict[str, dict[str, Any]]:
    """{flow name: announcement} of the launchers running now (stale files are ignored)."""
    flows = {}
    folder = private_runs_folder(create=False)
    if folder.is_dir():
        for path in folder.glob(f"*/{ANNOUNCEMENT}"):
            try:
                announcement = json.loads(path.read_text())
            except (OSError, ValueError):
                continue
            if _alive(announcement["pid"]):
                flows[announcement["flow"]] = announcement
    return flows


def find_flow(name: str | None) -> dict[str, Any]:
    """The announcement of the named flow, or of the only one running."""
    flows = running_flows()
    if name is not None:
        if name not in flows:
            known = ", ".join(sorted(flows)) or "none"
            raise CommandError(f'no running flow named "{name}" (running: {known})')
        return flows[name]
    if len(flows) == 1:
        return next(iter(flows.values()))
    if not flows:
        raise CommandError("no flow is running")
    raise CommandError(f"several flows are running ({', '.join(sorted(flows))}): name one with --flow")


def request(flow: str | None, command: str, timeout: float = 5.0, **fields: Any) -> dict[str, Any]:
    """Send one command to a running launcher and return its reply."""
    announcement = find_flow(flow)
    context = zmq.Context.instance()
    socket = context.socket(zmq.REQ)
    socket.linger = 0
    socket.rcvtimeo = socket.sndtimeo = int(timeout * 1000)
    try:
        socket.connect(announcement["endpoint"])
        socket.send(msgpack.packb({"command": command, **fields}))
        try:
            reply = msgpack.unpackb(socket.recv())
        except zmq.Again:
            raise CommandError(f'flow "{announcement["flow"]}" did not answer within {timeout} s') from None
    finally:
        socket.close()
    if not reply.get("ok"):
        raise CommandError(reply.get("error", "refused"))
    return reply
