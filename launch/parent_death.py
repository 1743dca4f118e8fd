"""The kernel's parent-death signal: the last resort that ends a child when its parent dies."""

from __future__ import annotations

import ctypes
import signal

_PR_SET_PDEATHSIG = 1
_libc = ctypes.CDLL(None, use_errno=True)


def end_with_parent() -> None:
    """SIGKILL this process when the thread that started it ends (its parent's graceful ways,
    the stop ladder and the reaper, come first; this is what remains if they could not run).
    Runs in a child between fork and exec, or in a forked child (launch/fork_server.py)."""
    _libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
