"""Flows defined in Python: misuse fails at definition, the manifest round-trips, scripts run."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from conftest import FlowRunner, flow_processes

from flujo import Flow
from flujo.launch.flow import FlowDefinitionError
from flujo.launch.manifest import load_manifest
from flujo.nodes.basic import Collect, Count, Items, Print


def double(number: int) -> int:
    return 2 * number


def add(a: int, b: int) -> int:
    return a + b


def test_a_consumer_has_no_output_to_read() -> None:
    flow = Flow("f")
    sink = flow.add(Print, flow.add(Count, n=3))
    with pytest.raises(FlowDefinitionError, match="is a consumer, which sends nothing on"):
        flow.add(Print, sink)


def test_a_producer_takes_no_inputs() -> None:
    flow = Flow("f")
    with pytest.raises(FlowDefinitionError, match=r'node "count_2": field "inputs": .* is a producer'):
        flow.add(Count, flow.add(Count))


def test_a_processor_needs_inputs() -> None:
    from flow_nodes import Split

    with pytest.raises(FlowDefinitionError, match="is a processor, which needs inputs"):
        Flow("f").add(Split)


def test_a_name_is_used_once() -> None:
    flow = Flow("f")
    flow.add(Count, name="numbers")
    with pytest.raises(FlowDefinitionError, match='already has a node named "numbers"'):
        flow.add(Count, name="numbers")


def test_nodes_of_another_flow_are_refused() -> None:
    numbers = Flow("one").add(Count)
    with pytest.raises(FlowDefinitionError, match="belongs to another flow"):
        Flow("two").add(double, numbers)


def test_unknown_output_port_is_refused_with_a_suggestion() -> None:
    from flow_nodes import Split

    flow = Flow("f")
    split = flow.add(Split, flow.add(Count))
    with pytest.raises(FlowDefinitionError, match=r'no output port "evn".*did you mean "even"'):
        split.output("evn")


def test_functions_must_be_loadable_by_another_process() -> None:
    with pytest.raises(FlowDefinitionError, match="not a module-level class or function"):
        flow = Flow("f")
        flow.add(lambda x: x, flow.add(Count))


def test_arguments_must_fit_in_a_manifest() -> None:
    with pytest.raises(FlowDefinitionError, match=r'argument "items" = .* cannot be written'):
        Flow("f").add(Items, items=[object()])


def test_a_join_runs_as_one_replica() -> None:
    flow = Flow("f")
    a, b = flow.add(Count, name="a"), flow.add(Count, name="b")
    with pytest.raises(FlowDefinitionError, match='node "add": field "replicas"'):
        flow.add(add, a=a, b=b, replicas=2)
    assert "add" not in flow.manifest()["nodes"]  # a refused node is not kept


def test_to_manifest_loads_as_the_same_graph(tmp_path: Path) -> None:
    flow = Flow("graph", queue=4)
    numbers = flow.add(Count, n=10, name="numbers")
    doubled = flow.add(double, numbers, replicas=3)
    total = flow.add(add, a=numbers, b=doubled)
    flow.add(Collect, total, path="out.jsonl")
    spec = load_manifest(flow.to_manifest(tmp_path / "graph.toml"))
    assert spec.name == "graph" and spec.queue == 4
    assert {name: node.kind for name, node in spec.nodes.items()} == {
        "numbers": "producer",
        "double": "processor",
        "add": "processor",
        "collect": "consumer",
    }
    assert spec.nodes["double"].replicas == 3
    assert [(p.port, p.source) for p in spec.nodes["add"].inputs] == [("a", "numbers"), ("b", "double")]
    assert spec.nodes["add"].keyword_ports and spec.nodes["numbers"].args == {"n": 10}
    assert spec.nodes["double"].run == f"{__name__}:double"


def test_nodes_placed_on_other_hosts_round_trip(tmp_path: Path) -> None:
    flow = Flow("spread", host="10.0.0.1")
    flow.add_host("edge", "10.0.0.2", agent_port=7800)
    numbers = flow.add(Count, n=10, name="numbers")
    flow.add(Collect, flow.add(double, numbers, host="edge"), path="out.jsonl")
    spec = load_manifest(flow.to_manifest(tmp_path / "spread.toml"))
    assert spec.nodes["double"].host == "edge" and spec.nodes["numbers"].host is None
    assert spec.hosts["edge"].agent == "tcp://10.0.0.2:7800" and spec.transport == "tcp"
    with pytest.raises(FlowDefinitionError, match='field "host": no host named "egde"'):
        flow.add(double, numbers, host="egde")
    flow.add_host("far", "10.0.0.3", ssh="pi@10.0.0.3", python="/opt/flujo/bin/python")
    flow.add(double, numbers, host="far", name="far_double")
    far = load_manifest(flow.to_manifest(tmp_path / "far.toml")).hosts["far"]
    assert (far.ssh, far.python, far.agent_port) == ("pi@10.0.0.3", "/opt/flujo/bin/python", 0)  # any free port


SCRIPT = '''
import json, sys
from flujo import Flow, Processor
from flujo.nodes.basic import Count, Collect

class Shout(Processor):
    """Defined in the user's own script."""
    def __init__(self, suffix):
        self.suffix = suffix
    def process(self, number):
        return f"{number}{self.suffix}"

if __name__ == "__main__":
    flow = Flow(sys.argv[1])
    numbers = flow.add(Count, n=int(sys.argv[3]) or None, name="numbers")  # 0: endless
    flow.add(Collect, flow.add(Shout, numbers, suffix="!", replicas=2), path=sys.argv[2])
    flow.start()
    if sys.argv[3] == "0":  # endless: stop the producer by name
        import time
        from pathlib import Path
        while not Path(sys.argv[2]).exists() or len(Path(sys.argv[2]).read_text().splitlines()) < 50:
            time.sleep(0.02)
        running = {node["label"]: node["state"] for node in flow.status()["nodes"]}
        assert running["numbers"] == "running", running
        assert flow.restart("shout") == ["shout.0", "shout.1"]  # drained one by one: nothing lost
        while any(node["restarts"] != 1 or node["state"] != "running"
                  for node in flow.status()["nodes"] if node["node"] == "shout"):
            time.sleep(0.02)
        flow.stop("numbers")
    print(json.dumps(flow.join(timeout=60)), flush=True)
'''


@pytest.mark.parametrize("count", [200, 0], ids=["to the end", "stopped by name"])
def test_a_script_defines_its_own_node_class_and_runs_the_flow(flow: FlowRunner, count: int) -> None:
    script = flow.folder / "user_script.py"
    script.write_text(textwrap.dedent(SCRIPT))
    out = flow.path("out.jsonl")
    done = subprocess.run(
        [sys.executable, str(script), flow.name, out, str(count)],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=flow.folder,
        env=flow.env,
    )
    assert done.returncode == 0, done.stderr
    results = __import__("json").loads(done.stdout.splitlines()[-1])
    assert results == {"numbers": 0, "shout.0": 0, "shout.1": 0, "collect": 0}
    lines = Path(out).read_text().splitlines()
    if count:
        assert lines == [f'"{n}!"' for n in range(200)]
    else:
        assert len(lines) >= 50 and lines == [f'"{n}!"' for n in range(len(lines))]
    assert not flow_processes(flow.name)
