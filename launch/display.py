"""What a person sees of a flow run: the launcher's messages, node output (a live table on a
terminal, prefixed lines otherwise), the closing summary, and the Prometheus endpoint; all of
them read a snapshot of the status refreshed a few times a second."""

from __future__ import annotations

import contextlib
import sys
import time
from collections.abc import Callable, Iterator
from typing import IO, Any

from flujo.launch.errors import EXIT_BAD_MANIFEST, LaunchError
from flujo.launch.process import plain_lines

LIVE_REFRESH_PER_SECOND = 4
#: Longest wait of the loop while a live view or the metrics endpoint wants fresh numbers (ms).
REFRESH_MS = 250


class Display:
    """Messages, node output and the status snapshot of one launcher."""

    def __init__(self, flow_name: str, output: IO[str] | None, messages: IO[str] | None, quiet: bool) -> None:
        self._flow_name, self._quiet = flow_name, quiet
        self._output = output or sys.stdout
        self._messages = messages or sys.stderr
        self._view: Any = None  # the LiveView while one is shown
        self._metrics: Any = None  # the MetricsServer while one serves
        self._snapshot: dict[str, Any] = {"flow": flow_name, "nodes": []}
        self._snapshot_due = 0.0

    @property
    def wants_refresh(self) -> bool:
        """A live view or the metrics endpoint reads the snapshot: keep it fresh even when nothing happens."""
        return self._view is not None or self._metrics is not None

    def say(self, text: str) -> None:
        if self._view is not None:
            self._view.line("flujo-launch", text)
            return
        self._messages.write(f"flujo-launch: {self._flow_name}: {text}\n")
        self._messages.flush()

    def refresh(self, status: Callable[[], dict[str, Any]], force: bool = False) -> None:
        """The live view and the metrics endpoint read this copy from their own threads."""
        now = time.monotonic()
        if force or now >= self._snapshot_due:
            self._snapshot = status()
            self._snapshot_due = now + 1 / LIVE_REFRESH_PER_SECOND

    def serve_metrics(self, address: str, port: int) -> str:
        """Start the Prometheus endpoint; its URL. LaunchError (exit 2) when it cannot."""
        from flujo.launch.exporter import MetricsServer  # prometheus_client loads only when asked for

        try:
            self._metrics = MetricsServer(lambda: self._snapshot, port, address)
        except OSError as error:
            raise LaunchError(
                EXIT_BAD_MANIFEST, f"cannot serve metrics on {address}:{port}: {error.strerror or error}"
            ) from None
        host = f"[{address}]" if ":" in address else address
        url = f"http://{host}:{self._metrics.port}/metrics"
        self.say(f"metrics: {url}")
        return url

    @contextlib.contextmanager
    def terminal(self, width: int, status: Callable[[], dict[str, Any]]) -> Iterator[Callable[[str, str], None]]:
        """Where node output goes: a live table on a terminal, plain prefixed lines otherwise;
        the closing summary after it."""
        if self._quiet:
            yield lambda label, text: None  # still in the log files
        elif self._output.isatty():
            from flujo.launch.live import LiveView, render_summary  # rich loads only when a terminal shows it

            with LiveView(self._flow_name, lambda: self._snapshot, label_width=width) as view:
                self._view = view
                try:
                    yield view.line
                finally:
                    self.refresh(status, force=True)
                    self._view = None
            view.console.print(render_summary(status()))  # below the final table and every line
        else:
            yield plain_lines(self._output, width)
            from flujo.launch.status_table import plain_summary  # plain text: no rich to load

            self.say("summary:\n  " + "\n  ".join(plain_summary(status())))

    def close(self) -> None:
        if self._metrics is not None:
            self._metrics.close()
