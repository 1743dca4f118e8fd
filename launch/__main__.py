"""``python -m flujo.launch`` is ``flujo-launch``."""

from flujo.launch.cli import entry

entry()
