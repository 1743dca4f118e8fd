"""Messages between a launcher (DEALER) and a host agent (ROUTER), see docs/PROTOCOL.md section 10.

Each message is one frame: a msgpack array ``[kind, payload]``.

launcher -> agent                               agent -> launcher
    hello     {"flow", "timeout"}                   welcome   {"host", "pid"}
    ports     {"address", "count"}                  ports     [port, ...]   free on that address
    spawn     {"token", "label", "argv", "env",     started   {"token", "pid"}
               "cwd"}                               failed    {"token", "error"}   could not start
    signal    {"token", "signum"}                   exit      {"token", "code"}
    heartbeat {"sent"}                              line      {"label", "text"}    a line of output
    bye       nil   (end what is left)              heartbeat {"sent"}   the launcher's, echoed
                                                    refused   {"error"}  a request it cannot serve

The launcher sends a heartbeat every HEARTBEAT_INTERVAL and the agent echoes it (the launcher
measures the round trip). A link cut shorter than the host's ``timeout`` (the manifest's
[hosts.NAME] timeout, sent in hello) changes nothing: both sides wait, and the flow's tcp
connections carry on when the link returns. Past it, the agent ends that launcher's processes
(they would be orphans), and the launcher counts them as crashed: its restart policy decides,
and it says hello again every interval, so a returning agent starts them anew.

The channel is CURVE (flujo/curve.py): the agent is the server with its own key pair, and
its ZAP handler admits only the launcher keys in its authorized_keys (launch/keys.py); the
launcher checks the agent's key (the manifest's [hosts.NAME] key, or known_hosts). A launcher
the agent does not know fails the handshake before any message is read.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any

import msgpack

HEARTBEAT_INTERVAL = 1.0
#: How long a host may stay silent before its nodes count as crashed, unless the manifest says.
DEFAULT_HOST_TIMEOUT = 30.0
#: How long a launcher waits for an agent's answer before it starts anything.
CONNECT_TIMEOUT = 5.0


class AgentRequest(StrEnum):
    """The kinds of message a launcher sends an agent."""

    HELLO = "hello"
    PORTS = "ports"
    SPAWN = "spawn"
    SIGNAL = "signal"
    HEARTBEAT = "heartbeat"
    BYE = "bye"


class AgentReply(StrEnum):
    """The kinds of message an agent sends a launcher."""

    WELCOME = "welcome"
    REFUSED = "refused"  # a request it cannot serve, {"error"}
    PORTS = "ports"
    STARTED = "started"
    FAILED = "failed"
    EXIT = "exit"
    LINE = "line"
    HEARTBEAT = "heartbeat"


def pack(kind: AgentRequest | AgentReply, payload: Any = None) -> bytes:
    return msgpack.packb([kind, payload])


# Receivers check what arrives with flujo.wire_check.check_agent_request / check_agent_reply.
