"""Node-side logic shared by every system under test (Flujo and all baselines).

Every chain in the benchmark is producer -> processor(s) -> consumer. What the producer
emits, what the processor does and what the consumer records are defined once here, so
Flujo and each baseline move exactly the same items and measure them the same way.

This module only imports the standard library, numpy and psutil: it is loaded inside
Flujo node processes, multiprocessing children and the videoflow driver alike.

A run is described by a plain ``cfg`` dict (it must survive JSON, TOML and pickling):

    workload      "small" | "frame" | "latency" | "cpu" | "backpressure" | "startup"
    shm_born      (Flujo) frames and latency payloads live in a shared-memory frame buffer
    n             items to produce
    sizes         payload sizes in bytes ("latency"), one segment after the other (a size may
                  come twice, at two rates: results are keyed "<bytes>@<items/s>")
    rates         items per second for each segment ("latency"; 0 = as fast as possible)
    counts        samples for each segment ("latency")
    warmup        items sent before the measured ones ("latency"; not recorded)
    payload       payload size in bytes ("backpressure")
    work_ms       CPU milliseconds of busy work per item in the processor ("cpu")
    sleep_ms      milliseconds the consumer sleeps per item ("backpressure")
    result        path of the consumer's JSON result file
    report_dir    folder where every node writes a small JSON report (pid, memory)
    ready_dir     (baselines) start barrier: every reading node creates a file here once
    ready_count   its sockets/queues are set up; the producer waits for this many files.
                  Flujo's launcher has its own barrier (producers start when all are ready).
"""

from __future__ import annotations

import json
import os
import resource
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

#: 1080p BGR frame, as a camera would deliver it.
FRAME_SHAPE = (1080, 1920, 3)
_FRAME: np.ndarray | None = None


def frame() -> np.ndarray:
    """The preallocated 1080p frame that the frame workload sends again and again.

    Filled with a pattern (not zeros) so every page is really backed by memory.
    """
    global _FRAME
    if _FRAME is None:
        _FRAME = (np.arange(np.prod(FRAME_SHAPE), dtype=np.uint32) % 251).astype(np.uint8).reshape(FRAME_SHAPE)
    return _FRAME


def born_in_shm(cfg: dict[str, Any], array: np.ndarray) -> np.ndarray:
    """``array``, or with ``cfg["shm_born"]`` (Flujo only) a copy of it in a Flujo frame buffer:
    the data is born in shared memory and sent again and again without a copy, as the
    baselines send one preallocated buffer again and again."""
    if not cfg.get("shm_born"):
        return array
    from flujo.shm import frame_buffer  # only inside Flujo nodes

    buffer = frame_buffer(array.shape, array.dtype)
    buffer[...] = array
    return buffer


def rss_bytes() -> int:
    """Resident set size of this process now."""
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def max_rss_bytes() -> int:
    """Peak resident set size of this process so far (ru_maxrss is in KiB on Linux)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def node_ready(cfg: dict[str, Any]) -> None:
    """Tell the producer that this node can receive (baselines only; see ``ready_dir``)."""
    folder = cfg.get("ready_dir")
    if folder:
        Path(folder, str(os.getpid())).touch()


def wait_for_chain(cfg: dict[str, Any], timeout: float = 120.0) -> None:
    """Block until ``ready_count`` nodes have called :func:`node_ready` (no-op without a barrier)."""
    folder = cfg.get("ready_dir")
    if not folder:
        return
    deadline = time.monotonic() + timeout
    while len(os.listdir(folder)) < int(cfg["ready_count"]):
        if time.monotonic() > deadline:
            raise TimeoutError("the chain did not get ready")
        time.sleep(0.001)


def expected_items(cfg: dict[str, Any]) -> int:
    """How many items the consumer of a run should see."""
    if cfg["workload"] == "latency":
        return sum(cfg["counts"]) + int(cfg.get("warmup", 0))
    return int(cfg["n"])


def produce_items(cfg: dict[str, Any]) -> Iterator[Any]:
    """The items of one run, in order. Pacing (for latency) happens here too.

    Starts with the start barrier (baselines), so the first item is sent to a live chain.
    """
    wait_for_chain(cfg)
    workload, n = cfg["workload"], int(cfg.get("n", 0))
    if workload in ("small", "startup", "cpu"):
        for i in range(n):
            yield {"i": i, "t": time.time(), "name": "abc", "v": 1.5}
    elif workload == "frame":
        image = born_in_shm(cfg, frame())
        for i in range(n):
            yield {"i": i, "frame": image}
    elif workload == "latency":
        i = 0
        next_ns = time.monotonic_ns()
        # Warm-up: connections settle, first buffers get allocated; the consumer ignores these.
        warm = np.full(cfg["sizes"][0], 7, dtype=np.uint8)
        for _ in range(int(cfg.get("warmup", 0))):
            next_ns += int(1e9 / cfg["rates"][0])
            _sleep_until(next_ns)
            yield {"i": i, "ts": time.monotonic_ns(), "payload": warm, "warmup": True}
            i += 1
        for size, rate, count in zip(cfg["sizes"], cfg["rates"], cfg["counts"], strict=False):
            payload = born_in_shm(cfg, np.full(size, 7, dtype=np.uint8))
            period_ns = int(1e9 / rate) if rate else 0
            for _ in range(count):
                if period_ns:
                    next_ns += period_ns
                    _sleep_until(next_ns)
                yield {"i": i, "ts": time.monotonic_ns(), "payload": payload}
                i += 1
    elif workload == "backpressure":
        size = int(cfg["payload"])
        for i in range(n):
            # A fresh array per item: anything the chain buffers shows up as memory.
            yield {"i": i, "ts": time.monotonic_ns(), "payload": np.full(size, i % 251, dtype=np.uint8)}
    else:
        raise ValueError(f"unknown workload {workload!r}")


def latency_key(size: int, rate: float) -> str:
    """How the result file names the latencies of a segment: "<bytes>@<items/s>"."""
    return f"{size}@{rate:g}"


def _latency_segments(cfg: dict[str, Any]) -> list[tuple[int, str]]:
    """(number of the segment's last item, its key) for each segment of the latency workload,
    in the order produce_items sends them (after the warm-up)."""
    segments, last = [], int(cfg.get("warmup", 0)) - 1
    for size, rate, count in zip(cfg["sizes"], cfg["rates"], cfg["counts"], strict=True):
        last += count
        segments.append((last, latency_key(size, rate)))
    return segments


def _sleep_until(deadline_ns: int) -> None:
    """Sleep until ``deadline_ns`` on the monotonic clock; spin the last ~0.2 ms for precision."""
    while True:
        remaining = deadline_ns - time.monotonic_ns()
        if remaining <= 0:
            return
        if remaining > 300_000:
            time.sleep((remaining - 200_000) / 1e9)


def busy_work(ms: float) -> None:
    """Burn ``ms`` milliseconds of this thread's CPU time (a busy loop, never a sleep)."""
    end = time.thread_time_ns() + int(ms * 1e6)
    x = 0
    while time.thread_time_ns() < end:
        for _ in range(200):
            x += 1


def process_item(cfg: dict[str, Any], item: Any) -> Any:
    """The processor: identity, plus busy CPU work in the "cpu" workload."""
    work = cfg.get("work_ms")
    if work:
        busy_work(work)
    return item


class Recorder:
    """The consumer's bookkeeping: arrival times, latencies per segment; written as JSON."""

    def __init__(self, cfg: dict[str, Any]) -> None:
        self.cfg = cfg
        self.count = 0
        self.first_ns = 0
        self.last_ns = 0
        self.latencies: dict[str, list[int]] = {}  # latency_key(size, rate) -> arrival - send, ns
        self._segments = _latency_segments(cfg) if cfg["workload"] == "latency" else []
        self.arrivals: list[int] = []
        self.keep_arrivals = cfg["workload"] == "backpressure"
        self.sleep_s = float(cfg.get("sleep_ms") or 0) / 1000.0

    def consume(self, item: Any) -> None:
        """Record one item's arrival (and latency when it carries a send timestamp)."""
        now = time.monotonic_ns()
        if not self.count:
            self.first_ns = now
        self.last_ns = now
        self.count += 1
        if "ts" in item and not item.get("warmup"):
            if self.keep_arrivals:
                self.arrivals.append(now)
            else:
                self.latencies.setdefault(self._segment_of(item), []).append(now - item["ts"])
        if self.sleep_s:
            time.sleep(self.sleep_s)

    def _segment_of(self, item: Any) -> str:
        """The latency segment (size and rate) an item was sent in, from its number."""
        for last, key in self._segments:
            if item["i"] <= last:
                return key
        return latency_key(int(item["payload"].nbytes), 0)  # (past the last segment: none are)

    def as_dict(self) -> dict[str, Any]:
        return {
            "count": self.count,
            "first_ns": self.first_ns,
            "last_ns": self.last_ns,
            "latencies": self.latencies,
            "arrivals": self.arrivals,
        }

    def write(self) -> None:
        """Write the result file (atomically: the harness may read it as soon as it exists)."""
        _write_json(Path(self.cfg["result"]), self.as_dict())


class NodeReport:
    """Per-process memory report: RSS when the node opened and peak RSS at its close."""

    def __init__(self, cfg: dict[str, Any], role: str) -> None:
        self.cfg, self.role = cfg, role
        self.rss_open = rss_bytes()
        self.cpu_open = _cpu_seconds()  # start-up (imports, sockets) is not the per-item cost
        self.waits_open = _voluntary_switches()
        self.sent_ns: list[int] = []  # producer send times ("backpressure" only)

    def write(self) -> None:
        folder = self.cfg.get("report_dir")
        if not folder:
            return
        cpu = _cpu_seconds()
        data = {
            "role": self.role,
            "pid": os.getpid(),
            "rss_open": self.rss_open,
            "max_rss": max_rss_bytes(),
            "sent_ns": self.sent_ns,
            "cpu_s": cpu,
            "cpu_run_s": cpu - self.cpu_open,
            "waits_run": _voluntary_switches() - self.waits_open,
        }
        _write_json(Path(folder) / f"{self.role}-{os.getpid()}.json", data)


def _cpu_seconds() -> float:
    """User + system CPU time of this process (all its threads) so far."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _voluntary_switches() -> int:
    """Times this process (all its threads) gave up the CPU to wait: its wake-ups."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_nvcsw


def tracked_items(cfg: dict[str, Any], report: NodeReport) -> Iterator[Any]:
    """``produce_items`` that also notes send times in ``report`` (backpressure only)."""
    track = cfg["workload"] == "backpressure"
    for item in produce_items(cfg):
        if track:
            report.sent_ns.append(item["ts"])
        yield item


def _write_json(path: Path, data: dict[str, Any]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data))
    os.replace(tmp, path)
