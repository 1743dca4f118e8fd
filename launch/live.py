"""The launcher's live terminal view, built on the `rich` library.

While the launcher runs attached to a terminal, `LiveView` keeps a table of every node replica
at the bottom of the screen (refreshed a few times a second from the launcher's ``status()``)
and prints the nodes' output lines above it, ``label | text``, the same as the plain output.
`render_status` turns one status dict into that table; it is pure, so tests can render it.
"""
from __future__ import annotations

import threading
import zlib
from typing import Any, Callable

from rich import box
from rich.console import Console
from rich.live import Live
from rich.table import Table
from rich.text import Text

#: How each replica state is shown.
STATE_STYLES = {
    "running": "green",
    "starting": "dim",
    "ready": "dim",
    "restarting": "yellow",
    "pending": "yellow",  # waiting for a cluster to place it
    "draining": "yellow",
    "released": "cyan",
    "finished": "cyan",
    "exited": "dim",
    "failed": "bold red",
}
#: Colours for the labels of output lines, picked by a stable hash of the label.
LABEL_COLOURS = ("cyan", "magenta", "green", "yellow", "blue", "bright_cyan", "bright_magenta",
                 "bright_green", "bright_yellow", "bright_blue")
BAR_WIDTH = 10
_BLOCKS = " ▏▎▍▌▋▊▉█"  # eighths of a cell, for the queue bar
_MISSING = "–"


class LiveView:
    """While attached to a terminal: a table of every node replica refreshed a few times a second,
    with the nodes' log lines printed above it.

    Use it as a context manager around the launcher's run loop and route every output line
    through `line`. ``status`` is called from the refresh thread; if it raises (for instance
    while the launcher shuts down, or because it read the replicas mid-change) the last good
    table stays on screen. On exit the final table is left printed once.

    On a console that is not a terminal nothing refreshes: lines are printed as they come and
    the final table once at the end.
    """

    def __init__(self, flow_name: str, status: Callable[[], dict], console: Console | None = None,
                 refresh_per_second: float = 4.0, *, label_width: int = 0) -> None:
        """``label_width``: pad output labels to at least this many characters (they are
        padded to the widest label seen so far in any case)."""
        self.flow_name = flow_name
        self._status = status
        self.console = console if console is not None else Console()
        self._refresh_per_second = refresh_per_second
        self._label_width = label_width
        self._live: Live | None = None
        self._last: Table | None = None  # the last table rendered from a good status
        self._lock = threading.Lock()  # guards the fields below
        self._pending: list[Text] = []  # lines waiting to be printed
        self._printing = False  # one thread prints at a time; the others leave their lines here

    # -- context manager ------------------------------------------------------------------
    def __enter__(self) -> LiveView:
        self._live = Live(console=self.console, refresh_per_second=self._refresh_per_second,
                          transient=False, get_renderable=self._renderable)
        self._live.start()
        return self

    def __exit__(self, *exc: object) -> None:
        live, self._live = self._live, None
        self._flush()
        if live is not None:
            live.stop()  # renders once more from status(), and leaves that table printed

    # -- output lines ---------------------------------------------------------------------
    def line(self, label: str, text: str) -> None:
        """Print ``label | text`` above the table. Safe to call from several threads at once;
        lines appear in the order the calls were made."""
        with self._lock:
            self._label_width = max(self._label_width, len(label))
            shown = Text(label.ljust(self._label_width), style=_label_style(label), end="")
            shown.append(" | ", style="dim")
            shown.append_text(Text.from_ansi(text, end=""))  # keeps a node's colours, drops cursor moves
            self._pending.append(shown)
            if self._printing:
                return  # the thread printing now prints this line too
            self._printing = True
        self._flush(owner=True)

    def _flush(self, owner: bool = False) -> None:
        """Print the pending lines. Printing redraws the table below them, so while one thread
        prints, lines from the others pile up and go out together in the next batch."""
        if not owner:
            with self._lock:
                if self._printing:
                    return
                self._printing = True
        try:
            while True:
                with self._lock:
                    batch, self._pending = self._pending, []
                    if not batch:
                        self._printing = False
                        return
                self.console.print(Text("\n").join(batch), markup=False, highlight=False)
        except BaseException:
            with self._lock:
                self._printing = False
            raise

    # -- the table ------------------------------------------------------------------------
    def _renderable(self) -> Table:
        """Called by the refresh thread: the table for the current status, or the last good one."""
        try:
            status = self._status()
            if not isinstance(status, dict):
                raise TypeError(f"status() returned {type(status).__name__}, not a dict")
            if not status.get("flow"):
                status = {**status, "flow": self.flow_name}
            table = render_status(status)
        except Exception:
            if self._last is None:
                self._last = render_status({"flow": self.flow_name, "nodes": []})
            return self._last
        self._last = table
        return table


def render_status(status: dict) -> Table:
    """The table of every replica in a launcher status dict. Missing keys show as "–"."""
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
        if state == "failed" or (error and state == "restarting"):
            caption.append("\n" if caption else "")
            exit_code = f" (exit {code})" if state == "failed" and code is not None else ""
            caption.append(f"{_label(node)} {state}{exit_code}", style=STATE_STYLES[state])
            if error:
                caption.append(": ")
                caption.append(_one_line(str(error)), style="red")
    table = Table(title=title, caption=caption or None, box=box.SIMPLE_HEAD, padding=0,
                  show_edge=False, title_justify="left", caption_justify="left")
    table.add_column("node", no_wrap=True)
    table.add_column("state", no_wrap=True)
    table.add_column("pid", justify="right", no_wrap=True)
    table.add_column("restarts", justify="right", no_wrap=True)
    table.add_column("in", justify="right", no_wrap=True)
    table.add_column("out", justify="right", no_wrap=True)
    table.add_column("items/s", justify="right", no_wrap=True)
    table.add_column("queue", no_wrap=True)
    table.add_column("busy", justify="right", no_wrap=True)
    for node in nodes:
        state = str(node.get("state") or _MISSING)
        shown_state = Text(state, style=STATE_STYLES.get(state, ""))
        highlight = bool(bottleneck) and node.get("node", node.get("label")) == bottleneck
        table.add_row(
            _label(node),
            shown_state,
            _integer(node.get("pid")) + (f"@{node['host']}" if node.get("host") else ""),
            _integer(node.get("restarts")),
            _integer(node.get("items_in")),
            _integer(node.get("items_out")),
            _number(node.get("rate")),
            _queue(node.get("queue")),
            _percent(node.get("busy")),
            style="bold" if highlight else None,
        )
    return table


# -- cells ------------------------------------------------------------------------------------
MAX_ERROR = 300  # characters of an error shown under the table


def _label(node: dict) -> str:
    return str(node.get("label") or node.get("node") or "?")


def _one_line(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= MAX_ERROR else text[:MAX_ERROR - 1] + "…"


def _label_style(label: str) -> str:
    node = label.split(".", 1)[0]  # replicas of one node share a colour
    return LABEL_COLOURS[zlib.crc32(node.encode()) % len(LABEL_COLOURS)]


def _integer(value: Any) -> str:
    if value is None or isinstance(value, bool):
        return _MISSING
    try:
        return str(int(value))
    except (TypeError, ValueError):
        return str(value)


def _number(value: Any) -> str:
    try:
        return f"{float(value):.1f}"
    except (TypeError, ValueError):
        return _MISSING


def _percent(value: Any) -> Text:
    try:
        fraction = float(value)
    except (TypeError, ValueError):
        return Text(_MISSING)
    style = "red" if fraction >= 0.9 else "yellow" if fraction >= 0.6 else ""
    return Text(f"{fraction:.0%}", style=style)


def _queue(value: Any) -> Text:
    """``NN% ██████▌   ``: how full the node's input queue is."""
    try:
        fill = min(max(float(value), 0.0), 1.0)
    except (TypeError, ValueError):
        return Text(_MISSING)
    eighths = round(fill * BAR_WIDTH * 8)
    bar = _BLOCKS[8] * (eighths // 8) + (_BLOCKS[eighths % 8] if eighths % 8 else "")
    style = "red" if fill >= 0.9 else "yellow" if fill >= 0.5 else "green"
    shown = Text(f"{fill:>4.0%} ")
    shown.append(bar.ljust(BAR_WIDTH), style=style)
    return shown
