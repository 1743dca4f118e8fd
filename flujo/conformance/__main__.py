"""``python -m flujo.conformance``: see the package docstring."""
import sys

from flujo.conformance.cli import main

sys.exit(main())
