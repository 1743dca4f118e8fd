"""A launcher started by a program (``flujo.Flow.start``) must not outlive that program.

The program keeps the write end of a pipe and hands the read end to the launcher, named in
the launcher's environment. The kernel closes the write end however the program ends
(return, exception, SIGKILL), so the read end becomes readable (end of file) exactly then:
the launcher polls it with its other sockets, stops the flow, and removes the folder the
program created for it, which nobody else would remove any more.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from pathlib import Path

#: The read end of the program's pipe, in the launcher's environment.
FD_ENV = "FLUJO_PARENT_FD"
#: The folder the program made for this flow (manifest, status, pickled nodes).
FOLDER_ENV = "FLUJO_PARENT_FOLDER"


class ParentPipe:
    """The launcher's end of the pipe; ``fd`` turns readable when the program has ended."""

    def __init__(self, fd: int, folder: Path | None) -> None:
        self.fd, self.folder = fd, folder
        self.cut = False
        os.set_inheritable(fd, False)  # the nodes the launcher spawns must not hold it open

    @classmethod
    def from_environment(cls) -> ParentPipe | None:
        """The lifeline this launcher was given, if any (taken out of the environment, so the
        nodes do not inherit a stale number)."""
        fd = os.environ.pop(FD_ENV, None)
        folder = os.environ.pop(FOLDER_ENV, None)
        if fd is None:
            return None
        try:
            return cls(int(fd), Path(folder) if folder else None)
        except (ValueError, OSError):
            return None  # not a valid descriptor: nothing to watch

    def readable(self) -> bool:
        """Call when ``fd`` polls readable; True when the program has ended."""
        if not self.cut:
            try:
                self.cut = os.read(self.fd, 64) == b""
            except OSError:
                self.cut = True
        return self.cut

    def close(self) -> None:
        """At the launcher's end: if the program is gone, remove its folder for it."""
        if self.cut and self.folder is not None:
            shutil.rmtree(self.folder, ignore_errors=True)
        with contextlib.suppress(OSError):
            os.close(self.fd)
