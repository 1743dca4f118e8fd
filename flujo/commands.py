"""Talking to a running launcher from another process: where it announces itself, and the request format.

A launcher writes ``<runs>/<flow>/launcher.json`` while it runs ({"flow", "pid", "endpoint",
"started" (UTC), "manifest", "nodes", "processes", "metrics" (its URL, or null)}), where
``<runs>`` is ``$FLUJO_RUNS`` or ``<tmp>/flujo-<uid>/runs``; its node logs are kept under
``<runs>/<flow>/logs/`` (flujo.launch.logstore). Requests go to that
endpoint over REQ/REP as one msgpack map ``{"command": name, ...}``; the reply is a msgpack
map with ``"ok": true`` and the command's fields, or ``"ok": false`` and ``"error"``.
"""
from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

import msgpack
import zmq

ANNOUNCEMENT = "launcher.json"


class CommandError(Exception):
    """No launcher to talk to, or it refused the request."""


def runs_folder() -> Path:
    configured = os.environ.get("FLUJO_RUNS")
    return Path(configured) if configured else Path(tempfile.gettempdir()) / f"flujo-{os.getuid()}" / "runs"


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
    folder = runs_folder()
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
