"""How much a stop behind a slow consumer still delivers, and how long it takes.

``python -m bench.stop_drain``: ``count -> square -> sink``, the sink sleeping ``--delay-ms`` per
item, queue 16; once the sink has taken 100 items (every queue is full by then), ``flujo-launch
stop``; prints the items the sink took after the stop and the seconds from the stop to the
launcher's exit, per run. ``--no-credits`` turns the sink's credits off (PROTOCOL 18).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import textwrap
import time
import uuid
from pathlib import Path

from flujo.launch.command_client import request

NODES = """
import time
from flujo import Consumer


class SlowSink(Consumer):
    def __init__(self, path: str, delay: float) -> None:
        self.path, self.delay = path, delay

    def open(self) -> None:
        self.file = open(self.path, "a")

    def consume(self, item) -> None:
        time.sleep(self.delay)
        self.file.write(f"{item}\\n")
        self.file.flush()

    def close(self) -> None:
        self.file.close()


def square(number: int) -> int:
    return number * number
"""


def _lines(path: Path) -> int:
    try:
        return path.read_bytes().count(b"\n")
    except FileNotFoundError:
        return 0


def run_once(folder: Path, delay_ms: float, credits: bool) -> tuple[int, float]:
    """(items the sink took after the stop, seconds from the stop to the launcher's exit)."""
    name = f"drain{uuid.uuid4().hex[:8]}"
    out = folder / f"{name}.txt"
    (folder / "drain_nodes.py").write_text(NODES)
    extra = "" if credits else "credits = false"
    manifest = folder / f"{name}.toml"
    manifest.write_text(
        textwrap.dedent(f"""
        [flow]
        name = "{name}"
        queue = 16

        [nodes.numbers]
        run = "flujo.nodes.basic:Count"

        [nodes.square]
        run = "drain_nodes.py:square"
        inputs = ["numbers"]

        [nodes.sink]
        run = "drain_nodes.py:SlowSink"
        inputs = ["square"]
        args = {{ path = "{out}", delay = {delay_ms / 1000} }}
        {extra}
        """)
    )
    env = {**os.environ, "FLUJO_RUNS": str(folder / "runs")}
    cli = [sys.executable, "-c", "import sys; from flujo.launch.cli import main; main()"]
    launcher = subprocess.Popen([*cli, str(manifest)], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 60
        while _lines(out) < 100:
            if time.monotonic() > deadline or launcher.poll() is not None:
                raise RuntimeError(f"the flow did not start: {launcher.stderr.read().decode()[-2000:]}")  # type: ignore[union-attr]
            time.sleep(0.01)
        os.environ["FLUJO_RUNS"] = env["FLUJO_RUNS"]  # the stop goes from here: no process to start first
        before, stopped = _lines(out), time.monotonic()
        request(name, "stop")
        launcher.wait(timeout=120)
        return _lines(out) - before, time.monotonic() - stopped
    finally:
        if launcher.poll() is None:
            launcher.kill()
            launcher.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[2])
    parser.add_argument("--delay-ms", type=float, default=2.0)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--no-credits", action="store_true")
    options = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        for run in range(options.runs):
            items, seconds = run_once(Path(folder), options.delay_ms, not options.no_credits)
            load = os.getloadavg()[0]
            print(
                f"run {run + 1}: {items} items after the stop, {seconds:.2f} s to the launcher's exit (load {load:.1f})"
            )


if __name__ == "__main__":
    main()
