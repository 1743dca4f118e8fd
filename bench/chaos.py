"""``python -m bench.chaos``: SIGKILL random node replicas of a lossless flow, every 2-3 s, and
check that every item reached the consumer exactly once and in order (docs/PROTOCOL.md 9).

    python -m bench.chaos --runs 10 --seconds 60              # one replica at a time
    python -m bench.chaos --runs 10 --seconds 60 --together 2  # two at once
    python -m bench.chaos --victims mix,pair,letters,sink      # the merge, its senders, its reader
    python -m bench.chaos --arrays                             # 64 KiB arrays through shared memory

The flow: ``numbers`` (a producer that resumes) feeds ``spread`` (two replicas that finish out
of order) and ``squares``; the zip ``pair`` adds them (i + i * i); the merge ``mix`` takes
``pair`` and a second resumable producer ``letters`` (-1, -2, ...); ``sink`` writes a journal
of which process consumed what. Every node restarts always. A consumer's successor may consume
again the last items its predecessor consumed but had not acknowledged (its own side effects
are at least once, section 9.1): each process's items are checked apart, and together they
must hold every item of each stream once, in order.

Recovery per kill: from the SIGKILL to the first item its successor handed on (marks written
by bench/chaos_nodes.py).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from flujo.launch.command_client import request
from flujo.launch.runs import CommandError

NODES = Path(__file__).with_name("chaos_nodes.py")
RATE = 800  # items/s the producers aim at (a pause of 1 ms between items, and Python's overhead)
#: After the kills, a sink that writes nothing for this long is a stall ...
STALL_SECONDS = 30.0
#: ... and a flow still running this long after them is given up on (a machine far too loaded).
LATEST_END = 600.0


def manifest(folder: Path, name: str, n: int, merge: bool, arrays: bool = False) -> str:
    """The chaos flow's manifest (see the module docstring); ``arrays``: items are arrays in
    shared memory."""
    always = 'restart = "always"\nmax_restarts = 10000\nrestart_window = 1.0'

    def section(node: str, run: str, args: str, inputs: str = "", extra: str = "") -> str:
        marks = folder / f"marks.{node}"
        text = f'[nodes.{node}]\nrun = "{NODES}:{run}"\nargs = {{ marks = "{marks}"{args} }}\n{always}\n'
        return text + (f"inputs = {inputs}\n" if inputs else "") + extra

    sections = [
        f'[flow]\nname = "{name}"\nqueue = 4\nshm = {str(arrays).lower()}\nlossless = true\n',
        section("numbers", "Ticks", f", n = {n}, pause = 0.001, arrays = {str(arrays).lower()}"),
        section("spread", "Work", ', kind = "jitter"', '["numbers"]', "replicas = 2\n"),
        section("squares", "Work", ', kind = "square"', '["numbers"]'),
        section("pair", "Pair", "", '{ a = "spread", b = "squares" }'),
    ]
    last = "pair"
    if merge:
        sections += [
            section("letters", "Ticks", f", n = {n // 2}, pause = 0.002, sign = -1, arrays = {str(arrays).lower()}"),
            section("mix", "Pass", "", '["pair", "letters"]', 'join = "merge"\n'),
        ]
        last = "mix"
    sections.append(section("sink", "Journal", f', path = "{folder / "journal.jsonl"}"', f'["{last}"]'))
    return "\n".join(sections)


@dataclass
class Outcome:
    """One chaos run: what was killed, how long each recovery took, and what arrived."""

    kills: list[tuple[list[str], float]] = field(default_factory=list)  # victims, recovery (s)
    errors: list[str] = field(default_factory=list)  # items lost, duplicated or out of order
    items: int = 0
    expected: int = 0  # items the producers make, in all
    consumed_again: int = 0
    exit_code: int | None = None

    @property
    def ok(self) -> bool:
        return not self.errors and self.exit_code == 0


def check_journal(journal: Path, streams: dict[str, int]) -> tuple[list[str], int, int]:
    """Per stream (name -> expected length): every item once, in order, across processes;
    returns (errors, items delivered, items consumed again by a consumer's successor)."""
    runs: list[tuple[int, list[int]]] = []
    corrupt = 0
    for line in journal.read_text().splitlines():
        pid, value = json.loads(line)
        if value is None:  # an array whose bytes were not all its number's
            corrupt += 1
            continue
        if not runs or runs[-1][0] != pid:
            runs.append((pid, []))
        runs[-1][1].append(value)
    errors, delivered_total, again = [f"{corrupt} arrays changed under their reader"] if corrupt else [], 0, 0
    for stream, expected in streams.items():
        delivered: list[int] = []
        for _, values in runs:
            run = [_decode(stream, value) for value in values if _stream_of(value) == stream]
            if run != sorted(set(run)):
                errors.append(f"{stream}: one process consumed an item twice or out of order")
            if delivered and run and run[0] > delivered[-1] + 1:
                errors.append(f"{stream}: items {delivered[-1] + 1}..{run[0] - 1} lost")
            fresh = [item for item in run if not delivered or item > delivered[-1]]
            again += len(run) - len(fresh)
            delivered.extend(fresh)
        if delivered != list(range(expected)):
            missing = sorted(set(range(expected)) - set(delivered))
            errors.append(f"{stream}: {len(delivered)} of {expected} delivered, missing {missing[:10]}")
        delivered_total += len(delivered)
    return errors, delivered_total, again


def _stream_of(value: int) -> str:
    return "numbers" if value >= 0 else "letters"


def _decode(stream: str, value: int) -> int:
    """pair's i + i * i back to i; letters' -(i + 1) back to i."""
    if stream == "numbers":
        return round((-1 + (1 + 4 * value) ** 0.5) / 2)
    return -value - 1


def _status(name: str, runs: Path) -> dict[str, dict]:
    """The flow's replicas by label, asked in this process: a `flujo-launch status` process for
    each round took seconds on a loaded machine, and the stream ended before the kills."""
    try:
        reply = request(name, "status", runs=runs)
    except CommandError:  # not announced yet, or already gone
        return {}
    return {node["label"]: node for node in reply["nodes"]}


def _first_after(marks: Path, killed_at: float, killed_pid: int) -> float | None:
    if not marks.exists():
        return None
    for line in marks.read_text().splitlines():
        _, pid, at = line.split()
        if int(pid) != killed_pid and float(at) > killed_at:
            return float(at) - killed_at
    return None


def _await_end(launcher: subprocess.Popen, journal: Path) -> str:
    """Wait for the flow to end once the kills are over; "" when it did, else why it was given
    up on. A loaded machine makes a flow slow, not stuck: only a sink that wrote nothing new for
    STALL_SECONDS is a stall (and LATEST_END bounds the whole wait)."""
    start = last_growth = time.monotonic()
    size = -1
    while launcher.poll() is None:
        now = time.monotonic()
        grown = journal.stat().st_size if journal.exists() else 0
        if grown != size:
            size, last_growth = grown, now
        if now - last_growth > STALL_SECONDS:
            return f"stalled (its sink wrote nothing for {STALL_SECONDS:.0f} s)"
        if now - start > LATEST_END:
            return f"did not end within {LATEST_END:.0f} s"
        time.sleep(0.5)  # a watchdog's period, not a synchronisation: the exit is polled
    return ""


def run(
    seconds: float,
    together: int = 1,
    merge: bool = True,
    seed: int | None = None,
    victims_in_turn: list[list[str]] | None = None,
    among: list[str] | None = None,
    arrays: bool = False,
) -> Outcome:
    """One chaos run: kills for ``seconds`` (``together`` replicas at a time, chosen at random,
    or ``victims_in_turn``; ``among``: only these replicas), then let the flow end. ``arrays``:
    every item an array of 64 KiB through shared memory, checked whole by the consumer."""
    chance = random.Random(seed)
    outcome = Outcome()
    n = int(seconds * RATE * 1.2)  # the stream outlasts the kills
    with tempfile.TemporaryDirectory(prefix="flujo-chaos-") as scratch:
        folder = Path(scratch)
        name = f"chaos{os.getpid()}x{chance.randrange(10**6)}"
        path = folder / "manifest.toml"
        path.write_text(manifest(folder, name, n, merge, arrays))
        runs = folder / "runs"  # where this run's launcher announces itself
        env = {**os.environ, "FLUJO_RUNS": str(runs)}
        log = folder / "launcher.err"  # a file, not a pipe: a full pipe would block the launcher
        with open(log, "w") as errors:
            launcher = subprocess.Popen(
                [sys.executable, "-m", "flujo.launch", str(path)],
                stdout=subprocess.DEVNULL,
                stderr=errors,
                env=env,
                start_new_session=True,
            )
        killed: list[tuple[list[tuple[str, int]], float]] = []
        try:
            end = time.monotonic() + seconds
            while time.monotonic() < end and launcher.poll() is None:
                time.sleep(chance.uniform(2.0, 3.0))  # the chaos schedule, not a synchronisation
                replicas = {
                    label: r
                    for label, r in _status(name, runs).items()
                    if r.get("pid") and (among is None or label in among)
                }
                if launcher.poll() is not None:
                    break
                if len(replicas) < together:
                    continue  # replicas restarting: the next round kills
                if victims_in_turn is not None:
                    victims = victims_in_turn[len(killed) % len(victims_in_turn)]
                else:
                    victims = chance.sample(sorted(replicas), together)
                at, gone = time.time(), []
                for label in victims:
                    try:
                        os.kill(replicas[label]["pid"], signal.SIGKILL)
                        gone.append((label, replicas[label]["pid"]))
                    except ProcessLookupError:
                        pass  # it ended meanwhile (its stream, or its own restart): not a kill
                if gone:
                    killed.append((gone, at))
            stalled = _await_end(launcher, folder / "journal.jsonl")
            if stalled:  # say which nodes stand
                stuck = {
                    label: {key: r.get(key) for key in ("state", "items_in", "items_out", "restarts")}
                    for label, r in _status(name, runs).items()
                }
                outcome.errors.append(f"the flow {stalled} after the kills: {stuck}")
        finally:
            if launcher.poll() is None:
                os.killpg(launcher.pid, signal.SIGKILL)
            launcher.wait()
        stderr = log.read_text(errors="replace")
        outcome.exit_code = launcher.returncode
        if launcher.returncode != 0 and not outcome.errors:
            outcome.errors.append(f"the launcher exited with {launcher.returncode}: {stderr[-2000:]}")
        for victims, at in killed:
            times = [_first_after(folder / f"marks.{label.split('.')[0]}", at, pid) for label, pid in victims]
            known = [t for t in times if t is not None]
            outcome.kills.append(([label for label, _ in victims], max(known) if known else float("nan")))
        streams = {"numbers": n, **({"letters": n // 2} if merge else {})}
        outcome.expected = sum(streams.values())
        journal = folder / "journal.jsonl"
        if journal.exists():
            errors, outcome.items, outcome.consumed_again = check_journal(journal, streams)
            outcome.errors += errors
        else:
            outcome.errors.append("the sink wrote nothing")
    return outcome


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--seconds", type=float, default=60.0, help="how long to keep killing, per run")
    parser.add_argument("--together", type=int, default=1, help="replicas killed at once")
    parser.add_argument("--no-merge", action="store_true", help="leave the merge and its second producer out")
    parser.add_argument("--first-seed", type=int, default=0, help="run i draws its kills with seed first-seed + i")
    parser.add_argument("--victims", help="kill only these replicas (comma-separated labels, e.g. mix,pair,letters)")
    parser.add_argument(
        "--arrays", action="store_true", help="items are 64 KiB arrays in shared memory (slots kept for replays)"
    )
    options = parser.parse_args()
    recoveries: list[float] = []
    passed = 0
    for index in range(options.runs):
        among = options.victims.split(",") if options.victims else None
        outcome = run(
            options.seconds,
            options.together,
            not options.no_merge,
            seed=options.first_seed + index,
            among=among,
            arrays=options.arrays,
        )
        passed += outcome.ok
        times = [t for _, t in outcome.kills if t == t]
        recoveries += times
        print(
            f"run {index + 1}: {'exactly once' if outcome.ok else 'FAILED'}; {outcome.items} items, "
            f"{len(outcome.kills)} kills, {outcome.consumed_again} consumed again by a consumer's successor"
            + (
                f"; recovery median {1000 * statistics.median(times):.0f} ms, worst {1000 * max(times):.0f} ms"
                if times
                else ""
            ),
            flush=True,
        )
        for error in outcome.errors:
            print(f"    {error}", flush=True)
        if outcome.errors:
            print("    kills: " + "; ".join("+".join(victims) for victims, _ in outcome.kills), flush=True)
    summary = f"{passed}/{options.runs} runs exactly once"
    if recoveries:
        summary += (
            f"; recovery over {len(recoveries)} kills: median {1000 * statistics.median(recoveries):.0f} ms, "
            f"worst {1000 * max(recoveries):.0f} ms"
        )
    print(summary)
    sys.exit(0 if passed == options.runs else 1)


if __name__ == "__main__":
    main()
