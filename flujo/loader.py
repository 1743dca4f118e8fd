"""Find the class or function a ``run = "..."`` reference names.

Three forms: ``"package.module:attr"`` (imported as usual), ``"path/to/file.py:attr"``
(loaded from that file, relative to the manifest's folder) and ``"path/to/file.pkl:attr"``
(a class or function pickled by value with cloudpickle: what ``flujo.Flow`` writes for a
node defined in a notebook or an interactive session, which has no file to load it from). A file is loaded under a
private module name, so a user's script guarded by ``if __name__ == "__main__"`` can
define its own node classes and also start the flow.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
import traceback
import zlib
from pathlib import Path
from typing import Any


class LoadError(Exception):
    """The reference cannot be resolved; the message says why."""


def split_reference(reference: str) -> tuple[str, str]:
    module, sep, attr = reference.rpartition(":")
    if not sep or not module or not attr:
        raise LoadError(f'"{reference}" is not of the form "module:attr" or "file.py:attr"')
    return module, attr


def load_target(reference: str, base_dir: str | Path = ".") -> Any:
    """The object ``reference`` names; raises LoadError with the reason."""
    module_name, attr = split_reference(reference)
    if module_name.endswith(".pkl"):
        return _load_pickle(Path(base_dir) / module_name)
    if module_name.endswith(".py"):
        module = _load_file(Path(base_dir) / module_name)
    else:
        try:
            module = importlib.import_module(module_name)
        except ImportError as error:
            raise LoadError(f"cannot import module {module_name!r}: {error}") from error
        except (Exception, SystemExit) as error:  # its own code failed, or exited, while importing
            raise LoadError(f"module {module_name!r} failed to load: {_describe(error)}") from error
    target: Any = module
    for part in attr.split("."):
        try:
            target = getattr(target, part)
        except AttributeError:
            raise LoadError(f"{module_name!r} has no attribute {attr!r}") from None
    return target


def _load_file(path: Path) -> Any:
    path = path.resolve()
    if not path.is_file():
        raise LoadError(f"no such file: {path}")
    # One module per file, named after its path, so two loads share classes.
    # A checksum, not a hash: hashlib (OpenSSL) costs every node process 3 ms to import.
    name = f"flujo_user_{path.stem}_{zlib.crc32(str(path).encode()):08x}"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    # Let the file import its neighbours, as it would when run as a script.
    sys.path.insert(0, str(path.parent))
    try:
        spec.loader.exec_module(module)
    except (Exception, SystemExit) as error:  # SystemExit: a script that exits when imported
        del sys.modules[name]
        raise LoadError(f"{path} failed to load: {_describe(error)}") from error
    finally:
        sys.path.remove(str(path.parent))
    return module


def _load_pickle(path: Path) -> Any:
    # A pickle runs code when loaded, exactly as a "file.py" reference does: it is trusted as
    # the manifest that names it is (flujo.Flow writes both into a folder only its user can read).
    import cloudpickle  # only flows defined interactively need it

    try:
        with path.open("rb") as file:
            return cloudpickle.load(file)
    except FileNotFoundError:
        raise LoadError(f"no such file: {path}") from None
    except Exception as error:
        raise LoadError(f"{path} failed to load: {type(error).__name__}: {error}") from error


def _describe(error: BaseException) -> str:
    """One line that says what went wrong, and where in the user's code."""
    if isinstance(error, SystemExit):
        text = f"it called sys.exit({error.code!r}) while being imported"
    else:
        text = f"{type(error).__name__}: {error}"
    frames = traceback.extract_tb(error.__traceback__)
    user = [frame for frame in frames if "importlib" not in frame.filename and frame.filename != __file__]
    if user:
        text += f" ({user[-1].filename}, line {user[-1].lineno})"
    return text
