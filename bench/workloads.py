"""The six workloads: parameters per mode, which systems run them, metrics and tables.

Every run starts fresh processes. Within a repetition all variants of a workload run
back to back (Flujo first, then each baseline), so slow phases of a noisy machine hit
every system alike; tables report the median over repetitions.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench import flujo_chain, mp_queue, raw_zmq, videoflow_chain
from bench.harness import BenchError, RunOutput, markdown_table, max_in_flight, median, percentile, throughput
from bench.nodecore import FRAME_SHAPE, expected_items, latency_key

FRAME_BYTES = FRAME_SHAPE[0] * FRAME_SHAPE[1] * FRAME_SHAPE[2]
MB = 1024 * 1024
#: The latency workload's segments, sent one after the other: (name, payload bytes, items/s).
#: 4 MB at 100/s is 0.4 GB/s, well below the 2-hop capacity (about 1 GB/s here), so the numbers
#: are latency, not queueing. A process that sleeps 10 ms between items wakes up more slowly
#: than one that sleeps 2 ms (idle CPUs, cold caches): "8 B at 100/s" measures that floor at the
#: 4 MB items' rate, so the 4 MB figure is read against it rather than against 8 B at 500/s.
LATENCY_SEGMENTS = [("8 B", 8, 500), ("4 KB", 4096, 500), ("8 B at 100/s", 8, 100), ("4 MB", 4 * MB, 100)]
#: Unrecorded items sent first (0.2 s at the first rate) so connections settle.
LATENCY_WARMUP = 100
#: Systems of the last workloads (quick mode, under a minute, keeps fewer: see each workload).
QUICK_TRIO = ["flujo", "raw-ipc", "mp"]


@dataclass
class Variant:
    """One system (with options) running one workload."""

    label: str
    runner: Callable[..., RunOutput]
    options: dict[str, Any] = field(default_factory=dict)
    cfg: dict[str, Any] = field(default_factory=dict)  # overrides of the workload's cfg (e.g. n)
    skip: str | None = None  # why this variant cannot run


def _systems(names: list[str]) -> list[Variant]:
    """Variants of the plain chain for the named systems."""
    table = {
        "flujo": Variant("flujo", flujo_chain.run_chain),
        "flujo-born": Variant("flujo born in shm", flujo_chain.run_chain, cfg={"shm_born": True}),
        "flujo-inline": Variant("flujo inline", flujo_chain.run_chain, {"shm": False}),
        # Acknowledged, kept and replayable edges (docs/PROTOCOL.md 9): the cost of losing nothing on a crash.
        "flujo-lossless": Variant("flujo lossless", flujo_chain.run_chain, {"shm": False, "lossless": True}),
        # The same with arrays in shared memory: each message's slot is kept until acknowledged.
        "flujo-lossless-shm": Variant("flujo lossless shm", flujo_chain.run_chain, {"lossless": True}),
        "flujo-lossless-born": Variant(
            "flujo lossless born in shm", flujo_chain.run_chain, {"lossless": True}, cfg={"shm_born": True}
        ),
        "flujo-tcp": Variant("flujo-tcp", flujo_chain.run_chain, {"transport": "tcp"}),  # CURVE, the default
        "flujo-tcp-plain": Variant("flujo-tcp-plain", flujo_chain.run_chain, {"transport": "tcp", "insecure": True}),
        "raw-ipc": Variant("pyzmq-ipc", raw_zmq.run_chain, {"transport": "ipc"}),
        "raw-tcp": Variant("pyzmq-tcp", raw_zmq.run_chain, {"transport": "tcp"}),
        "mp": Variant("mp.Queue", mp_queue.run_chain),
        "videoflow": Variant("videoflow", videoflow_chain.run_chain, skip=videoflow_chain.available()),
    }
    return [table[name] for name in names]


class Workload:
    """Base: subclasses set ``name``/``title`` and implement the four hooks."""

    name = ""
    title = ""
    what = ""

    def __init__(self, quick: bool) -> None:
        self.quick = quick

    def cfg(self) -> dict[str, Any]:
        raise NotImplementedError

    def variants(self) -> list[Variant]:
        raise NotImplementedError

    def metrics(self, out: RunOutput, cfg: dict[str, Any]) -> dict[str, float]:
        raise NotImplementedError

    def table(self, medians: dict[str, dict[str, float]], runs: dict[str, int]) -> str:
        raise NotImplementedError

    def timeout(self) -> float:
        return 90.0 if self.quick else 240.0


def _ratio(a: float | None, b: float | None) -> float | None:
    if a is None or b is None or b != b or a != a or b == 0:
        return None
    return a / b


def _ratio_columns(medians: dict[str, dict[str, float]], metric: str, label: str) -> float | None:
    flujo = medians.get("flujo", {}).get(metric)
    return _ratio(flujo, medians.get(label, {}).get(metric)) if label != "flujo" else None


# -- 1 and 2: throughput ---------------------------------------------------------------------
class SmallItems(Workload):
    name = "small"
    title = "Small items, 2 hops (producer -> identity -> consumer)"
    what = 'items like {"i": i, "t": time.time(), "name": "abc", "v": 1.5}; items/s at the consumer'

    def cfg(self) -> dict[str, Any]:
        return {"workload": "small", "n": 10_000 if self.quick else 100_000}

    def variants(self) -> list[Variant]:
        names = (
            ["flujo", "flujo-lossless", "raw-ipc", "videoflow"]
            if self.quick
            else ["flujo", "flujo-lossless", "flujo-tcp", "flujo-tcp-plain", "raw-ipc", "raw-tcp", "mp", "videoflow"]
        )
        variants = _systems(names)
        for v in variants:
            if v.label == "videoflow":  # ~15x slower: fewer items for the same run time
                v.cfg = {"n": 2_000 if self.quick else 10_000}
        return variants

    def metrics(self, out: RunOutput, cfg: dict[str, Any]) -> dict[str, float]:
        _check_count(out, cfg)
        cpu = {key.replace("CPU ms", "CPU µs"): ms * 1000 for key, ms in _cpu_per_item(out, cfg).items()}
        waits = {
            f"{r['role']} waits/kitem": r["waits_run"] * 1000 / int(cfg["n"]) for r in out.reports if "waits_run" in r
        }
        return {"items/s": throughput(out.result), **cpu, **waits}

    def table(self, medians: dict[str, dict[str, float]], runs: dict[str, int]) -> str:
        rows = [
            [
                label,
                m.get("items/s"),
                *[m.get(f"{r} CPU µs") for r in ROLES],
                runs[label],
                _ratio_columns(medians, "items/s", label),
            ]
            for label, m in medians.items()
        ]
        columns = ["system", "items/s", *[f"{r} CPU µs" for r in ROLES], "runs", "flujo ÷ system"]
        return markdown_table(columns, rows)


class Frames(Workload):
    name = "frame"
    title = "1080p BGR frames (uint8 1080x1920x3, 6.2 MB), 2 hops"
    what = (
        "one preallocated frame sent again and again, in a dict {'i': i, 'frame': array}; \"flujo\" "
        'copies it into shared memory per item, "flujo born in shm" preallocates it in a frame buffer, '
        '"lossless" rows acknowledge and keep each slot until acknowledged (lossless = true), '
        '"flujo inline" turns shared memory off (shm = false); CPU: user + system ms per frame in each process'
    )

    def cfg(self) -> dict[str, Any]:
        return {"workload": "frame", "n": 100 if self.quick else 600}

    def variants(self) -> list[Variant]:
        names = (
            ["flujo", "flujo-born", "flujo-lossless-shm", "flujo-lossless-born", "flujo-inline", "raw-ipc"]
            if self.quick
            else [
                "flujo",
                "flujo-born",
                "flujo-lossless-shm",
                "flujo-lossless-born",
                "flujo-inline",
                "flujo-lossless",
                "flujo-tcp",
                "flujo-tcp-plain",
                "raw-ipc",
                "raw-tcp",
                "mp",
                "videoflow",
            ]
        )
        variants = _systems(names)
        for v in variants:
            if v.label in ("videoflow", "mp.Queue"):
                v.cfg = {"n": 30 if self.quick else 150}
        return variants

    def metrics(self, out: RunOutput, cfg: dict[str, Any]) -> dict[str, float]:
        _check_count(out, cfg)
        fps = throughput(out.result)
        return {"frames/s": fps, "GB/s": fps * FRAME_BYTES / 1e9, **_cpu_per_item(out, cfg)}

    def table(self, medians: dict[str, dict[str, float]], runs: dict[str, int]) -> str:
        rows = [
            [
                label,
                m.get("frames/s"),
                m.get("GB/s"),
                *[m.get(f"{r} CPU ms") for r in ROLES],
                runs[label],
                _ratio_columns(medians, "frames/s", label),
            ]
            for label, m in medians.items()
        ]
        return markdown_table(
            ["system", "frames/s", "GB/s", *[f"{r} CPU ms" for r in ROLES], "runs", "flujo ÷ system"], rows
        )


ROLES = ("producer", "processor", "consumer")


def _cpu_per_item(out: RunOutput, cfg: dict[str, Any]) -> dict[str, float]:
    """CPU milliseconds per item in each role (summed over a role's processes; user + system,
    every thread, from the node's start (after imports and set-up) to its end)."""
    totals: dict[str, float] = {}
    for report in out.reports:
        if "cpu_s" in report:
            totals[report["role"]] = totals.get(report["role"], 0.0) + report.get("cpu_run_s", report["cpu_s"])
    return {f"{role} CPU ms": seconds * 1000 / max(1, int(cfg["n"])) for role, seconds in totals.items()}


class FanOut(Workload):
    name = "fanout"
    title = "1080p frames fanned out to 3 readers, and through 2 processor replicas"
    what = (
        'the frame workload\'s items; "3 readers": producer -> processor -> 3 consumers (frames/s at '
        'one of them, every one gets every frame); "2 replicas": producer -> 2 processor replicas -> '
        "consumer; shared memory (frames born in shm) against shm = false and raw pyzmq ipc"
    )

    def cfg(self) -> dict[str, Any]:
        return {"workload": "frame", "n": 100 if self.quick else 400}

    def variants(self) -> list[Variant]:
        born = {"shm_born": True}
        return [
            Variant("flujo shm, 3 readers", flujo_chain.run_chain, {"readers": 3}, cfg=born),
            Variant("flujo inline, 3 readers", flujo_chain.run_chain, {"readers": 3, "shm": False}),
            Variant("flujo shm, 2 replicas", flujo_chain.run_chain, {"replicas": 2}, cfg=born),
            Variant("flujo inline, 2 replicas", flujo_chain.run_chain, {"replicas": 2, "shm": False}),
            Variant("pyzmq-ipc, 2 replicas", raw_zmq.run_chain, {"transport": "ipc", "replicas": 2}),
        ]

    def metrics(self, out: RunOutput, cfg: dict[str, Any]) -> dict[str, float]:
        _check_count(out, cfg)
        return {"frames/s": throughput(out.result), **_cpu_per_item(out, cfg)}

    def table(self, medians: dict[str, dict[str, float]], runs: dict[str, int]) -> str:
        rows = [
            [label, m.get("frames/s"), *[m.get(f"{r} CPU ms") for r in ROLES], runs[label]]
            for label, m in medians.items()
        ]
        return markdown_table(["system", "frames/s", *[f"{r} CPU ms (all)" for r in ROLES], "runs"], rows)


# -- 3: latency --------------------------------------------------------------------------------
class Latency(Workload):
    name = "latency"
    title = "Latency per hop at a fixed rate (2 hops; (arrival - send) / 2)"
    what = (
        "uint8 arrays of 8 B and 4 KB at 500 items/s, then 8 B and 4 MB at 100 items/s, one segment "
        'after the other, paced by the producer, after 100 unrecorded warm-up items; "8 B at 100/s" '
        "is the floor at the 4 MB items' rate (processes idle 10 ms between items wake up more slowly)"
    )

    def cfg(self) -> dict[str, Any]:
        return {
            "workload": "latency",
            "sizes": [size for _, size, _ in LATENCY_SEGMENTS],
            "rates": [rate for _, _, rate in LATENCY_SEGMENTS],
            "warmup": LATENCY_WARMUP,
            "counts": [100, 100, 50, 50] if self.quick else [1000, 1000, 400, 400],
        }

    def variants(self) -> list[Variant]:
        return _systems(
            ["flujo", "flujo-born", "raw-ipc"]
            if self.quick
            else ["flujo", "flujo-born", "flujo-inline", "raw-ipc", "raw-tcp", "mp"]
        )

    def metrics(self, out: RunOutput, cfg: dict[str, Any]) -> dict[str, float]:
        _check_count(out, cfg)
        result: dict[str, float] = {}
        for name, size, rate in LATENCY_SEGMENTS:
            samples = out.result["latencies"].get(latency_key(size, rate), [])
            per_hop = [v / 2 / 1000.0 for v in samples]  # µs
            for q in (50, 90, 99):
                result[f"{name} p{q}"] = percentile(per_hop, q)
        return result

    def table(self, medians: dict[str, dict[str, float]], runs: dict[str, int]) -> str:
        columns = [f"{name} {q}" for name, _, _ in LATENCY_SEGMENTS for q in ("p50", "p90", "p99")]
        rows = [[label, *[m.get(c) for c in columns], runs[label]] for label, m in medians.items()]
        flujo = medians.get("flujo")
        if flujo:
            for label, m in medians.items():
                if label != "flujo":
                    rows.append([f"flujo ÷ {label}", *[_ratio(flujo.get(c), m.get(c)) for c in columns], ""])
        return markdown_table(["system (µs per hop)", *columns, "runs"], rows)


# -- 4: replica scaling -------------------------------------------------------------------------
class Scaling(Workload):
    name = "scaling"
    title = "Replica scaling: 10 ms of CPU work per item, 1 vs 2 processor replicas"
    what = "busy loop on thread CPU time; 2 cores run producer, replicas and consumer"

    def cfg(self) -> dict[str, Any]:
        return {"workload": "cpu", "n": 40 if self.quick else 300, "work_ms": 10}

    def variants(self) -> list[Variant]:
        out = []
        for base in _systems(QUICK_TRIO[:1] if self.quick else QUICK_TRIO):
            for replicas in (1, 2):
                out.append(Variant(f"{base.label} x{replicas}", base.runner, {**base.options, "replicas": replicas}))
        return out

    def metrics(self, out: RunOutput, cfg: dict[str, Any]) -> dict[str, float]:
        _check_count(out, cfg)
        return {"items/s": throughput(out.result)}

    def table(self, medians: dict[str, dict[str, float]], runs: dict[str, int]) -> str:
        rows = []
        for label in [name[:-3] for name in medians if name.endswith(" x1")]:
            one = medians.get(f"{label} x1", {}).get("items/s")
            two = medians.get(f"{label} x2", {}).get("items/s")
            rows.append([label, one, two, _ratio(two, one), runs.get(f"{label} x1", 0)])
        return markdown_table(["system", "items/s x1", "items/s x2", "speed-up", "runs"], rows)


# -- 5: backpressure ------------------------------------------------------------------------------
class Backpressure(Workload):
    name = "backpressure"
    title = "Backpressure: fast producer of 4 MB arrays, consumer sleeping 20 ms per item, queue 2"
    what = "fresh 4 MB array per item; peak RSS growth per process (ru_maxrss at exit - RSS at open)"
    queue = 2

    def cfg(self) -> dict[str, Any]:
        return {"workload": "backpressure", "n": 30 if self.quick else 150, "payload": 4 * MB, "sleep_ms": 20}

    def variants(self) -> list[Variant]:
        variants = _systems(QUICK_TRIO[:1] if self.quick else QUICK_TRIO)
        for v in variants:
            v.options = {
                **v.options,
                ("maxsize" if v.label == "mp.Queue" else "queue" if v.label == "flujo" else "hwm"): self.queue,
            }
        return variants

    def metrics(self, out: RunOutput, cfg: dict[str, Any]) -> dict[str, float]:
        _check_count(out, cfg)
        result: dict[str, float] = {}
        sent: list[int] = []
        for report in out.reports:
            growth = (report["max_rss"] - report["rss_open"]) / MB
            key = f"{report['role']} MB"
            result[key] = max(result.get(key, 0.0), growth)
            sent += report.get("sent_ns") or []
        result["max in flight"] = float(max_in_flight(sorted(sent), out.result["arrivals"]))
        result["items/s"] = throughput(out.result)
        return result

    def table(self, medians: dict[str, dict[str, float]], runs: dict[str, int]) -> str:
        rows = []
        for label, m in medians.items():
            roles = ("producer", "processor", "consumer")
            arrays = [None if m.get(f"{r} MB") is None else m[f"{r} MB"] / 4 for r in roles]
            rows.append(
                [
                    label,
                    m.get("producer MB"),
                    arrays[0],
                    m.get("processor MB"),
                    arrays[1],
                    m.get("consumer MB"),
                    arrays[2],
                    m.get("max in flight"),
                    m.get("items/s"),
                    runs[label],
                ]
            )
        return markdown_table(
            [
                "system",
                "producer MB",
                "(arrays)",
                "processor MB",
                "(arrays)",
                "consumer MB",
                "(arrays)",
                "max arrays in flight",
                "items/s",
                "runs",
            ],
            rows,
        )


# -- 6: start-up ----------------------------------------------------------------------------------
class Startup(Workload):
    name = "startup"
    title = "Start-up: launch a 10-node chain (producer, 8 identity processors, consumer) to first item"
    what = "time from starting the launcher (or the first process) to the first arrival at the consumer"

    def cfg(self) -> dict[str, Any]:
        return {"workload": "startup", "n": 20}

    def variants(self) -> list[Variant]:
        variants = _systems(QUICK_TRIO[:1] if self.quick else QUICK_TRIO)
        for v in variants:
            v.options = {**v.options, "stages": 8}
        return variants

    def metrics(self, out: RunOutput, cfg: dict[str, Any]) -> dict[str, float]:
        _check_count(out, cfg)
        return {"first item s": (out.result["first_ns"] - out.launch_ns) / 1e9, "whole run s": out.wall_s}

    def table(self, medians: dict[str, dict[str, float]], runs: dict[str, int]) -> str:
        rows = [
            [
                label,
                m.get("first item s"),
                m.get("whole run s"),
                runs[label],
                _ratio_columns(medians, "first item s", label),
            ]
            for label, m in medians.items()
        ]
        return markdown_table(["system", "to first item (s)", "whole run (s)", "runs", "flujo ÷ system"], rows)


WORKLOADS: dict[str, type[Workload]] = {
    w.name: w for w in (SmallItems, Frames, FanOut, Latency, Scaling, Backpressure, Startup)
}


def _check_count(out: RunOutput, cfg: dict[str, Any]) -> None:
    expected = expected_items(cfg)
    if out.result["count"] != expected:
        raise BenchError(f"consumer saw {out.result['count']} of {expected} items")


def run_once(workload: Workload, variant: Variant, scratch: Path) -> dict[str, float]:
    """One fresh run of one variant; returns its metrics."""
    workdir = Path(tempfile.mkdtemp(prefix=f"{workload.name}-", dir=scratch))
    (workdir / "reports").mkdir()
    cfg = {
        **workload.cfg(),
        **variant.cfg,
        "result": str(workdir / "result.json"),
        "report_dir": str(workdir / "reports"),
    }
    out = variant.runner(cfg, workdir, workload.timeout(), **variant.options)
    return workload.metrics(out, cfg)


def medians_of(runs: list[dict[str, Any]]) -> tuple[dict[str, dict[str, float]], dict[str, int]]:
    """Per variant label: the median of each metric over its successful runs, and their count."""
    by_label: dict[str, list[dict[str, float]]] = {}
    for run in runs:
        by_label.setdefault(run["system"], [])
        if "metrics" in run:
            by_label[run["system"]].append(run["metrics"])
    medians = {
        label: {key: median(m[key] for m in ms if key in m) for key in (ms[0] if ms else {})}
        for label, ms in by_label.items()
    }
    return medians, {label: len(ms) for label, ms in by_label.items()}


# Processors in other languages (bench/foreign.py builds on the classes above).
from bench.foreign import ForeignGray, ForeignProcessors  # noqa: E402

WORKLOADS[ForeignProcessors.name] = ForeignProcessors
WORKLOADS[ForeignGray.name] = ForeignGray
