"""Nodes placed on a Ray cluster: a Ray head in one network namespace, a Ray worker in another.

The worker has a custom resource the head lacks (``worker_only``), so a node asking for it
must land there; both have one ``gpu_like``, which the failure test uses to move a node from
the worker to the head. The launcher runs on the head's machine and connects to the head.
One cluster serves every test of the module (starting one takes about 25 s here); the test
that kills the worker runs last.
"""
from __future__ import annotations

import os
import queue
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Iterator

import pytest

from conftest import FlowRunner, poll_for
from flow_nodes import line_count, read_lines
from netns import Host, can_make_namespaces, make_hosts, remove_hosts

ray = pytest.importorskip("ray", reason="Ray is not installed: pip install -e '.[test,ray]' (.ci/run does)")
_why_not = can_make_namespaces()
pytestmark = pytest.mark.skipif(_why_not is not None, reason=_why_not or "")

RAY_PORT = 6379
RAY_CLI = str(Path(sys.executable).with_name("ray"))
#: Modest on a shared 2-core machine: logical CPUs only (Ray does not pin them), a small object store.
NODE_OPTIONS = ["--num-cpus", "2", "--object-store-memory", str(80 * 2**20), "--disable-usage-stats", "--block"]
#: The head notices a dead worker within about 2 s instead of Ray's default of about 30 s.
FAST_HEALTH_CHECKS = {"RAY_health_check_period_ms": "500", "RAY_health_check_failure_threshold": "4",
                      "RAY_health_check_timeout_ms": "500"}


class RayCluster:
    def __init__(self, head: Host, worker: Host) -> None:
        self.head, self.worker = head, worker
        self.address = f"{head.address}:{RAY_PORT}"
        self.temp = tempfile.mkdtemp(prefix="fr-", dir="/tmp")  # Ray's socket paths must stay short
        self.env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0", **FAST_HEALTH_CHECKS}
        self.processes: list[subprocess.Popen] = []

    def start_node(self, host: Host, *options: str) -> float:
        """``ray start --block`` in the host's namespace; returns once it says it runs (seconds taken)."""
        began = time.monotonic()
        process = subprocess.Popen(host.command(RAY_CLI, "start", "--node-ip-address", host.address, *options,
                                                *NODE_OPTIONS),
                                   stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=self.env)
        self.processes.append(process)
        lines: queue.Queue[str] = queue.Queue()
        # Read every line (a full pipe would block Ray), and hand them over here.
        threading.Thread(target=lambda: [lines.put(line) for line in process.stdout], daemon=True).start()  # type: ignore[union-attr]
        seen: list[str] = []
        deadline = began + 90
        while not any("Ray runtime started" in line for line in seen):
            assert time.monotonic() < deadline and process.poll() is None, "".join(seen)
            try:
                seen.append(lines.get(timeout=1))
            except queue.Empty:
                pass
        return time.monotonic() - began

    def kill(self, host: Host) -> None:
        for pid in host.pids():
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass

    def close(self) -> None:
        for host in (self.head, self.worker):
            self.kill(host)
        for process in self.processes:
            process.wait(timeout=10)
        shutil.rmtree(self.temp, ignore_errors=True)


@pytest.fixture(scope="module")
def cluster() -> Iterator[RayCluster]:
    head, worker = make_hosts()
    cluster = RayCluster(head, worker)
    try:
        took = cluster.start_node(head, "--head", "--port", str(RAY_PORT), "--include-dashboard=false",
                                  "--temp-dir", cluster.temp, "--resources", '{"gpu_like": 1}')
        took_worker = cluster.start_node(worker, "--address", cluster.address,
                                         "--resources", '{"gpu_like": 1, "worker_only": 1}')
        print(f"Ray head up in {took:.1f} s, worker in {took_worker:.1f} s")
        yield cluster
    finally:
        cluster.close()
        remove_hosts(head, worker)


def _manifest(flow: FlowRunner, cluster: RayCluster, nodes: str) -> Path:
    return flow.manifest(nodes, flow=f'queue = 4\nengine = "ray"\nray_address = "{cluster.address}"')


PINNED = """
    [nodes.numbers]
    run = "{{nodes}}:Gated"
    args = {{ n = {n}, pause = 0.001, gate = "{gate}" }}
    resources = {{ num_cpus = 0.25 }}
    [nodes.where]
    run = "{{nodes}}:where"
    inputs = ["numbers"]
    replicas = 2
    resources = {{ num_cpus = 0.25, custom = {{ worker_only = 0.5 }} }}
    [nodes.sink]
    run = "{{nodes}}:Collect"
    inputs = ["where"]
    args = {{ path = "{out}" }}
    resources = {{ num_cpus = 0.25 }}
"""


@pytest.mark.timeout(240)
def test_nodes_pinned_by_resources_land_where_asked_and_deliver_every_item(
        flow: FlowRunner, cluster: RayCluster) -> None:
    out, gate, n = flow.path("out.jsonl"), Path(flow.path("gate")), 500
    began = time.monotonic()
    launcher = flow.start(_manifest(flow, cluster, PINNED.format(n=n, gate=gate, out=out)),
                          prefix=cluster.head.command())
    try:
        poll_for(lambda: line_count(out) >= 20, timeout=120)
        print(f"first items {time.monotonic() - began:.1f} s after the launch")
        replicas = flow.replicas()
        on_worker = cluster.worker.pids()
        for label in ("where.0", "where.1"):  # pinned: only the worker has worker_only
            assert replicas[label]["host"] == cluster.worker.address
            assert replicas[label]["pid"] in on_worker
        table = flow.command("status", "--flow", flow.name).stdout
        assert f'{replicas["where.0"]["pid"]}@{cluster.worker.address}' in table
    finally:
        gate.touch()
    _, stderr = launcher.communicate(timeout=120)
    assert launcher.returncode == 0, stderr
    items = read_lines(out)
    assert [item["n"] for item in items] == list(range(n))  # every item, in order
    assert {item["net"] for item in items} == {cluster.worker.namespace_inode()}
    print(f"flow on Ray: {time.monotonic() - began:.1f} s from launch to end")


@pytest.mark.timeout(120)
def test_a_node_no_ray_node_can_hold_stops_the_launch_before_anything_starts(
        flow: FlowRunner, cluster: RayCluster) -> None:
    out = flow.path("out.jsonl")
    nodes = PINNED.format(n=10, gate=flow.path("gate"), out=out).replace(
        "custom = { worker_only = 0.5 }", "num_gpus = 1, custom = { worker_only = 0.5 }")
    manifest = _manifest(flow, cluster, nodes)
    began = time.monotonic()
    launcher = flow.start(manifest, prefix=cluster.head.command())
    _, stderr = launcher.communicate(timeout=90)
    assert launcher.returncode == 2, stderr
    assert (f'{manifest}: node "where": field "resources": no Ray node has 0.25 CPU, 1 GPU, 0.5 worker_only '
            f"(cluster: ") in stderr
    assert f"{cluster.worker.address}: 2 CPU" in stderr and "nothing started" in stderr
    assert not os.path.exists(out)  # no node ran
    print(f"refused in {time.monotonic() - began:.1f} s")
