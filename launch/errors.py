"""Errors the launcher shows to people: each names the file, the node and the field."""

from __future__ import annotations

import difflib
from collections.abc import Iterable
from dataclasses import dataclass

#: Exit status for a manifest that cannot run (nothing was started).
EXIT_BAD_MANIFEST = 2
#: Exit status for a flow in which some node failed.
EXIT_NODE_FAILED = 1
#: Exit status when a second interrupt killed every node.
EXIT_KILLED = 130


class LaunchError(Exception):
    """The launch ends with exit status ``code``; ``message`` says why ("" when it was said already)."""

    def __init__(self, code: int, message: str = "") -> None:
        super().__init__(message)
        self.code, self.message = code, message


def did_you_mean(name: str, known: Iterable[str]) -> str:
    """' (did you mean "x"?)' for the closest known name, or ''."""
    matches = difflib.get_close_matches(name, list(known), n=1, cutoff=0.6)
    return f' (did you mean "{matches[0]}"?)' if matches else ""


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a manifest."""

    file: str
    message: str
    node: str | None = None
    field: str | None = None

    def __str__(self) -> str:
        where = [self.file]
        if self.node is not None:
            where.append(f'node "{self.node}"')
        if self.field is not None:
            where.append(f'field "{self.field}"')
        return f"{': '.join(where)}: {self.message}"


class ManifestError(Exception):
    """The manifest cannot run; carries every problem found, not just the first."""

    exit_code = EXIT_BAD_MANIFEST

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = problems
        super().__init__("\n".join(str(problem) for problem in problems))
