"""A node process starts without numpy and asyncio: each test flow starts hundreds of nodes.

numpy is imported where an array is made or read, zmq.auth (which brings asyncio) where a tcp
socket binds with CURVE; once those happen, arrays still go both ways.
"""

from __future__ import annotations

import subprocess
import sys

import pytest
from manifests import collect, count

PROBE = """
import sys
import flujo.node, flujo.launch.launcher, flujo.launch.agent
print(sorted(name for name in ("numpy", "asyncio", "zmq.auth") if name in sys.modules))
from flujo.protocol import Codec
from flujo.wire_check import DataCheck
codec = Codec("up", 0)
import numpy as np
frames = codec.encode(7, {"frame": np.arange(6, dtype="<i4").reshape(2, 3)})
frames = [frame if isinstance(frame, bytes) else frame.tobytes() for frame in frames]  # as received
item = codec.decode(frames, DataCheck("up", 1)).item
print(item["frame"].tolist(), item["frame"].dtype.str)
"""


@pytest.mark.timeout(30)
def test_node_and_launcher_start_without_numpy_or_asyncio_and_arrays_still_travel() -> None:
    done = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, timeout=25)
    assert done.returncode == 0, done.stderr
    loaded, array = done.stdout.splitlines()
    assert loaded == "[]"
    assert array == "[[0, 1, 2], [3, 4, 5]] <i4"


LAUNCHER = """
import atexit, sys
atexit.register(lambda: print("rich loaded:", "rich" in sys.modules, file=sys.stderr))
from flujo.launch.cli import main
sys.argv[0] = "flujo-launch"
main()
"""


@pytest.mark.timeout(60)
def test_a_launcher_without_a_terminal_never_loads_rich(flow) -> None:
    """rich draws the live view on a terminal; a launcher writing into a pipe (every test's, every
    service's) prints its closing summary as plain lines and never pays for importing rich."""
    out = flow.path("out.jsonl")
    manifest = flow.manifest({"numbers": count(3), "sink": collect("numbers", out)})
    done = subprocess.run(
        [sys.executable, "-c", LAUNCHER, str(manifest)], capture_output=True, text=True, timeout=50, env=flow.env
    )
    assert done.returncode == 0, done.stderr
    assert "summary:\n  numbers: exit 0, in 0, out 3," in done.stderr  # the plain closing summary
    assert done.stderr.rstrip().endswith("rich loaded: False"), done.stderr
