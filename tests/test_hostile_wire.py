"""Hostile peers against running flows: malformed and forged messages on data ports, garbage on
the launcher's and the agent's sockets. Nothing crashes, hangs, loses or duplicates a legitimate
item, lets an invalid value reach user code, or grows without bound; each kind is counted and logged.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from pathlib import Path

import msgpack
import psutil
import pytest
import zmq
from conftest import FlowRunner, flow_processes, poll_for
from flow_nodes import line_count, read_lines
from manifests import Node, collect, node
from netns import Host
from test_hosts import AGENT_PORT, CHAIN, Agent, _body, _why_not, launcher_key
from test_hosts import hosts as hosts  # a fixture: pytest finds it by name here
from wire_cases import HEAVY, bad_messages

from flujo.launch.fork_client import SWITCH
from flujo.launch.keys import AUTHORIZED_KEYS
from flujo.snapshots import SNAPSHOT_MAX_BYTES

pytestmark = pytest.mark.timeout(180)

COPIES = 2000  # of each kind of bad message, to the sink: it reads them as fast as it can
#: To the zip's order-restoring port: the zip reads it only for that port's next item, a bad
#: message about every legitimate one, so each copy costs an item through the whole flow (2,000
#: kept the flow busy for 160,000 items, 30 of the suite's CPU-s; 500, 11.6 CPU-s for the test,
#: 100, 8-9). 100 still break every rule at that port a hundred times over, between legitimate
#: items; the memory bound is proven by the 2,000 of each to the sink.
COPIES_ZIP_PORT = 100
#: To the zip's other port: a zip reads a port only when it needs that port's next item, and a
#: socket takes turns between its peers, so these are read at the pace of the legitimate stream.
COPIES_SLOW_PORT = 20
HEAVY_COPIES = 3
#: How much a target node's memory may grow while it refuses everything sent to it.
RSS_BOUND_MB = 48


#: Seconds between the source's runs of 64 items: about 1,300 items a second, hundreds of times
#: what the zip's ports need to read the bad messages at their pace. At full speed (0.01 s) the
#: flow's CPU grew with the test's wall time: 10 CPU-s under pytest -n 4, 22 under -n 6.
SOURCE_PAUSE = 0.05


def zip_flow(gate: str, out: str) -> dict[str, Node]:
    """src (until ``gate`` exists) -> work (3 replicas), zipped with src -> pair -> sink writing ``out``."""
    return {
        "src": node("{nodes}:UntilGate", args={"gate": gate, "pause": SOURCE_PAUSE}),
        "work": node("{nodes}:square", "src", replicas=3),
        "pair": node("{nodes}:add", {"a": "work", "b": "src"}),
        "sink": collect("pair", out),
    }


def node_configs(name: str) -> dict[str, tuple[psutil.Process, dict]]:
    """label -> (process, configuration) of the flow's node processes (from FLUJO_NODE_CONFIG;
    the flow runs without a fork server: see without_fork_server)."""
    found = {}
    for process in flow_processes(name):
        try:
            text = process.environ().get("FLUJO_NODE_CONFIG")
        except psutil.Error:
            continue
        if text:
            config = json.loads(text)
            label = config["node"] if config["replicas"] == 1 else f"{config['node']}.{config['replica']}"
            found[label] = (process, config)
    return found


def without_fork_server(flow: FlowRunner) -> FlowRunner:
    """Every Python node of the runner's flows starts its own interpreter, so its configuration
    shows in /proc/PID/environ (node_configs; a fork's shows the fork server's)."""
    flow.env[SWITCH] = "0"
    return flow


def endpoint(config: dict, port: str) -> str:
    return next(entry["endpoint"] for entry in config["inputs"] if entry["port"] == port)


def attacker(context: zmq.Context, address: str) -> zmq.Socket:
    """A PUSH socket connected to ``address``. It stays open until the test has seen every
    message counted: closed earlier, what the node had not read yet would be dropped when its
    linger ran out (a zip reads a port at the pace of its stream, slowly on a loaded machine)."""
    socket = context.socket(zmq.PUSH)
    socket.sndtimeo = 60_000  # a reader that stopped reading fails the test instead of hanging it
    socket.connect(address)
    return socket


def attack(socket: zmq.Socket, cases: dict[str, tuple[list[bytes], str]], copies: int, sent: dict[str, int]) -> None:
    """Send every case ``copies`` times (HEAVY ones a few times); counts messages sent per rule."""
    for name, (frames, rule) in cases.items():
        count = HEAVY_COPIES if name in HEAVY else copies
        for _ in range(count):
            socket.send_multipart(frames)
        sent[rule] = sent.get(rule, 0) + count


def rss_mb(process: psutil.Process) -> float:
    return process.memory_info().rss / 2**20


def test_forged_and_malformed_messages_are_refused_while_the_stream_goes_on(flow: FlowRunner) -> None:
    gate, out, status = flow.path("gate"), flow.path("out.jsonl"), flow.path("status.json")
    launcher = without_fork_server(flow).start(flow.manifest(zip_flow(gate, out)), "--json-status", status)
    nodes = poll_for(lambda: (found := node_configs(flow.name)) and len(found) == 6 and found, timeout=30)
    targets = {  # (replica label, port): (the node it reads, its replicas, copies of each kind)
        ("pair", "a"): ("work", 3, COPIES_ZIP_PORT),  # a zip port fed by a replicated node: it also restores order
        ("pair", "b"): ("src", 1, COPIES_SLOW_PORT),  # the zip's other port
        ("sink", "pair"): ("pair", 1, COPIES),  # a sink (a list of inputs: ports are named after their sources)
    }
    # Every legitimate sender has sent something to every target: forged numbers are then old or far.
    poll_for(lambda: flow.replicas().get("sink", {}).get("items_in", 0) >= 200, timeout=60)
    before = {label: rss_mb(nodes[label][0]) for label in ("pair", "sink")}
    context = zmq.Context()
    sent: dict[tuple[str, str], dict[str, int]] = {target: {} for target in targets}
    seen: dict[str, dict] = {}
    try:
        attackers = [
            threading.Thread(
                target=attack,
                args=(
                    attacker(context, endpoint(nodes[label][1], port)),
                    bad_messages(source, senders),
                    copies,
                    sent[label, port],
                ),
            )
            for (label, port), (source, senders, copies) in targets.items()
        ]
        for thread in attackers:
            thread.start()
        for thread in attackers:
            thread.join()
        expected: dict[str, dict[str, int]] = {"pair": {}, "sink": {}}
        for (label, _), rules in sent.items():
            for rule, count in rules.items():
                expected[label][rule] = expected[label].get(rule, 0) + count

        def counted() -> bool:
            seen.update(flow.replicas())
            return all(seen.get(label, {}).get("rejected_by") == rules for label, rules in expected.items())

        try:
            poll_for(counted, timeout=90, interval=0.2)  # every bad message was read and refused, none pending
        except AssertionError:
            counts = {label: seen.get(label) for label in expected}
            raise AssertionError(f"sent {expected}, counted {counts}") from None
    finally:
        context.destroy(linger=0)  # the attackers' sockets (made here, used by one thread each)
    grown = {label: rss_mb(nodes[label][0]) - before[label] for label in before}
    print(f"refused {expected}; RSS before {before} MB, growth {grown} MB")
    Path(gate).touch()  # now the stream may end
    stdout, stderr = launcher.communicate(timeout=60)

    assert launcher.returncode == 0, stderr
    final = {node["label"]: node for node in json.loads(Path(status).read_text())["nodes"]}
    produced = final["src"]["items_out"]
    assert produced > 1000
    assert read_lines(out) == [i * i + i for i in range(produced)]  # nothing lost, duplicated, reordered, forged
    for label, rules in expected.items():
        assert final[label]["rejected"] == sum(rules.values())
        assert final[label]["rejected_by"] == rules
        assert final[label]["exit_code"] == 0
    assert len(bad_messages("work", 3)) >= 40 and sum(expected["pair"].values()) >= 40 * COPIES_ZIP_PORT
    for label in ("src", "work.0", "work.1", "work.2"):
        assert final[label]["rejected"] == 0 and final[label]["exit_code"] == 0
    # Logged: each rule broken at each port, with the port and the claimed sender, once per sender.
    for (label, port), (source, _, _) in targets.items():
        lines = [line for line in stdout.splitlines() if line.startswith(label) and f'on port "{port}"' in line]
        for rule in {rule for _, rule in bad_messages(source, 1).values()}:
            assert any(f"({rule}):" in line for line in lines), (label, port, rule, lines)
        assert len(lines) <= 64  # once per (sender, rule), not once per message
    assert any(
        "from nobody.7 (sender): sender 'nobody' is not this port's upstream node" in line
        for line in stdout.splitlines()
    )
    assert all(growth < RSS_BOUND_MB for growth in grown.values()), grown


def test_a_frame_over_the_limit_drops_its_connection_not_the_node(flow: FlowRunner) -> None:
    """[flow] max_message: a larger frame never reaches the node (libzmq drops the connection
    as soon as the frame's size is announced), so its memory does not grow by it."""
    gate, out = flow.path("gate"), flow.path("out.jsonl")
    manifest = flow.manifest(
        f"""
        [nodes.src]
        run = "{{nodes}}:Gated"
        args = {{ n = 500, gate = "{gate}" }}

        [nodes.sink]
        run = "{{nodes}}:Collect"
        inputs = ["src"]
        args = {{ path = "{out}" }}
        """,
        flow='max_message = "1MB"',
    )
    launcher = without_fork_server(flow).start(manifest)
    nodes = poll_for(lambda: (found := node_configs(flow.name)) and len(found) == 2 and found, timeout=30)
    sink, config = nodes["sink"]
    assert config["inputs"][0]["max_message"] == 1 << 20
    poll_for(lambda: flow.replicas().get("sink", {}).get("items_in", 0) >= 500, timeout=30)
    before = rss_mb(sink)
    context = zmq.Context()
    try:
        socket = context.socket(zmq.PUSH)
        socket.connect(endpoint(config, "src"))
        big = b"\x00" * (64 << 20)
        header = msgpack.packb([1, 0, 10**6, "src", 0])
        for _ in range(8):
            socket.send_multipart([header, big], copy=False)
        socket.close(linger=10_000)
    finally:
        context.destroy(linger=0)
    assert rss_mb(sink) - before < 32
    Path(gate).touch()
    _stdout, stderr = launcher.communicate(timeout=60)
    assert launcher.returncode == 0, stderr
    assert read_lines(out) == list(range(500))


GARBAGE = [
    [b""],
    [b"\xc1garbage"],
    [msgpack.packb(42)],
    [msgpack.packb(["bogus", "x", 0, None])],
    [msgpack.packb(["ready", "nobody", 9, None])],
    [msgpack.packb(["stats", "sink", 0, {"sent": 5}])],
    [msgpack.packb(["error", "sink", 0, "boom"])],
    [msgpack.packb(["released", "sink", 0, [1, 2]])],
    [msgpack.packb(["snapshot", "sink", 0, [3, {"total": 1}]])],  # state not packed bytes
    [msgpack.packb(["snapshot", "sink", 0, ["3", b"state"]])],
    [msgpack.packb(["snapshot", "sink", 0, [-5, b"state"]])],
    [b"a", b"b", b"c"],
    [msgpack.packb({"command": "stop", "nodes": "src"})],
]


def test_the_launcher_survives_garbage_on_its_status_and_command_sockets(flow: FlowRunner) -> None:
    gate, out = flow.path("gate"), flow.path("out.jsonl")
    manifest = flow.manifest({"src": node("{nodes}:Gated", args={"n": 200, "gate": gate}), "sink": collect("src", out)})
    launcher = without_fork_server(flow).start(manifest)
    nodes = poll_for(lambda: (found := node_configs(flow.name)) and len(found) == 2 and found, timeout=30)
    status_endpoint = nodes["sink"][1]["status"]
    announcement = Path(flow.env["FLUJO_RUNS"]) / flow.name / "launcher.json"
    command_endpoint = json.loads(announcement.read_text())["endpoint"]
    poll_for(lambda: flow.replicas().get("sink", {}).get("items_in", 0) >= 200, timeout=30)
    context = zmq.Context()
    try:
        push = context.socket(zmq.PUSH)
        push.connect(status_endpoint)
        for frames in GARBAGE:
            for _ in range(200):
                push.send_multipart(frames)
        # A snapshot past its bound (PROTOCOL 9.6), a few times: refused, never kept.
        for _ in range(3):
            push.send(msgpack.packb(["snapshot", "sink", 0, [3, b"x" * (SNAPSHOT_MAX_BYTES + 1)]]))
        push.close(linger=5000)
        for frames in GARBAGE:
            request = context.socket(zmq.REQ)
            request.rcvtimeo = 10_000
            request.connect(command_endpoint)
            request.send_multipart(frames)
            reply = msgpack.unpackb(request.recv())
            assert reply["ok"] is False and "malformed command" in reply["error"]
            request.close(linger=0)
        raw = context.socket(zmq.DEALER)  # not even the REQ envelope: the REP socket drops it
        raw.connect(command_endpoint)
        raw.send(b"\xc1")
        raw.close(linger=1000)
        poll_for(lambda: flow.replicas(), timeout=10)  # the launcher did not block on it
    finally:
        context.destroy(linger=0)
    # Still answering (a look may time out while it works through the refusals), still running.
    replicas = poll_for(lambda: (found := flow.replicas()) and {"sink", "src"} <= set(found) and found, timeout=10)
    assert replicas["sink"]["state"] == "running" and replicas["src"]["state"] == "running"
    Path(gate).touch()
    _stdout, stderr = launcher.communicate(timeout=60)
    assert launcher.returncode == 0, stderr
    assert read_lines(out) == list(range(200))
    assert "refused a message on the status socket" in stderr
    assert "refused a message on the command socket" in stderr
    assert len([line for line in stderr.splitlines() if "refused a message" in line]) <= 64


HOSTILE_AGENT_PEER = r"""
import sys, msgpack, numpy, zmq
endpoint, copies = sys.argv[1], int(sys.argv[2])
context = zmq.Context()
garbage = [[b""], [b"\xc1garbage"], [b"two", b"frames"], [msgpack.packb(42)], [msgpack.packb(["hello", 5])],
           [msgpack.packb(["hello", {"token": "no flow"}])], [msgpack.packb(["format-disk", None])],
           [msgpack.packb(["spawn", {"token": "1", "argv": 5}])], [msgpack.packb(["signal", {"token": 1}])],
           [msgpack.packb(["hello", {"flow": 5}])], [msgpack.packb([None, None])]]
peer = context.socket(zmq.DEALER)
peer.sndtimeo = 2000  # a secure agent never completes the handshake: the queue fills, and that is that
peer.connect(endpoint)
try:
    for frames in garbage:
        for _ in range(copies):
            peer.send_multipart(frames)
except zmq.Again:
    pass
peer.close(linger=2_000)
big = context.socket(zmq.DEALER)  # one frame of 500 MB, from a peer nobody authorized
big.sndtimeo = 5000  # a secure agent may have failed the handshake first: then there is no pipe to queue in
big.connect(endpoint)
data = numpy.zeros(500 << 20, numpy.uint8)
try:
    big.send(data, copy=False)
except zmq.Again:
    pass
big.close(linger=10_000)
context.term()
print(len(garbage))
"""
#: How much the agent's memory may grow while a peer sends it garbage and a 500 MB frame.
AGENT_RSS_BOUND_MB = 64


@pytest.mark.skipif(_why_not is not None, reason=_why_not or "")
@pytest.mark.parametrize("insecure", [True, False])
def test_the_agent_survives_garbage_and_a_huge_frame_while_serving_a_flow(
    flow: FlowRunner, hosts: tuple[Host, Host], insecure: bool
) -> None:
    """An --insecure agent reads the garbage and refuses it; a secure one turns the stranger
    away in the CURVE handshake. Either way the 500 MB frame is never held."""
    home = flow.folder / "agent-home"
    home.mkdir(mode=0o700)
    (home / AUTHORIZED_KEYS).write_text(f"{launcher_key(flow).public.decode()} the test's launcher\n")
    agent = Agent(hosts[1], flow.env, home, *(["--insecure"] if insecure else []))
    try:
        out, gate, n = flow.path("out.jsonl"), flow.path("gate"), 400
        body = CHAIN.format(n=n, out=out, sink_extra="").replace('"{nodes}:Paced"', '"{nodes}:Gated"')
        body = body.replace("pause = 0.0005 }", f'pause = 0.0005, gate = "{gate}" }}')
        settings = "queue = 4" + ("\ninsecure = true" if insecure else "")
        key = "" if insecure else agent.key.public.decode()
        launcher = flow.start(flow.manifest(_body(hosts, body, key), flow=settings), on=hosts[0])
        poll_for(lambda: line_count(out) >= 100, timeout=30)
        server = psutil.Process(agent.process.pid)
        before, peak = rss_mb(server), 0.0
        peer = subprocess.Popen(
            hosts[0].command(sys.executable, "-c", HOSTILE_AGENT_PEER, f"tcp://{hosts[1].address}:{AGENT_PORT}", "200"),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            while peer.poll() is None:  # the agent's memory while the peer sends
                peak = max(peak, rss_mb(server))
                time.sleep(0.02)
            kinds = int(peer.communicate(timeout=30)[0])
        finally:
            if peer.poll() is None:
                peer.kill()
        assert peer.returncode == 0
        assert peak - before < AGENT_RSS_BOUND_MB, (before, peak)
        assert agent.process.poll() is None  # the agent lives, and serves the flow on
        Path(gate).touch()
        _stdout, stderr = launcher.communicate(timeout=60)
        assert launcher.returncode == 0, stderr
        assert [item["n"] for item in read_lines(out)] == list(range(n))
        log = agent.output()
        refused = [line for line in log.splitlines() if "refused a message" in line]
        if insecure:
            assert kinds >= 10 and any("(frames)" in line for line in refused), log
            assert any("(agent): message is not msgpack" in line for line in refused), log
        assert len(refused) <= 64
    finally:
        agent.kill()
        agent.process.communicate(timeout=10)
