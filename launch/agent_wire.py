"""Messages between a launcher (DEALER) and a host agent (ROUTER), see docs/PROTOCOL.md section 10.

Each message is one frame: a msgpack array ``[kind, payload]``.

launcher -> agent                               agent -> launcher
    hello     {"flow", "token"}                     welcome   {"host", "pid"}
                                                    refused   {"error"}    a wrong token
    ports     {"address", "count"}                  ports     [port, ...]   free on that address
    spawn     {"token", "label", "argv", "env",     started   {"token", "pid"}
               "cwd"}                               failed    {"token", "error"}   could not start
    signal    {"token", "signum"}                   exit      {"token", "code"}
    heartbeat nil                                   line      {"label", "text"}    a line of output
    bye       nil   (end what is left)              heartbeat nil

Both sides send a heartbeat every HEARTBEAT_INTERVAL. An agent that hears nothing from a
launcher for HEARTBEAT_TIMEOUT ends that launcher's processes (they would be orphans); a
launcher that hears nothing from an agent counts that host as lost.

An agent started with FLUJO_AGENT_TOKEN in its environment serves only launchers whose
hello carries the same token. The channel is not encrypted: keep agents on trusted
networks (or tunnels).
"""
from __future__ import annotations

from typing import Any

import msgpack

#: The shared secret an agent requires of launchers, and launchers present, when set.
TOKEN_ENV = "FLUJO_AGENT_TOKEN"
HEARTBEAT_INTERVAL = 1.0
HEARTBEAT_TIMEOUT = 5.0
#: How long a launcher waits for an agent's answer before it starts anything.
CONNECT_TIMEOUT = 5.0


def pack(kind: str, payload: Any = None) -> bytes:
    return msgpack.packb([kind, payload])


# Receivers check what arrives with flujo.wire_check.check_agent_request / check_agent_reply.
