"""Ctrl-C and SIGTERM for the launcher: counted in the handler, acted on in its loop, which a
wakeup pipe wakes (a signal handler must not touch sockets or replicas)."""

from __future__ import annotations

import os
import signal
from types import FrameType, TracebackType

HANDLED = (signal.SIGINT, signal.SIGTERM)


class Interrupts:
    """A context that installs the handlers and the wakeup pipe, and restores both on exit."""

    def __init__(self) -> None:
        self.count = 0  # interrupts so far
        self.fd, self._write_fd = os.pipe()  # the loop polls ``fd``
        os.set_blocking(self._write_fd, False)
        self._previous: dict[int, object] = {}
        self._previous_fd = -1

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        self.count += 1

    def __enter__(self) -> Interrupts:
        self._previous = {signum: signal.signal(signum, self._on_signal) for signum in HANDLED}
        self._previous_fd = signal.set_wakeup_fd(self._write_fd)
        return self

    def acknowledge(self) -> None:
        """Empty the wakeup pipe (the loop saw it)."""
        os.read(self.fd, 64)

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        signal.set_wakeup_fd(self._previous_fd)
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)  # type: ignore[arg-type]
        os.close(self.fd)
        os.close(self._write_fd)
