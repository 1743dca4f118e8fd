"""Nodes placed on a Ray cluster: a Ray head in one network namespace, a Ray worker in another.

The worker has a custom resource the head lacks (``worker_only``), so a node asking for it
must land there, and the reverse (``head_only``); the worker also says it has a GPU (Ray
takes its word: no GPU is used); both have one ``gpu_like``, which the failure test uses to move a node from
the worker to the head. The launcher runs on the head's machine and connects to the head.
One cluster serves every test of the module (starting one takes about 13-25 s here); the test
that kills the worker runs last.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import queue
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import FlowRunner, poll_for
from flow_nodes import line_count, read_lines
from netns import Host, can_make_namespaces, make_hosts, remove_hosts

# Found, not imported: importing Ray costs each pytest worker about 0.4 CPU-s when it collects,
# and only the launchers and the cluster's processes use it.
_no_ray = None if importlib.util.find_spec("ray") else "Ray is not installed: pip install -e '.[test,ray]'"
_why_not = _no_ray or can_make_namespaces()
pytestmark = [
    pytest.mark.skipif(_why_not is not None, reason=_why_not or ""),
    # One worker runs every test here, one after another, under `pytest -n N` (--dist loadgroup in
    # pyproject.toml): they share one cluster (two namespaces, a few hundred MB), and one cluster at
    # a time is what 2 cores carry.
    pytest.mark.xdist_group("ray"),
]

RAY_PORT = 6379
#: The head's Ray Client server (ray://HOST:PORT): a driver that is not a machine of the cluster.
CLIENT_PORT = 10001
RAY_CLI = str(Path(sys.executable).with_name("ray"))
#: Modest on a shared 2-core machine: logical CPUs only (Ray does not pin them), a small object
#: store, and neither the log monitor (Flujo connects with log_to_driver=False: its nodes' output
#: comes through Flujo's own channel) nor the autoscaler's monitor (a fixed cluster), about 5 CPU-s.
NODE_OPTIONS = [
    "--num-cpus",
    "2",
    "--object-store-memory",
    str(80 * 2**20),
    "--disable-usage-stats",
    "--include-log-monitor=false",
    "--block",
]
#: The cluster and the tests' launchers run at a higher priority than the rest of the suite: one
#: pytest worker runs every test here one after another (about a minute on a quiet machine), and
#: at -n 6 the other workers' flows slowed them threefold, which made this module the run's last
#: to end, while the other workers had finished 25 s earlier.
NICENESS = -5
PRIORITY = ["nice", "-n", str(NICENESS)]
#: The head notices a dead worker within about 2 s instead of Ray's default of about 30 s.
FAST_HEALTH_CHECKS = {
    "RAY_health_check_period_ms": "500",
    "RAY_health_check_failure_threshold": "4",
    "RAY_health_check_timeout_ms": "500",
}


class RayCluster:
    def __init__(self, head: Host, worker: Host) -> None:
        self.head, self.worker = head, worker
        self.address = f"{head.address}:{RAY_PORT}"
        self.client_address = f"ray://{head.address}:{CLIENT_PORT}"
        self.temp = tempfile.mkdtemp(prefix="fr-", dir="/tmp")  # Ray's socket paths must stay short
        self.env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0", **FAST_HEALTH_CHECKS}
        self.processes: list[subprocess.Popen] = []

    def start_node(self, host: Host, *options: str) -> float:
        """``ray start --block`` in the host's namespace; returns once it says it runs (seconds taken)."""
        began = time.monotonic()
        process = subprocess.Popen(
            [*PRIORITY, *host.command(RAY_CLI, "start", "--node-ip-address", host.address, *options, *NODE_OPTIONS)],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env=self.env,
        )
        self.processes.append(process)
        lines: queue.Queue[str] = queue.Queue()
        # Read every line (a full pipe would block Ray), and hand them over here.
        threading.Thread(target=lambda: [lines.put(line) for line in process.stdout], daemon=True).start()  # type: ignore[union-attr]
        seen: list[str] = []
        deadline = began + 90
        while not any("Ray runtime started" in line for line in seen):
            assert time.monotonic() < deadline and process.poll() is None, "".join(seen)
            with contextlib.suppress(queue.Empty):
                seen.append(lines.get(timeout=1))
        return time.monotonic() - began

    def start_head(self) -> float:
        """The head's Ray node. On a loaded machine (the suite's first, heaviest minute) its GCS
        may pass Ray's RPC deadline and the node exits ("timed out during startup", seen under
        coverage at load 13): it is started once more."""
        return self._start_twice(
            self.head,
            "--head",
            "--port",
            str(RAY_PORT),
            "--include-dashboard=false",
            "--no-monitor",  # the autoscaler's: a fixed cluster has nothing to scale
            "--ray-client-server-port",
            str(CLIENT_PORT),
            "--temp-dir",
            self.temp,
            "--resources",
            '{"gpu_like": 1, "head_only": 10}',
        )

    def start_worker(self) -> float:
        """The worker's Ray node (again, after a test killed it). On a loaded machine its first
        call to the head may pass Ray's RPC deadline and the node exits: it is started once more."""
        return self._start_twice(
            self.worker,
            "--address",
            self.address,
            "--num-gpus",
            "1",
            "--resources",
            '{"gpu_like": 1, "worker_only": 1}',
        )

    def _start_twice(self, host: Host, *options: str) -> float:
        for attempt in (1, 2):
            try:
                return self.start_node(host, *options)
            except AssertionError:
                if attempt == 2:
                    raise
                self.kill(host)
        raise AssertionError("unreachable")

    def kill(self, host: Host) -> None:
        """The machine dies: every process of it at once. Stopped first, so that none sees another
        die before its own end (an actor reporting its node's SIGKILL, not its own loss)."""
        pids = host.pids()
        for stop in (signal.SIGSTOP, signal.SIGKILL):
            for pid in pids:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, stop)

    def close(self) -> None:
        for host in (self.head, self.worker):
            self.kill(host)
        for process in self.processes:
            process.wait(timeout=10)
        shutil.rmtree(self.temp, ignore_errors=True)


# Module scope: under `--dist loadgroup` the "ray" group is one unit of work, sent to one worker
# at once and run there in a row, so the cluster starts before the first test here and is torn
# down right after the last one, not at the end of the whole run (its 14 processes would take
# about 0.07 s of CPU a second, and their memory, from the tests that come after).
@pytest.fixture(scope="module")
def cluster() -> Iterator[RayCluster]:
    head, worker = make_hosts()
    cluster = RayCluster(head, worker)
    try:
        took = cluster.start_head()
        took_worker = cluster.start_worker()
        print(f"Ray head up in {took:.1f} s, worker in {took_worker:.1f} s")
        yield cluster
    finally:
        cluster.close()
        remove_hosts(head, worker)


def _manifest(
    flow: FlowRunner, cluster: RayCluster, nodes: str, address: str | None = None, pending_after: float | None = None
) -> Path:
    settings = f'queue = 4\nengine = "ray"\nray_address = "{address or cluster.address}"'
    if pending_after is not None:  # else the launcher's default
        settings += f"\nray_pending_after = {pending_after}"
    return flow.manifest(nodes, flow=settings)


PINNED = """
    [nodes.numbers]
    run = "{{nodes}}:Gated"
    args = {{ n = {n}, pause = 0.001, gate = "{gate}" }}
    resources = {{ num_cpus = 0.25 }}
    [nodes.where]
    run = "{{nodes}}:where_gpus"
    inputs = ["numbers"]
    replicas = 2
    resources = {{ num_cpus = 0.25, num_gpus = 0.5, custom = {{ worker_only = 0.5 }} }}
    [nodes.sink]
    run = "{{nodes}}:Collect"
    inputs = ["where"]
    args = {{ path = "{out}" }}
    resources = {{ num_cpus = 0.25 }}
"""


@pytest.mark.timeout(240)
def test_nodes_pinned_by_resources_land_where_asked_and_deliver_every_item(
    flow: FlowRunner, cluster: RayCluster
) -> None:
    out, gate, n = flow.path("out.jsonl"), Path(flow.path("gate")), 500
    began = time.monotonic()
    launcher = flow.start(
        _manifest(flow, cluster, PINNED.format(n=n, gate=gate, out=out)), on=cluster.head, nice=NICENESS
    )
    try:
        poll_for(lambda: line_count(out) >= 20, timeout=120)
        print(f"first items {time.monotonic() - began:.1f} s after the launch")
        replicas = flow.replicas()
        on_worker = cluster.worker.pids()
        for label in ("where.0", "where.1"):  # pinned: only the worker has worker_only
            assert replicas[label]["host"] == cluster.worker.address
            assert replicas[label]["pid"] in on_worker
        table = flow.command("status", "--flow", flow.name).stdout
        assert f"{replicas['where.0']['pid']}@{cluster.worker.address}" in table
        # A graceful restart: each successor is a new actor, placed where the resources are
        # (the worker again, once its predecessor has ended and freed them).
        restarted = flow.command("restart", "where", "--flow", flow.name)
        assert restarted.returncode == 0, restarted.stderr
        poll_for(
            lambda: all(
                r["restarts"] == 1 and r["state"] == "running"
                for label, r in flow.replicas().items()
                if label.startswith("where")
            ),
            timeout=90,
        )
        assert {r["host"] for label, r in flow.replicas().items() if label.startswith("where")} == {
            cluster.worker.address
        }
    finally:
        gate.touch()
    _, stderr = launcher.communicate(timeout=120)
    assert launcher.returncode == 0, stderr
    items = read_lines(out)
    assert [item["n"] for item in items] == list(range(n))  # every item, in order, across the restart
    assert {item["net"] for item in items} == {cluster.worker.namespace_inode()}
    assert {item["gpus"] for item in items} == {"0"}  # the GPU Ray gave each replica's actor
    print(f"flow on Ray: {time.monotonic() - began:.1f} s from launch to end")


@pytest.mark.timeout(240)
def test_a_flow_runs_through_ray_client(flow: FlowRunner, cluster: RayCluster) -> None:
    """``--on ray://HEAD:10001``: the launcher is a Ray Client driver (its Ray calls go through
    the head's client server), yet nodes land where asked and every item arrives in order."""
    out, gate, n = flow.path("out.jsonl"), Path(flow.path("gate")), 300
    manifest = flow.manifest(PINNED.format(n=n, gate=gate, out=out), flow="queue = 4")
    began = time.monotonic()
    launcher = flow.start(manifest, "--on", cluster.client_address, on=cluster.head, nice=NICENESS)
    said = _Lines(launcher.stderr)
    try:
        poll_for(lambda: line_count(out) >= 20 or launcher.poll() is not None, timeout=120)
        assert launcher.poll() is None, said.whole()
        replicas = flow.replicas()
        on_worker = cluster.worker.pids()
        for label in ("where.0", "where.1"):
            assert replicas[label]["host"] == cluster.worker.address
            assert replicas[label]["pid"] in on_worker
        assert replicas["sink"]["host"] in (cluster.head.address, cluster.worker.address)
    finally:
        gate.touch()
    assert launcher.wait(timeout=120) == 0, said.whole()
    items = read_lines(out)
    assert [item["n"] for item in items] == list(range(n))
    assert {item["net"] for item in items} == {cluster.worker.namespace_inode()}
    print(f"flow through Ray Client: {time.monotonic() - began:.1f} s from launch to end")


@pytest.mark.timeout(120)
def test_a_node_no_ray_node_can_hold_stops_the_launch_before_anything_starts(
    flow: FlowRunner, cluster: RayCluster
) -> None:
    out = flow.path("out.jsonl")
    nodes = PINNED.format(n=10, gate=flow.path("gate"), out=out).replace("num_gpus = 0.5,", "num_gpus = 2,")
    manifest = flow.manifest(nodes, flow="queue = 4")  # engine local: `run --on` places it on Ray
    began = time.monotonic()
    launcher = flow.start(manifest, "--on", cluster.address, on=cluster.head, nice=NICENESS)
    _, stderr = launcher.communicate(timeout=90)
    assert launcher.returncode == 2, stderr
    assert (
        f'{manifest}: node "where": field "resources": no Ray node has 0.25 CPU, 2 GPU, 0.5 worker_only (cluster: '
    ) in stderr
    assert f"{cluster.worker.address}: 2 CPU, 1 GPU" in stderr and "nothing started" in stderr
    assert not os.path.exists(out)  # no node ran
    print(f"refused in {time.monotonic() - began:.1f} s")


@pytest.mark.timeout(180)
def test_placement_wait_waits_for_a_ray_node_that_can_hold_the_node(flow: FlowRunner, cluster: RayCluster) -> None:
    out, gate, n = flow.path("out.jsonl"), Path(flow.path("gate")), 200
    nodes = PINNED.format(n=n, gate=gate, out=out).replace(
        "custom = { worker_only = 0.5 } }", 'custom = { later = 0.5 } }\n    placement = "wait"'
    )
    launcher = flow.start(_manifest(flow, cluster, nodes), on=cluster.head, nice=NICENESS)
    said = _Lines(launcher.stderr)
    try:
        reason = "no Ray node has 0.25 CPU, 0.5 GPU, 0.5 later (cluster: "
        poll_for(lambda: any(f'node "where" pending: {reason}' in line for line in said), timeout=60)
        # The rest of the flow is up meanwhile, and status says which replicas wait, and why.
        poll_for(lambda: flow.replicas().get("sink", {}).get("pid") or launcher.poll() is not None, timeout=60)
        assert launcher.poll() is None, said.whole()
        replicas = flow.replicas()
        for label in ("where.0", "where.1"):
            assert replicas[label]["state"] == "pending" and replicas[label]["pending"].startswith(reason)
            assert replicas[label]["pid"] is None and replicas[label]["host"] is None
        sink = replicas["sink"]
        assert sink["state"] != "pending" and "pending" not in sink
        assert sink["host"] in (cluster.head.address, cluster.worker.address)
        table = flow.command("status", "--flow", flow.name).stdout
        assert f"{sink['pid']}@{sink['host']}" in table  # where each placed replica runs
        states = {words[0]: words[1] for words in map(str.split, table.splitlines()[2:6])}  # the table's rows
        assert states["where.0"] == states["where.1"] == "pending" and states["sink"] != "pending"
        assert f"where.0 pending: {reason}" in table and f"where.1 pending: {reason}" in table
        assert line_count(out) == 0 and launcher.poll() is None  # no item moves without them
        cluster.start_node(cluster.head, "--address", cluster.address, "--num-gpus", "1", "--resources", '{"later": 1}')
        third = cluster.processes[-1]  # a third Ray node, with what the node waits for
        try:
            poll_for(lambda: line_count(out) >= 20, timeout=120)
        finally:
            gate.touch()
            third.terminate()  # `ray start --block` ends the Ray processes it started
            third.wait(timeout=30)
    finally:
        gate.touch()
    assert launcher.wait(timeout=60) == 0, said.whole()
    assert [item["n"] for item in read_lines(out)] == list(range(n))
    assert {item["net"] for item in read_lines(out)} == {cluster.head.namespace_inode()}  # the third node's


@pytest.mark.timeout(120)
def test_a_flow_stopped_while_a_node_is_pending_ends_cleanly(flow: FlowRunner, cluster: RayCluster) -> None:
    """A replica Ray never placed has nothing to end: `stop` ends it at once, with status 0."""
    out = flow.path("out.jsonl")
    nodes = PINNED.format(n=10, gate=flow.path("gate"), out=out).replace(
        "custom = { worker_only = 0.5 } }", 'custom = { nowhere = 1 } }\n    placement = "wait"'
    )
    launcher = flow.start(_manifest(flow, cluster, nodes), on=cluster.head, nice=NICENESS)
    poll_for(
        lambda: flow.replicas().get("where.1", {}).get("state") == "pending" or launcher.poll() is not None, timeout=60
    )
    assert launcher.poll() is None, launcher.communicate()[1]
    began = time.monotonic()
    assert flow.command("stop", "--flow", flow.name).returncode == 0
    stdout, stderr = launcher.communicate(timeout=60)
    assert launcher.returncode == 0, stderr
    assert stdout.count("ended before a Ray node could hold it (it was pending)") == 2
    assert "was lost" not in stdout and "SIGTERM" not in stderr
    assert line_count(out) == 0
    print(f"stopped in {time.monotonic() - began:.1f} s with two replicas pending")


SAMPLE = Path(__file__).resolve().parent.parent / "samples" / "people_counter"


@pytest.mark.timeout(240)
def test_the_people_counter_runs_with_its_detectors_on_the_worker(flow: FlowRunner, cluster: RayCluster) -> None:
    """The sample's own manifest, unchanged but for its paths, a frame limit and resources."""
    frames = 60
    text = (SAMPLE / "manifest.toml").read_text()
    text = text.replace(
        'name = "people-counter"', f'name = "{flow.name}"\nengine = "ray"\nray_address = "{cluster.address}"'
    )
    text = text.replace('"../data/vtest.avi" }', f'"{SAMPLE.parent / "data" / "vtest.avi"}", max_frames = {frames} }}')
    text = text.replace('"../../out/', f'"{flow.folder}/out/')
    text = text.replace("replicas = 2 ", "replicas = 2\nresources = { num_cpus = 0.5, custom = { worker_only = 0.5 } }")
    for node in ("reader", "tracker", "counter", "annotator", "video", "counts", "console"):
        on_head = "resources = { num_cpus = 0.1, custom = { head_only = 1 } }"
        text = text.replace(f"[nodes.{node}]\n", f"[nodes.{node}]\n{on_head}\n")
    manifest = flow.folder / "manifest.toml"
    manifest.write_text(text)
    began = time.monotonic()
    launcher = flow.start(manifest, on=cluster.head, nice=NICENESS)
    said, shown = _Lines(launcher.stderr), _Lines(launcher.stdout)
    poll_for(
        lambda: all(flow.replicas().get(f"detector.{i}", {}).get("pid") for i in (0, 1)) or launcher.poll() is not None,
        timeout=120,
    )
    replicas = flow.replicas()
    assert launcher.poll() is None, said.whole()
    for label in ("detector.0", "detector.1"):
        assert replicas[label]["host"] == cluster.worker.address and replicas[label]["pid"] in cluster.worker.pids()
    assert replicas["tracker"]["host"] == cluster.head.address
    if launcher.wait(timeout=180) != 0:
        logs = flow.command("logs", "--flow", flow.name, "--no-timestamps").stdout
        pytest.fail(f"{said.whole()}\nthe nodes' output:\n{logs}")
    counts = read_lines(f"{flow.folder}/out/counts.jsonl")
    assert [count["index"] for count in counts] == list(range(frames))  # every frame counted, in order
    assert Path(f"{flow.folder}/out/people_counter.mp4").stat().st_size > 0
    print(
        f"people counter, {frames} frames, detectors on the worker: {time.monotonic() - began:.1f} s; "
        f"last counts {counts[-1]}; {shown.whole().count(chr(10))} output lines"
    )


#: Another Ray job that holds the gpu_like of both machines until told (a line on stdin) to let
#: the worker's go; it lets the head's go when it ends.
class _Lines(list):
    """Every line of a stream as it comes, read by a thread; ``whole()`` once the stream ended."""

    def __init__(self, stream: Any) -> None:
        super().__init__()
        self._reader = threading.Thread(target=lambda: self.extend(stream), daemon=True)
        self._reader.start()

    def whole(self) -> str:
        self._reader.join(timeout=10)
        return "".join(self)


BLOCKER = """
import sys, ray
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy as On
ray.init(address=sys.argv[1], logging_level="ERROR", log_to_driver=False)
@ray.remote(num_cpus=0, resources={"gpu_like": 1})
class Hold:
    def where(self):
        return ray.util.get_node_ip_address()
holds = [Hold.options(scheduling_strategy=On(node["NodeID"], soft=False)).remote()
         for node in ray.nodes() if node["Alive"] and node["Resources"].get("gpu_like")]
print(" ".join(sorted(ray.get([hold.where.remote() for hold in holds]))), flush=True)
sys.stdin.readline()
ray.kill(next(hold for hold in holds if ray.get(hold.where.remote()) == sys.argv[2]))
print("freed", flush=True)
sys.stdin.read()
"""

MOVING = """
    [nodes.numbers]
    run = "{{nodes}}:Gated"
    args = {{ n = {n}, pause = 0.001, gate = "{gate}" }}
    resources = {{ num_cpus = 0.25, custom = {{ head_only = 1 }} }}
    [nodes.where]
    run = "{{nodes}}:where"
    inputs = ["numbers"]
    restart = "on-failure"
    resources = {{ num_cpus = 0.25, custom = {{ gpu_like = 1 }} }}
    [nodes.sink]
    run = "{{nodes}}:Collect"
    inputs = ["where"]
    args = {{ path = "{out}" }}
    resources = {{ num_cpus = 0.25, custom = {{ head_only = 1 }} }}
"""


@pytest.mark.timeout(300)
@pytest.mark.parametrize("through", ["head", "client"])
def test_a_lost_ray_worker_counts_as_a_crash_and_its_replica_comes_back_on_the_head(
    flow: FlowRunner, cluster: RayCluster, through: str
) -> None:
    """Runs last: it kills the worker (and starts it again first if an earlier run did).
    Another Ray job holds both machines' gpu_like at first: the node asking for one is
    pending; the job lets the worker's go, and the node lands on the worker; once the job
    ends and the worker dies, the restart policy places the node again, and Ray finds the
    head. ``head``: the launcher connects to the head (HOST:6379) and the node waits with
    placement = "fail" (the launch waits, up to a minute). ``client``: through Ray Client
    (ray://) with placement = "wait": the rest of the flow is up meanwhile, and status shows
    the node pending; once placed on the worker its inputs move there."""
    if not cluster.worker.pids():
        print(f"worker started again in {cluster.start_worker():.1f} s")
    out, gate, n = flow.path("out.jsonl"), Path(flow.path("gate")), 3000
    nodes = MOVING.format(n=n, gate=gate, out=out)
    if through == "client":
        nodes = nodes.replace('restart = "on-failure"', 'restart = "on-failure"\n    placement = "wait"')
    address = cluster.client_address if through == "client" else cluster.address
    blocker = subprocess.Popen(
        cluster.head.command(sys.executable, "-c", BLOCKER, cluster.address, cluster.worker.address),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env=cluster.env,
    )
    try:
        both = sorted([cluster.head.address, cluster.worker.address])
        assert blocker.stdout.readline().split() == both  # type: ignore[union-attr]
        # Said pending after 2 s instead of 5: the node waits for a gpu_like twice in the client's run.
        launcher = flow.start(_manifest(flow, cluster, nodes, address, 2.0), on=cluster.head, nice=NICENESS)
        said, shown = _Lines(launcher.stderr), _Lines(launcher.stdout)
        try:
            poll_for(lambda: any("pending" in line for line in said), timeout=120)  # Ray Client: slow on a busy box
        except AssertionError:
            raise AssertionError(f"not said to be pending: {''.join(said)}; {''.join(shown)}") from None
        if through == "client":
            poll_for(lambda: flow.replicas().get("where", {}).get("state") == "pending", timeout=30)
            assert flow.replicas()["where"]["pending"] == "waiting for a Ray node with 0.25 CPU, 1 gpu_like free"
        assert line_count(out) == 0
        blocker.stdin.write("free the worker's\n")  # type: ignore[union-attr]
        blocker.stdin.flush()  # type: ignore[union-attr]
        poll_for(lambda: line_count(out) >= 200, timeout=120)
        first = flow.replicas()["where"]
        assert first["host"] == cluster.worker.address and first["pid"] in cluster.worker.pids()
        if through == "client":  # the worker dies while the head's gpu_like is still held
            cluster.kill(cluster.worker)
            killed = time.monotonic()
            poll_for(lambda: flow.replicas().get("where", {}).get("restarts") == 1, timeout=60)
            noticed = time.monotonic() - killed
            poll_for(lambda: flow.replicas()["where"]["state"] == "pending", timeout=30)  # the restart waits
            assert flow.replicas()["where"]["pending"] == "waiting for a Ray node with 0.25 CPU, 1 gpu_like free"
    finally:
        blocker.kill()  # its actor ends with it: the head's gpu_like is free
        blocker.communicate(timeout=30)
    if through == "head":
        cluster.kill(cluster.worker)  # the worker machine dies: its raylet, its actors, its node processes
        killed = time.monotonic()
        poll_for(lambda: flow.replicas().get("where", {}).get("restarts") == 1, timeout=60)
        noticed = time.monotonic() - killed
    poll_for(lambda: flow.replicas()["where"]["state"] == "running", timeout=60)
    moved = flow.replicas()["where"]
    assert moved["host"] == cluster.head.address and moved["pid"] in cluster.head.pids()
    back = time.monotonic() - killed
    gate.touch()
    assert launcher.wait(timeout=120) == 0, "".join(said)
    stdout, stderr = shown.whole(), said.whole()
    assert "replica where.0 pending: waiting for a Ray node with 0.25 CPU, 1 gpu_like free" in stderr, stderr
    assert 'node "where" exited with status -1; restarting' in stderr, stderr
    assert f"its Ray actor or Ray node on {cluster.worker.address} was lost" in stdout, stdout
    assert f"placed on {cluster.head.address}" in stdout
    if through == "client":  # first placed (late) on the worker, then again on the head
        assert stdout.index(f"placed on {cluster.worker.address}") < stdout.index(f"placed on {cluster.head.address}")
    print(next(line for line in stdout.splitlines() if "was lost" in line))
    logs = flow.command("logs", "where", "--flow", flow.name, "--no-timestamps").stdout  # kept as for local nodes
    assert "was lost" in logs and f"placed on {cluster.head.address}" in logs
    items = read_lines(out)
    values = [item["n"] for item in items]
    assert values == sorted(set(values)) and values[-1] == n - 1  # in order, no duplicates, to the end
    assert items[-1]["net"] == cluster.head.namespace_inode()
    lost = n - len(values)
    print(
        f"worker killed: exit seen after {noticed:.1f} s, running on the head after {back:.1f} s; "
        f"{lost} of {n} items lost"
    )
    # The documented crash bound across machines (docs/PROTOCOL.md, section 9): the queues
    # into and out of the dead process, plus what both sides' tcp buffers held.
    assert lost <= n // 2
