"""close(reason): a node learns why it closes; a plain close() keeps working."""

from __future__ import annotations

import signal
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from conftest import FlowRunner, poll_for
from flow_nodes import line_count, read_lines
from manifests import Node, collect, node
from restarting import restart_mid_stream

from flujo import Consumer, Processor
from flujo.closing import CloseReason, closer
from flujo.testing import drive

NODES = Path(__file__).with_name("close_nodes.py")


def recorder() -> tuple[list[Any], dict[str, Callable[..., None]]]:
    calls: list[Any] = []

    def plain() -> None:
        calls.append("plain")

    def positional(reason: CloseReason) -> None:
        calls.append(reason)

    def keyword_only(*, reason: CloseReason) -> None:
        calls.append(("keyword", reason))

    def any_keywords(**options: Any) -> None:
        calls.append(options)

    def any_positional(*args: Any) -> None:
        calls.append(args)

    return calls, {
        "plain": plain,
        "positional": positional,
        "keyword_only": keyword_only,
        "any_keywords": any_keywords,
        "any_positional": any_positional,
    }


FORMS = [
    ("plain", "plain"),
    ("positional", CloseReason.STOP),
    ("keyword_only", ("keyword", CloseReason.STOP)),
    ("any_keywords", {"reason": CloseReason.STOP}),
    ("any_positional", (CloseReason.STOP,)),
]


@pytest.mark.parametrize(("form", "call"), FORMS)
def test_close_is_called_in_the_form_it_declares(form: str, call: Any) -> None:
    calls, functions = recorder()
    closer(functions[form])(CloseReason.STOP)
    assert calls == [call]


def test_a_close_without_a_signature_is_called_plain() -> None:
    assert closer(object.__init_subclass__)(CloseReason.STOP) is None  # a builtin: no parameters read


def test_reasons_are_the_documented_strings() -> None:
    assert [str(reason) for reason in CloseReason] == ["end-of-stream", "stop", "restart", "failure"]


class Plain(Processor):
    def __init__(self) -> None:
        self.closed: list[str] = []

    def process(self, item: Any) -> Any:
        return item

    def close(self) -> None:
        self.closed.append("plain")


class Told(Consumer):
    def __init__(self, fail: bool = False) -> None:
        self.fail = fail
        self.reasons: list[CloseReason] = []

    def consume(self, item: Any) -> None:
        if self.fail:
            raise ValueError("no")

    def close(self, reason: CloseReason = CloseReason.END_OF_STREAM) -> None:
        self.reasons.append(reason)


def test_drive_tells_close_why_and_keeps_plain_close_working() -> None:
    plain, told, failing = Plain(), Told(), Told(fail=True)
    assert drive(plain, [1, 2]) == [1, 2] and plain.closed == ["plain"]
    drive(told, [1])
    assert told.reasons == [CloseReason.END_OF_STREAM]
    with pytest.raises(ValueError):
        drive(failing, [1])
    assert failing.reasons == [CloseReason.FAILURE]


def notes(path: str) -> list[str]:
    return Path(path).read_text().splitlines()


def told_chain(
    flow: FlowRunner, source: Node, middle_args: dict[str, object] | None = None, plain: bool = False
) -> tuple[dict[str, Node], str, str]:
    """source -> middle (notes why it closes) [-> plain (a close() without a reason)] -> sink.

    Returns the nodes, the sink's file and the middle node's notes file."""
    out, middle = flow.path("out.jsonl"), flow.path("m.txt")
    nodes = {
        "numbers": source,
        "middle": node(f"{NODES}:ReasonPass", "numbers", {"path": middle, **(middle_args or {})}),
    }
    if plain:
        nodes["plain"] = node(f"{NODES}:PlainClose", "middle", {"path": flow.path("plain.txt")})
    nodes["sink"] = collect("plain" if plain else "middle", out)
    return nodes, out, middle


@pytest.mark.timeout(60)
def test_a_stopped_flow_tells_each_node_why(flow: FlowRunner) -> None:
    producer = flow.path("p.txt")
    nodes, out, middle = told_chain(
        flow, node(f"{NODES}:ReasonCount", args={"path": producer, "n": 100000}), plain=True
    )
    launcher = flow.start(flow.manifest(nodes))
    poll_for(lambda: line_count(out) >= 50, timeout=30)
    launcher.send_signal(signal.SIGINT)
    _, stderr = launcher.communicate(timeout=30)
    assert launcher.returncode == 0, stderr
    assert notes(producer) == ["0 stop"]  # told to stop
    assert notes(middle) == ["0 end-of-stream CloseReason"]  # its input ended behind the stop
    assert notes(flow.path("plain.txt")) == ["0 closed"]  # close() without a reason still runs
    assert read_lines(out) == list(range(len(read_lines(out))))


@pytest.mark.timeout(60)
def test_a_failing_node_is_closed_for_failure(flow: FlowRunner) -> None:
    source = node(f"{NODES}:ReasonCount", args={"path": flow.path("p.txt"), "n": 20, "pause": 0.0})
    nodes, out, middle = told_chain(flow, source, {"fail_at": 5})
    result = flow.run(flow.manifest(nodes))
    assert result.returncode != 0
    assert "failing at 5" in result.stderr
    assert notes(middle) == ["0 failure CloseReason"]
    assert read_lines(out) == [0, 1, 2, 3, 4]


@pytest.mark.timeout(90)
def test_a_restarted_node_is_closed_for_restart_and_its_successor_at_the_end(flow: FlowRunner) -> None:
    n = 1000
    nodes, out, middle = told_chain(flow, node("{nodes}:Gated", args={"n": n, "pause": 0.0005, "gate": "{gate}"}))
    values, _, _ = restart_mid_stream(flow, nodes, "middle", out)
    assert values == list(range(n))
    assert notes(middle) == ["0 restart CloseReason", "1 end-of-stream CloseReason"]
