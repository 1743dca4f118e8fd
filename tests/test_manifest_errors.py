"""Every manifest error names the file, the node and the field; exit 2; nothing starts.

The cases are checked in this process, with the function the launcher calls before it starts
anything (load_manifest); one end-to-end test shows the launcher's exit 2 with nothing started.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from conftest import NODES, FlowRunner

from flujo.config import NodeConfig
from flujo.launch.errors import ManifestError
from flujo.launch.manifest import load_manifest

# Each case: manifest body (after [flow]) and the fragments its error must contain.
CASES = {
    "toml syntax": ("[nodes.a\nrun = 1", ["TOML syntax error", "line 4, column 9"]),
    "duplicate node": (
        '[nodes.a]\nrun = "flujo.nodes.basic:Count"\n[nodes.a]\nrun = "x:y"',
        ["TOML syntax error", "line 6"],
    ),
    "unknown node field": (
        '[nodes.a]\nrun = "flujo.nodes.basic:Count"\nreplica = 2',
        ['node "a"', 'field "replica"', 'did you mean "replicas"'],
    ),
    "unknown flow field": (
        'queu = 3\n[nodes.a]\nrun = "flujo.nodes.basic:Count"',
        ['field "queu"', 'did you mean "queue"'],
    ),
    "unknown section": ('[node.a]\nrun = "flujo.nodes.basic:Count"', ["unknown section [node]", '"nodes"']),
    "missing input node": (
        '[nodes.numbers]\nrun = "flujo.nodes.basic:Count"\n'
        '[nodes.b]\nrun = "flujo.nodes.basic:Print"\ninputs = ["number"]',
        ['node "b"', 'field "inputs"', 'no node named "number"', 'did you mean "numbers"'],
    ),
    "missing port": (
        '[nodes.a]\nrun = "flujo.nodes.basic:Count"\n[nodes.b]\nrun = "flujo.nodes.basic:Print"\ninputs = ["a/left"]',
        ['node "b"', 'field "inputs"', 'no output port "left"'],
    ),
    "cycle": (
        '[nodes.a]\nrun = "flujo.nodes.basic:Count"\n'
        '[nodes.b]\nrun = "{nodes}:square"\ninputs = ["a", "c"]\njoin = "merge"\n'
        '[nodes.c]\nrun = "{nodes}:square"\ninputs = ["b"]\n'
        '[nodes.d]\nrun = "flujo.nodes.basic:Print"\ninputs = ["c"]',
        ["cycle", 'field "inputs"'],
    ),
    "producer with inputs": (
        '[nodes.a]\nrun = "flujo.nodes.basic:Count"\n[nodes.b]\nrun = "flujo.nodes.basic:Count"\ninputs = ["a"]',
        ['node "b"', 'field "inputs"', "is a producer, which takes no inputs"],
    ),
    "consumer that feeds": (
        '[nodes.a]\nrun = "flujo.nodes.basic:Count"\n'
        '[nodes.b]\nrun = "flujo.nodes.basic:Print"\ninputs = ["a"]\n'
        '[nodes.c]\nrun = "flujo.nodes.basic:Print"\ninputs = ["b"]',
        ['node "b"', "is a consumer", '"c" reads it'],
    ),
    "run and command": (
        '[nodes.a]\nrun = "flujo.nodes.basic:Count"\ncommand = ["true"]',
        ['node "a"', 'field "run"', "exactly one of"],
    ),
    "neither run nor command": ("[nodes.a]\nargs = { n = 1 }", ['node "a"', "exactly one of"]),
    "wrong type": (
        '[nodes.a]\nrun = "flujo.nodes.basic:Count"\nargs = 5',
        ['node "a"', 'field "args"', "must be a table"],
    ),
    "bad replicas": (
        '[nodes.a]\nrun = "flujo.nodes.basic:Count"\n'
        '[nodes.b]\nrun = "flujo.nodes.basic:Print"\ninputs = ["a"]\nreplicas = 0',
        ['node "b"', 'field "replicas"', "from 1 to 256"],
    ),
    "replicated producer": (
        '[nodes.a]\nrun = "flujo.nodes.basic:Count"\nreplicas = 2',
        ['node "a"', 'field "replicas"', "producer runs as one process"],
    ),
    "replicated join": (
        '[nodes.a]\nrun = "flujo.nodes.basic:Count"\n[nodes.b]\nrun = "flujo.nodes.basic:Count"\n'
        '[nodes.c]\nrun = "{nodes}:add"\ninputs = { a = "a", b = "b" }\nreplicas = 2',
        ['node "c"', 'field "replicas"', "joins several inputs"],
    ),
    "bad join": (
        '[nodes.a]\nrun = "flujo.nodes.basic:Count"\n'
        '[nodes.b]\nrun = "flujo.nodes.basic:Print"\ninputs = ["a"]\njoin = "zipp"',
        ['node "b"', 'field "join"', 'did you mean "zip"'],
    ),
    "missing module": (
        '[nodes.a]\nrun = "flujo.nodes.nothing:Count"',
        ['node "a"', 'field "run"', "cannot import module"],
    ),
    "missing attribute": (
        '[nodes.a]\nrun = "flujo.nodes.basic:Cuont"',
        ['node "a"', 'field "run"', "has no attribute 'Cuont'"],
    ),
    "missing file": ('[nodes.a]\nrun = "nowhere.py:f"', ['node "a"', 'field "run"', "no such file"]),
    "missing executable": (
        '[nodes.a]\ncommand = ["no-such-program-here"]',
        ['node "a"', 'field "command"', 'no executable "no-such-program-here"'],
    ),
    "skipping producer": (
        '[nodes.a]\nrun = "flujo.nodes.basic:Count"\non_error = "skip"',
        ['node "a"', 'field "on_error"', "a producer cannot skip"],
    ),
    "bad restart": (
        '[nodes.a]\nrun = "flujo.nodes.basic:Count"\nrestart = "sometimes"',
        ['node "a"', 'field "restart"', "must be one of no, on-failure, always"],
    ),
    "bad stop timeout": (
        '[nodes.a]\nrun = "flujo.nodes.basic:Count"\nstop_timeout = -1',
        ['node "a"', 'field "stop_timeout"', "positive number of seconds"],
    ),
    "bad policy": (
        '[nodes.a]\nrun = "flujo.nodes.basic:Count"\n[nodes.b]\nrun = "flujo.nodes.basic:Print"\n'
        'inputs = ["a"]\npolicy = "drop-newst"',
        ['node "b"', 'field "policy"', 'did you mean "drop-newest"'],
    ),
    "bad queue": ('queue = 0\n[nodes.a]\nrun = "flujo.nodes.basic:Count"', ['field "queue"', "from 1 to"]),
    "unknown host": (
        'host = "10.0.0.1"\n[hosts.edge]\naddress = "10.0.0.2"\n'
        '[nodes.a]\nrun = "flujo.nodes.basic:Count"\nhost = "egde"',
        ['node "a"', 'field "host"', 'no host named "egde"', 'did you mean "edge"'],
    ),
    "host without address": (
        '[hosts.edge]\nagent_port = 7700\n[nodes.a]\nrun = "flujo.nodes.basic:Count"',
        ['field "address"', "[hosts.edge] needs the address"],
    ),
    "bad agent port": (
        '[hosts.edge]\naddress = "10.0.0.2"\nagent_port = 70000\n[nodes.a]\nrun = "flujo.nodes.basic:Count"',
        ['field "agent_port"', "TCP port number"],
    ),
    "bad ssh": (
        '[hosts.edge]\naddress = "10.0.0.2"\nssh = 22\n[nodes.a]\nrun = "flujo.nodes.basic:Count"',
        ['field "ssh"', '[hosts.edge]: must be where ssh logs in, for example "user@10.0.0.2"'],
    ),
    "ssh option as destination": (
        '[hosts.edge]\naddress = "10.0.0.2"\nssh = "-oProxyCommand=sh"\n[nodes.a]\nrun = "flujo.nodes.basic:Count"',
        ['field "ssh"', "[hosts.edge]: must be one ssh destination"],
    ),
    "sync without ssh": (
        '[hosts.edge]\naddress = "10.0.0.2"\nsync = true\n[nodes.a]\nrun = "flujo.nodes.basic:Count"',
        ['field "sync"', "[hosts.edge]: sync is for agents started over ssh"],
    ),
    "bad sync": (
        '[hosts.edge]\naddress = "10.0.0.2"\nssh = "edge"\nsync = "yes"\n[nodes.a]\nrun = "flujo.nodes.basic:Count"',
        ['field "sync"', "[hosts.edge]: must be true or false"],
    ),
    "ssh with a key": (
        '[hosts.edge]\naddress = "10.0.0.2"\nssh = "edge"\n'
        'key = "rq:rM>}U?@Lns47E1%kR.o@n%FcmmsL/@{H8]yf7"\n'
        '[nodes.a]\nrun = "flujo.nodes.basic:Count"',
        ['field "key"', "[hosts.edge]: an agent started over ssh makes a new key for each run"],
    ),
    "launcher unreachable": (
        '[hosts.edge]\naddress = "10.0.0.2"\n[nodes.a]\nrun = "flujo.nodes.basic:Count"\nhost = "edge"',
        ['field "host"', 'node "a" runs on host "edge"', "cannot reach the launcher at 127.0.0.1"],
    ),
    "module raising on import": (
        '[nodes.a]\nrun = "boom_on_import:f"',
        ['node "a"', 'field "run"', "failed to load: RuntimeError: no GPU here", "boom_on_import.py, line 1"],
    ),
    "file raising on import": (
        '[nodes.a]\nrun = "boom_on_import.py:f"',
        ['node "a"', 'field "run"', "failed to load: RuntimeError: no GPU here"],
    ),
    "file exiting on import": (
        '[nodes.a]\nrun = "exits_on_import.py:f"',
        ['node "a"', 'field "run"', "called sys.exit(0) while being imported"],
    ),
    "huge flow queue": (
        'queue = 2147483648\n[nodes.a]\nrun = "flujo.nodes.basic:Count"',
        ['field "queue"', "from 1 to 1,000,000", "2147483648"],
    ),
    "huge node queue": (
        '[nodes.a]\nrun = "flujo.nodes.basic:Count"\nqueue = 2147483648',
        ['node "a"', 'field "queue"', "from 1 to 1,000,000"],
    ),
    "too many replicas": (
        '[nodes.a]\nrun = "flujo.nodes.basic:Count"\n'
        '[nodes.b]\nrun = "flujo.nodes.basic:Print"\ninputs = ["a"]\nreplicas = 100000',
        ['node "b"', 'field "replicas"', "from 1 to 256"],
    ),
    "endless stop timeout": (
        '[nodes.a]\nrun = "flujo.nodes.basic:Count"\nstop_timeout = inf',
        ['node "a"', 'field "stop_timeout"', "at most 604800"],
    ),
    "nan restart window": (
        '[nodes.a]\nrun = "flujo.nodes.basic:Count"\nrestart_window = nan',
        ['node "a"', 'field "restart_window"', "positive number of seconds"],
    ),
    "missing cwd": (
        '[nodes.a]\ncommand = ["true"]\ncwd = "no-such-folder"',
        ['node "a"', 'field "cwd"', 'no folder "no-such-folder"'],
    ),
    "unknown constructor argument": (
        '[nodes.a]\nrun = "flujo.nodes.basic:Count"\nargs = { bogus = 1 }',
        ['node "a"', 'field "args"', "unexpected keyword argument 'bogus'", "it takes: n, start"],
    ),
    "misspelt constructor argument": (
        '[nodes.a]\nrun = "flujo.nodes.basic:Count"\nargs = { strat = 1 }',
        ['node "a"', 'field "args"', 'did you mean "start"'],
    ),
    "missing constructor argument": (
        '[nodes.a]\nrun = "flujo.nodes.basic:Count"\n[nodes.b]\nrun = "{nodes}:Collect"\ninputs = ["a"]',
        ['node "b"', 'field "args"', "missing a required argument: 'path'"],
    ),
    "unknown function argument": (
        '[nodes.a]\nrun = "flujo.nodes.basic:Count"\n'
        '[nodes.b]\nrun = "{nodes}:fail_at"\ninputs = ["a"]\nargs = { att = 3 }',
        ['node "b"', 'field "args"', "unexpected keyword argument 'att'", 'did you mean "at"'],
    ),
    "flow name is a path": ('[nodes.a]\nrun = "flujo.nodes.basic:Count"', ['field "name"', "'/abs/path'"]),
    "flow name climbs": ('[nodes.a]\nrun = "flujo.nodes.basic:Count"', ['field "name"', "'../x'"]),
    "node name is a path": ('[nodes."../x"]\nrun = "flujo.nodes.basic:Count"', ['node "../x"', "node names use"]),
    "ipc across hosts": (
        'transport = "ipc"\nhost = "10.0.0.1"\n[hosts.edge]\naddress = "10.0.0.2"\n'
        '[nodes.a]\nrun = "flujo.nodes.basic:Count"\nhost = "edge"',
        ['field "transport"', "nodes on other hosts talk over tcp"],
    ),
}


#: Flow names the [flow] table gets instead of the test's own.
FLOW_NAMES = {"flow name is a path": "/abs/path", "flow name climbs": "../x"}


def _write(folder: Path, case: str, body: str) -> Path:
    """The case's manifest, with the modules it refers to beside it."""
    (folder / "boom_on_import.py").write_text('raise RuntimeError("no GPU here")\n')
    (folder / "exits_on_import.py").write_text("import sys\nsys.exit(0)\n")
    name = FLOW_NAMES.get(case, "cases")
    text = f'[flow]\nname = "{name}"\n\n'  # three lines, as the runner's manifests have
    path = folder / "manifest.toml"
    path.write_text(text + body.replace("{nodes}", str(NODES)))
    return path


def _problems(path: Path) -> str:
    with pytest.raises(ManifestError) as caught:
        load_manifest(path)
    assert caught.value.exit_code == 2
    return "\n".join(str(problem) for problem in caught.value.problems)


@pytest.mark.parametrize("case", CASES)
def test_manifest_error_names_file_node_and_field(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, case: str) -> None:
    body, fragments = CASES[case]
    monkeypatch.syspath_prepend(str(tmp_path))  # where the module form finds boom_on_import
    monkeypatch.delitem(sys.modules, "boom_on_import", raising=False)
    path = _write(tmp_path, case, body)
    text = _problems(path)
    for fragment in [str(path), *fragments]:
        assert fragment in text, f"{fragment!r} not in {text!r}"


def test_every_problem_is_reported_at_once(tmp_path: Path) -> None:
    path = _write(
        tmp_path,
        "",
        '[nodes.a]\nrun = "flujo.nodes.basic:Count"\nreplica = 2\n'
        '[nodes.b]\nrun = "flujo.nodes.basic:Print"\ninputs = "a"\n',
    )
    text = _problems(path)
    assert 'field "replica"' in text and 'node "b": field "inputs"' in text


def test_a_bad_run_hides_no_other_mistake(tmp_path: Path) -> None:
    path = _write(
        tmp_path,
        "",
        '[nodes.numbers]\nrun = "flujo.nodes.basic:Cuont"\nargs = { n = 3 }\n'
        '[nodes.sink]\nrun = "{nodes}:Collect"\ninputs = ["number"]\n'
        'args = { path = "x", bogus = 1 }\n'
        '[nodes.other]\nrun = "flujo.nodes.basic:Print"\ninputs = ["numbers/left"]\n',
    )
    problems = _problems(path).splitlines()
    assert len(problems) == 3, problems
    assert 'node "numbers": field "run"' in problems[0] and "has no attribute 'Cuont'" in problems[0]
    assert 'node "sink": field "inputs": no node named "number" (did you mean "numbers"?)' in problems[1]
    assert 'node "sink": field "args"' in problems[2] and "'bogus'" in problems[2]


def test_a_binary_manifest_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "manifest.toml"
    path.write_bytes(b"\x89PNG\r\n\x1a\n\x00\xff\xfe garbage")
    assert _problems(path) == f"{path}: not a text file: byte 0 is not UTF-8"


def test_unreadable_manifest_is_refused(tmp_path: Path) -> None:
    assert _problems(tmp_path).startswith(f"{tmp_path}: cannot read it:")  # a folder


def test_node_configuration_ignores_unknown_fields() -> None:
    """docs/PROTOCOL.md section 2: a node ignores fields it does not know (a newer launcher's)."""
    config = NodeConfig(flow="f", node="n", replica=0, replicas=1, kind="consumer", control="ipc://c", status="ipc://s")
    data = json.loads(config.to_json())
    data["future_field"] = {"x": 1}
    data["inputs"] = [
        {
            "port": "in",
            "endpoint": "ipc://i",
            "hwm": 4,
            "source": "a",
            "source_port": "out",
            "senders": 1,
            "added_later": True,
        }
    ]
    data["outputs"] = [
        {"port": "out", "target": "b", "target_port": "in", "endpoints": ["ipc://o"], "hwm": 4, "added_later": 1}
    ]
    parsed = NodeConfig.from_json(json.dumps(data))
    assert parsed.node == "n" and parsed.inputs[0].source == "a" and parsed.outputs[0].endpoints == ("ipc://o",)


def test_the_launcher_exits_2_and_starts_nothing(flow: FlowRunner) -> None:
    marker = Path(flow.path("started"))
    manifest = flow.manifest(
        f'[nodes.a]\nrun = "flujo.nodes.basic:Count"\nargs = {{ bogus = 1 }}\n'
        f'[nodes.witness]\ncommand = ["touch", "{marker}"]\n'
    )
    result = flow.run(manifest, timeout=20)
    assert result.returncode == 2, result.stderr
    assert result.stderr.startswith(
        f'error: {manifest}: node "a": field "args": do not fit '
        "\"flujo.nodes.basic:Count\": got an unexpected keyword argument 'bogus' "
        "(it takes: n, start)\n"
    )
    assert "nothing started" in result.stderr
    assert result.stdout == "" and not marker.exists()
