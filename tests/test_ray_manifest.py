"""The manifest's Ray fields (engine, ray_address, resources, placement): checked without Ray.

Bad values name the file, the node and the field, and exit 2 with nothing started; a flow
asking for Ray where Ray is not installed or no cluster answers says so, with exit 2.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import FlowRunner

from flujo.launch.errors import ManifestError
from flujo.launch.manifest import load_manifest
from flujo.launch.ray_engine import RayError, connect
from flujo.launch.resources import Resources, parse_memory, unplaceable

NODE = '[nodes.a]\nrun = "flujo.nodes.basic:Count"\n'


def _problems(tmp_path: Path, body: str) -> list[str]:
    path = tmp_path / "flow.toml"
    path.write_text(body)
    with pytest.raises(ManifestError) as caught:
        load_manifest(path)
    return [str(problem) for problem in caught.value.problems]


@pytest.mark.parametrize(
    "resources, fragments",
    [
        ("{ num_gpus = -1 }", ['field "resources.num_gpus"', "must be a number from 0 up, got -1"]),
        ('{ num_cpus = "two" }', ['field "resources.num_cpus"', "got 'two'"]),
        ('{ memory = "lots" }', ['field "resources.memory"', 'a size such as "2GB"']),
        ("{ gpus = 1 }", ['field "resources.gpus"', "resources take num_cpus, num_gpus, memory, custom"]),
        ("{ custom = 3 }", ['field "resources.custom"', "table of resource names"]),
        ("{ custom = { GPU = 1 } }", ['field "resources.custom.GPU"', "use num_cpus, num_gpus or memory"]),
        ("{ custom = { camera = true } }", ['field "resources.custom.camera"', "must be a number"]),
        ("3", ['field "resources"', "must be a table"]),
    ],
)
def test_bad_resources_name_the_file_node_and_field(tmp_path: Path, resources: str, fragments: list[str]) -> None:
    problems = _problems(tmp_path, f"{NODE}resources = {resources}\n")
    assert len(problems) == 1
    assert problems[0].startswith(f'{tmp_path / "flow.toml"}: node "a": ')
    for fragment in fragments:
        assert fragment in problems[0]


def test_bad_engine_fields(tmp_path: Path) -> None:
    problems = _problems(tmp_path, f'[flow]\nengine = "rey"\n{NODE}placement = "later"\n')
    assert any('field "engine"' in p and 'did you mean "ray"' in p for p in problems)
    assert any('node "a": field "placement"' in p and "must be one of fail, wait" in p for p in problems)
    problems = _problems(
        tmp_path, f'[flow]\nengine = "ray"\ntransport = "ipc"\n[hosts.b]\naddress = "10.0.0.2"\n{NODE}host = "b"\n'
    )
    assert any('node "a": field "host"' in p and 'engine = "ray" places every node' in p for p in problems)
    assert any('field "transport"' in p and "talk over tcp" in p for p in problems)
    problems = _problems(tmp_path, f'[flow]\nengine = "ray"\nray_pending_after = -1\n{NODE}')
    assert problems == [
        f'{tmp_path / "flow.toml"}: field "ray_pending_after": '
        "must be a positive number of seconds, at most 604800, got -1"
    ]


def test_resources_map_to_ray_requests(tmp_path: Path) -> None:
    path = tmp_path / "flow.toml"
    path.write_text(
        f'[flow]\nengine = "ray"\nray_address = "10.0.0.1:6379"\nray_pending_after = 1.5\n{NODE}'
        'resources = { num_cpus = 2, num_gpus = 1, memory = "2GiB", custom = { camera = 1 } }\n'
        'placement = "wait"\n'
    )
    flow = load_manifest(path)
    spec = flow.nodes["a"]
    assert (flow.engine, flow.ray_address, flow.transport, spec.placement) == ("ray", "10.0.0.1:6379", "tcp", "wait")
    assert flow.ray_pending_after == 1.5
    path.write_text(f'[flow]\nengine = "ray"\n{NODE}')
    assert load_manifest(path).ray_pending_after == 5.0  # the default
    assert spec.resources.actor_options() == {
        "num_cpus": 2.0,
        "num_gpus": 1.0,
        "memory": 2 * 2**30,
        "resources": {"camera": 1.0},
    }
    assert spec.resources.describe() == "2 CPU, 1 GPU, 1 camera, 2.0 GiB memory"
    assert parse_memory("2GB") == 2 * 10**9 and parse_memory("512MiB") == 512 * 2**20 and parse_memory("x") is None


def test_unplaceable_names_what_each_ray_node_has() -> None:
    nodes = [
        {"Alive": True, "NodeManagerAddress": "10.0.0.1", "Resources": {"CPU": 4.0, "node:10.0.0.1": 1.0}},
        {"Alive": False, "NodeManagerAddress": "10.0.0.3", "Resources": {"CPU": 8.0, "GPU": 1.0}},
        {"Alive": True, "NodeManagerAddress": "10.0.0.2", "Resources": {"CPU": 2.0, "GPU": 1.0}},
    ]
    assert unplaceable(Resources(num_cpus=1, num_gpus=1), nodes) is None
    assert (
        unplaceable(Resources(num_cpus=4, num_gpus=1), nodes)
        == "no Ray node has 4 CPU, 1 GPU (cluster: 10.0.0.1: 4 CPU; 10.0.0.2: 2 CPU, 1 GPU)"
    )


@pytest.mark.timeout(60)
def test_run_on_a_cluster_that_does_not_answer_starts_nothing(flow: FlowRunner) -> None:
    pytest.importorskip("ray", reason="Ray is not installed: pip install -e '.[test,ray]'")
    out = flow.path("out.jsonl")
    manifest = flow.manifest(
        f'[nodes.numbers]\nrun = "{{nodes}}:Paced"\nargs = {{ n = 5 }}\n'
        f'[nodes.sink]\nrun = "{{nodes}}:Collect"\ninputs = ["numbers"]\n'
        f'args = {{ path = "{out}" }}\n'
    )
    launcher = flow.start(manifest, "--on", "127.0.0.1:1")  # nobody listens on port 1
    _, stderr = launcher.communicate(timeout=50)
    assert launcher.returncode == 2, stderr
    assert "cannot connect to the Ray cluster at 127.0.0.1:1" in stderr
    assert not Path(out).exists()


def test_the_live_view_says_why_a_replica_is_pending() -> None:
    from rich.console import Console

    from flujo.launch.live import render_status

    node = {
        "label": "det.1",
        "node": "det",
        "state": "pending",
        "pid": None,
        "host": None,
        "restarts": 0,
        "items_in": 0,
        "items_out": 0,
        "rate": 0.0,
        "queue": 0.0,
        "busy": 0.0,
        "pending": "no Ray node has 1 GPU (cluster: 10.0.0.1: 4 CPU)",
    }
    console = Console(width=120, record=True)
    placed = {**node, "label": "det.0", "state": "running", "pid": 7, "host": "10.0.0.2", "pending": None}
    console.print(render_status({"flow": "f", "started": False, "nodes": [node, placed]}))
    shown = console.export_text()
    assert "det.1 pending: no Ray node has 1 GPU (cluster: 10.0.0.1: 4 CPU)" in shown
    assert "det.0 pending" not in shown and "7@10.0.0.2" in shown


class ScriptedRay:
    """Stands in for the ray module: ``init`` raises the scripted errors, then connects."""

    def __init__(self, *errors: Exception) -> None:
        self.errors, self.inits, self.shutdowns = list(errors), 0, 0

    def init(self, **options: object) -> None:
        self.inits += 1
        if self.errors:
            raise self.errors.pop(0)

    def shutdown(self) -> None:
        self.shutdowns += 1


def test_a_ray_client_session_that_fails_to_start_is_asked_for_again() -> None:
    passing = ConnectionError("Initialization failure from server: psutil.ZombieProcess")
    ray, pauses = ScriptedRay(passing, passing), []
    connect(ray, "ray://10.0.0.1:10001", "f", pauses.append)
    assert (ray.inits, ray.shutdowns, pauses) == (3, 2, [1.0, 1.0])


def test_ray_client_failures_give_up_after_three_attempts_and_others_at_once() -> None:
    passing = ConnectionError("Initialization failure from server: psutil.ZombieProcess")
    ray = ScriptedRay(passing, passing, passing)
    with pytest.raises(RayError, match="cannot connect to the Ray cluster at ray://h:1: Initialization failure"):
        connect(ray, "ray://h:1", "f", lambda seconds: None)
    assert ray.inits == 3
    ray = ScriptedRay(ConnectionError("no such cluster"))
    with pytest.raises(RayError, match="no such cluster"):
        connect(ray, "h:6379", "f", lambda seconds: None)
    assert ray.inits == 1  # not a passing failure: said at once
