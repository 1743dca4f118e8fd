"""``python -m bench.recovery``: time from a SIGKILL of a processor to the first item out of its successor.

python -m bench.recovery --kills 10      # every 2.5 s; restart_window 2 s: each is a first restart

The flow is a chain producer -> processor (restart = "always") -> consumer.

Each kill: SIGKILL the processor's current process, then wait for its successor's mark that its
first result went out (bench/recovery_nodes.py). Prints every time, the median and the worst.
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

NODES = Path(__file__).with_name("recovery_nodes.py")

MANIFEST = """
[flow]
name = "recovery{tag}"
[nodes.ticks]
run = "{nodes}:Ticks"
args = {{ n = 1000000, pause = 0.002 }}
[nodes.work]
run = "{nodes}:Marked"
args = {{ marks = "{marks}" }}
inputs = ["ticks"]
restart = "always"
max_restarts = 1000
restart_window = {window}
[nodes.sink]
run = "{nodes}:Drop"
inputs = ["work"]
"""


def _marks(path: Path) -> list[tuple[str, int, float]]:
    if not path.exists():
        return []
    rows = []
    for line in path.read_text().splitlines():
        parts = line.split()
        if len(parts) == 3:
            rows.append((parts[0], int(parts[1]), float(parts[2])))
    return rows


def _wait_for(path: Path, what: str, after: float, timeout: float) -> tuple[int, float]:
    """The first ``what`` mark made after ``after`` (wall-clock seconds): (pid, when)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for kind, pid, at in _marks(path):
            if kind == what and at > after:
                return pid, at
        time.sleep(0.005)  # polling a file the nodes write: this is the measuring loop, not a test
    raise TimeoutError(f"no '{what}' mark within {timeout} s")


def measure(kills: int, pause_between: float, window: float) -> list[float]:
    times: list[float] = []
    with tempfile.TemporaryDirectory() as folder:
        marks = Path(folder) / "marks"
        manifest = Path(folder) / "manifest.toml"
        manifest.write_text(MANIFEST.format(tag=os.getpid(), nodes=NODES, marks=marks, window=window))
        env = {**os.environ, "FLUJO_RUNS": str(Path(folder) / "runs")}
        launcher = subprocess.Popen(
            [sys.executable, "-m", "flujo.launch", str(manifest)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            env=env,
            start_new_session=True,
        )
        try:
            pid, _ = _wait_for(marks, "first", 0.0, 30)
            for _ in range(kills):
                time.sleep(pause_between)
                killed, killed_at = pid, time.time()
                os.kill(pid, signal.SIGKILL)
                pid, first_at = _wait_for(marks, "first", killed_at, 30)
                times.append(first_at - killed_at)
                print(f"kill of {killed} -> first item out of the successor: {1000 * times[-1]:.0f} ms", flush=True)
        finally:
            os.killpg(launcher.pid, signal.SIGTERM)
            try:
                launcher.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(launcher.pid, signal.SIGKILL)
                launcher.wait()
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--kills", type=int, default=10)
    parser.add_argument("--pause", type=float, default=2.5, help="seconds between two kills")
    parser.add_argument(
        "--window",
        type=float,
        default=2.0,
        help="the node's restart_window: kills further apart than this each get a first restart (no back-off)",
    )
    options = parser.parse_args()
    times = measure(options.kills, options.pause, options.window)
    print(
        f"recovery over {len(times)} kills: median {1000 * statistics.median(times):.0f} ms, "
        f"worst {1000 * max(times):.0f} ms"
    )


if __name__ == "__main__":
    main()
