"""The launcher stays split by job: every module of launch/ (installed as flujo.launch) is under
MAX_LAUNCH_MODULE_LINES lines, so no module grows back into one that does several jobs."""

from __future__ import annotations

from pathlib import Path

import pytest

pytestmark = pytest.mark.timeout(10)

#: The launcher's largest module must stay under this many lines (issue 9's criterion).
MAX_LAUNCH_MODULE_LINES = 300
LAUNCH = Path(__file__).resolve().parents[1] / "launch"


def _too_long(folder: Path) -> dict[str, int]:
    """The modules of ``folder`` with MAX_LAUNCH_MODULE_LINES lines or more (as ``wc -l`` counts)."""
    counts = {path.name: path.read_bytes().count(b"\n") for path in folder.glob("*.py")}
    return {name: count for name, count in counts.items() if count >= MAX_LAUNCH_MODULE_LINES}


def test_every_launch_module_is_under_the_limit() -> None:
    assert len(list(LAUNCH.glob("*.py"))) > 10, f"no launcher modules found in {LAUNCH}"
    too_long = _too_long(LAUNCH)
    assert not too_long, f"launch/ modules must stay under {MAX_LAUNCH_MODULE_LINES} lines, split by job: {too_long}"


def test_a_module_at_the_limit_is_refused(tmp_path: Path) -> None:
    (tmp_path / "short.py").write_text("x = 1\n" * (MAX_LAUNCH_MODULE_LINES - 1))
    (tmp_path / "long.py").write_text("x = 1\n" * MAX_LAUNCH_MODULE_LINES)
    assert _too_long(tmp_path) == {"long.py": MAX_LAUNCH_MODULE_LINES}
