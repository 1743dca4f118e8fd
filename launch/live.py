"""The launcher's live terminal view, built on the `rich` library.

While the launcher runs attached to a terminal, `LiveView` keeps a table of every node replica
at the bottom of the screen (refreshed a few times a second from the launcher's ``status()``)
and prints the nodes' output lines above it, ``label | text``, the same as the plain output.
`render_status` turns one status dict into that table, with a progress bar and the time left
for producers that know their length; `render_summary` is the closing summary. Both are pure,
so tests can render them; they live in launch/live_table.py and are importable from here.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections import deque
from collections.abc import Callable

from rich.console import COLOR_SYSTEMS, Console, ConsoleOptions, RenderableType, RenderResult
from rich.control import strip_control_codes
from rich.live import Live
from rich.segment import Segment
from rich.text import Text

from flujo.launch.live_table import (
    BAR_WIDTH,
    LABEL_COLOURS,
    MAX_ERROR,
    PROGRESS_WIDTH,
    STATE_STYLES,
    label_style,
    render_status,
    render_summary,
)
from flujo.launch.status_table import plain_summary, summary_text

__all__ = [
    "BAR_WIDTH",
    "LABEL_COLOURS",
    "MAX_ERROR",
    "MAX_PENDING",
    "PRINTS_PER_SECOND",
    "PROGRESS_WIDTH",
    "STATE_STYLES",
    "LiveView",
    "plain_summary",
    "render_status",
    "render_summary",
    "summary_text",
]

#: Output lines go to the screen in batches, at most this many times a second: every batch
#: redraws the table below it once, however many lines it holds, so a chatty node costs a
#: few redraws a second rather than one per line.
PRINTS_PER_SECOND = 20
#: Lines queued for a terminal that cannot keep up: beyond this many, the oldest are not shown
#: (they are in the log files) rather than held in memory or slowing the nodes down.
MAX_PENDING = 100_000


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
            shown = Text(label.ljust(self._label_width), style=label_style(label), end="")
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
