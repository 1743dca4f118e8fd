"""Lossless edges (docs/PROTOCOL.md, section 9): a reader killed mid-stream loses nothing.

Its senders keep what they sent until it is acknowledged and re-send it, in order, to the
successor. A consumer acknowledges once ``consume()`` returned, so its successor may consume
again the last few items its predecessor consumed but had not yet acknowledged (at least once
for the consumer's own side effects, section 9.1): the journal tells the processes apart, and
each process must see strictly increasing items, the runs together every item, in order.
"""

from __future__ import annotations

import json
import os
import signal
import sys
from pathlib import Path

import pytest
from conftest import NODES, FlowRunner, poll_for
from flow_nodes import line_count, read_lines
from manifests import Node, node

from flujo.conformance.acknowledging import AckSink
from flujo.conformance.checks import Checks
from flujo.conformance.harness import NODE, Bench
from flujo.conformance.steps import handshake, send_items
from flujo.protocol import Control
from flujo.vocab import NodeKind

pytestmark = pytest.mark.timeout(120)

N = 1500
KILLS = 3
QUEUE = 4  # a window of 8 items per reader replica


def _runs(path: str) -> list[list[int]]:
    """The items each process consumed, process by process, in the order they were written."""
    runs: list[list[int]] = []
    last_pid = None
    for pid, item in read_lines(path):
        if pid != last_pid:
            runs.append([])
            last_pid = pid
        runs[-1].append(item)
    return runs


def _check_exactly_once(runs: list[list[int]]) -> int:
    """Every item, in order, once a successor's re-consumed head is dropped; returns how many
    items successors consumed again (not yet acknowledged when their predecessor died)."""
    delivered: list[int] = []
    again = 0
    for run in runs:
        assert run == sorted(set(run)), "a process consumed an item twice or out of order"
        if delivered:
            assert run[0] <= delivered[-1] + 1, f"items {delivered[-1] + 1}..{run[0] - 1} lost"
        fresh = [item for item in run if not delivered or item > delivered[-1]]
        again += len(run) - len(fresh)
        delivered.extend(fresh)
    assert delivered == list(range(N))
    return again


LOSSLESS = f"queue = {QUEUE}\nshm = false\nlossless = true"  # the [flow] lines of every flow here
ALWAYS = {"restart": "always", "max_restarts": 10}


def _kill_a_chain(
    flow: FlowRunner,
    victim: str,
    middle: Node | None = None,
    *options: str,
    settings: str = LOSSLESS,
    **restart: Node,
) -> tuple[str, list[list[int]]]:
    """numbers (Paced, N items) -> [work: ``middle``] -> sink (Journal); ``restart`` gives a
    node fields of its own (e.g. ALWAYS), ``settings`` the [flow] lines. SIGKILLs ``victim``
    KILLS times mid-stream; returns the launcher's messages and each sink process's items."""
    out = flow.path("out.jsonl")
    nodes = {"numbers": node("{nodes}:Paced", args={"n": N, "pause": 0.0005}, **restart.get("numbers", {}))}
    if middle is not None:
        nodes["work"] = {**middle, "inputs": ["numbers"], **restart.get("work", {})}
    upstream = "work" if middle is not None else "numbers"
    nodes["sink"] = node("{nodes}:Journal", upstream, args={"path": out}, **restart.get("sink", {}))
    launcher = flow.start(flow.manifest(nodes, flow=settings), *options)
    _kill_repeatedly(flow, victim, out)
    _, stderr = launcher.communicate(timeout=60)
    assert launcher.returncode == 0, stderr
    return stderr, _runs(out)


def _kill_repeatedly(flow: FlowRunner, victims: str | list[str], out: str, total: int = N) -> None:
    """SIGKILL the victims (replica labels) in turn, KILLS times in all, each once a further
    share of the ``total`` items is out and only once its predecessor's successor runs."""
    victims = [victims] if isinstance(victims, str) else victims
    for kill in range(KILLS):
        victim = victims[kill % len(victims)]
        poll_for(lambda kill=kill: line_count(out) >= (kill + 1) * total // (KILLS + 2), timeout=60)
        replica = flow.replicas()[victim]
        pid, restarts = replica["pid"], replica["restarts"]
        os.kill(pid, signal.SIGKILL)
        poll_for(
            lambda victim=victim, restarts=restarts, pid=pid: (
                flow.replicas().get(victim, {}).get("restarts") == restarts + 1
                and flow.replicas()[victim].get("pid") not in (None, pid)
            ),
            timeout=30,
        )


def test_a_consumer_killed_again_and_again_loses_nothing(flow: FlowRunner) -> None:
    stderr, runs = _kill_a_chain(flow, "sink", sink=ALWAYS)
    assert "lossless across a crash: numbers -> sink" in stderr  # said at start
    assert len(runs) == KILLS + 1
    again = _check_exactly_once(runs)
    print(f"{KILLS} kills of the consumer: 0 lost, {again} consumed again")


@pytest.mark.parametrize("transport", ["ipc", "tcp"])
def test_a_processor_killed_again_and_again_loses_nothing(flow: FlowRunner, transport: str) -> None:
    # On tcp every socket, the acknowledgements' included, is CURVE with the flow's key.
    settings = f'{LOSSLESS}\ntransport = "{transport}"'
    stderr, runs = _kill_a_chain(flow, "work", node("{nodes}:square"), settings=settings, work=ALWAYS)
    assert "lossless across a crash: numbers -> work, work -> sink" in stderr
    runs = [[round(value**0.5) for value in run] for run in runs]
    assert len(runs) == 1  # the consumer lived throughout: it never sees an item twice
    assert _check_exactly_once(runs) == 0


@pytest.mark.parametrize(
    ("flow_settings", "expected"),
    [
        ("shm = false\nlossless = true", True),
        ("shm = false", False),  # opt-in: nothing acknowledges unless the flow asks
        ("lossless = true", True),  # shared-memory slots are kept too (tests/test_lossless_shm.py)
    ],
)
def test_only_a_flow_that_opts_in_gets_lossless_edges(tmp_path, flow_settings: str, expected: bool) -> None:
    from flujo.launch.manifest import load_manifest
    from flujo.launch.plan import lossless

    path = tmp_path / "flow.toml"
    path.write_text(
        f"[flow]\n{flow_settings}\n"
        '[nodes.a]\nrun = "flujo.nodes.basic:Count"\n'
        '[nodes.b]\nrun = "flujo.nodes.basic:Print"\ninputs = ["a"]\n'
    )
    flow = load_manifest(path)
    assert lossless(flow, flow.nodes["a"], flow.nodes["b"]) is expected


def test_a_flow_that_asks_says_which_edges_are_lossless_and_why_the_others_are_not(tmp_path) -> None:
    from flujo.launch.manifest import load_manifest
    from flujo.launch.plan import delivery_report

    path = tmp_path / "flow.toml"
    path.write_text(
        "[flow]\nshm = false\nlossless = true\n"
        '[nodes.a]\nrun = "flujo.nodes.basic:Count"\n'
        '[nodes.b]\nrun = "flujo.nodes.basic:Count"\n'
        '[nodes.keep]\nrun = "flujo.nodes.basic:Print"\ninputs = ["a"]\n'
        '[nodes.live]\nrun = "flujo.nodes.basic:Print"\ninputs = ["a"]\npolicy = "drop-oldest"\n'
        '[nodes.both]\nrun = "flujo.nodes.basic:Print"\ninputs = ["a", "b"]\njoin = "merge"\n'
        '[nodes.c]\ncommand = ["sh"]\ninputs = ["b"]\n'
    )
    assert delivery_report(load_manifest(path)) == [
        "lossless across a crash: a -> keep, a -> both, b -> both",  # a merge logs its numbering
        "at most once across a crash: a -> live (a realtime reader (drop-oldest))",
        "at most once across a crash: b -> c (a node in another language (its library does not acknowledge yet))",
    ]
    path.write_text(path.read_text().replace("lossless = true", ""))
    assert delivery_report(load_manifest(path)) == []  # a flow that does not ask hears nothing of it


def test_a_producer_killed_again_and_again_resumes_and_loses_nothing(flow: FlowRunner) -> None:
    # The launcher starts each successor at the item after what its readers had acknowledged
    # (its last report, 0.5 s old at most): what it sends again, the processor drops.
    status_file = flow.path("status.json")
    _, runs = _kill_a_chain(flow, "numbers", node("{nodes}:square"), "--json-status", status_file, numbers=ALWAYS)
    runs = [[round(value**0.5) for value in run] for run in runs]
    assert len(runs) == 1 and _check_exactly_once(runs) == 0
    status = {node["label"]: node for node in json.loads(Path(status_file).read_text())["nodes"]}
    assert status["numbers"]["restarts"] == KILLS


@pytest.mark.parametrize("stateless", [False, True])
def test_a_stateful_processor_killed_again_and_again_continues_its_state(flow: FlowRunner, stateless: bool) -> None:
    # A running sum keeps its total across items: its successor restores the total of the last
    # item it acknowledged (PROTOCOL 9.6), so the sums equal a run without a crash. Without
    # snapshot() a successor starts afresh at 0 and the sums go wrong after the first kill.
    total = node("{nodes}:RunningSum", args={"stateless": stateless})
    _, runs = _kill_a_chain(flow, "work", total, work=ALWAYS)
    assert len(runs) == 1  # the consumer lived throughout
    sums = runs[0]
    expected = [i * (i + 1) // 2 for i in range(N)]
    if stateless:
        assert len(sums) == N and sums != expected  # started afresh: the sums restart from 0
    else:
        assert sums == expected


def test_a_stateful_consumer_killed_again_and_again_counts_every_item_once(flow: FlowRunner) -> None:
    # A consumer with snapshot() acknowledges only through its last snapshot, as a processor
    # does: its successor restores the count and gets everything after it again. Acknowledged
    # item by item, the items between the snapshot and the crash were counted by no one.
    out = flow.path("out.jsonl")
    nodes = {
        "numbers": node("{nodes}:Paced", args={"n": N, "pause": 0.0005}),
        "sink": node("{nodes}:CountingJournal", "numbers", args={"path": out}, **ALWAYS),
    }
    launcher = flow.start(flow.manifest(nodes, flow=LOSSLESS))
    _kill_repeatedly(flow, "sink", out)
    _, stderr = launcher.communicate(timeout=60)
    assert launcher.returncode == 0, stderr
    runs = _runs(out)
    assert len(runs) == KILLS + 1
    miscounted = [(item, count) for run in runs for item, count in run if count != item + 1]
    assert not miscounted, f"{len(miscounted)} items counted wrong, first {miscounted[:3]}"
    assert runs[-1][-1] == [N - 1, N]


@pytest.mark.parametrize(
    "victims",
    [
        ["pair"],
        ["lagging.0", "squares", "lagging.1"],
    ],
    ids=["the zip", "its senders"],
)
def test_a_zip_or_its_senders_killed_again_and_again_make_every_pair_once(flow: FlowRunner, victims: list[str]) -> None:
    # One input of the zip lags the other (two jittery replicas): at each kill the zip holds
    # partners waiting on one side. The replay brings the same numbers with the same items.
    out = flow.path("out.jsonl")
    always = {"restart": "always", "max_restarts": 10}
    manifest = flow.manifest(
        {
            "numbers": node("{nodes}:Paced", args={"n": N, "pause": 0.0005}, **always),
            "lagging": node("{nodes}:jitter", "numbers", replicas=2, **always),
            "squares": node("{nodes}:square", "numbers", **always),
            "pair": node("{nodes}:add", {"a": "lagging", "b": "squares"}, **always),
            "sink": node("{nodes}:Journal", "pair", args={"path": out}),
        },
        flow=LOSSLESS,
    )
    launcher = flow.start(manifest)
    _kill_repeatedly(flow, victims, out)
    _, stderr = launcher.communicate(timeout=60)
    assert launcher.returncode == 0, stderr
    # i + i * i, back to i
    runs = [[round((-1 + (1 + 4 * value) ** 0.5) / 2) for value in run] for run in _runs(out)]
    assert len(runs) == 1 and _check_exactly_once(runs) == 0


def _start_merge(flow: FlowRunner, out: str, right: int, merge: str = "{nodes}:from_port"):
    """left (N items) and right (``right`` items), merged by ``merge`` into a journal; all restart always."""
    nodes = {
        "left": node("{nodes}:Paced", args={"n": N, "pause": 0.0005}, **ALWAYS),
        "right": node("{nodes}:Paced", args={"n": right, "pause": 0.0005}, **ALWAYS),
        "merged": node(merge, {"a": "left", "b": "right"}, join="merge", **ALWAYS),
        "sink": node("{nodes}:Journal", "merged", args={"path": out}),
    }
    return flow.start(flow.manifest(nodes, flow=LOSSLESS))


@pytest.mark.parametrize("victims", [["merged"], ["left"]], ids=["the merge", "a sender"])
def test_a_merge_or_a_sender_killed_again_and_again_passes_every_item_once(
    flow: FlowRunner, victims: list[str]
) -> None:
    # Two producers merged: the merge numbers in arrival order and logs it (PROTOCOL 9.5). Its
    # successor emits what its predecessor numbered in the same order with the same numbers,
    # whatever order the replays arrive in (its reader drops a number lower than one it has),
    # then goes on. A sender's successor resumes; the merge drops what it sends again.
    out = flow.path("out.jsonl")
    launcher = _start_merge(flow, out, right=N)
    _kill_repeatedly(flow, victims, out, total=2 * N)
    _, stderr = launcher.communicate(timeout=60)
    assert launcher.returncode == 0, stderr
    assert "lossless across a crash: left -> merged" in stderr and "right -> merged" in stderr
    runs = _runs(out)
    assert len(runs) == 1  # the consumer lived throughout: it never sees an item twice
    by_port: dict[str, list[int]] = {"a": [], "b": []}
    for port, item in runs[0]:
        by_port[port].append(item)
    for port, items in by_port.items():
        lost = sorted(set(range(N)) - set(items))
        assert not lost, f"port {port}: {len(lost)} items lost, first {lost[:5]}"
        assert items == list(range(N)), f"port {port}: duplicated or out of order"


def test_a_stateful_merge_killed_again_and_again_goes_on_from_its_snapshot(flow: FlowRunner) -> None:
    # Its successor restores the last snapshot and re-emits only what came after it, in logged
    # order (PROTOCOL 9.5, 9.6): each port's count goes on 1, 2, 3, ... across the kills.
    out = flow.path("out.jsonl")
    launcher = _start_merge(flow, out, right=N, merge="{nodes}:CountingMerge")
    _kill_repeatedly(flow, ["merged"], out, total=2 * N)
    _, stderr = launcher.communicate(timeout=60)
    assert launcher.returncode == 0, stderr
    runs = _runs(out)
    assert len(runs) == 1  # the consumer lived throughout
    for name in ("a", "b"):
        taken = [(item, count) for port, item, count in runs[0] if port == name]
        assert [item for item, _ in taken] == list(range(N)), f"port {name}: lost, duplicated or out of order"
        wrong = [(item, count) for item, count in taken if count != item + 1]
        assert not wrong, f"port {name}: counted again or afresh after a crash, first {wrong[:3]}"


def test_a_merge_killed_after_one_of_its_senders_ended_passes_every_item_once(flow: FlowRunner) -> None:
    out = flow.path("out.jsonl")
    short = N // 3  # "right" ends its stream early; the merge goes on with "left"
    launcher = _start_merge(flow, out, right=short)
    _kill_repeatedly(flow, ["merged"], out, total=N + short)
    _, stderr = launcher.communicate(timeout=60)
    assert launcher.returncode == 0, stderr
    by_port: dict[str, list[int]] = {"a": [], "b": []}
    for run in _runs(out):
        for port, item in run:
            by_port[port].append(item)
    assert by_port == {"a": list(range(N)), "b": list(range(short))}


def test_a_sender_that_ended_stays_until_its_reader_acknowledged_everything(flow: FlowRunner) -> None:
    # "right" ends its stream while nothing it sent is acknowledged (the consumer holds its
    # first item); the merge has right's end of stream, and then dies. Right must still be
    # there to replay its items to the merge's successor: before senders stayed until
    # acknowledged, it exited at the end of stream and its items were lost with the merge.
    out, gate, held, left_gate = (flow.path(name) for name in ("out.jsonl", "gate", "held", "left-gate"))
    left, right = 100, 40
    nodes = {
        "left": node("{nodes}:Gated", args={"n": left, "gate": left_gate}, **ALWAYS),
        "right": node("{nodes}:Paced", args={"n": right, "pause": 0.0}, **ALWAYS),
        "merged": node("{nodes}:from_port", {"a": "left", "b": "right"}, join="merge", **ALWAYS),
        # Room for all 140 in front of the held sink (a credit window holds twice its queue in items).
        "sink": node("{nodes}:HeldJournal", "merged", args={"path": out, "gate": gate, "held": held}, queue=100),
    }
    launcher = flow.start(flow.manifest(nodes, flow=LOSSLESS))
    poll_for(lambda: Path(held).exists(), timeout=30)

    def merge_has_everything() -> bool:
        replicas = flow.replicas()
        return replicas["merged"]["items_in"] == left + right and replicas["right"]["state"] in ("finished", "exited")

    poll_for(merge_has_everything, timeout=30)  # right's end of stream is behind its last item
    replica = flow.replicas()["merged"]
    assert replica["restarts"] == 0
    os.kill(replica["pid"], signal.SIGKILL)
    poll_for(lambda: flow.replicas()["merged"]["restarts"] == 1, timeout=30)
    Path(gate).touch()
    Path(left_gate).touch()
    _, stderr = launcher.communicate(timeout=60)
    assert launcher.returncode == 0, stderr
    by_port: dict[str, list[int]] = {"a": [], "b": []}
    for _pid, (port, item) in read_lines(out):
        by_port[port].append(item)
    assert by_port == {"a": list(range(left)), "b": list(range(right))}


@pytest.mark.parametrize("restarted", ["numbers", "square"])
def test_a_graceful_restart_then_a_crash_of_the_reader_loses_nothing(flow: FlowRunner, restarted: str) -> None:
    # The sink holds its first item, so it acknowledges nothing: everything "square" sent is
    # unacknowledged when `restarted` is restarted gracefully, and the sink is killed after.
    # The drained process took what it kept with it: what its readers had not acknowledged
    # must come again from its successor (a processor: its sender keeps the inputs and replays
    # them; a producer: it resumes at what was acknowledged). Before, a drained sender's
    # unacknowledged items were lost with a reader killed after its hand-over.
    out, gate, held = (flow.path(name) for name in ("out.jsonl", "gate", "held"))
    n = 60
    nodes = {
        "numbers": node("{nodes}:ResumingGated", args={"n": n, "gate": gate}, **ALWAYS),  # ends at the cue
        "square": node("{nodes}:square", "numbers", **ALWAYS),
        # Room for every item (twice over, after the replay) in front of the held sink.
        "sink": node(
            "{nodes}:HeldJournal", "square", args={"path": out, "gate": gate, "held": held}, queue=200, **ALWAYS
        ),
    }
    launcher = flow.start(flow.manifest(nodes, flow=LOSSLESS))
    poll_for(lambda: Path(held).exists(), timeout=30)
    poll_for(lambda: flow.replicas()["square"]["items_out"] == n, timeout=30)
    assert flow.command("restart", restarted).returncode == 0
    poll_for(lambda: flow.replicas()[restarted]["restarts"] == 1, timeout=30)
    replica = flow.replicas()["sink"]
    assert replica["restarts"] == 0
    os.kill(replica["pid"], signal.SIGKILL)
    poll_for(lambda: flow.replicas()["sink"]["restarts"] == 1, timeout=30)
    Path(gate).touch()
    _, stderr = launcher.communicate(timeout=60)
    assert launcher.returncode == 0, stderr
    assert [item for _pid, item in read_lines(out)] == [i * i for i in range(n)]


@pytest.mark.timeout(60)
def test_a_stateful_reader_acknowledges_only_what_the_launcher_said_it_keeps(tmp_path: Path) -> None:
    """The snapshot report and the acknowledgement leave on two sockets: a process killed between
    them could have its acknowledgement delivered and its snapshot lost (seen under load: a
    successor restored an older sum than its senders' kept items). So the acknowledgement waits
    for the launcher's ``kept`` (PROTOCOL 9.6). The conformance bench plays the launcher and the
    sender of a CountingJournal, and answers late."""
    out = tmp_path / "journal.jsonl"
    extra = {"run": f"{NODES}:CountingJournal", "args": {"path": str(out)}}
    bench = Bench([sys.executable, "-m", "flujo.node"], tmp_path, NodeKind.CONSUMER, 20.0, acks=True, extra=extra)
    try:
        sink = AckSink(bench, 0)
        handshake(bench, Checks("acknowledging", []))
        send_items(bench, range(10), make=lambda seq: seq)  # a journal writes JSON
        assert bench.wait(lambda: bench.has_report("snapshot") or bench.exited()), bench.log_tail()
        through = bench.reports_of("snapshot")[-1].payload[0]
        bench.idle(0.3)  # reported, not yet kept: no acknowledgement may come
        assert sink.highest == -1, sink.frames
        bench.publish(Control.KEPT, NODE, 0, 0, through, keep=False)
        assert bench.wait(lambda: sink.highest >= through or bench.exited()), bench.log_tail()
        assert sink.highest == through and not bench.exited(), bench.log_tail()
    finally:
        bench.close()
