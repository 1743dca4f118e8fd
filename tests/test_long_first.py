"""tests/conftest.py's LONG_FIRST names tests that exist: a renamed test drops out of the list
silently otherwise, and starts as late as its place in the files puts it."""

from __future__ import annotations

import re
from pathlib import Path

from conftest import LONG_FIRST

ROOT = Path(__file__).resolve().parent.parent


def test_every_long_first_prefix_names_a_test_function() -> None:
    missing = []
    for prefix in LONG_FIRST:
        file, _, name = prefix.partition("::")
        path = ROOT / file
        if not path.is_file() or not re.search(rf"^def {re.escape(name)}\b", path.read_text(), re.MULTILINE):
            missing.append(prefix)
    assert not missing, f"LONG_FIRST names no test here: {missing}"
    assert len(set(LONG_FIRST)) == len(LONG_FIRST)
