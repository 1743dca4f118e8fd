"""The stop ladder: a replica that should end gets its stop_timeout, then SIGTERM, then SIGKILL."""

from __future__ import annotations

import signal
from collections.abc import Callable
from typing import Any

from flujo.launch.manifest import FlowSpec
from flujo.launch.replica import Replica
from flujo.launch.timers import Timers

#: A node whose inputs ended is stuck once its counters stood still this long (they come twice a second).
READING_CHECK = 1.0


class StopLadder:
    """Starts and escalates each replica's stop ladder; the escalation is recorded on the replica."""

    def __init__(self, flow: FlowSpec, timers: Timers, say: Callable[[str], None]) -> None:
        self._flow, self._timers, self._say = flow, timers, say

    def start(self, replica: Replica, reading: bool = False) -> None:
        """The replica should end soon: give it stop_timeout, then SIGTERM, then SIGKILL.

        ``reading``: its inputs have ended or been stopped, and it may still be reading what
        they sent: the ladder starts once it has taken or sent no item for its stop_timeout
        (at least READING_CHECK, as it reports its counters twice a second), or when it says
        it is ending (the plain ladder)."""
        record = replica.current
        if record.finished or record.exit_code is not None:
            return
        if record.grace_started and (reading or not record.grace_reading or record.escalated):
            return
        if getattr(record.process, "pending", None):  # its cluster never placed it: nothing to end gracefully
            record.process.withdraw()
            return
        ladder = replica.grace_started(reading)  # a later ladder for the same process supersedes this one
        process, timeout = record.process, self._flow.nodes[replica.config.node].stop_timeout
        wait = max(timeout, READING_CHECK) if reading else timeout

        def moved() -> tuple[Any, Any]:
            return replica.sample.stats.get("items_in"), replica.sample.stats.get("items_out")

        last = moved()

        def escalate(signum: int) -> None:
            nonlocal last
            if (
                replica.current is not record
                or record.ladder is not ladder
                or record.finished
                or record.exit_code is not None
            ):
                return
            if reading and signum == signal.SIGTERM:
                if moved() != last:  # still moving items: not stuck
                    last = moved()
                    self._timers.after(wait, lambda: escalate(signal.SIGTERM))
                    return
                self._say(
                    f'node "{replica.config.label}" moved no item for {wait:g} s after its inputs '
                    "ended or were stopped: sending SIGTERM"
                )
            else:
                doing = "drain" if replica.draining else "end"
                self._say(
                    f'node "{replica.config.label}" did not {doing} within {timeout:g} s: sending '
                    f"{signal.Signals(signum).name}"
                )
            replica.escalated(signal.Signals(signum).name)
            process.signal(signum)
            if signum == signal.SIGTERM:
                self._timers.after(timeout, lambda: escalate(signal.SIGKILL))

        self._timers.after(wait, lambda: escalate(signal.SIGTERM))
