"""Vision nodes: people detection, tracking, line counting and drawing.

A typical flow: ``VideoReader -> PeopleDetector -> Tracker -> LineCounter``, with an
``Annotator`` joining the frames, tracks and counts for a ``VideoWriter``. The item
schemas are described in each module's docstring.

Each class is imported on first use: a node process loads only its own module (the
tracker's SciPy alone costs about half a second of CPU at start, in every process that
imports it, which on a short clip with five vision processes is a few percent of the run).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from flujo.nodes.vision.annotator import Annotator
    from flujo.nodes.vision.counter import LineCounter
    from flujo.nodes.vision.detector import PeopleDetector
    from flujo.nodes.vision.tracker import Tracker

_MODULES = {"Annotator": "annotator", "LineCounter": "counter", "PeopleDetector": "detector", "Tracker": "tracker"}
__all__ = ["Annotator", "LineCounter", "PeopleDetector", "Tracker"]


def __getattr__(name: str) -> Any:
    module = _MODULES.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value  # found directly from now on
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
