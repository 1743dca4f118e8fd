"""`flujo-launch graph`: a flow's picture as Mermaid or Graphviz DOT text, an SVG, or an HTML page.

One description of the picture (``Picture``: boxes, arrows, host groups) is built from the
FlowSpec; each format only renders it. Shown: every node's kind and code, its replicas, how
it joins several inputs, its restart and error policies, which host runs it, and on each
arrow the ports it links and the receiving queue's size and policy where they differ from
the flow's default (the title states the default).
"""

from __future__ import annotations

import html
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import PurePath

from flujo.launch.manifest import FlowSpec, NodeSpec
from flujo.vocab import ErrorPolicy, NodeKind, QueuePolicy, RestartPolicy

FORMATS = ("mermaid", "dot", "svg", "html")
LOCAL_HOST = "launcher's host"
#: Mermaid's ESM build, loaded by the HTML page (the page needs the network once to draw).
MERMAID_SCRIPT = "https://cdn.jsdelivr.net/npm/mermaid@11/dist/mermaid.esm.min.mjs"
_FILL = {NodeKind.PRODUCER: "#d8f0d8", NodeKind.PROCESSOR: "#dbe8f7", NodeKind.CONSUMER: "#fbe3c8"}
_LIBRARY = "flujo.nodes."


class GraphvizMissing(RuntimeError):
    """SVG output needs Graphviz's `dot` program."""


@dataclass
class Box:
    """One node of the flow as drawn."""

    id: str
    title: str  # the node's name, with "×N" when replicated
    details: list[str]
    kind: NodeKind
    replicas: int


@dataclass
class Arrow:
    source: str
    target: str
    label: str


@dataclass
class Picture:
    title: str
    groups: dict[str, list[Box]] = field(default_factory=dict)  # host -> its boxes
    arrows: list[Arrow] = field(default_factory=list)

    @property
    def grouped(self) -> bool:
        """Host groups are drawn only when nodes run on more than one host."""
        return len(self.groups) > 1


def _code(spec: NodeSpec) -> str:
    """What runs, briefly: the bundled library's prefix and folders of files are left out."""
    if spec.run:
        target, _, attribute = spec.run.rpartition(":")
        if target.endswith(".py"):
            return f"{PurePath(target).name}:{attribute}"
        return spec.run.removeprefix(_LIBRARY)
    return " ".join(PurePath(word).name if "/" in word else word for word in spec.command or [])


def _box(spec: NodeSpec) -> Box:
    details = [f"{spec.kind} · {_code(spec)}"]
    if len(spec.inputs) > 1:
        details.append(f"{spec.join} of {len(spec.inputs)} inputs")
    policies = []
    if spec.on_error != ErrorPolicy.FAIL:
        policies.append(f"on_error {spec.on_error}")
    if spec.restart != RestartPolicy.NO:
        policies.append(f"restart {spec.restart}")
    if policies:
        details.append(", ".join(policies))
    title = f"{spec.name} ×{spec.replicas}" if spec.replicas > 1 else spec.name
    return Box(spec.name, title, details, spec.kind, spec.replicas)


def _arrow_label(flow: FlowSpec, spec: NodeSpec, port_index: int) -> str:
    port = spec.inputs[port_index]
    parts = []
    if port.source_port != "out":
        parts.append(f"{port.source_port} → {port.port}" if spec.keyword_ports else port.source_port)
    elif spec.keyword_ports:
        parts.append(port.port)
    if spec.queue is not None and spec.queue != flow.queue:
        parts.append(f"queue {spec.queue}")
    if spec.policy != QueuePolicy.BLOCK:
        parts.append(spec.policy)
    return ", ".join(parts)


def describe(flow: FlowSpec) -> Picture:
    """What the picture shows, independent of the format."""
    picture = Picture(f'flow "{flow.name}" · queue {flow.queue} per input · block when full unless marked')
    for spec in flow.nodes.values():
        host = spec.host or LOCAL_HOST
        if spec.host and spec.host in flow.hosts:
            host = f"{spec.host} ({flow.hosts[spec.host].address})"
        picture.groups.setdefault(host, []).append(_box(spec))
    for spec in flow.nodes.values():
        for index, port in enumerate(spec.inputs):
            picture.arrows.append(Arrow(port.source, spec.name, _arrow_label(flow, spec, index)))
    return picture


# -- Mermaid -----------------------------------------------------------------------------------
def _mermaid_text(text: str) -> str:
    return html.escape(text, quote=False).replace('"', "#quot;")


def _mermaid_id(name: str) -> str:
    return "n_" + name.replace("-", "_")


_MERMAID_SHAPES = {NodeKind.PRODUCER: ("([", "])"), NodeKind.PROCESSOR: ("[", "]"), NodeKind.CONSUMER: ("[/", "/]")}


def to_mermaid(flow: FlowSpec) -> str:
    """A Mermaid flowchart (GitHub renders it in Markdown)."""
    picture = describe(flow)
    lines = ["---", f"title: {picture.title}", "---", "flowchart LR"]
    for number, (host, boxes) in enumerate(picture.groups.items()):
        indent = "    "
        if picture.grouped:
            lines.append(f'    subgraph host_{number}["{_mermaid_text(host)}"]')
            indent = "        "
        for box in boxes:
            opening, closing = _MERMAID_SHAPES[box.kind]
            label = "<br/>".join([f"<b>{_mermaid_text(box.title)}</b>", *map(_mermaid_text, box.details)])
            lines.append(f'{indent}{_mermaid_id(box.id)}{opening}"{label}"{closing}:::{box.kind}')
        if picture.grouped:
            lines.append("    end")
    for arrow in picture.arrows:
        label = f'|"{_mermaid_text(arrow.label)}"|' if arrow.label else ""
        lines.append(f"    {_mermaid_id(arrow.source)} -->{label} {_mermaid_id(arrow.target)}")
    for kind, fill in _FILL.items():
        lines.append(f"    classDef {kind} fill:{fill},stroke:#555")
    return "\n".join(lines) + "\n"


# -- Graphviz DOT ------------------------------------------------------------------------------
def _dot_string(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _dot_box(box: Box, indent: str) -> str:
    details = "".join(f'<br/><font point-size="10">{html.escape(line)}</font>' for line in box.details)
    label = f"<<b>{html.escape(box.title)}</b>{details}>"
    extra = ", peripheries=2" if box.replicas > 1 else ""  # a stack of processes
    return f'{indent}{_dot_string(box.id)} [label={label}, fillcolor="{_FILL[box.kind]}"{extra}];'


def to_dot(flow: FlowSpec) -> str:
    """A Graphviz digraph: `dot -Tsvg` draws it."""
    picture = describe(flow)
    lines = [
        f"digraph {_dot_string(flow.name)} {{",
        f"    graph [rankdir=LR, newrank=true, label={_dot_string(picture.title)}, labelloc=t, "
        'fontname="Helvetica", fontsize=12, nodesep=0.3, ranksep=0.5];',
        '    node [shape=box, style="rounded,filled", fontname="Helvetica", fontsize=12];',
        '    edge [fontname="Helvetica", fontsize=10, color="#555555"];',
    ]
    for number, (host, boxes) in enumerate(picture.groups.items()):
        indent = "    "
        if picture.grouped:
            lines.append(f"    subgraph cluster_{number} {{")
            lines.append(f'        label={_dot_string(host)}; style="dashed"; color="#888888";')
            indent = "        "
        lines.extend(_dot_box(box, indent) for box in boxes)
        if picture.grouped:
            lines.append("    }")
    for arrow in picture.arrows:
        label = f" [label={_dot_string(arrow.label)}]" if arrow.label else ""
        lines.append(f"    {_dot_string(arrow.source)} -> {_dot_string(arrow.target)}{label};")
    lines.append("}")
    return "\n".join(lines) + "\n"


def to_svg(flow: FlowSpec) -> str:
    """The DOT graph drawn by Graphviz's `dot` (Debian: apt-get install graphviz)."""
    dot = shutil.which("dot")
    if dot is None:
        raise GraphvizMissing(
            "SVG output needs Graphviz's `dot` program (Debian: apt-get install graphviz); "
            "--format html draws the graph in a browser instead"
        )
    done = subprocess.run([dot, "-Tsvg"], input=to_dot(flow), capture_output=True, text=True, timeout=60)
    if done.returncode != 0:
        raise GraphvizMissing(f"dot failed: {done.stderr.strip()}")
    return done.stdout


def to_html(flow: FlowSpec) -> str:
    """A standalone page that draws the Mermaid text in a browser (Mermaid's script from a CDN)."""
    return f"""<!doctype html>
<html lang="en">
<head><meta charset="utf-8"><title>{html.escape(flow.name)}: flow graph</title></head>
<body>
<pre class="mermaid">
{html.escape(to_mermaid(flow), quote=False)}</pre>
<script type="module">
import mermaid from "{MERMAID_SCRIPT}";
mermaid.initialize({{ startOnLoad: true, securityLevel: "strict" }});
</script>
</body>
</html>
"""


RENDERERS = {"mermaid": to_mermaid, "dot": to_dot, "svg": to_svg, "html": to_html}
