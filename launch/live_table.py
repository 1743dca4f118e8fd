"""The status table of a running flow as rich renders it, and the closing summary: pure functions
of a launcher status dict (missing keys show as "–"), so tests can render them. The columns are
defined once, in launch/status_table.py; this module draws them (colours, bars, progress)."""

from __future__ import annotations

import zlib
from typing import Any

from rich import box
from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

from flujo.launch.replica import ReplicaState
from flujo.launch.status_table import MISSING, Column, duration, integer, shown_columns, summary_text
from flujo.launch.status_table import label as node_label

#: How each replica state is shown.
STATE_STYLES: dict[str, str] = {
    ReplicaState.RUNNING: "green",
    ReplicaState.STARTING: "dim",
    ReplicaState.READY: "dim",
    ReplicaState.RESTARTING: "yellow",
    ReplicaState.PENDING: "yellow",  # waiting for a cluster to place it
    ReplicaState.DRAINING: "yellow",
    ReplicaState.RELEASED: "cyan",
    ReplicaState.FINISHED: "cyan",
    ReplicaState.EXITED: "dim",
    ReplicaState.FAILED: "bold red",
}
#: Colours for the labels of output lines, picked by a stable hash of the label.
LABEL_COLOURS = (
    "cyan",
    "magenta",
    "green",
    "yellow",
    "blue",
    "bright_cyan",
    "bright_magenta",
    "bright_green",
    "bright_yellow",
    "bright_blue",
)
BAR_WIDTH = 10
PROGRESS_WIDTH = 30
_BLOCKS = " ▏▎▍▌▋▊▉█"  # eighths of a cell, for the queue bar


def render_status(status: dict) -> RenderableType:
    """The table of every replica in a launcher status dict (missing keys show as "–"), and
    under it a progress bar with the time left for each producer that knows its length."""
    table = _status_table(status)
    progress = [
        _progress(node)
        for node in status.get("nodes") or []
        if isinstance(node, dict)
        and isinstance(node.get("total"), int)
        and node["total"] > 0
        and node.get("state") != ReplicaState.EXITED
    ]
    return Group(table, *progress) if progress else table


def _status_table(status: dict) -> Table:
    title = Text(f"flow {status.get('flow') or '?'}", style="bold")
    if status.get("stopping"):
        title.append("  stopping…", style="yellow")
    elif status.get("started") is False:
        title.append("  starting…", style="dim")
    bottleneck = status.get("bottleneck")
    nodes = [node for node in status.get("nodes") or [] if isinstance(node, dict)]
    # Under the table: the bottleneck, then the error of every failed (or restarting) replica,
    # one line each, in the width of the whole table rather than squeezed into one column.
    caption = Text(justify="left")
    if bottleneck:
        caption.append(f"bottleneck: {bottleneck}")
    for node in nodes:
        error, state, code = node.get("error"), node.get("state"), node.get("exit_code")
        if state == ReplicaState.FAILED or (error and state == ReplicaState.RESTARTING):
            caption.append("\n" if caption else "")
            exit_code = f" (exit {code})" if state == ReplicaState.FAILED and code is not None else ""
            caption.append(f"{node_label(node)} {state}{exit_code}", style=STATE_STYLES[state])
            if error:
                caption.append(": ")
                caption.append(_one_line(str(error)), style="red")
        elif state == ReplicaState.PENDING and node.get("pending"):  # why a cluster has not placed it yet
            caption.append("\n" if caption else "")
            caption.append(f"{node_label(node)} pending: ", style=STATE_STYLES[state])
            caption.append(_one_line(str(node["pending"])))
    table = Table(
        title=title,
        caption=caption or None,
        box=box.SIMPLE_HEAD,
        padding=0,
        show_edge=False,
        title_justify="left",
        caption_justify="left",
    )
    columns = shown_columns(nodes, compact=True)  # the one table definition (launch/status_table.py)
    for column in columns:
        table.add_column(
            column.title, justify=column.justify, no_wrap=True, style="red" if column.field == "rejected" else None
        )
    for node in nodes:
        highlight = bool(bottleneck) and node.get("node", node.get("label")) == bottleneck
        table.add_row(*(_cell(column, node) for column in columns), style="bold" if highlight else None)
    return table


def _cell(column: Column, node: dict) -> Text:
    """A status table cell, drawn: the state in its colour, the queue as a bar, busy by how busy."""
    if column.field == "state":
        state = column.cell(node)
        return Text(state, style=STATE_STYLES.get(state, ""))
    if column.field == "queue":
        return _queue(node.get("queue"))
    if column.field == "busy":
        return _percent(node.get("busy"))
    return Text(column.cell(node))


def render_summary(status: dict) -> Table:
    """The closing summary: per node replica its items, time, errors and restarts, and what
    the node reported at its end (``summary()``, for instance a counter's final counts)."""
    table = Table(
        title=Text(f"flow {status.get('flow') or '?'}: summary", style="bold"),
        box=box.SIMPLE_HEAD,
        padding=(0, 1, 0, 0),
        show_edge=False,
        title_justify="left",
    )
    for column, justify in (
        ("node", "left"),
        ("exit", "right"),
        ("in", "right"),
        ("out", "right"),
        ("time", "right"),
        ("errors", "right"),
        ("restarts", "right"),
        ("reported", "left"),
    ):
        table.add_column(column, justify=justify, no_wrap=column != "reported")  # type: ignore[arg-type]
    for node in status.get("nodes") or []:
        if not isinstance(node, dict):
            continue
        code = node.get("exit_code")
        table.add_row(
            node_label(node),
            Text(integer(code), style="" if code in (0, None) else "bold red"),
            integer(node.get("items_in")),
            integer(node.get("items_out")),
            duration(node.get("seconds")),
            integer(node.get("errors")),
            integer(node.get("restarts")),
            summary_text(node.get("summary")),
        )
    return table


# -- cells ------------------------------------------------------------------------------------
MAX_ERROR = 300  # characters of an error shown under the table


def _one_line(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= MAX_ERROR else text[: MAX_ERROR - 1] + "…"


def label_style(label: str) -> str:
    node = label.split(".", 1)[0]  # replicas of one node share a colour
    return LABEL_COLOURS[zlib.crc32(node.encode()) % len(LABEL_COLOURS)]


def _progress(node: dict) -> Text:
    """``reader  ████████▌        43%  342/795  ETA 0:31``"""
    total, done = int(node["total"]), int(node.get("items_out") or 0)
    fraction = min(max(done / total, 0.0), 1.0)
    eighths = round(fraction * PROGRESS_WIDTH * 8)
    bar = _BLOCKS[8] * (eighths // 8) + (_BLOCKS[eighths % 8] if eighths % 8 else "")
    shown = Text(f"{node_label(node)}  ")
    shown.append(bar.ljust(PROGRESS_WIDTH), style="cyan on grey23")
    shown.append(f" {fraction:>4.0%}  {done}/{total}")
    eta = node.get("eta")
    if isinstance(eta, (int, float)):
        shown.append(f"  ETA {_clock(eta)}")
    return shown


def _clock(seconds: float) -> str:
    seconds = round(seconds)
    hours, rest = divmod(seconds, 3600)
    return f"{hours}:{rest // 60:02d}:{rest % 60:02d}" if hours else f"{rest // 60}:{rest % 60:02d}"


def _percent(value: Any) -> Text:
    try:
        fraction = float(value)
    except (TypeError, ValueError):
        return Text(MISSING)
    style = "red" if fraction >= 0.9 else "yellow" if fraction >= 0.6 else ""
    return Text(f"{fraction:.0%}", style=style)


def _queue(value: Any) -> Text:
    """``NN% ██████▌   ``: how full the node's input queue is."""
    try:
        fill = min(max(float(value), 0.0), 1.0)
    except (TypeError, ValueError):
        return Text(MISSING)
    eighths = round(fill * BAR_WIDTH * 8)
    bar = _BLOCKS[8] * (eighths // 8) + (_BLOCKS[eighths % 8] if eighths % 8 else "")
    style = "red" if fill >= 0.9 else "yellow" if fill >= 0.5 else "green"
    shown = Text(f"{fill:>4.0%} ")
    shown.append(bar.ljust(BAR_WIDTH), style=style)
    return shown
