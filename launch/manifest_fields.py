"""The checks of single manifest fields, the tables that name which fields each section takes, and
the collector of every problem a manifest has (each check returns an error message or None).
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterable
from typing import Any

from flujo.launch.errors import Problem, did_you_mean
from flujo.launch.manifest_spec import Engine, Placement, Transport
from flujo.vocab import ErrorPolicy, Join, QueuePolicy, RestartPolicy

#: Node names (also the names of log files and of control topics).
NAME_PATTERN = re.compile(r"^[A-Za-z_][A-Za-z0-9_-]{0,63}$")
#: Flow names (also a folder in the runs folder): no "/", no leading ".", nothing a shell must quote.
FLOW_NAME_PATTERN = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}$")
#: Upper bounds of numbers: past these a value is a mistake, and some (queue) would overflow later.
MAX_QUEUE = 1_000_000
MAX_REPLICAS = 256
MAX_RESTARTS = 1_000_000
MAX_SECONDS = 7 * 24 * 3600.0


# -- field checks: each returns an error message or None -----------------------------------
def _string(value: Any) -> str | None:
    return None if isinstance(value, str) and value else "must be a non-empty string"


def _count(limit: int) -> Callable[[Any], str | None]:
    def check(value: Any) -> str | None:
        if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= limit:
            return f"must be a whole number from 1 to {limit:,}, got {value!r}"
        return None

    return check


def _one_of(choices: Iterable[str]) -> Callable[[Any], str | None]:
    allowed = tuple(choices)

    def check(value: Any) -> str | None:
        if value in allowed:
            return None
        hint = did_you_mean(value, allowed) if isinstance(value, str) else ""
        return f"must be one of {', '.join(allowed)}, got {value!r}{hint}"

    return check


def _seconds(value: Any) -> str | None:
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float))
        or not 0 < value <= MAX_SECONDS
        or not math.isfinite(value)
    ):
        return f"must be a positive number of seconds, at most {MAX_SECONDS:g}, got {value!r}"
    return None


def _flow_name(value: Any) -> str | None:
    if isinstance(value, str) and FLOW_NAME_PATTERN.match(value):
        return None
    return (
        f"flow names use letters, digits, _, - and ., start with a letter, digit or _, and have at most "
        f"64 characters, got {value!r}"
    )


def _flag(value: Any) -> str | None:
    return None if isinstance(value, bool) else "must be true or false"


def _curve_key(value: Any) -> str | None:
    from flujo.curve import is_public_key  # the manifest's only use of ZeroMQ

    if isinstance(value, str) and is_public_key(value):
        return None
    return 'must be a CURVE public key: the 40 characters an agent prints as "key: ..." when it starts'


def _ssh_destination(value: Any) -> str | None:
    if not isinstance(value, str) or not value.strip():
        return 'must be where ssh logs in, for example "user@10.0.0.2" (or a Host of ~/.ssh/config)'
    if value.startswith("-") or any(c.isspace() for c in value):
        return f'must be one ssh destination such as "user@10.0.0.2", got {value!r}'
    return None


def _table(value: Any) -> str | None:
    return None if isinstance(value, dict) else "must be a table, for example { key = 1 }"


def _string_table(value: Any) -> str | None:
    if isinstance(value, dict) and all(isinstance(v, str) for v in value.values()):
        return None
    return 'must be a table of strings, for example { NAME = "value" }'


def _string_list(value: Any) -> str | None:
    if isinstance(value, list) and value and all(isinstance(v, str) and v for v in value):
        return None
    return 'must be a non-empty list of strings, for example ["python3", "node.py"]'


def _port_number(value: Any) -> str | None:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 < value < 65536:
        return f"must be a TCP port number (1-65535), got {value!r}"
    return None


def _inputs(value: Any) -> str | None:
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return None
    if isinstance(value, dict) and all(isinstance(v, str) for v in value.values()):
        return None
    return 'must be a list of node names, or a table of named ports: { a = "node", b = "node/port" }'


_SIZE_UNITS = {
    "": 1,
    "B": 1,
    "KB": 1 << 10,
    "KIB": 1 << 10,
    "MB": 1 << 20,
    "MIB": 1 << 20,
    "GB": 1 << 30,
    "GIB": 1 << 30,
}
#: Frame size limits a manifest may set: room for a header, at most what one message may sanely hold.
MIN_MESSAGE, MAX_MESSAGE = 4096, 1 << 34


def byte_size(value: Any) -> int | None:
    """Bytes from an int or a string like "64MB" (units of 1024: KB, MB, GB); None if not a size."""
    if type(value) is int:
        return value
    if isinstance(value, str):
        match = re.fullmatch(r"\s*(\d+)\s*([A-Za-z]*)\s*", value)
        if match and match.group(2).upper() in _SIZE_UNITS:
            return int(match.group(1)) * _SIZE_UNITS[match.group(2).upper()]
    return None


def _size(value: Any) -> str | None:
    size = byte_size(value)
    if size is None:
        return 'must be a size in bytes: a number, or a string like "64MB" (KB, MB, GB: units of 1024)'
    if not MIN_MESSAGE <= size <= MAX_MESSAGE:
        return f"must be between {MIN_MESSAGE} bytes and {MAX_MESSAGE >> 30} GB"
    return None


FLOW_FIELDS: dict[str, Callable[[Any], str | None]] = {
    "name": _flow_name,
    "queue": _count(MAX_QUEUE),
    "transport": _one_of(Transport),
    "host": _string,
    "insecure": _flag,
    "engine": _one_of(Engine),
    "ray_address": _string,
    "ray_pending_after": _seconds,
    "shm": _flag,
    "lossless": _flag,
    "max_message": _size,
    "max_control_message": _size,
}
NODE_FIELDS: dict[str, Callable[[Any], str | None]] = {
    "run": _string,
    "command": _string_list,
    "args": _table,
    "inputs": _inputs,
    "join": _one_of(Join),
    "replicas": _count(MAX_REPLICAS),
    "queue": _count(MAX_QUEUE),
    "env": _string_table,
    "cwd": _string,
    "outputs": _string_list,
    "on_error": _one_of(ErrorPolicy),
    "policy": _one_of(QueuePolicy),
    "restart": _one_of(RestartPolicy),
    "max_restarts": _count(MAX_RESTARTS),
    "restart_window": _seconds,
    "stop_timeout": _seconds,
    "host": _string,
    "max_message": _size,
    "shm": _flag,
    "credits": _flag,
    "resources": _table,
    "placement": _one_of(Placement),
}
#: The node fields that are options of how a node runs (not what it runs, its arguments or its inputs):
#: the manifest's [nodes.NAME] keys and, the same, the keywords of flujo.Flow.add.
NODE_OPTIONS: tuple[str, ...] = tuple(key for key in NODE_FIELDS if key not in ("run", "command", "args", "inputs"))
HOST_FIELDS: dict[str, Callable[[Any], str | None]] = {
    "address": _string,
    "agent_port": _port_number,
    "key": _curve_key,
    "timeout": _seconds,
    "ssh": _ssh_destination,
    "sync": _flag,
    "python": _string,
}
SECTIONS = ("flow", "hosts", "nodes")


class Problems:
    """Every problem found in one manifest file, in the order found, so all are reported at once."""

    def __init__(self, file: str) -> None:
        self.file = file
        self.found: list[Problem] = []

    def problem(self, message: str, node: str | None = None, field_name: str | None = None) -> None:
        self.found.append(Problem(self.file, message, node, field_name))

    def fields(
        self,
        table: dict[str, Any],
        known: dict[str, Callable[[Any], str | None]],
        node: str | None,
        where: str,
        say_where: bool = False,
    ) -> dict[str, Any]:
        """The fields of ``table`` whose values pass their checks; a problem for each other one
        (its message starts with ``where`` when ``say_where``: a table that is not a node's)."""
        good = {}
        for key, value in table.items():
            if key not in known:
                self.problem(f"unknown field in {where}{did_you_mean(key, known)}", node, key)
            elif (message := known[key](value)) is not None:
                self.problem(f"{where}: {message}" if say_where else message, node, key)
            else:
                good[key] = value
        return good
