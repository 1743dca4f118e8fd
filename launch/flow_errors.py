"""What a Python-defined flow raises: a definition that cannot run, and a run that failed (with
the message that names each failed node and its error)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any


class FlowDefinitionError(ValueError):
    """The flow, as defined so far, could not run."""


class FlowError(RuntimeError):
    """The flow ran and failed; the message names each failed node and its error.

    ``results`` has each replica's exit status by label (empty if the launcher itself could
    not start the flow); ``status`` is the launcher's final state, as ``Flow.status()``.
    """

    def __init__(self, message: str, results: dict[str, int], status: dict[str, Any]) -> None:
        super().__init__(message)
        self.results, self.status = results, status


def flow_failure(
    flow: str, code: int | None, results: dict[str, int], status: dict[str, Any], messages: Iterable[str]
) -> FlowError:
    """The FlowError of flow ``flow``, whose launcher exited with status ``code`` (not 0) leaving
    ``status`` (empty if it never ran, then its last ``messages`` say why)."""
    failed = [node for node in status.get("nodes", []) if node.get("error") or node.get("exit_code") not in (0, None)]
    if failed:
        reasons = [
            f'node "{node["label"]}" failed: {node.get("error") or "exited with status " + str(node.get("exit_code"))}'
            for node in failed
        ]
    elif status:
        reasons = [f"killed (the launcher exited with status {code})"]
    else:
        said = [line for line in messages if line.strip()]
        reasons = [
            f"the launcher exited with status {code} before the flow ran"
            + (": " + " / ".join(said[-3:]) if said else "")
        ]
    return FlowError(f'flow "{flow}" failed: ' + "; ".join(reasons), results, status)
