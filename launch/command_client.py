"""Talking to a running launcher from another process (`flujo-launch stop/status/restart`, Flow.stop).

A request goes to the endpoint a launcher announces (launch/runs.py) over REQ/REP as one msgpack
map ``{"command": name, ...}``; the reply is a msgpack map with ``"ok": true`` and the command's
fields, or ``"ok": false``, ``"error"`` (a sentence) and ``"code"`` (launch/command_table.py;
docs/PROTOCOL.md, section 17).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import msgpack
import zmq

from flujo.launch.runs import CommandError, find_flow


def request(
    flow: str | None, command: str, timeout: float = 5.0, runs: Path | None = None, **fields: Any
) -> dict[str, Any]:
    """Send one command to a running launcher and return its reply (``runs``: the runs folder
    it announced itself in, when not this user's, see launch/runs.py)."""
    announcement = find_flow(flow, runs)
    context: zmq.Context = zmq.Context.instance()
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
        raise CommandError(reply.get("error", "refused"), reply.get("code"))
    return reply
