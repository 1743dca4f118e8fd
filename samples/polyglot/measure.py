"""How fast each foreign node of the sample is next to its Python equivalent, in the same run.

    python samples/polyglot/measure.py [--repeat 3]

Each node runs alone between a fast source and a sink, so the numbers are its own (protocol
included), not the video decoder's or the detector's:

* gray (C, sdk/c/examples/gray.c) against bench/foreign_nodes.py:Gray (OpenCV), on the clip's
  frames (768x576 BGR) decoded once in advance; frames/s from the first item to the last at the sink;
* counts (JavaScript, counts.js) against twins.py:Counts (Python), on items shaped like the gray
  node's and the detector's; items/s from the first item to the last, as the node itself times it.

Prints a Markdown table (median of the repetitions).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
TWINS = HERE / "twins.py"
CLIP = ROOT / "samples" / "data" / "vtest.avi"


def gray_flow(name: str, node: str, timing: Path) -> str:
    return f"""[flow]
name = "{name}"
queue = 8
[nodes.frames]
run = "{TWINS}:ClipFrames"
args = {{ source = "{CLIP}", frames = 100, repeat = 6 }}
[nodes.gray]
{node}
inputs = ["frames"]
args = {{ frame = false }}
[nodes.sink]
run = "{TWINS}:Timing"
inputs = ["gray"]
args = {{ timing = "{timing}" }}
"""


def counts_flow(name: str, node: str, timing: Path, out: Path, n: int = 20_000) -> str:
    return f"""[flow]
name = "{name}"
queue = 8
[nodes.stats]
run = "{TWINS}:StatsItems"
args = {{ n = {n} }}
[nodes.people]
run = "{TWINS}:PeopleItems"
args = {{ n = {n} }}
[nodes.counts]
{node}
inputs = {{ stats = "stats", people = "people" }}
args = {{ path = "{out}", port = 0, timing = "{timing}" }}
"""


VARIANTS = [  # (what, language, manifest maker, the node's manifest lines)
    ("gray", "C", gray_flow, f'command = ["{ROOT / "sdk" / "c" / "build" / "gray"}"]'),
    ("gray", "Python (OpenCV)", gray_flow, f'run = "{ROOT / "bench" / "foreign_nodes.py"}:Gray"'),
    ("counts", "JavaScript", counts_flow, f'command = ["node", "{HERE / "counts.js"}"]'),
    ("counts", "Python", counts_flow, f'run = "{TWINS}:Counts"'),
]


def run_once(folder: Path, index: int, make, node: str) -> float:
    timing = folder / f"timing-{index}.json"
    extra = {"out": folder / f"out-{index}.jsonl"} if make is counts_flow else {}
    manifest = folder / f"manifest-{index}.toml"
    manifest.write_text(make(f"polyglot-measure-{index}", node, timing, **extra))
    done = subprocess.run(
        [sys.executable, "-m", "flujo.launch", str(manifest)], capture_output=True, text=True, timeout=600
    )
    if done.returncode != 0:
        raise SystemExit(f"{manifest} failed:\n{done.stderr[-2000:]}")
    result = json.loads(timing.read_text())
    return (result["frames"] - 1) / result["seconds"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    options = parser.parse_args()
    subprocess.run(["make", "-s", "-C", str(ROOT / "sdk" / "c")], check=True)
    rates: dict[int, list[float]] = {index: [] for index in range(len(VARIANTS))}
    with tempfile.TemporaryDirectory() as name:
        for _ in range(options.repeat):  # interleaved, so load changes touch every variant alike
            for index, (_, _, make, node) in enumerate(VARIANTS):
                rates[index].append(run_once(Path(name), index, make, node))
    medians = {index: statistics.median(values) for index, values in rates.items()}
    print("| node | language | items/s | ÷ Python |")
    print("|---|---|---|---|")
    for index, (what, language, _, _) in enumerate(VARIANTS):
        python = next(
            medians[i] for i, variant in enumerate(VARIANTS) if variant[0] == what and variant[1].startswith("Python")
        )
        print(f"| {what} | {language} | {medians[index]:,.0f} | {medians[index] / python:.2f} |")


if __name__ == "__main__":
    main()
