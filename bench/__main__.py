"""``python -m bench``: run the workloads for Flujo and its baselines, print medians and ratios.

python -m bench --quick                 # 3 repetitions, small N, fewer baselines (under a minute)
python -m bench                         # 5 repetitions, runs of ~1-3 s each (about 13 minutes)
python -m bench --only small,frame      # some workloads only
python -m bench --json results.json     # also save every run and the medians
python -m bench --profile [--lossless]  # cProfile the Flujo small-item chain's nodes
"""

from __future__ import annotations

import argparse
import datetime
import io
import json
import os
import platform
import pstats
import signal
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench import flujo_chain
from bench.workloads import WORKLOADS, Variant, Workload, medians_of, run_once


def machine() -> dict[str, Any]:
    """What the numbers were measured on."""
    import msgpack
    import numpy
    import zmq

    model = "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        from importlib.metadata import version

        videoflow = version("videoflow")
    except Exception:
        videoflow = None
    return {
        "nproc": os.cpu_count(),
        "cpu": model,
        "python": platform.python_version(),
        "pyzmq": zmq.__version__,
        "libzmq": zmq.zmq_version(),
        "numpy": numpy.__version__,
        "msgpack": ".".join(map(str, msgpack.version)),
        "videoflow": videoflow,
        "kernel": platform.release(),
        "loadavg_start": os.getloadavg()[0],
    }


def run_workload(workload: Workload, reps: int, scratch: Path, flujo_missing: str | None) -> dict[str, Any]:
    """All repetitions of one workload, variants interleaved within each repetition."""
    variants = workload.variants()
    for v in variants:
        if v.label.startswith("flujo") and flujo_missing:
            v.skip = flujo_missing
    runs: list[dict[str, Any]] = []
    for rep in range(reps):
        for variant in variants:
            runs.append(_run_variant(workload, variant, rep, scratch))
    medians, counts = medians_of(runs)
    return {
        "title": workload.title,
        "what": workload.what,
        "cfg": workload.cfg(),
        "runs": runs,
        "medians": medians,
        "counts": counts,
        "table": workload.table(medians, counts),
        "errors": sorted({f"{r['system']}: {r['error']}" for r in runs if "error" in r}),
    }


def _run_variant(workload: Workload, variant: Variant, rep: int, scratch: Path) -> dict[str, Any]:
    record: dict[str, Any] = {"system": variant.label, "rep": rep}
    if variant.skip:
        record["error"] = f"not run: {variant.skip}"
        return record
    started = time.monotonic()
    try:
        record["metrics"] = run_once(workload, variant, scratch)
    except Exception as error:
        record["error"] = f"{type(error).__name__}: {error}"
    record["seconds"] = round(time.monotonic() - started, 2)
    shown = record.get("metrics") or {"error": record.get("error", "")[:120]}
    brief = ", ".join(f"{k} {v:,.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in list(shown.items())[:3])
    print(f"  [{workload.name} {rep + 1}] {variant.label:<16} {brief}  ({record['seconds']:.1f} s)", file=sys.stderr)
    return record


def profile(scratch: Path, lossless: bool = False) -> None:
    """Run the small-item chain once with every Flujo node under cProfile; print the top entries."""
    from bench.workloads import SmallItems

    workload = SmallItems(quick=True)
    variant = Variant(
        "flujo", flujo_chain.run_chain, {"profile": True, **({"shm": False, "lossless": True} if lossless else {})}
    )
    metrics = run_once(workload, variant, scratch)
    print(f"profiled run: {metrics['items/s']:,.0f} items/s (profiling slows it down)")
    for prof in sorted(scratch.glob("*/*.prof")):
        out = io.StringIO()
        pstats.Stats(str(prof), stream=out).sort_stats("tottime").print_stats(15)
        print(f"\n## {prof.stem} ({prof})\n{out.getvalue()}")


def _interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="3 repetitions of short runs")
    parser.add_argument("--only", default="", help=f"comma-separated workloads: {', '.join(WORKLOADS)}")
    parser.add_argument("--reps", type=int, default=0, help="repetitions (default 3 quick, 5 full)")
    parser.add_argument("--json", dest="json_path", help="save runs, medians and the machine here")
    parser.add_argument("--profile", action="store_true", help="profile the Flujo small-item chain and stop")
    parser.add_argument("--lossless", action="store_true", help="with --profile: a lossless flow (PROTOCOL 9)")
    parser.add_argument("--keep", action="store_true", help="keep the scratch folder (manifests, logs, results)")
    args = parser.parse_args(argv)

    names = [n.strip() for n in args.only.split(",") if n.strip()] or list(WORKLOADS)
    unknown = [n for n in names if n not in WORKLOADS]
    if unknown:
        parser.error(f"unknown workload(s) {', '.join(unknown)}; choose from {', '.join(WORKLOADS)}")
    reps = args.reps or (3 if args.quick else 5)

    # SIGTERM unwinds like Ctrl-C, so every runner's cleanup still stops its processes.
    signal.signal(signal.SIGTERM, _interrupt)
    scratch_dir = tempfile.mkdtemp(prefix="flujo-bench-")
    scratch = Path(scratch_dir)
    try:
        if args.profile:
            profile(scratch, args.lossless)
            return 0
        info = machine()
        flujo_missing = flujo_chain.available()
        if flujo_missing:
            print(f"Flujo rows skipped: {flujo_missing}", file=sys.stderr)
        started = time.monotonic()
        report: dict[str, Any] = {
            "mode": "quick" if args.quick else "full",
            "reps": reps,
            "machine": info,
            "date": datetime.datetime.now().isoformat(timespec="seconds"),
            "workloads": {},
        }
        for name in names:
            workload = WORKLOADS[name](quick=args.quick)
            print(f"{workload.title} ...", file=sys.stderr)
            report["workloads"][name] = run_workload(workload, reps, scratch, flujo_missing)
        info["loadavg_end"] = os.getloadavg()[0]
        report["seconds"] = round(time.monotonic() - started, 1)
        print(render(report))
        if args.json_path:
            Path(args.json_path).write_text(json.dumps(report, indent=1))
        return 0
    finally:
        if args.keep:
            print(f"scratch kept in {scratch}", file=sys.stderr)
        else:
            import shutil

            shutil.rmtree(scratch, ignore_errors=True)


def render(report: dict[str, Any]) -> str:
    """The whole report as Markdown."""
    m = report["machine"]
    lines = [
        f"# Flujo benchmark ({report['mode']}, {report['reps']} repetitions, medians)",
        "",
        f"{report['date']}; {m['nproc']} x {m['cpu']}; Python {m['python']}, pyzmq {m['pyzmq']}, "
        f"libzmq {m['libzmq']}, numpy {m['numpy']}, msgpack {m['msgpack']}, videoflow {m['videoflow']}; "
        f"load average {m['loadavg_start']:.2f} at start, {m.get('loadavg_end', float('nan')):.2f} at end; "
        f"{report.get('seconds', 0):.0f} s in all.",
        "",
    ]
    for name, w in report["workloads"].items():
        lines += [f"## {name}: {w['title']}", "", w["what"] + ".", "", w["table"], ""]
        for error in w["errors"]:
            lines.append(f"- {error[:300]}")
        if w["errors"]:
            lines.append("")
    return "\n".join(lines)


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        print("interrupted: every process the benchmark started has been stopped", file=sys.stderr)
        sys.exit(130)
