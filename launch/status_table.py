"""The status table, defined once: `flujo-launch status` prints it as text, the live view draws it
with rich (launch/live.py). Each column names the field of a replica's status entry it shows
(launch/snapshot.py) and how its cell reads; a column marked ``optional`` is left out of the live
view while no replica has a non-zero value in it (the printed table always has every column)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

MISSING = "–"


def integer(value: Any) -> str:
    """A count; MISSING for none."""
    if value is None or isinstance(value, bool):
        return MISSING
    try:
        return str(int(value))
    except (TypeError, ValueError):
        return str(value)


def number(value: Any) -> str:
    """A rate, one decimal."""
    try:
        return f"{float(value):.1f}"
    except (TypeError, ValueError):
        return MISSING


def percent(value: Any) -> str:
    """A fraction 0..1 as a percentage, four characters wide."""
    try:
        return f"{float(value):>4.0%}"
    except (TypeError, ValueError):
        return MISSING


def duration(value: Any) -> str:
    """Seconds, one decimal."""
    try:
        return f"{float(value):.1f} s"
    except (TypeError, ValueError):
        return MISSING


def label(node: dict[str, Any]) -> str:
    """The replica's label (its node's name when it has one replica)."""
    return str(node.get("label") or node.get("node") or "?")


def process_id(node: dict[str, Any]) -> str:
    """The replica's pid, and "@host" when it runs on another host."""
    pid = integer(node.get("pid"))
    return f"{pid}@{node['host']}" if node.get("host") else pid


@dataclass(frozen=True)
class Column:
    title: str
    field: str  # the key of the replica's status entry
    cell: Callable[[dict[str, Any]], str]  # the cell's text
    justify: Literal["left", "right"] = "right"
    optional: bool = False  # the live view shows it only while some replica has a non-zero value


def _field(name: str, text: Callable[[Any], str] = integer) -> Callable[[dict[str, Any]], str]:
    return lambda node: text(node.get(name))


COLUMNS = (
    Column("node", "label", label, "left"),
    Column("state", "state", _field("state", lambda value: MISSING if value is None else str(value)), "left"),
    Column("pid", "pid", process_id),
    Column("restarts", "restarts", _field("restarts")),
    Column("in", "items_in", _field("items_in")),
    Column("out", "items_out", _field("items_out")),
    Column("items/s", "rate", _field("rate", number)),
    Column("queue", "queue", _field("queue", percent), "left"),
    Column("busy", "busy", _field("busy", percent)),
    Column("dropped", "dropped", _field("dropped"), optional=True),
    Column("rejected", "rejected", _field("rejected"), optional=True),
)


def shown_columns(nodes: list[dict[str, Any]], compact: bool) -> tuple[Column, ...]:
    """Every column, or (``compact``) every column but the optional ones no replica has a value in."""
    return tuple(
        column
        for column in COLUMNS
        if not (compact and column.optional and not any(node.get(column.field) for node in nodes))
    )


def format_status(nodes: list[dict[str, Any]]) -> str:
    """The table as text, one line per replica under a line of titles."""
    rows = [
        tuple(column.title for column in COLUMNS),
        *(tuple(column.cell(node) for column in COLUMNS) for node in nodes),
    ]
    widths = [max(len(row[i]) for row in rows) for i in range(len(COLUMNS))]
    return "\n".join(
        "  ".join(
            cell.ljust(width) if column.justify == "left" else cell.rjust(width)
            for column, cell, width in zip(COLUMNS, row, widths, strict=True)
        )
        for row in rows
    )


def host_line(host: dict[str, Any]) -> str:
    """One other host's link: its state, how long it has been silent when not connected, the round trip."""
    text = f"{host['name']}: {host['state']}"
    if host["state"] != "connected":
        text += f" (silent for {host['silent']:g} s)"
    if host.get("rtt_ms") is not None:
        text += f", rtt {host['rtt_ms']:g} ms"
    return text


def summary_text(summary: Any) -> str:
    """A node's reported summary on one line: ``in 13, out 15``."""
    if not isinstance(summary, dict) or not summary:
        return ""
    return ", ".join(f"{key} {_value(value)}" for key, value in summary.items())


def _value(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def plain_summary(status: dict) -> list[str]:
    """The closing summary as plain lines, for pipes and logs. The live view draws its own with
    rich (launch/live_table.py); this one needs no rich, so a launcher without a terminal never
    imports it: about 25 ms of CPU less for each of the hundreds of launchers a test run starts."""
    lines = []
    for node in status.get("nodes") or []:
        if not isinstance(node, dict):
            continue
        line = (
            f"{label(node)}: exit {integer(node.get('exit_code'))}, in {integer(node.get('items_in'))}, "
            f"out {integer(node.get('items_out'))}, {duration(node.get('seconds'))}, "
            f"errors {integer(node.get('errors'))}, restarts {integer(node.get('restarts'))}"
        )
        reported = summary_text(node.get("summary"))
        lines.append(f"{line}; {reported}" if reported else line)
    return lines
