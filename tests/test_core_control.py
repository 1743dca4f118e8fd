"""The node's control state without sockets: the lifecycle state machine, every command, Holds.

Table-driven and in-process: every branch of the node side of a graceful restart
(docs/PROTOCOL.md, section 8) in milliseconds.
"""

from __future__ import annotations

from typing import Any

import pytest

from flujo.control_state import ControlState, InvalidTransition, Lifecycle, Phase
from flujo.holds import Holds
from flujo.protocol import Control, Status

W, R, S, D, X = Phase.WAITING, Phase.RUNNING, Phase.STOPPING, Phase.DRAINING, Phase.DISMISSED
INVALID = "invalid"

# phase before, event -> phase after (or INVALID: the event raises and the phase stays)
TRANSITIONS = [
    (W, "start", R),
    (W, "stop", S),
    (W, "drain", D),
    (W, "dismiss", INVALID),
    (R, "start", R),
    (R, "stop", S),
    (R, "drain", D),
    (R, "dismiss", INVALID),
    (S, "start", S),
    (S, "stop", S),
    (S, "drain", D),
    (S, "dismiss", INVALID),
    (D, "start", D),
    (D, "stop", D),
    (D, "drain", D),
    (D, "dismiss", X),
    (X, "start", X),
    (X, "stop", X),
    (X, "drain", X),
    (X, "dismiss", X),
]


def at(phase: Phase) -> Lifecycle:
    lifecycle = Lifecycle()
    lifecycle.phase = phase
    return lifecycle


@pytest.mark.parametrize(("before", "event", "after"), TRANSITIONS)
def test_every_event_in_every_phase(before: Phase, event: str, after: Phase | str) -> None:
    lifecycle = at(before)
    if after == INVALID:
        with pytest.raises(InvalidTransition, match=f"'{event}' while {before}"):
            getattr(lifecycle, event)()
        assert lifecycle.phase is before
    else:
        getattr(lifecycle, event)()
        assert lifecycle.phase is after


def test_the_table_covers_every_phase_and_event() -> None:
    assert {(before, event) for before, event, _ in TRANSITIONS} == {
        (phase, event) for phase in Phase for event in ("start", "stop", "drain", "dismiss")
    }


# phase -> (started, stop_requested, drain_requested, dismissed)
VIEWS = [
    (W, (False, False, False, False)),
    (R, (True, False, False, False)),
    (S, (True, True, False, False)),
    (D, (True, False, True, False)),
    (X, (True, False, True, True)),
]


@pytest.mark.parametrize(("phase", "view"), VIEWS)
def test_what_the_runtime_reads_of_each_phase(phase: Phase, view: tuple[bool, ...]) -> None:
    lifecycle = at(phase)
    assert (lifecycle.started, lifecycle.stop_requested, lifecycle.drain_requested, lifecycle.dismissed) == view


# -- every command ---------------------------------------------------------------------------
ME = ("me", 1)
GENERATION = 3


def state() -> tuple[ControlState, list[tuple[Status, Any]]]:
    reports: list[tuple[Status, Any]] = []
    return ControlState(*ME, GENERATION, lambda kind, payload: reports.append((kind, payload))), reports


# commands -> expected (phase, changes)
COMMANDS: list[tuple[str, list[tuple[Control | None, list[Any]]], Phase, int]] = [
    ("start", [(Control.START, [])], R, 0),
    ("stop for me", [(Control.STOP, ["other", "me"])], S, 0),
    ("stop for others", [(Control.STOP, ["other"])], W, 0),
    ("hold of me", [(Control.HOLD, ["me", 1, GENERATION])], D, 1),
    ("hold of my predecessor", [(Control.HOLD, ["me", 1, GENERATION - 1])], W, 1),
    ("hold of another replica", [(Control.HOLD, ["me", 0, GENERATION])], W, 1),
    ("hold then dismiss", [(Control.HOLD, ["me", 1, GENERATION]), (Control.DISMISS, ["me", 1, GENERATION])], X, 1),
    ("dismiss of another", [(Control.DISMISS, ["up", 0, 0])], W, 0),
    ("unknown topic", [(None, [])], W, 0),
    ("released", [(Control.RELEASED, ["down", 0, "in"])], W, 1),
    ("exited", [(Control.EXITED, ["down", 0])], W, 1),
    ("moved", [(Control.MOVED, ["down", 0, "in", "tcp://h:1"])], W, 1),
    ("gone for every reader", [(Control.GONE, ["up", 0])], W, 1),
    ("gone for me", [(Control.GONE, ["up", 0, "me", 1])], W, 1),
    ("gone for another reader", [(Control.GONE, ["up", 0, "me", 0])], W, 0),
]


@pytest.mark.parametrize(("name", "commands", "phase", "changes"), COMMANDS, ids=[row[0] for row in COMMANDS])
def test_every_command(name: str, commands: list[tuple[Control | None, list[Any]]], phase: Phase, changes: int) -> None:
    control, _ = state()
    for topic, payload in commands:
        control.apply(topic, payload)
    assert (control.lifecycle.phase, control.changes) == (phase, changes)


def test_kept_counts_only_for_this_process_and_only_grows() -> None:
    control, _ = state()
    control.apply(Control.KEPT, ["me", 1, GENERATION, 40])
    control.apply(Control.KEPT, ["me", 1, GENERATION, 12])  # an older answer, late: no step back
    control.apply(Control.KEPT, ["me", 1, GENERATION - 1, 90])  # the predecessor's
    control.apply(Control.KEPT, ["me", 0, GENERATION, 90])  # another replica's
    control.apply(Control.KEPT, ["other", 1, GENERATION, 90])
    assert control.kept == 40 and control.changes == 0


def test_facts_about_other_replicas() -> None:
    control, _ = state()
    control.apply(Control.RELEASED, ["down", 2, "in"])
    control.apply(Control.EXITED, ["down", 0])
    control.apply(Control.MOVED, ["down", 0, "in", "tcp://h:1"])
    control.apply(Control.GONE, ["up", 0])
    control.apply(Control.GONE, ["up", 1, "me", 0])  # for the other replica of me: not mine
    assert control.is_released("down", "in", 2) and not control.is_released("down", "in", 0)
    assert control.exited == [("down", 0)]
    assert control.moved == {("down", "in", 0): "tcp://h:1"}
    assert control.gone == {("up", 0)}


def test_a_dismiss_out_of_order_raises_and_changes_nothing() -> None:
    control, _ = state()
    control.apply(Control.HOLD, ["down", 0, 5])
    with pytest.raises(InvalidTransition):
        control.apply(Control.DISMISS, ["me", 1, GENERATION])
    assert control.lifecycle.phase is W
    assert ("me", 1) not in control.holds.drained


def test_align_resume_and_the_drain_limit() -> None:
    control, _ = state()
    control.apply(Control.HOLD, ["me", 1, GENERATION])
    assert control.drain_limit is None
    control.apply(Control.ALIGN, ["me", 1, GENERATION, 41])
    assert control.drain_limit == 41
    control.apply(Control.RESUME, ["me", 1, GENERATION])
    assert control.drain_limit is None and control.holds.generation == {}


def test_positions_are_reported_on_the_status_channel() -> None:
    control, reports = state()
    control.holds.report_position("down", 0, "in", 7)
    assert reports == [(Status.POSITION, ["down", 0, "in", 7])]


# -- Holds ---------------------------------------------------------------------------------------
KEY = ("down", 0)
# steps, then (generation, limit, drained, resumed) of KEY
HOLDS: list[tuple[str, list[tuple[str, tuple[int, ...]]], tuple[Any, Any, bool, Any]]] = [
    ("hold", [("hold", (2,))], (2, None, False, None)),
    ("hold, align", [("hold", (2,)), ("align", (2, 9))], (2, 9, False, None)),
    ("align of another generation is ignored", [("hold", (2,)), ("align", (1, 9))], (2, None, False, None)),
    ("align without a hold is ignored", [("align", (2, 9))], (None, None, False, None)),
    ("dismissed", [("hold", (2,)), ("align", (2, 9)), ("dismissed", (2,))], (2, 9, True, None)),
    ("dismissed of another generation", [("hold", (2,)), ("dismissed", (1,))], (2, None, False, None)),
    (
        "resume ends the hold",
        [("hold", (2,)), ("align", (2, 9)), ("dismissed", (2,)), ("resume", (2,))],
        (None, None, False, 2),
    ),
    ("resume of an older generation keeps the hold", [("hold", (2,)), ("resume", (1,))], (2, None, False, 1)),
    ("a replayed hold of a resumed generation is over", [("resume", (2,)), ("hold", (2,))], (None, None, False, 2)),
    ("an older resume does not lower the resumed", [("resume", (3,)), ("resume", (2,))], (None, None, False, 3)),
    (
        "a new generation forgets the old limit",
        [("hold", (2,)), ("align", (2, 9)), ("dismissed", (2,)), ("hold", (3,))],
        (3, None, False, None),
    ),
    ("the same hold twice keeps its limit", [("hold", (2,)), ("align", (2, 9)), ("hold", (2,))], (2, 9, False, None)),
]


@pytest.mark.parametrize(("name", "steps", "expected"), HOLDS, ids=[row[0] for row in HOLDS])
def test_holds(name: str, steps: list[tuple[str, tuple[int, ...]]], expected: tuple[Any, ...]) -> None:
    holds = Holds()
    for method, args in steps:
        getattr(holds, method)(KEY, *args)
    assert (holds.generation.get(KEY), holds.limit.get(KEY), KEY in holds.drained, holds.resumed.get(KEY)) == expected
