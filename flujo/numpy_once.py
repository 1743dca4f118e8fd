"""numpy for the per-item path, imported by the first array a process handles.

A node that never handles an array starts without numpy (it is a third of a node's start-up),
so the modules that handle arrays import it lazily. An ``import numpy`` inside a function on the
per-item path costs about 10 µs per call when the process runs cold (one item every 10 ms: the
import machinery's code and data are out of the caches each time) and several such imports lay
on a hop's path; a module attribute lookup costs next to nothing:

    np = numpy_once.np or numpy_once.load()
"""

from __future__ import annotations

from typing import Any

#: The numpy module once ``load`` has run, else None.
np: Any = None


def load() -> Any:
    """Import numpy (once) and return it."""
    global np
    if np is None:
        import numpy

        np = numpy
    return np
