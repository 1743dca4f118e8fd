"""``python -m flujo.conformance``: see the package docstring."""

import os
import sys

from flujo.conformance.cli import main

try:
    sys.exit(main())
except BrokenPipeError:  # the output was piped into a reader that stopped early (head)
    os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    sys.exit(1)
