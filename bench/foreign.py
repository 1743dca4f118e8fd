"""Nodes in other languages: the small-item chain through a C or JavaScript processor, next to Python's.

    python -m bench --only foreign [--quick]

The chain is the small-item workload's (Python producer -> processor -> Python consumer); only
the processor changes, so the numbers compare per-item costs of the node libraries on the same
wire. Each entry of PROCESSORS is one language: a manifest command running an identity
processor, and how to get it ready (built once per benchmark run). Append one to add a language.
"""
from __future__ import annotations

import functools
import os
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from bench import flujo_chain
from bench.harness import BenchError, RunOutput, collect, markdown_table, run_command, throughput
from bench.workloads import Variant, Workload, _check_count, _ratio

ROOT = Path(__file__).resolve().parents[1]
PYTHON_LABEL = "flujo-python"


@dataclass
class ForeignProcessor:
    label: str  # "flujo-<language>"
    command: list[str]  # the manifest's `command` of an identity processor
    prepare: Callable[[], str | None]  # makes it runnable; None when ready, else why it cannot run


@functools.cache
def build_c() -> str | None:
    """Builds sdk/c (the library and its examples) once."""
    if shutil.which("make") is None or shutil.which("cc") is None:
        return "no C compiler or make"
    done = subprocess.run(["make", "-s", "-C", str(ROOT / "sdk" / "c")], capture_output=True, text=True)
    return None if done.returncode == 0 else f"make -C sdk/c failed: {done.stderr[-300:]}"


PROCESSORS: list[ForeignProcessor] = [
    ForeignProcessor("flujo-c", [str(ROOT / "sdk" / "c" / "build" / "identity")], build_c),
]


def run_chain(cfg: dict[str, Any], workdir: Path, timeout: float, command: list[str] | None = None,
              queue: int = 16) -> RunOutput:
    """The Flujo small-item chain, its processor replaced by ``command`` (None: the Python one)."""
    if command is None:
        return flujo_chain.run_chain(cfg, workdir, timeout, queue=queue)
    python_processor = f'run = {flujo_chain._toml_value(f"{flujo_chain.NODES_FILE}:BenchProcessor")}'
    text = flujo_chain.manifest_text(cfg, f"bench-{cfg['workload']}", queue=queue)
    if python_processor not in text:
        raise BenchError("bench/flujo_chain.py writes its processor differently: update bench/foreign.py")
    manifest = workdir / "manifest.toml"
    manifest.write_text(text.replace(python_processor, f"command = {flujo_chain._toml_value(command)}"))
    launch = time.monotonic_ns()
    code = run_command([*flujo_chain.launcher(), str(manifest)], timeout, cwd=workdir, env=dict(os.environ),
                       log=workdir / "flujo.log")
    wall = (time.monotonic_ns() - launch) / 1e9
    if code != 0:
        tail = (workdir / "flujo.log").read_text(errors="replace")[-600:]
        raise BenchError(f"flujo-launch exited with {code}: {tail}")
    return collect(cfg, launch, wall)


class ForeignProcessors(Workload):
    name = "foreign"
    title = "Small items, 2 hops, through a processor in another language"
    what = ('the "small" workload (Python producer and consumer) with the identity processor written in '
            'Python, C (sdk/c) and other languages; items/s at the consumer')

    def cfg(self) -> dict[str, Any]:
        return {"workload": "small", "n": 10_000 if self.quick else 100_000}

    def variants(self) -> list[Variant]:
        variants = [Variant(PYTHON_LABEL, run_chain)]
        for processor in PROCESSORS:
            variants.append(Variant(processor.label, run_chain, {"command": processor.command},
                                    skip=processor.prepare()))
        return variants

    def metrics(self, out: RunOutput, cfg: dict[str, Any]) -> dict[str, float]:
        _check_count(out, cfg)
        return {"items/s": throughput(out.result)}

    def table(self, medians: dict[str, dict[str, float]], runs: dict[str, int]) -> str:
        python = medians.get(PYTHON_LABEL, {}).get("items/s")
        rows = [[label, m.get("items/s"), runs[label], _ratio(m.get("items/s"), python)]
                for label, m in medians.items()]
        return markdown_table(["processor", "items/s", "runs", "÷ Python processor"], rows)
