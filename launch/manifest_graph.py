"""Validation of a flow's graph as a whole: every input names an output, no cycles, each node's
kind fits its place, and each Python node's ``args`` fit its code."""

from __future__ import annotations

import inspect
from typing import Any

from flujo.api import declared_kind, declared_outputs
from flujo.launch.errors import did_you_mean
from flujo.launch.manifest_fields import Problems
from flujo.launch.manifest_spec import FlowSpec, NodeSpec
from flujo.vocab import ErrorPolicy, NodeKind


def check_graph(report: Problems, flow: FlowSpec, targets: dict[str, Any]) -> bool:
    """Check that every input names an output; True when the graph is whole and has no cycle."""
    whole = True
    for node in flow.nodes.values():
        for port in node.inputs:
            source = flow.nodes.get(port.source)
            if source is None:
                report.problem(
                    f'no node named "{port.source}"{did_you_mean(port.source, flow.nodes)}', node.name, "inputs"
                )
                whole = False
                continue
            if source.run and source.name not in targets:
                continue  # its class did not load (reported): its ports are unknown
            outputs = _outputs_of(source, targets)
            if port.source_port not in outputs:
                report.problem(
                    f'node "{source.name}" has no output port "{port.source_port}" '
                    f"(it has: {', '.join(outputs)}){did_you_mean(port.source_port, outputs)}",
                    node.name,
                    "inputs",
                )
                whole = False
    return whole and not _cycles(report, flow)


def _outputs_of(node: NodeSpec, targets: dict[str, Any]) -> list[str]:
    if node.name in targets:
        return list(declared_outputs(targets[node.name]))
    return node.outputs


def _cycles(report: Problems, flow: FlowSpec) -> bool:
    state: dict[str, int] = {}  # 1 = on the current path, 2 = done

    def visit(name: str, path: list[str]) -> bool:
        state[name] = 1
        for port in flow.nodes[name].inputs:
            if state.get(port.source) == 1:
                cycle = [*path[path.index(port.source) :], port.source] if port.source in path else [name]
                report.problem(f"the inputs form a cycle: {' <- '.join(cycle)}", name, "inputs")
                return True
            if port.source not in state and visit(port.source, [*path, port.source]):
                return True
        state[name] = 2
        return False

    return any(name not in state and visit(name, [name]) for name in flow.nodes)


def check_kinds(report: Problems, flow: FlowSpec, targets: dict[str, Any]) -> None:
    """Each node's kind, declared by its code or taken from its place in the graph, and what a kind forbids."""
    for node in flow.nodes.values():
        declared = declared_kind(targets[node.name]) if node.name in targets else None
        feeds = flow.downstream(node.name)
        if declared == NodeKind.PRODUCER and node.inputs:
            report.problem(f'"{node.run}" is a producer, which takes no inputs', node.name, "inputs")
        elif declared in (NodeKind.PROCESSOR, NodeKind.CONSUMER) and not node.inputs:
            report.problem(f'"{node.run}" is a {declared}, which needs inputs', node.name, "inputs")
        if declared == NodeKind.CONSUMER and feeds:
            readers = ", ".join(f'"{reader.name}"' for reader, _ in feeds)
            report.problem(
                f'"{node.run}" is a consumer, which sends nothing on, yet {readers} reads it', node.name, "run"
            )
        node.kind = declared or (
            NodeKind.PRODUCER if not node.inputs else NodeKind.PROCESSOR if feeds else NodeKind.CONSUMER
        )
        if node.on_error == ErrorPolicy.SKIP and node.kind == NodeKind.PRODUCER:
            report.problem(
                'a producer cannot skip an item its generator failed on: use on_error = "fail" and a restart policy',
                node.name,
                "on_error",
            )
        if node.replicas > 1 and node.kind == NodeKind.PRODUCER:
            report.problem(
                "a producer runs as one process (its items form one numbered sequence)", node.name, "replicas"
            )
        if node.replicas > 1 and len(node.inputs) > 1:
            report.problem(
                "a node that joins several inputs runs as one process, so the items of each "
                "sequence number meet in one place",
                node.name,
                "replicas",
            )


def check_arguments(report: Problems, flow: FlowSpec, targets: dict[str, Any]) -> None:
    """``args`` must fit the node's constructor (a class) or its keywords (a function), so a
    typo is found here rather than in every process after the flow has started."""
    for node in flow.nodes.values():
        target = targets.get(node.name)
        if target is None:
            continue
        try:
            signature = inspect.signature(target)
        except (TypeError, ValueError):
            continue  # a builtin or an extension without a signature: it will say so itself
        try:
            if inspect.isclass(target) or NodeKind.PRODUCER in (node.kind, declared_kind(target)):
                signature.bind(**node.args)  # called with exactly these
            else:
                signature.bind_partial(**node.args)  # the items come as the other arguments
        except TypeError as error:
            known = [
                name
                for name, parameter in signature.parameters.items()
                if parameter.kind in (parameter.POSITIONAL_OR_KEYWORD, parameter.KEYWORD_ONLY)
            ]
            hint = "".join(did_you_mean(key, known) for key in node.args if key not in known)[:200]
            takes = ", ".join(known) or "no arguments"
            report.problem(f'do not fit "{node.run}": {error}{hint} (it takes: {takes})', node.name, "args")
