"""Why a node closes, and calling a user's ``close()`` with it or without it.

A node's ``close(reason)`` learns why its process is ending, as dora-rs tells its nodes;
a node written with a plain ``close()`` keeps working (its signature is looked at once).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from enum import StrEnum
from typing import Any


class CloseReason(StrEnum):
    """Why a node is closing (the argument of ``Node.close``)."""

    END_OF_STREAM = "end-of-stream"  # the producer's stream ended, or every input ended
    STOP = "stop"  # told to stop (flujo-launch stop, Ctrl-C), or nothing downstream reads any more
    RESTART = "restart"  # drained for a graceful restart: a successor continues the stream
    FAILURE = "failure"  # user code raised: close() still runs, then the error is reported


def closer(close: Callable[..., Any]) -> Callable[[CloseReason], Any]:
    """``close`` as a function of the reason: called with it when it takes an argument,
    without it when it takes none (``def close(self)``)."""
    try:
        parameters = inspect.signature(close).parameters.values()
    except (TypeError, ValueError):  # a builtin without a signature: call it as before
        return lambda reason: close()
    positional = (
        inspect.Parameter.POSITIONAL_ONLY,
        inspect.Parameter.POSITIONAL_OR_KEYWORD,
        inspect.Parameter.VAR_POSITIONAL,
    )
    if any(parameter.kind in positional for parameter in parameters):
        return close
    if any(parameter.name == "reason" or parameter.kind is inspect.Parameter.VAR_KEYWORD for parameter in parameters):
        return lambda reason: close(reason=reason)
    return lambda reason: close()
