"""The conformance kit: the Python runtime passes every level; broken nodes fail on the right clause."""

from __future__ import annotations

import io
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import flow_processes

from flujo.conformance import FAIL_ITEM, main
from flujo.conformance.checks import Outcome, same
from flujo.conformance.cli import level_reached
from flujo.conformance.harness import FLOW, Bench
from flujo.vocab import NodeKind

BROKEN = str(Path(__file__).parent / "conformance_broken_node.py")
REFERENCE = [sys.executable, "-m", "flujo.conformance.reference"]
# The reference nodes are known to conform and to answer within milliseconds: a shorter window for
# what must NOT happen runs the same clauses (a few hundred of 0.3 s each are most of a level's time).
FAST = ("--window", "0.1")


def kit(*argv: str) -> tuple[int, str]:
    out = io.StringIO()
    status = main(list(argv), out=out)
    assert not flow_processes(FLOW), "the kit left a node running"
    return status, out.getvalue()


def failures(text: str) -> list[tuple[str, str]]:
    """(section, title) of every FAIL line."""
    return re.findall(r"^FAIL  §(\S+)\s+(.*)$", text, re.MULTILINE)


@pytest.mark.timeout(180)
def test_python_processor_reaches_acknowledging() -> None:
    status, text = kit("--level", "acknowledging", *FAST, "--", *REFERENCE, "processor")
    assert failures(text) == [], text
    assert "Level reached: acknowledging" in text
    assert status == 0
    # Every scenario ran and checked its clauses: none was skipped as not applicable.
    assert "n/a" not in text
    assert int(re.search(r"(\d+) clauses passed, 0 failed", text).group(1)) > 150


@pytest.mark.timeout(150)
def test_python_consumer_reaches_acknowledging() -> None:
    status, text = kit("--level", "acknowledging", "--kind", "consumer", *FAST, "--", *REFERENCE, "consumer")
    assert failures(text) == [], text
    assert "Level reached: acknowledging" in text and status == 0
    assert "drops the duplicates a sender's successor replays: every item consumed once" in text


@pytest.mark.timeout(150)
def test_python_producer_reaches_acknowledging() -> None:
    status, text = kit("--level", "acknowledging", "--kind", "producer", *FAST, "--", *REFERENCE, "producer")
    assert failures(text) == [], text
    assert "Level reached: acknowledging" in text and status == 0
    assert "producer drain" in text and "== lifecycle" not in text  # the producers' own scenarios
    assert "note  §9.4   resumes: yes, from resume_at" in text
    assert "PASS  §9.4   a producer reports acked" in text


@pytest.mark.timeout(60)
def test_the_python_reference_runs_through_flujo_node_too() -> None:
    """`--run` hands the configuration a Python reference; the command defaults to python -m flujo.node."""
    status, text = kit("--run", "flujo.conformance.reference:Identity", *FAST)
    assert status == 0, text
    assert "Level reached: basic" in text


@pytest.mark.timeout(60)
def test_the_unbroken_fixture_passes_what_its_faults_break() -> None:
    """So each fault below is what fails, not the fixture itself."""
    status, text = kit(
        "--level",
        "restartable",
        "--only",
        "lifecycle",
        "--only",
        "stop",
        "--only",
        "hold reader",
        "--",
        sys.executable,
        BROKEN,
    )
    assert failures(text) == [], text
    assert status == 0


@pytest.mark.timeout(60)
@pytest.mark.parametrize(
    ("fault", "level", "section", "title"),
    [
        ("--ignore-skip", "basic", "3", "SKIP: a SKIP in gives a SKIP out"),
        ("--forget-eos", "basic", "7.2", "sends EOS to every downstream replica"),
        ("--early", "basic", "4", "sends nothing before ready, start and its first input"),
        ("--ignore-hold", "restartable", "8.2", "sends PAUSE to a held reader"),
        ("--exit-early", "basic", "7.3", "stays up until its readers release it"),
    ],
)
def test_a_broken_node_fails_on_the_right_clause(fault: str, level: str, section: str, title: str) -> None:
    started = time.monotonic()
    only = ["--only", "lifecycle"] if level == "basic" else ["--only", "lifecycle", "--only", "hold reader"]
    status, text = kit("--level", level, "--timeout", "3", *only, "--", sys.executable, BROKEN, fault)
    assert status == 1, text
    found = failures(text)
    assert found, text
    assert found[0][0] == section and found[0][1].startswith(title), text
    assert time.monotonic() - started < 30  # a clause times out, the kit never hangs


PRODUCER = str(Path(__file__).parent / "conformance_broken_producer.py")
PRODUCER_SCENARIOS = ["--only", "produce and stop", "--only", "producer fan-out and stats"]


@pytest.mark.timeout(60)
@pytest.mark.parametrize(
    ("fault", "section", "title"),
    [
        ("", None, None),  # the fixture itself passes
        ("--no-start", "4", "a producer produces nothing before start"),
        ("--from-zero", "6", "numbers its items from seq_start"),
    ],
)
def test_a_broken_producer_fails_on_the_right_clause(fault: str, section: str | None, title: str | None) -> None:
    status, text = kit(
        "--kind",
        "producer",
        "--level",
        "full",
        "--timeout",
        "3",
        *PRODUCER_SCENARIOS,
        "--",
        sys.executable,
        PRODUCER,
        *([fault] if fault else []),
    )
    found = failures(text)
    if section is None:
        assert status == 0 and not found, text
    else:
        assert status == 1 and found and found[0] == (section, title), text


@pytest.mark.timeout(60)
@pytest.mark.parametrize(
    ("fault", "kind", "title"),
    [
        ("", "processor", "acknowledges cumulatively to each sender replica, on its ack endpoint, what is done"),
        ("--ack-early", "processor", "a processor acknowledges only once its readers acknowledged the results"),
        ("--ack-past", "consumer", "never acknowledges past what that sender sent"),
    ],
)
def test_a_node_that_does_not_acknowledge_as_it_must_fails_the_acknowledging_level(
    fault: str, kind: str, title: str
) -> None:
    """A node that does not acknowledge at all (the C and JS SDKs today), one that acknowledges an
    item before its readers acknowledged the result, one that acknowledges past what was sent."""
    status, text = kit(
        "--level",
        "acknowledging",
        "--kind",
        kind,
        "--timeout",
        "2",
        "--only",
        "acknowledges",
        "--",
        sys.executable,
        BROKEN,
        *([fault] if fault else []),
    )
    assert status == 1, text
    found = failures(text)
    assert found and found[0][0] == "9.2" and found[0][1].startswith(title), text
    if not fault:
        assert "the node does not acknowledge" in text


@pytest.mark.timeout(60)
def test_a_consumer_that_acknowledges_on_arrival_fails_acknowledges_only_what_is_done() -> None:
    """It acknowledged the item its user code failed on (here: that it never consumed)."""
    status, text = kit(
        "--level",
        "acknowledging",
        "--kind",
        "consumer",
        "--timeout",
        "2",
        "--only",
        "acknowledges only what is done",
        "--",
        sys.executable,
        BROKEN,
        "--ack-early",
    )
    assert status == 1, text
    found = failures(text)
    assert found[:1] and found[0][1].startswith("acknowledges only after consume() returned"), text


@pytest.mark.timeout(60)
def test_a_sender_that_does_not_acknowledge_fails_the_replays_scenario() -> None:
    """As a sender, a node without an ack socket counts no forged acknowledgement (and keeps nothing)."""
    status, text = kit("--level", "acknowledging", "--timeout", "2", "--only", "replays", "--", sys.executable, BROKEN)
    assert status == 1, text
    assert failures(text)[:1] == [
        (
            "9.2",
            "refuses forged acknowledgements (malformed, stranger, past what was sent), counted in rejected_acks",
        )
    ], text


@pytest.mark.timeout(60)
def test_a_broken_node_fails_its_level() -> None:
    status, text = kit("--timeout", "3", "--", sys.executable, BROKEN, "--ignore-skip")
    assert status == 1
    assert "Level reached: none (asked for basic)" in text


@pytest.mark.timeout(30)
def test_a_silent_program_fails_the_handshake_fast() -> None:
    started = time.monotonic()
    status, text = kit("--timeout", "1", "--", sys.executable, "-c", "import time; time.sleep(60)")
    assert status == 1
    assert failures(text)[0] == ("4", "subscribes to its identity topic 'hello:under_test.0'")
    assert time.monotonic() - started < 15


@pytest.mark.timeout(30)
def test_a_program_that_exits_at_once_is_reported_with_its_status() -> None:
    status, text = kit("--timeout", "2", "--", sys.executable, "-c", "raise SystemExit(3)")
    assert status == 1
    assert "the node exited with status 3" in text


def test_usage_errors_exit_2() -> None:
    assert main([], out=io.StringIO()) == 2
    assert main(["--only", "nonsense", "--", "true"], out=io.StringIO()) == 2
    assert main(["--", "/no/such/node"], out=io.StringIO()) == 2


def test_level_reached_needs_every_lower_level() -> None:
    def outcome(level: str, passed: bool | None) -> Outcome:
        return Outcome("1", "x", level, passed)

    assert level_reached([outcome("basic", True), outcome("full", True)], 2) == 2
    assert level_reached([outcome("basic", True), outcome("full", False), outcome("restartable", True)], 2) == 0
    assert level_reached([outcome("basic", False), outcome("full", True)], 1) == -1
    assert level_reached([outcome("basic", True), outcome("full", None)], 1) == 1


def test_items_compare_with_their_types() -> None:
    import numpy as np

    assert same({"a": [1, b"x"]}, {"a": [1, b"x"]})
    assert not same(True, 1) and not same(1, 1.0) and not same(b"x", "x")
    assert not same(np.zeros(3, "<f4"), np.zeros(3, "<f8"))
    assert same(np.arange(4).reshape(2, 2), np.arange(4).reshape(2, 2))
    assert FAIL_ITEM == "flujo-conformance:fail"  # the contract other languages implement


def test_a_hold_replayed_after_its_resume_is_over() -> None:
    """The launcher replays hold [X, r, g] to every node when anyone subscribes; once resumed it is void."""
    from flujo.holds import Holds

    holds = Holds()
    holds.hold(("x", 0), 3)
    holds.resume(("x", 0), 3)
    holds.hold(("x", 0), 3)  # the replay
    assert holds.generation == {}
    holds.hold(("x", 0), 4)  # the successor's own restart is a new hold
    assert holds.generation == {("x", 0): 4}


def test_configuration_fields_a_version_does_not_know_are_ignored() -> None:
    import json

    from flujo.config import NodeConfig

    text = json.dumps(
        {
            "flow": "f",
            "node": "n",
            "replica": 0,
            "replicas": 1,
            "kind": "processor",
            "control": "ipc://c",
            "status": "ipc://s",
            "later": {"x": 1},
            "inputs": [
                {
                    "port": "in",
                    "endpoint": "ipc://i",
                    "hwm": 4,
                    "source": "u",
                    "source_port": "out",
                    "senders": 2,
                    "later": 1,
                }
            ],
            "outputs": [
                {"port": "out", "target": "d", "target_port": "in", "hwm": 4, "endpoints": ["ipc://o"], "later": 1}
            ],
        }
    )
    config = NodeConfig.from_json(text)
    assert config.inputs[0].senders == 2 and config.outputs[0].endpoints == ("ipc://o",)


@pytest.mark.timeout(30)
def test_a_reference_node_starts_without_numpy_or_the_kit() -> None:
    """The kit starts a reference node at every scenario: it loads neither numpy nor the kit's
    own modules, which the package loads only when asked for (twice the start-up CPU otherwise)."""
    probe = (
        "import sys, flujo.conformance.reference\n"
        "print(*sorted(m for m in sys.modules if m.startswith(('numpy', 'flujo.conformance.'))))"
    )
    loaded = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=20, check=True)
    assert loaded.stdout.split() == ["flujo.conformance.items", "flujo.conformance.reference"]
    import flujo.conformance as package

    assert package.main is main and package.LEVELS == ("basic", "full", "restartable", "acknowledging")
    with pytest.raises(AttributeError, match="has no attribute 'nothing'"):
        package.nothing  # noqa: B018 - the lookup is what is tested


@pytest.mark.timeout(30)
def test_the_bench_wakes_for_the_nodes_exit_and_settles_each_exit(tmp_path: Path, monkeypatch) -> None:
    """The pump watches the node's exit as it watches its sockets (a pump of a minute returns
    when a node that exits at once is gone), and every process's exit, a successor's too, gets
    its settle window: a report sent just before the exit may still be on its way."""
    bench = Bench([sys.executable, "-c", "pass"], tmp_path, NodeKind.PROCESSOR, timeout=20)
    settled: list[int] = []
    idle = bench.idle
    monkeypatch.setattr(bench, "idle", lambda seconds: (settled.append(bench.generation), idle(seconds)))
    try:
        for generation in (0, 1):
            bench.spawn(generation)
            bench.pump(60_000)  # returns at the exit, long before the test's timeout
            assert bench.exited()
            assert bench.wait(bench.exited)
        assert settled == [0, 1]
    finally:
        bench.close()
