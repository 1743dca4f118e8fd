"""Every manifest error names the file, the node and the field; exit 2; nothing starts."""
from __future__ import annotations

from pathlib import Path

import pytest

from conftest import FlowRunner

# Each case: manifest body (after [flow]) and the fragments its error must contain.
CASES = {
    "toml syntax": ("[nodes.a\nrun = 1", ["TOML syntax error", "line 4, column 9"]),
    "duplicate node": ('[nodes.a]\nrun = "flujo.nodes.basic:Count"\n[nodes.a]\nrun = "x:y"',
                       ["TOML syntax error", "line 6"]),
    "unknown node field": ('[nodes.a]\nrun = "flujo.nodes.basic:Count"\nreplica = 2',
                           ['node "a"', 'field "replica"', 'did you mean "replicas"']),
    "unknown flow field": ('queu = 3\n[nodes.a]\nrun = "flujo.nodes.basic:Count"',
                           ['field "queu"', 'did you mean "queue"']),
    "unknown section": ('[node.a]\nrun = "flujo.nodes.basic:Count"', ["unknown section [node]", '"nodes"']),
    "missing input node": ('[nodes.numbers]\nrun = "flujo.nodes.basic:Count"\n'
                           '[nodes.b]\nrun = "flujo.nodes.basic:Print"\ninputs = ["number"]',
                           ['node "b"', 'field "inputs"', 'no node named "number"', 'did you mean "numbers"']),
    "missing port": ('[nodes.a]\nrun = "flujo.nodes.basic:Count"\n'
                     '[nodes.b]\nrun = "flujo.nodes.basic:Print"\ninputs = ["a/left"]',
                     ['node "b"', 'field "inputs"', 'no output port "left"']),
    "cycle": ('[nodes.a]\nrun = "flujo.nodes.basic:Count"\n'
              '[nodes.b]\nrun = "{nodes}:square"\ninputs = ["a", "c"]\njoin = "merge"\n'
              '[nodes.c]\nrun = "{nodes}:square"\ninputs = ["b"]\n'
              '[nodes.d]\nrun = "flujo.nodes.basic:Print"\ninputs = ["c"]',
              ["cycle", 'field "inputs"']),
    "producer with inputs": ('[nodes.a]\nrun = "flujo.nodes.basic:Count"\n'
                             '[nodes.b]\nrun = "flujo.nodes.basic:Count"\ninputs = ["a"]',
                             ['node "b"', 'field "inputs"', "is a producer, which takes no inputs"]),
    "consumer that feeds": ('[nodes.a]\nrun = "flujo.nodes.basic:Count"\n'
                            '[nodes.b]\nrun = "flujo.nodes.basic:Print"\ninputs = ["a"]\n'
                            '[nodes.c]\nrun = "flujo.nodes.basic:Print"\ninputs = ["b"]',
                            ['node "b"', "is a consumer", '"c" reads it']),
    "run and command": ('[nodes.a]\nrun = "flujo.nodes.basic:Count"\ncommand = ["true"]',
                        ['node "a"', 'field "run"', "exactly one of"]),
    "neither run nor command": ('[nodes.a]\nargs = { n = 1 }', ['node "a"', "exactly one of"]),
    "wrong type": ('[nodes.a]\nrun = "flujo.nodes.basic:Count"\nargs = 5',
                   ['node "a"', 'field "args"', "must be a table"]),
    "bad replicas": ('[nodes.a]\nrun = "flujo.nodes.basic:Count"\n'
                     '[nodes.b]\nrun = "flujo.nodes.basic:Print"\ninputs = ["a"]\nreplicas = 0',
                     ['node "b"', 'field "replicas"', "at least 1"]),
    "replicated producer": ('[nodes.a]\nrun = "flujo.nodes.basic:Count"\nreplicas = 2',
                            ['node "a"', 'field "replicas"', "producer runs as one process"]),
    "replicated join": ('[nodes.a]\nrun = "flujo.nodes.basic:Count"\n[nodes.b]\nrun = "flujo.nodes.basic:Count"\n'
                        '[nodes.c]\nrun = "{nodes}:add"\ninputs = { a = "a", b = "b" }\nreplicas = 2',
                        ['node "c"', 'field "replicas"', "joins several inputs"]),
    "bad join": ('[nodes.a]\nrun = "flujo.nodes.basic:Count"\n'
                 '[nodes.b]\nrun = "flujo.nodes.basic:Print"\ninputs = ["a"]\njoin = "zipp"',
                 ['node "b"', 'field "join"', 'did you mean "zip"']),
    "missing module": ('[nodes.a]\nrun = "flujo.nodes.nothing:Count"', ['node "a"', 'field "run"',
                                                                       "cannot import module"]),
    "missing attribute": ('[nodes.a]\nrun = "flujo.nodes.basic:Cuont"', ['node "a"', 'field "run"',
                                                                         "has no attribute 'Cuont'"]),
    "missing file": ('[nodes.a]\nrun = "nowhere.py:f"', ['node "a"', 'field "run"', "no such file"]),
    "missing executable": ('[nodes.a]\ncommand = ["no-such-program-here"]',
                           ['node "a"', 'field "command"', 'no executable "no-such-program-here"']),
    "skipping producer": ('[nodes.a]\nrun = "flujo.nodes.basic:Count"\non_error = "skip"',
                          ['node "a"', 'field "on_error"', "a producer cannot skip"]),
    "bad restart": ('[nodes.a]\nrun = "flujo.nodes.basic:Count"\nrestart = "sometimes"',
                    ['node "a"', 'field "restart"', "must be one of no, on-failure, always"]),
    "bad stop timeout": ('[nodes.a]\nrun = "flujo.nodes.basic:Count"\nstop_timeout = -1',
                         ['node "a"', 'field "stop_timeout"', "positive number of seconds"]),
    "bad policy": ('[nodes.a]\nrun = "flujo.nodes.basic:Count"\n[nodes.b]\nrun = "flujo.nodes.basic:Print"\n'
                   'inputs = ["a"]\npolicy = "drop-newst"',
                   ['node "b"', 'field "policy"', 'did you mean "drop-newest"']),
    "bad queue": ('queue = 0\n[nodes.a]\nrun = "flujo.nodes.basic:Count"', ['field "queue"', "at least 1"]),
    "unknown host": ('host = "10.0.0.1"\n[hosts.edge]\naddress = "10.0.0.2"\n'
                     '[nodes.a]\nrun = "flujo.nodes.basic:Count"\nhost = "egde"',
                     ['node "a"', 'field "host"', 'no host named "egde"', 'did you mean "edge"']),
    "host without address": ('[hosts.edge]\nagent_port = 7700\n[nodes.a]\nrun = "flujo.nodes.basic:Count"',
                             ['field "address"', "[hosts.edge] needs the address"]),
    "bad agent port": ('[hosts.edge]\naddress = "10.0.0.2"\nagent_port = 70000\n'
                       '[nodes.a]\nrun = "flujo.nodes.basic:Count"', ['field "agent_port"', "TCP port number"]),
    "bad ssh": ('[hosts.edge]\naddress = "10.0.0.2"\nssh = 22\n[nodes.a]\nrun = "flujo.nodes.basic:Count"',
                ['field "ssh"', '[hosts.edge]: must be where ssh logs in, for example "user@10.0.0.2"']),
    "ssh option as destination": ('[hosts.edge]\naddress = "10.0.0.2"\nssh = "-oProxyCommand=sh"\n'
                                  '[nodes.a]\nrun = "flujo.nodes.basic:Count"',
                                  ['field "ssh"', "[hosts.edge]: must be one ssh destination"]),
    "sync without ssh": ('[hosts.edge]\naddress = "10.0.0.2"\nsync = true\n[nodes.a]\nrun = "flujo.nodes.basic:Count"',
                         ['field "sync"', "[hosts.edge]: sync is for agents started over ssh"]),
    "bad sync": ('[hosts.edge]\naddress = "10.0.0.2"\nssh = "edge"\nsync = "yes"\n'
                 '[nodes.a]\nrun = "flujo.nodes.basic:Count"', ['field "sync"', "[hosts.edge]: must be true or false"]),
    "ssh with a key": ('[hosts.edge]\naddress = "10.0.0.2"\nssh = "edge"\nkey = "rq:rM>}U?@Lns47E1%kR.o@n%FcmmsL/@{H8]yf7"\n'
                       '[nodes.a]\nrun = "flujo.nodes.basic:Count"',
                       ['field "key"', "[hosts.edge]: an agent started over ssh makes a new key for each run"]),
    "launcher unreachable": ('[hosts.edge]\naddress = "10.0.0.2"\n[nodes.a]\nrun = "flujo.nodes.basic:Count"\n'
                             'host = "edge"', ['field "host"', 'node "a" runs on host "edge"',
                                               "cannot reach the launcher at 127.0.0.1"]),
    "ipc across hosts": ('transport = "ipc"\nhost = "10.0.0.1"\n[hosts.edge]\naddress = "10.0.0.2"\n'
                         '[nodes.a]\nrun = "flujo.nodes.basic:Count"\nhost = "edge"',
                         ['field "transport"', "nodes on other hosts talk over tcp"]),
}


@pytest.mark.parametrize("case", CASES)
def test_manifest_error_names_file_node_and_field(flow: FlowRunner, case: str) -> None:
    body, fragments = CASES[case]
    marker = Path(flow.path("started"))
    # A valid node that would leave a mark if anything were started.
    witness = f'\n[nodes.witness]\ncommand = ["touch", "{marker}"]\n' if case not in ("toml syntax",) else ""
    manifest = flow.manifest(body + witness)
    result = flow.run(manifest, timeout=20)
    assert result.returncode == 2, result.stderr
    for fragment in [str(manifest), *fragments]:
        assert fragment in result.stderr, f"{fragment!r} not in {result.stderr!r}"
    assert not marker.exists(), "a process was started for a manifest that does not validate"
    assert result.stdout == ""


def test_every_problem_is_reported_at_once(flow: FlowRunner) -> None:
    manifest = flow.manifest('[nodes.a]\nrun = "flujo.nodes.basic:Count"\nreplica = 2\n'
                             '[nodes.b]\nrun = "flujo.nodes.basic:Print"\ninputs = "a"\n')
    result = flow.run(manifest, timeout=20)
    assert result.returncode == 2
    assert 'field "replica"' in result.stderr and 'node "b": field "inputs"' in result.stderr
