"""The launcher's live terminal view, built on the `rich` library.

While the launcher runs attached to a terminal, `LiveView` keeps a table of every node replica
at the bottom of the screen (refreshed a few times a second from the launcher's ``status()``)
and prints the nodes' output lines above it, ``label | text``, the same as the plain output.
`render_status` turns one status dict into that table, with a progress bar and the time left
for producers that know their length; `render_summary` is the closing summary. Both are pure,
so tests can render them.
"""

from __future__ import annotations

import contextlib
import threading
import time
import zlib
from collections import deque
from collections.abc import Callable
from typing import Any

from rich import box
from rich.console import COLOR_SYSTEMS, Console, ConsoleOptions, Group, RenderableType, RenderResult
from rich.control import strip_control_codes
from rich.live import Live
from rich.segment import Segment
from rich.table import Table
from rich.text import Text

from flujo.launch.replica import ReplicaState
from flujo.launch.status_table import MISSING, Column, integer, shown_columns
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
#: Output lines go to the screen in batches, at most this many times a second: every batch
#: redraws the table below it once, however many lines it holds, so a chatty node costs a
#: few redraws a second rather than one per line.
PRINTS_PER_SECOND = 20
#: Lines queued for a terminal that cannot keep up: beyond this many, the oldest are not shown
#: (they are in the log files) rather than held in memory or slowing the nodes down.
MAX_PENDING = 100_000
_BLOCKS = " ▏▎▍▌▋▊▉█"  # eighths of a cell, for the queue bar


class LiveView:
    """While attached to a terminal: a table of every node replica refreshed a few times a second,
    with the nodes' log lines printed above it.

    Use it as a context manager around the launcher's run loop and route every output line
    through `line`, which only queues the line: a writer thread of its own prints the queue in
    batches, a limited number of times a second, so a node's output never waits for the
    terminal or for the table. ``status`` is called from the refresh thread; if it raises (for
    instance while the launcher shuts down, or because it read the replicas mid-change) the
    last good table stays on screen. On exit every queued line is printed, then the final
    table, once, below all of them.

    On a console that is not a terminal nothing refreshes: lines are printed as they come and
    the final table once at the end.
    """

    def __init__(
        self,
        flow_name: str,
        status: Callable[[], dict],
        console: Console | None = None,
        refresh_per_second: float = 4.0,
        *,
        label_width: int = 0,
    ) -> None:
        """``label_width``: pad output labels to at least this many characters (they are
        padded to the widest label seen so far in any case)."""
        self.flow_name = flow_name
        self._status = status
        self.console = console if console is not None else Console()
        self._refresh_per_second = refresh_per_second
        self._label_width = label_width
        self._live: Live | None = None
        self._last: _LaidOut | None = None  # the last table rendered from a good status
        self._last_until = 0.0  # ... shown until then without asking status() again
        self._lock = threading.Condition()  # guards the fields below; notified when a line is queued
        self._pending: deque[tuple[str, str]] = deque()  # lines waiting to be printed
        self._writer: threading.Thread | None = None
        self._closing = False
        self._skipped = 0  # lines dropped from the screen since the last batch
        self._prefixes: dict[tuple[str, int], str] = {}  # (label, width) -> "label | " with its colours

    # -- context manager ------------------------------------------------------------------
    def __enter__(self) -> LiveView:
        self._live = Live(
            console=self.console,
            refresh_per_second=self._refresh_per_second,
            transient=False,
            get_renderable=self._renderable,
        )
        self._live.start()
        self._closing = False
        self._writer = threading.Thread(target=self._write_loop, daemon=True, name="live view output")
        self._writer.start()
        return self

    def __exit__(self, *exc: object) -> None:
        with self._lock:
            self._closing = True
            self._lock.notify()
        if self._writer is not None:
            self._writer.join()  # every queued line is out: the final table goes below them
            self._writer = None
        live, self._live = self._live, None
        self._last_until = 0.0  # the final table shows the final status
        if live is not None:
            live.stop()  # renders once more from status(), and leaves that table printed

    # -- output lines ---------------------------------------------------------------------
    def line(self, label: str, text: str) -> None:
        """Queue ``label | text`` to be printed above the table. Safe to call from several
        threads at once; lines appear in the order the calls were made. Returns at once."""
        with self._lock:
            if self._writer is None:  # not shown live (yet, or any more): print it here
                self._print([(label, text)])
                return
            if len(self._pending) >= MAX_PENDING:
                self._pending.popleft()
                self._skipped += 1
            self._pending.append((label, text))
            if len(self._pending) == 1:
                self._lock.notify()

    def _write_loop(self) -> None:
        """The writer thread: print what is queued, then let lines gather for a moment."""
        while True:
            with self._lock:
                while not self._pending and not self._closing:
                    self._lock.wait()
                batch = list(self._pending)
                self._pending.clear()
                if self._skipped:
                    note = f"{self._skipped} lines not shown: the terminal fell behind (flujo-launch logs has them)"
                    batch.insert(0, ("flujo-launch", note))
                    self._skipped = 0
                closing = self._closing
            if batch:
                self._print(batch)
            elif closing:
                return
            if not closing:
                time.sleep(1 / PRINTS_PER_SECOND)

    def _print(self, batch: list[tuple[str, str]]) -> None:
        """One print for many lines: the table below is redrawn once. The lines are formatted
        here, as text with the terminal's own escape codes, rather than laid out by rich line
        by line: a chatty node's thousands of lines a second cost next to nothing."""
        lines = []
        for label, text in batch:
            self._label_width = max(self._label_width, len(label))
            # Keep a node's colours but drop its cursor moves: a \r or \b must not move the cursor under the table.
            shown = self._styled(Text.from_ansi(text, end="")) if "\x1b" in text else strip_control_codes(text)
            lines.append(self._prefix(label) + shown)
        with contextlib.suppress(Exception):
            self.console.print(_Raw("\n".join(lines)), markup=False, highlight=False, soft_wrap=True)

    def _prefix(self, label: str) -> str:
        key = (label, self._label_width)
        prefix = self._prefixes.get(key)
        if prefix is None:
            shown = Text(label.ljust(self._label_width), style=_label_style(label), end="")
            shown.append(" | ", style="dim")
            prefix = self._prefixes[key] = self._styled(shown)
        return prefix

    def _styled(self, text: Text) -> str:
        """``text`` with the escape codes of this console's colour system (none without one)."""
        system = COLOR_SYSTEMS.get(self.console.color_system or "")
        return "".join(
            segment.style.render(segment.text, color_system=system) if segment.style and system else segment.text
            for segment in text.render(self.console)
        )

    # -- the table ------------------------------------------------------------------------
    def _renderable(self) -> RenderableType:
        """The table for the current status, or the last good one. Called by the refresh thread,
        and for every batch of output lines (which redraws the table below them): so the table
        is built and laid out at most ``refresh_per_second`` times a second, and reused between."""
        now = time.monotonic()
        if self._last is not None and now < self._last_until:
            return self._last
        self._last_until = now + 1 / self._refresh_per_second
        try:
            status = self._status()
            if not isinstance(status, dict):
                raise TypeError(f"status() returned {type(status).__name__}, not a dict")
            if not status.get("flow"):
                status = {**status, "flow": self.flow_name}
            table = _LaidOut(render_status(status))
        except Exception:
            if self._last is None:
                self._last = _LaidOut(render_status({"flow": self.flow_name, "nodes": []}))
            return self._last
        self._last = table
        return table


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
            _duration(node.get("seconds")),
            integer(node.get("errors")),
            integer(node.get("restarts")),
            summary_text(node.get("summary")),
        )
    return table


def summary_text(summary: Any) -> str:
    """A node's reported summary on one line: ``in 13, out 15``."""
    if not isinstance(summary, dict) or not summary:
        return ""
    return ", ".join(f"{key} {_value(value)}" for key, value in summary.items())


def plain_summary(status: dict) -> list[str]:
    """The closing summary as plain lines, for pipes and logs."""
    lines = []
    for node in status.get("nodes") or []:
        if not isinstance(node, dict):
            continue
        line = (
            f"{node_label(node)}: exit {integer(node.get('exit_code'))}, in {integer(node.get('items_in'))}, "
            f"out {integer(node.get('items_out'))}, {_duration(node.get('seconds'))}, "
            f"errors {integer(node.get('errors'))}, restarts {integer(node.get('restarts'))}"
        )
        reported = summary_text(node.get("summary"))
        lines.append(f"{line}; {reported}" if reported else line)
    return lines


# -- cells ------------------------------------------------------------------------------------
MAX_ERROR = 300  # characters of an error shown under the table


def _one_line(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= MAX_ERROR else text[: MAX_ERROR - 1] + "…"


def _label_style(label: str) -> str:
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


def _duration(value: Any) -> str:
    try:
        return f"{float(value):.1f} s"
    except (TypeError, ValueError):
        return MISSING


def _value(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


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


class _Raw:
    """Text already formatted for this terminal (escape codes included), printed as it is."""

    def __init__(self, text: str) -> None:
        self.text = text

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        yield Segment(self.text)
        yield Segment.line()


class _LaidOut:
    """A renderable laid out once per width: redrawing it costs no layout."""

    def __init__(self, renderable: RenderableType) -> None:
        self.renderable = renderable
        self._segments: tuple[int, list[Segment]] | None = None

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        if self._segments is None or self._segments[0] != options.max_width:
            self._segments = (options.max_width, list(console.render(self.renderable, options)))
        yield from self._segments[1]
