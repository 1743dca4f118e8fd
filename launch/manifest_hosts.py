"""Validation of where a flow's nodes run: the [hosts] tables, the nodes placed on them (tcp and a
launcher address those hosts reach), and a flow placed whole on a Ray cluster."""

from __future__ import annotations

from typing import Any

from flujo.launch.agent_wire import DEFAULT_HOST_TIMEOUT
from flujo.launch.errors import did_you_mean
from flujo.launch.manifest_fields import HOST_FIELDS, Problems
from flujo.launch.manifest_spec import DEFAULT_AGENT_PORT, LOOPBACK, Engine, FlowSpec, HostSpec, Transport


def check_hosts(report: Problems, table: Any) -> dict[str, HostSpec]:
    """The sound entries of [hosts] by name; a problem for every other one."""
    if not isinstance(table, dict):
        report.problem("[hosts] must be a table of [hosts.NAME] tables", field_name="hosts")
        return {}
    hosts = {}
    for name, entry in table.items():
        where = f"[hosts.{name}]"
        if not isinstance(entry, dict):
            report.problem(f'{where} must be a table, for example {{ address = "10.0.0.2" }}', field_name=name)
            continue
        good = report.fields(entry, HOST_FIELDS, None, where, say_where=True)
        if "address" not in entry:
            report.problem(f"{where} needs the address its agent listens on and its nodes bind", field_name="address")
        for needs_ssh in ("sync", "python"):
            if needs_ssh in good and "ssh" not in entry:
                report.problem(
                    f'{where}: {needs_ssh} is for agents started over ssh: add ssh = "user@host"',
                    field_name=needs_ssh,
                )
        if "ssh" in good and "key" in good:
            report.problem(
                f"{where}: an agent started over ssh makes a new key for each run and tells it over ssh: remove key",
                field_name="key",
            )
        if "address" in good:
            # An agent started over ssh takes any free port (it says which) unless agent_port names one.
            port = good.get("agent_port", 0 if "ssh" in good else DEFAULT_AGENT_PORT)
            hosts[name] = HostSpec(
                name,
                good["address"],
                port,
                good.get("key"),
                good.get("timeout", DEFAULT_HOST_TIMEOUT),
                good.get("ssh"),
                good.get("sync", False),
                good.get("python"),
            )
    return hosts


def check_placement(report: Problems, flow: FlowSpec, transport_given: bool) -> None:
    """Nodes on other hosts need tcp everywhere and a launcher address those hosts reach."""
    remote = [node for node in flow.nodes.values() if node.host is not None]
    for node in remote:
        if node.host is not None and node.host not in flow.hosts:
            known = f" (declared: {', '.join(flow.hosts)})" if flow.hosts else " (add a [hosts.NAME] table)"
            report.problem(
                f'no host named "{node.host}"{did_you_mean(node.host, flow.hosts)}{known}', node.name, "host"
            )
    if not remote:
        return
    if transport_given and flow.transport != Transport.TCP:
        report.problem(
            f'node "{remote[0].name}" runs on host "{remote[0].host}": nodes on other hosts '
            'talk over tcp; remove transport or set transport = "tcp"',
            field_name="transport",
        )
    flow.transport = Transport.TCP
    if flow.host in LOOPBACK:
        report.problem(
            f'node "{remote[0].name}" runs on host "{remote[0].host}", which cannot reach the '
            f"launcher at {flow.host}: set [flow] host to this machine's address on their network",
            field_name="host",
        )


def check_engine(report: Problems, flow: FlowSpec, transport_given: bool) -> None:
    """A flow on Ray places every node there: tcp between them, no [hosts] placement."""
    if flow.engine != Engine.RAY:
        return
    for node in flow.nodes.values():
        if node.host is not None:
            report.problem(
                'a flow with engine = "ray" places every node on the Ray cluster; remove host', node.name, "host"
            )
    if transport_given and flow.transport != Transport.TCP:
        report.problem(
            'nodes on a Ray cluster talk over tcp; remove transport or set transport = "tcp"',
            field_name="transport",
        )
    flow.transport = Transport.TCP
