"""Timing, statistics, process hygiene and table printing shared by all benchmark runners."""

from __future__ import annotations

import contextlib
import json
import multiprocessing as mp
import os
import signal
import socket
import statistics
import subprocess
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

#: Baseline processes are started fresh from an empty interpreter, like Flujo's nodes.
MP_CONTEXT = mp.get_context("spawn")


class BenchError(RuntimeError):
    """A run failed (timeout, crash, missing result); the row shows the message."""


@dataclass
class RunOutput:
    """What one run of one chain left behind."""

    result: dict[str, Any]  # the consumer's Recorder data
    reports: list[dict[str, Any]] = field(default_factory=list)  # one per node process
    launch_ns: int = 0  # time.monotonic_ns() just before the first process was started
    wall_s: float = 0.0  # launch to all processes gone


# -- statistics ---------------------------------------------------------------------------
def median(values: Iterable[float]) -> float:
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else float("nan")


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0..100), nearest-rank on the sorted values."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = max(0, min(len(ordered) - 1, round(q / 100.0 * len(ordered) + 0.5) - 1))
    return float(ordered[rank])


def throughput(result: dict[str, Any]) -> float:
    """Items per second between the first and the last arrival at the consumer."""
    span = result["last_ns"] - result["first_ns"]
    if result["count"] < 2 or span <= 0:
        raise BenchError(f"too few items arrived ({result['count']}) to time the run")
    return (result["count"] - 1) * 1e9 / span


def max_in_flight(sent_ns: Sequence[int], arrivals: Sequence[int]) -> int:
    """Most items produced but not yet arrived at the consumer, at any arrival instant."""
    worst, sent_index = 0, 0
    for received, arrival in enumerate(sorted(arrivals)):
        while sent_index < len(sent_ns) and sent_ns[sent_index] <= arrival:
            sent_index += 1
        worst = max(worst, sent_index - received)
    return worst


# -- processes ----------------------------------------------------------------------------
class ProcessSet:
    """multiprocessing children that are always stopped when the block ends, even on error."""

    def __init__(self) -> None:
        self.procs: list[Any] = []

    def start(self, target: Any, *args: Any, name: str = "") -> Any:
        proc = MP_CONTEXT.Process(target=target, args=args, name=name, daemon=True)
        proc.start()
        self.procs.append(proc)
        return proc

    def wait(self, proc: Any, timeout: float) -> None:
        """Wait for ``proc`` to end; raise BenchError on timeout or a non-zero exit."""
        proc.join(timeout)
        if proc.is_alive():
            raise BenchError(f"{proc.name} did not finish within {timeout:.0f} s")
        if proc.exitcode != 0:
            raise BenchError(f"{proc.name} exited with code {proc.exitcode}")

    def __enter__(self) -> ProcessSet:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    def stop(self, grace: float = 1.0) -> None:
        for proc in self.procs:
            if proc.is_alive():
                proc.terminate()
        deadline = time.monotonic() + grace
        for proc in self.procs:
            proc.join(max(0.0, deadline - time.monotonic()))
            if proc.is_alive():
                proc.kill()
                proc.join(1.0)


def run_command(
    cmd: Sequence[str],
    timeout: float,
    cwd: Path | None = None,
    env: dict[str, str] | None = None,
    log: Path | None = None,
) -> int:
    """Run ``cmd`` in its own process group; on timeout or interrupt, stop the whole group.

    Returns the exit code; output goes to ``log`` (or is discarded).
    """
    with open(log, "wb") if log else contextlib.nullcontext(subprocess.DEVNULL) as out:
        proc = subprocess.Popen(
            list(cmd), cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
        try:
            return proc.wait(timeout)
        except subprocess.TimeoutExpired:
            raise BenchError(f"{Path(cmd[0]).name} did not finish within {timeout:.0f} s") from None
        finally:
            _stop_group(proc)


def _stop_group(proc: subprocess.Popen) -> None:
    """Terminate, then kill, what is left of the process group led by ``proc``."""
    for sig, grace in ((signal.SIGTERM, 2.0), (signal.SIGKILL, 2.0)):
        try:
            os.killpg(proc.pid, sig)
        except (ProcessLookupError, PermissionError):
            break
        try:
            proc.wait(grace)
        except subprocess.TimeoutExpired:
            continue
        if sig is signal.SIGTERM:
            # Leader gone; give stragglers in the group a moment, then make sure.
            time.sleep(0.05)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(1.0)


def free_tcp_port() -> int:
    """A loopback TCP port that is free right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def collect(cfg: dict[str, Any], launch_ns: int, wall_s: float) -> RunOutput:
    """Read the consumer's result and every node report a run wrote."""
    path = Path(cfg["result"])
    if not path.exists():
        raise BenchError("the consumer wrote no result")
    result = json.loads(path.read_text())
    reports = [json.loads(p.read_text()) for p in sorted(Path(cfg["report_dir"]).glob("*.json"))]
    return RunOutput(result, reports, launch_ns, wall_s)


def with_barrier(cfg: dict[str, Any], workdir: Path, readers: int) -> dict[str, Any]:
    """``cfg`` plus a start barrier for ``readers`` nodes (see nodecore.node_ready)."""
    folder = workdir / "ready"
    folder.mkdir(exist_ok=True)
    return {**cfg, "ready_dir": str(folder), "ready_count": readers}


# -- printing -----------------------------------------------------------------------------
def fmt(value: Any) -> str:
    """Numbers with sensible precision for a results table."""
    if value is None:
        return "-"
    if isinstance(value, str):
        return value
    if isinstance(value, int):
        return str(value)
    if value != value:  # NaN
        return "-"
    magnitude = abs(value)
    if magnitude >= 1000:
        return f"{value:,.0f}"
    if magnitude >= 100:
        return f"{value:.0f}"
    if magnitude >= 10:
        return f"{value:.1f}"
    if magnitude >= 1:
        return f"{value:.2f}"
    return f"{value:.3f}"


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A Markdown table (also readable as plain text) with aligned columns."""
    cells = [list(headers)] + [[fmt(v) for v in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    lines = []
    for index, row in enumerate(cells):
        lines.append(
            "| "
            + " | ".join(
                c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths, strict=False))
            )
            + " |"
        )
        if index == 0:
            lines.append("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    return "\n".join(lines)
