"""Where running launchers announce themselves, and where their runs are kept.

A launcher writes ``<runs>/<flow>/launcher.json`` while it runs ({"flow", "pid", "endpoint",
"started" (UTC), "manifest", "nodes", "processes", "metrics" (its URL, or null)}), where
``<runs>`` is ``$FLUJO_RUNS`` or ``<tmp>/flujo-<uid>/runs``; its node logs are kept under
``<runs>/<flow>/logs/`` (flujo.launch.logstore). Every folder of that chain that Flujo
makes is its user's alone (mode 0700); one that is a symbolic link or belongs to someone
else is refused, never used: another user could read node output or plant links.
Commands go to the announced endpoint (launch/command_client.py, launch/command_table.py).
"""

from __future__ import annotations

import contextlib
import json
import os
import stat
import tempfile
from pathlib import Path
from typing import Any

ANNOUNCEMENT = "launcher.json"


class CommandError(Exception):
    """No launcher to talk to, or it refused the request (``code``: the launcher's error code, if it answered)."""

    def __init__(self, message: str, code: str | None = None) -> None:
        super().__init__(message)
        self.code = code


class UnsafeFolderError(CommandError):
    """A folder Flujo keeps its runs in is a symbolic link or belongs to another user."""


def _private_root(runs: Path | None = None) -> Path | None:
    """The per-user folder above the default runs folder (None when ``runs`` or $FLUJO_RUNS says where)."""
    if runs is not None or os.environ.get("FLUJO_RUNS"):
        return None
    return Path(tempfile.gettempdir()) / f"flujo-{os.getuid()}"


def runs_folder(runs: Path | None = None) -> Path:
    """``runs`` when given, else ``$FLUJO_RUNS``, else ``<tmp>/flujo-<uid>/runs``."""
    if runs is not None:
        return runs
    configured = os.environ.get("FLUJO_RUNS")
    if configured:
        return Path(configured)
    return Path(tempfile.gettempdir()) / f"flujo-{os.getuid()}" / "runs"


def private_folder(path: Path, create: bool = True) -> bool:
    """Make sure ``path`` is a real folder of this user's that nobody else may enter (mode 0700),
    creating it when missing (with ``create``) and tightening the mode of one of this user's own.
    Returns whether it exists; raises UnsafeFolderError for a symbolic link, something that is
    not a folder, or a folder owned by someone else."""
    if create:
        with contextlib.suppress(FileExistsError):
            os.mkdir(path, 0o700)
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        return False
    if stat.S_ISLNK(info.st_mode):
        raise UnsafeFolderError(
            f"refusing to use {path}: it is a symbolic link (remove it, or set FLUJO_RUNS to a folder of your own)"
        )
    if not stat.S_ISDIR(info.st_mode):
        raise UnsafeFolderError(f"refusing to use {path}: it is not a folder")
    if info.st_uid != os.getuid():
        raise UnsafeFolderError(
            f"refusing to use {path}: it belongs to user id {info.st_uid}, not to you "
            f"({os.getuid()}); remove it, or set FLUJO_RUNS to a folder of your own"
        )
    if info.st_mode & 0o077:
        os.chmod(path, 0o700, follow_symlinks=False)
    return True


def private_runs_folder(flow: str | None = None, create: bool = True, runs: Path | None = None) -> Path:
    """The runs folder (or the flow's folder in it), each folder on the way checked and private."""
    root, runs = _private_root(runs), runs_folder(runs)
    if root is not None:
        private_folder(root, create)
    elif create:
        runs.parent.mkdir(parents=True, exist_ok=True)  # where $FLUJO_RUNS points is the user's choice
    private_folder(runs, create)
    if flow is None:
        return runs
    private_folder(runs / flow, create)
    return runs / flow


def announce(path: Path, fields: dict[str, Any]) -> None:
    """Write an announcement readers see whole or not at all (a reader may look at any moment), mode 0600."""
    partial = path.with_name(f".{path.name}.{os.getpid()}")
    descriptor = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    with os.fdopen(descriptor, "w") as file:
        file.write(json.dumps(fields))
    os.replace(partial, path)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def running_flows(runs: Path | None = None) -> dict[str, dict[str, Any]]:
    """{flow name: announcement} of the launchers running now (stale files are ignored);
    ``runs``: another runs folder than this user's (see runs_folder)."""
    flows = {}
    folder = private_runs_folder(create=False, runs=runs)
    if folder.is_dir():
        for path in folder.glob(f"*/{ANNOUNCEMENT}"):
            try:
                announcement = json.loads(path.read_text())
            except (OSError, ValueError):
                continue
            if _alive(announcement["pid"]):
                flows[announcement["flow"]] = announcement
    return flows


def find_flow(name: str | None, runs: Path | None = None) -> dict[str, Any]:
    """The announcement of the named flow, or of the only one running (in ``runs``, see runs_folder)."""
    flows = running_flows(runs)
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
