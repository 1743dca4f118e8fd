"""`flujo-launch run --metrics-port`: Prometheus text scraped during a run grows with the
flow and agrees with `flujo-launch status`."""

from __future__ import annotations

import json
import socket
import urllib.request
from pathlib import Path

from conftest import FlowRunner, poll_for
from manifests import collect, node
from prometheus_client.parser import text_string_to_metric_families

from flujo.launch.runs import ANNOUNCEMENT

N = 300


def _manifest(flow: FlowRunner, gate: str) -> Path:
    return flow.manifest(
        {
            "numbers": node("{nodes}:Gated", args={"n": N, "gate": gate, "pause": 0.008}),
            "square": node("{nodes}:square", "numbers", replicas=2),
            "sink": collect("square", flow.path("out.jsonl")),
        }
    )


def _scrape(url: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """{(sample name, sorted labels): value} of one scrape."""
    with urllib.request.urlopen(url, timeout=5) as response:
        assert response.headers["Content-Type"].startswith("text/plain")
        text = response.read().decode()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def _per_replica(scrape: dict, name: str) -> dict[str, float]:
    """{label as in status ("square.1"): value} of one per-replica metric."""
    found = {}
    for (sample, labels), value in scrape.items():
        if sample == name:
            fields = dict(labels)
            found[fields["node"] if name_is_single(fields) else f"{fields['node']}.{fields['replica']}"] = value
    return found


def name_is_single(fields: dict[str, str]) -> bool:
    return fields["node"] != "square"  # the only replicated node of this flow


def test_metrics_are_scraped_during_a_run_and_match_status(flow: FlowRunner) -> None:
    gate = flow.path("gate")
    launcher = flow.start(_manifest(flow, gate), "-q", "--metrics-port", "0")
    announcement = Path(flow.env["FLUJO_RUNS"]) / flow.name / ANNOUNCEMENT
    url = poll_for(lambda: announcement.exists() and json.loads(announcement.read_text()).get("metrics"), timeout=20)
    assert url.startswith("http://127.0.0.1:") and url.endswith("/metrics")

    first = poll_for(
        lambda: _per_replica(_scrape(url), "flujo_items_out_total").get("numbers", 0) > 0 and _scrape(url), timeout=20
    )
    produced = _per_replica(first, "flujo_items_out_total")["numbers"]
    assert produced < N  # caught mid-run
    grown = poll_for(
        lambda: (s := _scrape(url)) and _per_replica(s, "flujo_items_out_total")["numbers"] > produced and s, timeout=20
    )
    assert _per_replica(grown, "flujo_items_in_total")["sink"] >= _per_replica(first, "flujo_items_in_total")["sink"]
    labels = {dict(labels)["node"] for name, labels in grown if name == "flujo_items_in_total"}
    assert labels == {"numbers", "square", "sink"}
    assert _per_replica(grown, "flujo_replica_up") == {"numbers": 1.0, "square.0": 1.0, "square.1": 1.0, "sink": 1.0}
    assert grown[("flujo_flow_started", (("flow", flow.name),))] == 1.0

    # Every item through, the stream held open by the gate: counters settle, and match status.
    def all_through() -> dict | None:
        scrape = _scrape(url)
        ins, outs = _per_replica(scrape, "flujo_items_in_total"), _per_replica(scrape, "flujo_items_out_total")
        through = (
            outs["numbers"] == outs["square.0"] + outs["square.1"] == N
            and ins["sink"] == N
            and ins["square.0"] + ins["square.1"] == N
        )  # every replica's last report is in
        return scrape if through else None

    settled = poll_for(all_through, timeout=30)
    status = flow.replicas()
    for metric, field in (
        ("flujo_items_in_total", "items_in"),
        ("flujo_items_out_total", "items_out"),
        ("flujo_errors_total", "errors"),
        ("flujo_restarts_total", "restarts"),
    ):
        assert _per_replica(settled, metric) == {label: node[field] for label, node in status.items()}, metric
    square = _per_replica(settled, "flujo_items_in_total")
    assert square["square.0"] + square["square.1"] == N and square["numbers"] == 0
    assert settled[("flujo_dropped_total", (("flow", flow.name), ("node", "sink")))] == 0
    busy = _per_replica(settled, "flujo_busy_ratio")
    assert set(busy) == set(status) and all(0 <= value <= 1 for value in busy.values())

    Path(gate).touch()
    launcher.communicate(timeout=20)
    assert launcher.returncode == 0


def test_a_metrics_port_in_use_starts_nothing(flow: FlowRunner) -> None:
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    port = taken.getsockname()[1]
    try:
        launcher = flow.start(_manifest(flow, flow.path("gate")), "--metrics-port", str(port))
        _, stderr = launcher.communicate(timeout=20)
    finally:
        taken.close()
    assert launcher.returncode == 2
    assert f"cannot serve metrics on 127.0.0.1:{port}: Address already in use" in stderr
    assert not Path(flow.path("out.jsonl")).exists()
