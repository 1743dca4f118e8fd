"""Restart a node of a running flow mid-stream, by command, and let the flow end afterwards."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from conftest import FlowRunner, poll_for
from flow_nodes import line_count, read_lines
from manifests import Node, collect, node, nodes_toml
from netns import Host

LOSSLESS = "shm = false\nlossless = true"  # [flow] lines: acknowledged, replayable edges (PROTOCOL 9)


def gated(n: int, pause: float | None = None) -> Node:
    """Counts to n, then holds the stream open until restart_mid_stream opens the gate."""
    return node("{nodes}:Gated", args={"n": n, "pause": pause, "gate": "{gate}"})


def chain(n: int, out: str, work: Node, pause: float | None = 0.0005, delay: float | None = None) -> dict[str, Node]:
    """numbers -> work -> sink (Collect into ``out``, ``delay`` seconds an item)."""
    return {"numbers": gated(n, pause), "work": {**work, "inputs": ["numbers"]}, "sink": collect("work", out, delay)}


def zip_behind_a_lagging_input(n: int, out: str, name: str, partner: Node) -> dict[str, Node]:
    """numbers feeds ``lagging`` (jitter, two replicas) and ``partner``; the zip ``pair`` adds
    what both send: at a restart of the zip, its senders stand at different sequence numbers."""
    return {
        "numbers": gated(n, 0.0005),
        "lagging": node("{nodes}:jitter", "numbers", replicas=2),
        name: {**partner, "inputs": ["numbers"]},
        "pair": node("{nodes}:add", {"a": "lagging", "b": name}),
        "sink": collect("pair", out),
    }


def restart_mid_stream(
    flow: FlowRunner,
    manifest_body: str | Mapping[str, Node],
    node: str,
    out: str,
    after: int = 300,
    on: Host | None = None,
    settings: str = "",
) -> tuple[list, str, str]:
    """Start the flow, restart ``node`` once ``after`` items are out, and once every replica
    of it runs again open the gate (``{gate}`` in the manifest) that lets the stream end.
    ``on``: the host the launcher runs on (tests/netns.py). ``settings``: more lines for the
    manifest's [flow] table (e.g. LOSSLESS).

    Returns what the sink wrote, and the launcher's output and messages.
    """
    gate = Path(flow.path("gate"))
    body = manifest_body if isinstance(manifest_body, str) else nodes_toml(manifest_body)
    launcher = flow.start(flow.manifest(body.replace("{gate}", str(gate)), flow=f"queue = 4\n{settings}"), on=on)
    poll_for(lambda: line_count(out) >= after, timeout=30)
    labels = sorted(label for label, replica in flow.replicas().items() if replica["node"] == node)
    reply = flow.command("restart", node, "--flow", flow.name)
    assert reply.returncode == 0, reply.stderr
    assert reply.stdout.strip() == f"restarting {', '.join(labels)}"
    poll_for(
        lambda: all(
            replica["restarts"] == 1 and replica["state"] == "running"
            for label, replica in flow.replicas().items()
            if label in labels
        ),
        timeout=30,
    )
    gate.touch()
    stdout, stderr = launcher.communicate(timeout=60)
    assert launcher.returncode == 0, stderr
    for label in labels:
        assert f'restarting node "{label}": draining it first' in stderr
    assert "before it had drained" not in stderr and "did not drain" not in stderr, stderr
    return read_lines(out), stdout, stderr
