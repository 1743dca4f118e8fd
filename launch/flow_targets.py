"""What a node of a Python-defined flow runs, seen from the definition: the ``run`` reference a
node process loads it by, its default node name, and the keyword arguments it takes."""

from __future__ import annotations

import inspect
import re
import sys
from pathlib import Path
from typing import Any

from flujo.launch.flow_errors import FlowDefinitionError


def is_interactive(target: Any) -> bool:
    """Defined in a notebook, a REPL or ``python -c``: no file another process could load it from."""
    if getattr(target, "__module__", None) != "__main__":
        return False
    file = getattr(sys.modules.get("__main__"), "__file__", None)
    return not file or not Path(file).is_file()  # "<stdin>", or none at all


def run_reference(target: Any) -> str:
    """The ``run`` reference that loads ``target`` in a node process (an interactive target is
    referred to through ``__main__`` until ``start`` pickles it)."""
    qualname = getattr(target, "__qualname__", "")
    if not callable(target) or not qualname or "<" in qualname:
        raise FlowDefinitionError(
            f"{target!r} is not a module-level class or function, so another process cannot load it"
        )
    if is_interactive(target):
        return f"__main__:{qualname}"
    module = sys.modules.get(target.__module__)
    file = getattr(module, "__file__", None)
    if target.__module__ == "__main__" or target.__module__.startswith("flujo_user_"):
        return f"{Path(file).resolve()}:{qualname}"  # type: ignore[arg-type]
    return f"{target.__module__}:{qualname}"


def default_name(target: Any) -> str:
    if isinstance(target, (list, tuple)):  # a command: its script's or program's name
        words = [word for word in target[1:] if not word.startswith("-")] or list(target[:1])
        base = Path(str(words[0])).stem
        return re.sub(r"[^A-Za-z0-9_-]", "_", base).lstrip("-0123456789") or "command"
    return re.sub(r"(?<!^)(?=[A-Z])", "_", target.__name__).lower()


def arguments_of(target: Any) -> list[str] | None:
    """The keyword arguments ``target`` takes (a class: its constructor's); None: any."""
    try:
        parameters = inspect.signature(target).parameters.values()
    except (TypeError, ValueError):
        return None
    if any(parameter.kind is inspect.Parameter.VAR_KEYWORD for parameter in parameters):
        return None
    return [
        parameter.name
        for parameter in parameters
        if parameter.kind in (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    ]
