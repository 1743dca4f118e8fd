"""Command line of the conformance kit: run the scenarios up to a level, print a line per clause."""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import traceback
from collections.abc import Sequence
from pathlib import Path
from typing import IO

import zmq

from flujo.conformance.checks import FAIL_ITEM, LEVELS, Checks, ClauseFailed, Outcome
from flujo.conformance.harness import Bench
from flujo.conformance.scenarios import SCENARIOS, Scenario
from flujo.vocab import NodeKind

DESCRIPTION = f"""\
Run a Flujo node program as the launcher and its neighbours would, through the clauses of
docs/PROTOCOL.md, and say which conformance level it reaches.

The node under test must be an identity processor (each DATA item sent on unchanged, SKIP
as SKIP) or, with --kind consumer, a consumer that takes every item. Either must fail, as
an exception in user code would, on the item {FAIL_ITEM!r}. With --kind producer, a
producer that produces items until it is stopped.

Exit status 0 when the requested level is reached, 1 when not, 2 on a usage error."""


def parse(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m flujo.conformance",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--level", choices=LEVELS, default="basic", help="the level to reach (default: basic)")
    parser.add_argument(
        "--kind",
        type=NodeKind,
        choices=(NodeKind.PROCESSOR, NodeKind.CONSUMER, NodeKind.PRODUCER),
        default=NodeKind.PROCESSOR,
        help="what the node under test is (default: processor)",
    )
    parser.add_argument(
        "--timeout", type=float, default=10.0, help="seconds each clause may take before it fails (default: 10)"
    )
    parser.add_argument(
        "--window",
        type=float,
        default=0.3,
        help="seconds a clause watches for something that must NOT happen (default: 0.3)",
    )
    parser.add_argument(
        "--run",
        help='a Python node reference ("module:attr" or "file.py:attr") for the '
        "configuration's `run`; the command then defaults to `python -m flujo.node`",
    )
    parser.add_argument("--args", default="{}", help="JSON object for the configuration's `args`")
    parser.add_argument(
        "--only",
        action="append",
        default=[],
        metavar="SCENARIO",
        help="run only this scenario (repeatable): " + ", ".join(s.name for s in SCENARIOS),
    )
    parser.add_argument("command", nargs=argparse.REMAINDER, help="-- the node program and its arguments")
    options = parser.parse_args(argv)
    command = options.command[1:] if options.command[:1] == ["--"] else options.command
    if not command and options.run:
        command = [sys.executable, "-m", "flujo.node"]
    if not command:
        parser.error("give the node's command after --, e.g. -- ./my-node")
    if shutil.which(command[0]) is None:
        parser.error(f"cannot run {command[0]!r}: not found, or not executable")
    options.command = command
    try:
        options.args = json.loads(options.args)
    except ValueError as error:
        parser.error(f"--args is not JSON: {error}")
    unknown = set(options.only) - {s.name for s in SCENARIOS}
    if unknown:
        parser.error(f"unknown scenario {sorted(unknown)}")
    return options


def run_scenario(
    scenario: Scenario, options: argparse.Namespace, out: IO[str], shown: set[tuple[str, str]] | None = None
) -> list[Outcome]:
    """One scenario on a fresh bench; its outcomes, printed as they come (a clause that passed
    already, in ``shown``, is not printed again: every scenario repeats the handshake)."""
    already: set[tuple[str, str]] = set() if shown is None else shown
    outcomes: list[Outcome] = []
    out.write(f"== {scenario.name} ({scenario.level})\n")
    if options.kind not in scenario.kinds:
        outcomes.append(
            Outcome("-", f"{scenario.name}: for a {' or '.join(sorted(scenario.kinds))}", scenario.level, None)
        )
        out.write(outcomes[-1].line() + "\n")
        return outcomes

    class Printing(list):
        def append(self, outcome: Outcome) -> None:
            super().append(outcome)
            if outcome.passed is True and (outcome.section, outcome.title) in already:
                return
            already.add((outcome.section, outcome.title))
            out.write(outcome.line() + "\n")
            out.flush()

    printed: list[Outcome] = Printing()
    folder = Path(tempfile.mkdtemp(prefix="flujo-conform-"))
    extra = {"args": options.args, "on_error": scenario.on_error, **({"run": options.run} if options.run else {})}
    bench = Bench(
        options.command,
        folder,
        options.kind,
        options.timeout,
        window=options.window,
        senders=scenario.senders,
        edges=scenario.edges,
        restart=scenario.restart,
        replica=scenario.replica,
        extra=extra,
        acks=scenario.acks,
    )
    checks = Checks(scenario.level, printed)
    try:
        scenario.run(bench, checks, options.window)
    except ClauseFailed:
        _tail(bench, out)
    except zmq.Again:
        outcome = Outcome(
            "1",
            "reads its input (a full queue blocks the sender only while the node works)",
            scenario.level,
            False,
            f"the node to take input within {options.timeout:g} s",
            "a send to its input port timed out",
        )
        printed.append(outcome)
        _tail(bench, out)
    except BrokenPipeError:
        raise  # whoever read the output has gone
    except Exception as error:  # a fault of the kit itself: say so, and judge no level on it
        printed.append(
            Outcome(
                "-",
                "the kit could not go on (a fault in the kit: please report it)",
                scenario.level,
                False,
                "no exception in the kit",
                "".join(traceback.format_exception(error)).rstrip(),
            )
        )
        _tail(bench, out)
    finally:
        bench.close()
        shutil.rmtree(folder, ignore_errors=True)
    return list(printed)


def _tail(bench: Bench, out: IO[str]) -> None:
    lines = bench.log_tail()
    if lines:
        out.write("        node output (last lines):\n")
        out.writelines(f"          | {line}\n" for line in lines)


def level_reached(outcomes: list[Outcome], ran_up_to: int) -> int:
    """Index in LEVELS of the highest level whose clauses, and those of every lower level, all
    passed; -1 for none."""
    reached = -1
    for index in range(ran_up_to + 1):
        if any(o.passed is False for o in outcomes if LEVELS.index(o.level) == index):
            break
        reached = index
    return reached


def main(argv: Sequence[str] | None = None, out: IO[str] | None = None) -> int:
    """Run the kit; returns the exit status (0 when the requested level is reached)."""
    out = out or sys.stdout
    try:
        options = parse(sys.argv[1:] if argv is None else argv)
    except SystemExit as exit:
        return int(exit.code or 0)
    wanted = LEVELS.index(options.level)
    outcomes: list[Outcome] = []
    shown: set[tuple[str, str]] = set()
    for scenario in SCENARIOS:
        if LEVELS.index(scenario.level) > wanted or (options.only and scenario.name not in options.only):
            continue
        if (options.kind == NodeKind.PRODUCER and NodeKind.PRODUCER not in scenario.kinds) or (
            options.kind != NodeKind.PRODUCER and scenario.kinds == {NodeKind.PRODUCER}
        ):
            continue  # another family of scenarios altogether
        outcomes += run_scenario(scenario, options, out, shown)
    reached = level_reached(outcomes, wanted)
    passed = sum(o.passed is True for o in outcomes)
    failed = sum(o.passed is False for o in outcomes)
    out.write(f"\n{passed} clauses passed, {failed} failed. ")
    if options.only:  # a level needs every scenario up to it
        out.write("Only the scenarios named ran: no level judged.\n")
        return 1 if failed else 0
    name = LEVELS[reached] if reached >= 0 else "none"
    out.write(f"Level reached: {name} (asked for {options.level}).\n")
    return 0 if reached >= wanted else 1
