"""Drives a ForkServer from a process of its own (a fork server copies its creator, which must
be single-threaded and must not mind its forks returning from the constructor as SystemExit):
``python fork_server_probe.py SCENARIO`` prints one JSON object of what happened."""

from __future__ import annotations

import json
import os
import sys
import time

from flujo.launch.fork_client import ForkServer
from flujo.protocol import CONFIG_ENV

scenario = sys.argv[1]
forks = ForkServer("flujo-fork-server probe", reply_timeout=5)  # nodes come back from here as they end
exits: list[list[int]] = []
bad = {**forks.env, CONFIG_ENV: "{not json"}  # a node refuses it and exits 1
report: dict[str, object] = {}
if scenario == "basics":
    report["fits_extra"] = forks.fits({**forks.env, "EXTRA": "1"})
    report["forked_extra"] = forks.fork("/", {**forks.env, "EXTRA": "1"}, "t", lambda *e: exits.append(list(e)))
    forked = forks.fork(os.getcwd(), bad, "flujo-node bad", lambda *e: exits.append(list(e)))
    assert forked is not None
    with os.fdopen(forked[1], "rb") as output:
        report["output"] = output.read().decode()
    report["pids"] = [forked[0]]
elif scenario == "many":  # children that exit at once: exits come between the replies
    pids = []
    for _ in range(30):
        forked = forks.fork(os.getcwd(), bad, "flujo-node bad", lambda *e: exits.append(list(e)))
        if forked is None:
            break
        pids.append(forked[0])
        os.close(forked[1])
    report["pids"] = pids
deadline = time.monotonic() + 10
while len(exits) < len(report["pids"]) and time.monotonic() < deadline:  # type: ignore[arg-type]
    time.sleep(0.01)
report["exits"] = sorted(exits)
forks.close()
report["after_close"] = forks.fork("/", dict(forks.env), "t", lambda *e: None)
print(json.dumps(report))
