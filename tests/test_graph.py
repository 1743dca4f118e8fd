"""`flujo-launch graph`: Mermaid and DOT text that say what the manifest says, and an SVG
drawn by Graphviz (parsed back by `dot` itself)."""

from __future__ import annotations

import html
import json
import re
import shutil
import subprocess
import textwrap
import xml.etree.ElementTree as ElementTree
from pathlib import Path

import pytest
from click.testing import CliRunner

from flujo.launch.cli import main
from flujo.launch.manifest import load_manifest

ROOT = Path(__file__).parents[1]
PEOPLE_COUNTER = ROOT / "samples" / "people_counter" / "manifest.toml"
NODES = Path(__file__).parent / "flow_nodes.py"

# Every feature the picture shows: replicas, named ports and output ports, a zip join, a
# merge join, a node on another host, a queue size and a drop policy of its own.
FEATURES = textwrap.dedent(f"""
    [flow]
    name = "features"
    queue = 16
    host = "10.0.0.1"
    [hosts.gpu]
    address = "10.0.0.2"
    [nodes.camera]
    run = "flujo.nodes.basic:Count"
    [nodes.detect]
    run = "{NODES}:square"
    inputs = ["camera"]
    replicas = 3
    host = "gpu"
    policy = "drop-oldest"
    queue = 2
    restart = "on-failure"
    [nodes.split]
    run = "{NODES}:Split"
    inputs = ["detect"]
    [nodes.pair]
    run = "{NODES}:add"
    inputs = {{ a = "split/even", b = "split/odd" }}
    [nodes.either]
    run = "flujo.nodes.basic:Print"
    inputs = ["camera", "pair"]
    join = "merge"
    [nodes.tap]
    command = ["python3", "/opt/tools/tap.py", "--fast"]
    inputs = ["pair"]
""")


def _graph(manifest: Path, *options: str) -> str:
    result = CliRunner().invoke(main, ["graph", str(manifest), *options])
    assert result.exit_code == 0, result.output
    return result.output


@pytest.fixture
def features(tmp_path: Path) -> Path:
    path = tmp_path / "features.toml"
    path.write_text(FEATURES)
    return path


def test_mermaid_shows_nodes_edges_ports_joins_hosts_and_policies(features: Path) -> None:
    lines = [line.strip() for line in _graph(features).splitlines()]
    assert lines[:4] == [
        "---",
        'title: flow "features" · queue 16 per input · block when full unless marked',
        "---",
        "flowchart LR",
    ]
    assert 'subgraph host_1["gpu (10.0.0.2)"]' in lines and 'subgraph host_0["launcher\'s host"]' in lines
    detect = 'n_detect["<b>detect ×3</b><br/>processor · flow_nodes.py:square<br/>restart on-failure"]:::processor'
    assert detect in lines
    assert 'n_camera(["<b>camera</b><br/>producer · basic:Count"]):::producer' in lines
    assert any(
        line.startswith('n_either[/"<b>either</b><br/>consumer · basic:Print<br/>merge of 2 inputs"/]')
        for line in lines
    )
    arrows = [line for line in lines if "-->" in line]
    assert arrows == [
        'n_camera -->|"queue 2, drop-oldest"| n_detect',
        "n_detect --> n_split",
        'n_split -->|"even → a"| n_pair',
        'n_split -->|"odd → b"| n_pair',
        "n_camera --> n_either",
        "n_pair --> n_either",
        "n_pair --> n_tap",
    ]
    assert 'n_tap[/"<b>tap</b><br/>consumer · python3 tap.py --fast"/]:::consumer' in lines


def test_dot_is_valid_graphviz_with_every_node_and_edge(features: Path) -> None:
    dot_text = _graph(features, "--format", "dot")
    nodes = re.findall(r'^\s*"([\w-]+)" \[label=', dot_text, re.MULTILINE)
    edges = re.findall(r'^\s*"([\w-]+)" -> "([\w-]+)"', dot_text, re.MULTILINE)
    assert nodes == ["camera", "split", "pair", "either", "tap", "detect"]  # grouped by host
    assert edges == [
        ("camera", "detect"),
        ("detect", "split"),
        ("split", "pair"),
        ("split", "pair"),
        ("camera", "either"),
        ("pair", "either"),
        ("pair", "tap"),
    ]
    assert 'label="gpu (10.0.0.2)"' in dot_text and "peripheries=2" in dot_text
    if shutil.which("dot") is None:
        pytest.skip("Graphviz's dot is not installed (.ci/run installs it)")
    laid_out = json.loads(
        subprocess.run(["dot", "-Tjson"], input=dot_text, capture_output=True, text=True, check=True).stdout
    )
    drawn = {item["name"] for item in laid_out["objects"] if "nodes" not in item}
    assert drawn == {"camera", "detect", "split", "pair", "either", "tap"}
    clusters = [item for item in laid_out["objects"] if "nodes" in item]
    assert sorted(cluster["label"] for cluster in clusters) == ["gpu (10.0.0.2)", "launcher's host"]
    assert len(laid_out["edges"]) == 7
    labels = sorted(edge.get("label", "") for edge in laid_out["edges"])
    assert labels == ["", "", "", "", "even → a", "odd → b", "queue 2, drop-oldest"]


def test_svg_of_the_people_counter(tmp_path: Path) -> None:
    if shutil.which("dot") is None:
        pytest.skip("Graphviz's dot is not installed (.ci/run installs it)")
    out = tmp_path / "graph.svg"
    assert _graph(PEOPLE_COUNTER, "--format", "svg", "-o", str(out)) == ""
    svg = ElementTree.parse(out).getroot()
    namespace = {"svg": "http://www.w3.org/2000/svg"}
    titles = [title.text for title in svg.findall(".//svg:g[@class='node']/svg:title", namespace)]
    assert sorted(titles) == sorted(
        ["reader", "detector", "tracker", "counter", "annotator", "video", "counts", "console"]
    )
    edges = [title.text for title in svg.findall(".//svg:g[@class='edge']/svg:title", namespace)]
    assert len(edges) == 9 and {"reader->detector", "reader->annotator", "counter->console"} <= set(edges)
    texts = " ".join(text.text or "" for text in svg.iter("{http://www.w3.org/2000/svg}text"))
    assert "detector ×2" in texts and "zip of 3 inputs" in texts and "frame" in texts


REGENERATE = (
    "the README's picture of the people counter is stale: regenerate it with `flujo-launch graph "
    "samples/people_counter/manifest.toml --format svg -o docs/people_counter_graph.svg` and paste "
    "`flujo-launch graph samples/people_counter/manifest.toml` into the README's mermaid block"
)


def test_the_readme_shows_the_people_counters_current_graph() -> None:
    readme = (ROOT / "README.md").read_text()
    assert f"```mermaid\n{_graph(PEOPLE_COUNTER)}```" in readme, REGENERATE
    picture = ROOT / "docs" / "people_counter_graph.svg"
    assert "(docs/people_counter_graph.svg)" in readme and picture.exists()
    svg = ElementTree.parse(picture).getroot()
    namespace = {"svg": "http://www.w3.org/2000/svg"}
    drawn = {title.text for title in svg.findall(".//svg:g[@class='node']/svg:title", namespace)}
    texts = {text.text for text in svg.iter("{http://www.w3.org/2000/svg}text")}
    flow = load_manifest(PEOPLE_COUNTER)
    assert drawn == set(flow.nodes), REGENERATE
    assert {f"{spec.kind} · {spec.run.removeprefix('flujo.nodes.')}" for spec in flow.nodes.values()} <= texts, (
        REGENERATE
    )


def test_html_embeds_the_mermaid_text(features: Path) -> None:
    page = _graph(features, "--format", "html")
    assert page.startswith("<!doctype html>")
    embedded = page.split('<pre class="mermaid">\n', 1)[1].split("</pre>", 1)[0]
    assert html.unescape(embedded) == _graph(features)  # what the browser's Mermaid reads
    assert "<b>" not in embedded  # the labels' markup is escaped inside the page


def test_graph_of_a_bad_manifest_lists_its_problems(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text(
        '[nodes.a]\nrun = "flujo.nodes.basic:Count"\n[nodes.b]\nrun = "flujo.nodes.basic:Print"\ninputs = ["c"]\n'
    )
    result = CliRunner().invoke(main, ["graph", str(bad)])
    assert result.exit_code == 2 and 'node "b": field "inputs": no node named "c"' in result.output
