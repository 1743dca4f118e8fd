"""Flujo under test: writes a manifest for the chain and runs ``flujo-launch`` on it.

The manifest goes into the run's scratch folder; node classes are referenced by the
absolute path of ``bench/flujo_nodes.py``, so nothing depends on the working directory.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import tomllib
from pathlib import Path
from typing import Any

from bench.harness import BenchError, RunOutput, collect, run_command

NODES_FILE = Path(__file__).resolve().parent / "flujo_nodes.py"


def launcher() -> list[str]:
    """The command that runs a manifest."""
    found = shutil.which("flujo-launch")
    return [found] if found else [sys.executable, "-m", "flujo.launch.cli"]


def available(timeout: float = 60.0) -> str | None:
    """None when flujo-launch runs the hello sample, else why not."""
    sample = Path(__file__).resolve().parents[1] / "samples" / "hello" / "manifest.toml"
    try:
        done = subprocess.run([*launcher(), str(sample)], capture_output=True, timeout=timeout, cwd=sample.parent)
    except (OSError, subprocess.TimeoutExpired) as error:
        return f"flujo-launch failed on samples/hello: {error}"
    if done.returncode != 0:
        return f"flujo-launch exited {done.returncode} on samples/hello: {done.stderr.decode(errors='replace')[-300:]}"
    return None


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)  # a JSON string is a valid TOML basic string
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    raise TypeError(f"cannot write {type(value).__name__} to TOML")


def _inline_table(table: dict[str, Any]) -> str:
    return "{ " + ", ".join(f"{key} = {_toml_value(value)}" for key, value in table.items()) + " }"


def manifest_text(
    cfg: dict[str, Any],
    name: str,
    stages: int = 1,
    replicas: int = 1,
    queue: int = 16,
    transport: str = "ipc",
    profile: bool = False,
    insecure: bool = False,
    shm: bool = True,
    readers: int = 1,
    lossless: bool = False,
) -> str:
    """The manifest of producer -> ``stages`` x ``replicas`` processors -> consumer (tcp: CURVE
    unless ``insecure``; ``readers`` consumers reading the last stage: a fan-out, the first
    writes the result)."""
    prefix = "Profiled" if profile else "Bench"
    args = _inline_table(cfg)
    lines = [
        "[flow]",
        f'name = "{name}"',
        f"queue = {queue}",
        f'transport = "{transport}"',
        f"insecure = {_toml_value(insecure)}",
        *([] if shm else ["shm = false"]),
        *(["lossless = true"] if lossless else []),
        "",
    ]
    lines += ["[nodes.source]", f"run = {_toml_value(f'{NODES_FILE}:{prefix}Producer')}", f"args = {args}", ""]
    upstream = "source"
    for stage in range(stages):
        node = f"relay{stage}"
        lines += [
            f"[nodes.{node}]",
            f"run = {_toml_value(f'{NODES_FILE}:{prefix}Processor')}",
            f'inputs = ["{upstream}"]',
            f"replicas = {replicas}",
            f"args = {args}",
            "",
        ]
        upstream = node
    lines += [
        "[nodes.sink]",
        f"run = {_toml_value(f'{NODES_FILE}:{prefix}Consumer')}",
        f'inputs = ["{upstream}"]',
        f"args = {args}",
        "",
    ]
    for reader in range(1, readers):
        extra = _inline_table({**cfg, "result": f"{cfg['result']}.{reader}"})
        lines += [
            f"[nodes.sink{reader}]",
            f"run = {_toml_value(f'{NODES_FILE}:{prefix}Consumer')}",
            f'inputs = ["{upstream}"]',
            f"args = {extra}",
            "",
        ]
    text = "\n".join(lines)
    tomllib.loads(text)  # fail here, not in the launcher, if the writer above is wrong
    return text


def run_chain(
    cfg: dict[str, Any],
    workdir: Path,
    timeout: float,
    stages: int = 1,
    replicas: int = 1,
    queue: int = 16,
    transport: str = "ipc",
    profile: bool = False,
    insecure: bool = False,
    shm: bool = True,
    readers: int = 1,
    lossless: bool = False,
) -> RunOutput:
    """Run the chain once with ``flujo-launch``; fresh processes every time."""
    manifest = workdir / "manifest.toml"
    # The flow's name carries this process's id: engineers sharing a machine can bench at once.
    name = f"bench-{cfg['workload']}-{os.getpid()}"
    manifest.write_text(
        manifest_text(cfg, name, stages, replicas, queue, transport, profile, insecure, shm, readers, lossless)
    )
    env = dict(os.environ)
    launch = time.monotonic_ns()
    code = run_command([*launcher(), str(manifest)], timeout, cwd=workdir, env=env, log=workdir / "flujo.log")
    wall = (time.monotonic_ns() - launch) / 1e9
    if code != 0:
        tail = (workdir / "flujo.log").read_text(errors="replace")[-600:]
        raise BenchError(f"flujo-launch exited with {code}: {tail}")
    return collect(cfg, launch, wall)
