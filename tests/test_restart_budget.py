"""Restart policy, cap and back-off, with a fake clock."""

from __future__ import annotations

import pytest

from flujo.launch.restarts import MAX_DELAY, RestartBudget


@pytest.mark.parametrize(
    "policy, code, wanted",
    [
        ("no", 1, False),
        ("on-failure", 1, True),
        ("on-failure", 0, False),
        ("always", 0, True),
        ("always", -9, True),
    ],
)
def test_policy_decides_which_deaths_restart(policy: str, code: int, wanted: bool) -> None:
    assert RestartBudget(policy, 3, 60).wants_restart(code) is wanted


def test_first_restart_at_once_then_backoff_doubles_then_the_cap_gives_up() -> None:
    budget = RestartBudget("on-failure", 4, window=60)
    assert [budget.next_delay(now) for now in (0, 1, 2, 3)] == [0.0, 0.1, 0.2, 0.4]
    assert budget.next_delay(4) is None  # a fifth restart within 60 s: the node counts as failed


def test_restarts_outside_the_window_are_forgiven() -> None:
    budget = RestartBudget("always", 2, window=10)
    assert budget.next_delay(0) == 0.0 and budget.next_delay(5) == 0.1
    assert budget.next_delay(9) is None
    assert budget.next_delay(14) == 0.1  # the restart at 0 s has left the window; the one at 5 s has not
    assert budget.next_delay(30) == 0.0  # both have: a first restart again
    assert budget.total == 4


def test_backoff_has_a_ceiling() -> None:
    budget = RestartBudget("always", 100, window=1e9)
    delays = [budget.next_delay(float(now)) for now in range(20)]
    assert max(delays) == MAX_DELAY and delays[-1] == MAX_DELAY
