"""Where node output is kept, one folder per run, and how `flujo-launch logs` reads it back.

Layout, under the flow's folder (``<runs>/<flow>/``, see flujo.launch.runs)::

    logs/20261126T153316.123456Z-4242/    one run: <label>.log (rotated: .log.1 is the newest backup)
    logs/20261126T153316.123456Z-4242/run.json   {"flow", "manifest", "started", "pid", "labels"}
    logs/latest -> 20261126T153316.123456Z-4242

Every line is written as ``<UTC time> <text>``, stamped when the launcher relays it
(``2026-11-26T15:33:16.123456Z``: fixed width, so lines sort by time as text). The last
KEEP_RUNS runs are kept; older ones are removed when a new run starts.
"""

from __future__ import annotations

import heapq
import json
import os
import re
import shutil
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from flujo.launch.runs import private_folder, private_runs_folder, runs_folder

KEEP_RUNS = 5
LATEST = "latest"
RUN_INFO = "run.json"
_STAMP_LENGTH = len("2026-11-26T15:33:16.123456Z")


def logs_root(flow: str) -> Path:
    """The folder that holds a flow's runs."""
    return runs_folder() / flow / "logs"


_second: tuple[int, str] = (-1, "")  # the last whole second and its text: one strftime a second


def stamp(when: float) -> str:
    """``when`` (seconds since the epoch) as the fixed-width UTC time that starts each log line."""
    global _second
    whole = int(when)
    second = _second  # one read: threads may replace it meanwhile
    if second[0] != whole:
        second = _second = (whole, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(whole)))
    return f"{second[1]}.{int((when - whole) * 1e6):06d}Z"


def parse_stamp(text: str) -> datetime:
    return datetime.strptime(text, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC)


def new_run(flow: str, info: dict[str, Any], keep: int = KEEP_RUNS) -> Path:
    """Create this run's log folder, point ``latest`` at it, and drop all but the last ``keep`` runs."""
    root = logs_root(flow)
    private_runs_folder(flow)
    private_folder(root)  # the user's alone: no link followed, no one else's folder used
    now = time.time()
    run_id = stamp(now).replace("-", "").replace(":", "") + f"-{os.getpid()}"
    folder = root / run_id
    folder.mkdir(mode=0o700)
    (folder / RUN_INFO).write_text(json.dumps({"flow": flow, "started": stamp(now), "pid": os.getpid(), **info}))
    pointer = root / f".{LATEST}.{os.getpid()}"
    pointer.unlink(missing_ok=True)
    pointer.symlink_to(run_id)
    pointer.replace(root / LATEST)  # atomic: a reader sees the old run or the new one
    for old in runs(flow)[:-keep]:
        shutil.rmtree(root / old, ignore_errors=True)
    return folder


def runs(flow: str) -> list[str]:
    """The flow's kept runs, oldest first."""
    root = logs_root(flow)
    if not root.is_dir():
        return []
    return sorted(
        path.name for path in root.iterdir() if path.is_dir() and not path.is_symlink() and (path / RUN_INFO).exists()
    )


def run_folder(flow: str, run: str | None = None) -> Path:
    """A run's folder: ``None`` for the latest, a run's name, or ``-N`` for N runs before the latest."""
    kept = runs(flow)
    if not kept:
        raise LookupError(f'no logs kept for flow "{flow}"')
    if run is None:
        latest = logs_root(flow) / LATEST
        return latest.resolve() if latest.exists() else logs_root(flow) / kept[-1]
    if re.fullmatch(r"-?\d+", run):
        back = abs(int(run))
        if back >= len(kept):
            raise LookupError(f'flow "{flow}" has only {len(kept)} kept runs: {", ".join(kept)}')
        return logs_root(flow) / kept[-1 - back]
    if run not in kept:
        raise LookupError(f'no run "{run}" of flow "{flow}" (kept: {", ".join(kept)})')
    return logs_root(flow) / run


def run_info(folder: Path) -> dict[str, Any]:
    try:
        return json.loads((folder / RUN_INFO).read_text())
    except (OSError, ValueError):
        return {}


@dataclass(frozen=True, order=True)
class LogLine:
    """One relayed output line; orders by time, then label."""

    at: str  # the stamp, as written
    label: str
    text: str


def _files_of(folder: Path, label: str) -> list[Path]:
    """The label's log file and its rotated backups, oldest first."""
    backups = sorted(
        folder.glob(f"{glob_escape(label)}.log.*"), key=lambda p: -int(p.suffix[1:]) if p.suffix[1:].isdigit() else 0
    )
    current = folder / f"{label}.log"
    return [*backups, *([current] if current.exists() else [])]


def glob_escape(text: str) -> str:
    return re.sub(r"([*?\[])", r"[\1]", text)


def labels_in(folder: Path) -> list[str]:
    """Labels that wrote at least one line in this run."""
    return sorted({path.name.split(".log")[0] for path in folder.glob("*.log*")})


def parse_line(label: str, raw: str) -> LogLine:
    raw = raw.rstrip("\n")
    if len(raw) > _STAMP_LENGTH and raw[_STAMP_LENGTH] == " " and raw[_STAMP_LENGTH - 1] == "Z":
        return LogLine(raw[:_STAMP_LENGTH], label, raw[_STAMP_LENGTH + 1 :])
    if len(raw) == _STAMP_LENGTH and raw.endswith("Z"):
        return LogLine(raw, label, "")
    return LogLine("", label, raw)  # not written by this version: no time


def read_label(folder: Path, label: str) -> Iterator[LogLine]:
    for path in _files_of(folder, label):
        with path.open(encoding="utf-8", errors="replace") as log:
            for raw in log:
                yield parse_line(label, raw)


def merged(folder: Path, labels: Iterable[str]) -> Iterator[LogLine]:
    """Every line of the given labels, interleaved by time (each file is already in time order)."""
    return heapq.merge(*(read_label(folder, label) for label in labels))


def parse_since(text: str, now: datetime | None = None) -> str:
    """``--since``: a duration back from now (``90s``, ``5m``, ``2h``, ``1d``, ``1h30m``) or an ISO
    time (local time unless it names its zone); returns the stamp to compare lines with."""
    now = now or datetime.now(UTC)
    parts = re.findall(r"(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)", text.strip())
    if parts and re.fullmatch(r"(\s*\d+(?:\.\d+)?\s*(ms|s|m|h|d))+\s*", text):
        units = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400}
        start = now - timedelta(seconds=sum(float(amount) * units[unit] for amount, unit in parts))
    else:
        try:
            start = datetime.fromisoformat(text.strip())
        except ValueError:
            raise ValueError(
                f"--since {text!r}: give a duration such as 30s, 5m, 2h, 1d, or a time such as 2026-11-26T15:30:00"
            ) from None
        if start.tzinfo is None:
            start = start.astimezone()  # the local time of this machine
    return stamp(start.timestamp())
