"""The suite's own costs, which tests/conftest.py keeps down: the test modules are rewritten
once for all workers, and a wait looks less often the longer it lasts."""

from __future__ import annotations

from pathlib import Path

import pytest
from _pytest.assertion.rewrite import PYC_TAIL, _read_pyc, get_cache_dir
from conftest import poll_for


def test_the_test_modules_are_rewritten_once_before_the_workers_collect(request: pytest.FixtureRequest) -> None:
    if request.config.getoption("assertmode") != "rewrite":
        pytest.skip("asserts are not rewritten in this run (--assert=plain)")
    here = Path(__file__)
    stale = []
    for module in [*here.parent.glob("test_*.py"), here.parent / "conftest.py"]:
        pyc = get_cache_dir(module) / (module.name[:-3] + PYC_TAIL)
        if _read_pyc(module, pyc) is None:  # missing, or older than its source
            stale.append(module.name)
    assert not stale, f"no rewritten code cached for {stale}"


def test_a_long_wait_looks_every_50_ms_and_a_short_one_ends_at_once() -> None:
    looks = 0

    def never() -> bool:
        nonlocal looks
        looks += 1
        return False

    with pytest.raises(AssertionError, match=r"not met within 0\.5 s"):
        poll_for(never, timeout=0.5)
    # 5, 10, 20, 40, then 50 ms apart: at most 13 looks in 0.5 s (25 at a look every 20 ms).
    assert 2 <= looks <= 13, looks
    assert poll_for(lambda: "done", timeout=0.5) == "done"
