"""Nodes in other languages next to their Python equivalents, same run.

    python -m bench --only foreign,foreign-gray [--quick]

Each chain is a Flujo workload's (Python producer -> processor -> Python consumer); only the
processor changes, so the numbers compare the node libraries on the same wire:

* foreign: the small-item chain through an identity processor. Each entry of PROCESSORS is one
  language: a manifest command running its identity processor, and how to get it ready (built
  once per benchmark run). Append one to add a language.
* foreign-gray: 1080p BGR frames through sdk/c's `gray` (grayscale and statistics) and through
  its Python equivalent (OpenCV, bench/foreign_nodes.py:Gray).
"""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

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


def ready_js() -> str | None:
    """sdk/js needs Node.js and its npm packages (`npm ci` in sdk/js, as .ci/run does)."""
    if shutil.which("node") is None:
        return "no Node.js"
    if not (ROOT / "sdk" / "js" / "node_modules" / "zeromq").is_dir():
        return "sdk/js has no node_modules: run `npm ci` in sdk/js"
    return None


PROCESSORS: list[ForeignProcessor] = [
    ForeignProcessor("flujo-c", [str(ROOT / "sdk" / "c" / "build" / "identity")], build_c),
    ForeignProcessor("flujo-js", ["node", str(ROOT / "sdk" / "js" / "examples" / "identity.js")], ready_js),
]


def run_chain(
    cfg: dict[str, Any],
    workdir: Path,
    timeout: float,
    command: list[str] | None = None,
    run: str | None = None,
    queue: int = 16,
) -> RunOutput:
    """A Flujo chain, its processor replaced by ``command`` or the Python node ``run`` (neither:
    the benchmark's own Python identity processor)."""
    python_processor = f"run = {flujo_chain._toml_value(f'{flujo_chain.NODES_FILE}:BenchProcessor')}"
    # A name of its own: flows of the same name cannot run at once on one machine.
    text = flujo_chain.manifest_text(cfg, f"bench-foreign-{os.getpid()}-{workdir.name}", queue=queue)
    if python_processor not in text:
        raise BenchError("bench/flujo_chain.py writes its processor differently: update bench/foreign.py")
    if command is not None:
        text = text.replace(python_processor, f"command = {flujo_chain._toml_value(command)}")
    elif run is not None:
        text = text.replace(python_processor, f"run = {flujo_chain._toml_value(run)}")
    manifest = workdir / "manifest.toml"
    manifest.write_text(text)
    launch = time.monotonic_ns()
    code = run_command(
        [*flujo_chain.launcher(), str(manifest)], timeout, cwd=workdir, env=dict(os.environ), log=workdir / "flujo.log"
    )
    wall = (time.monotonic_ns() - launch) / 1e9
    if code != 0:
        tail = (workdir / "flujo.log").read_text(errors="replace")[-600:]
        raise BenchError(f"flujo-launch exited with {code}: {tail}")
    return collect(cfg, launch, wall)


class ForeignProcessors(Workload):
    name = "foreign"
    title = "Small items, 2 hops, through a processor in another language"
    what = (
        'the "small" workload (Python producer and consumer) with the identity processor written in '
        "Python, C (sdk/c), JavaScript (sdk/js) and other languages; items/s at the consumer"
    )

    def cfg(self) -> dict[str, Any]:
        return {"workload": "small", "n": 10_000 if self.quick else 100_000}

    def variants(self) -> list[Variant]:
        variants = [Variant(PYTHON_LABEL, run_chain)]
        for processor in PROCESSORS:
            variants.append(
                Variant(processor.label, run_chain, {"command": processor.command}, skip=processor.prepare())
            )
        return variants

    def metrics(self, out: RunOutput, cfg: dict[str, Any]) -> dict[str, float]:
        _check_count(out, cfg)
        return {"items/s": throughput(out.result)}

    def table(self, medians: dict[str, dict[str, float]], runs: dict[str, int]) -> str:
        python = medians.get(PYTHON_LABEL, {}).get("items/s")
        rows = [
            [label, m.get("items/s"), runs[label], _ratio(m.get("items/s"), python)] for label, m in medians.items()
        ]
        return markdown_table(["processor", "items/s", "runs", "÷ Python processor"], rows)


class ForeignGray(Workload):
    name = "foreign-gray"
    title = "1080p BGR frames, 2 hops, through a grayscale-and-statistics processor: C vs Python (OpenCV)"
    what = (
        "the 'frame' workload's items {'i', 'frame'} through sdk/c's `gray` and its Python equivalent "
        "(cv2.cvtColor, cv2.minMaxLoc, np.mean); each sends the gray frame on; frames/s at the consumer"
    )

    def cfg(self) -> dict[str, Any]:
        return {"workload": "frame", "n": 100 if self.quick else 600}

    def variants(self) -> list[Variant]:
        python = f"{Path(__file__).resolve().parent / 'foreign_nodes.py'}:Gray"
        return [
            Variant("gray-python", run_chain, {"run": python}),
            Variant("gray-c", run_chain, {"command": [str(ROOT / "sdk" / "c" / "build" / "gray")]}, skip=build_c()),
        ]

    def metrics(self, out: RunOutput, cfg: dict[str, Any]) -> dict[str, float]:
        _check_count(out, cfg)
        return {"frames/s": throughput(out.result)}

    def table(self, medians: dict[str, dict[str, float]], runs: dict[str, int]) -> str:
        python = medians.get("gray-python", {}).get("frames/s")
        rows = [
            [label, m.get("frames/s"), runs[label], _ratio(m.get("frames/s"), python)] for label, m in medians.items()
        ]
        return markdown_table(["processor", "frames/s", "runs", "÷ Python (OpenCV)"], rows)
