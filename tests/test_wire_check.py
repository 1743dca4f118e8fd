"""The receiver's rules (flujo/wire_check.py) on bytes, without sockets: a table of bad messages,
each refused for the right reason, and the legitimate messages around them still accepted."""

from __future__ import annotations

import msgpack
import numpy as np
import pytest
from wire_cases import bad_messages

from flujo.protocol import Codec, MessageKind
from flujo.wire_check import (
    RESTART_SEQ_JUMP,
    DataCheck,
    ProtocolError,
    RefusalLog,
    StaleMessage,
    check_agent_reply,
    check_agent_request,
    check_command,
    check_control,
    check_status,
)

SOURCE, SENDERS = "up", 2  # the port under test reads node "up", which has 2 replicas
LAST = 10  # each sender replica has sent up to this sequence number before the bad message
BAD = bad_messages(SOURCE, SENDERS)


def header(version=1, kind=0, seq=LAST + 1, sender=SOURCE, replica=0) -> bytes:
    return msgpack.packb([version, kind, seq, sender, replica])


def primed() -> DataCheck:
    """A port's check after DATA 0..LAST from both sender replicas."""
    check = DataCheck(SOURCE, SENDERS)
    codec = Codec(SOURCE, 0)
    for replica in range(SENDERS):
        codec = Codec(SOURCE, replica)
        for seq in range(LAST + 1):
            codec.decode(codec.encode(seq, {"i": seq}), check)
    return check


@pytest.mark.parametrize("name", BAD)
def test_bad_message_is_refused_for_its_reason(name: str) -> None:
    frames, rule = BAD[name]
    check = primed()
    with pytest.raises(ProtocolError) as refused:
        Codec("reader", 0).decode(frames, check)
    assert refused.value.code == rule, refused.value.reason
    assert refused.value.reason  # never an empty message
    # The port goes on: the next legitimate messages from both senders are taken, in order.
    for replica in range(SENDERS):
        message = Codec(SOURCE, replica).decode(Codec(SOURCE, replica).encode(LAST + 1, "next"), check)
        assert (message.seq, message.item, message.replica) == (LAST + 1, "next", replica)


def test_the_table_covers_at_least_forty_kinds() -> None:
    assert len(BAD) >= 40
    assert {rule for _, rule in BAD.values()} == {
        "header",
        "version",
        "kind",
        "seq",
        "generation",
        "jump",
        "order",
        "sender",
        "frames",
        "body",
        "ext",
        "array",
        "batch",
    }


def test_legitimate_messages_pass_with_their_arrays() -> None:
    check = DataCheck(SOURCE, 1)
    codec = Codec(SOURCE, 0)
    image = np.arange(24, dtype=np.uint16).reshape(2, 3, 4)
    items = [
        {"a": image, "b": np.array([True, False]), "c": np.zeros((0, 3), np.float32), "n": [1, "x", None]},
        np.float64(2.5),
        None,
        b"bytes",
        {1: "int key"},
    ]
    for seq, item in enumerate(items):
        frames = [frame.tobytes() if isinstance(frame, np.ndarray) else frame for frame in codec.encode(seq, item)]
        decoded = codec.decode(frames, check).item
        if seq == 0:
            assert decoded["a"].tolist() == image.tolist() and decoded["a"].dtype == np.uint16
            assert decoded["c"].shape == (0, 3) and decoded["n"] == [1, "x", None]
    batch = codec.decode(codec.batch(5, [msgpack.packb(i) for i in range(3)]), check)
    assert (batch.kind, batch.seq, batch.item) == (MessageKind.BATCH, 5, [0, 1, 2])
    assert codec.decode(codec.marker(MessageKind.SKIP, 8), check).kind is MessageKind.SKIP
    big_endian = np.array([1, 2], dtype=">i4")
    frames = codec.encode(9, big_endian)
    assert codec.decode([frames[0], frames[1], big_endian.tobytes()], check).item.tolist() == [1, 2]


def test_a_refused_message_moves_nothing() -> None:
    """A bad body at a far sequence number must not make later legitimate numbers look old."""
    check = primed()
    with pytest.raises(ProtocolError):
        Codec("x", 0).decode([header(seq=LAST + 1000), b"\xc1"], check)
    assert Codec(SOURCE, 0).decode([header(seq=LAST + 1), msgpack.packb(1)], check).seq == LAST + 1


def test_restart_jump_and_graceful_restart_are_accepted() -> None:
    check = primed()
    codec = Codec(SOURCE, 0)
    jumped = LAST + 1 + RESTART_SEQ_JUMP  # a producer restarted after a crash
    assert codec.decode(codec.encode(jumped, 1), check).seq == jumped
    codec.decode(codec.marker(MessageKind.PAUSE, 0), check)  # its successor may start lower
    assert codec.decode(codec.encode(LAST + 5, 1), check).seq == LAST + 5


def test_a_dead_process_s_leftovers_are_stale_once_its_successor_is_heard() -> None:
    # Replica 0 crashed after DATA LAST; its successor (generation 1) replays from 5. What the
    # dead process's connection still held (LAST + 1) arrives afterwards: stale, not refused
    # (it would otherwise move the floor past the replay and have it refused as out of order).
    check = primed()
    successor, predecessor = Codec(SOURCE, 0, generation=1), Codec(SOURCE, 0)
    assert successor.decode(successor.encode(5, "again"), check).seq == 5  # lower: a successor's replay
    with pytest.raises(StaleMessage) as stale:
        predecessor.decode(predecessor.encode(LAST + 1, "leftover"), check)
    assert stale.value.code == "stale" and "process 0, after process 1" in stale.value.reason
    assert successor.decode(successor.encode(6, "on"), check).seq == 6  # nothing moved
    # The other replica is not concerned; a later successor supersedes this one in turn.
    other = Codec(SOURCE, 1)
    assert other.decode(other.encode(LAST + 1, "x"), check).seq == LAST + 1
    assert Codec(SOURCE, 0, generation=2).decode(Codec(SOURCE, 0, generation=2).encode(3, "y"), check).seq == 3
    with pytest.raises(StaleMessage):
        successor.decode(successor.encode(7, "late"), check)


def test_nothing_after_end_of_stream() -> None:
    check = primed()
    codec = Codec(SOURCE, 1)
    codec.decode(codec.marker(MessageKind.EOS, 0), check)
    with pytest.raises(ProtocolError) as refused:
        codec.decode(codec.encode(LAST + 1, "late"), check)
    assert refused.value.code == "ended"
    assert Codec(SOURCE, 0).decode(Codec(SOURCE, 0).encode(LAST + 1, 1), check).seq == LAST + 1  # the other goes on


def test_first_message_of_a_sender_may_be_anywhere() -> None:
    """A restarted reader joins a stream midway: nothing to compare the first number with."""
    codec = Codec(SOURCE, 0)
    assert codec.decode(codec.encode(5_000_000_000, 1), DataCheck(SOURCE, 1)).seq == 5_000_000_000


def test_refusal_log_is_once_per_sender_and_rule_and_bounded() -> None:
    lines: list[str] = []
    log = RefusalLog("node", lines.append, max_keys=3)
    for _ in range(1000):
        log.refused(ProtocolError("body", "bad", "up.0"))
    log.refused(ProtocolError("array", "bad", "up.0"))
    assert len(lines) == 2 and "up.0" in lines[0] and "(body): bad" in lines[0]
    for index in range(100):  # random sender names cannot flood the log
        log.refused(ProtocolError("sender", "who", f"x{index}.0"))
    assert len(lines) == 4 and "no longer logged" in lines[-1]
    assert log.counts == {"body": 1000, "array": 1, "sender": 100}


CONTROL_BAD = [
    [b"stop"],
    [b"stop", b"\xc1"],
    [b"stop", msgpack.packb("sink")],
    [b"stop", msgpack.packb([1])],
    [b"released", msgpack.packb(["n", "0", "in"])],
    [b"gone", msgpack.packb(["n"])],
    [b"gone", msgpack.packb(["n", 0, "m", "0"])],
    [b"hold", msgpack.packb(None)],
    [b"align", msgpack.packb(["n", 0, 0])],
    [b"kept", msgpack.packb(["n", 0, 0])],
    [b"kept", msgpack.packb(["n", 0, 0, "41"])],
    [b"start", msgpack.packb([]), b"extra"],
]


@pytest.mark.parametrize("frames", CONTROL_BAD)
def test_malformed_control_is_refused(frames: list[bytes]) -> None:
    with pytest.raises(ProtocolError):
        check_control(frames)


def test_unknown_control_topic_is_ignored_and_good_ones_pass() -> None:
    assert check_control([b"future", b"\xc1"]) is None
    assert check_control([b"gone", msgpack.packb(["n", 0, "m", 1])]) == (b"gone", ["n", 0, "m", 1])
    assert check_control([b"stop", msgpack.packb(["a", "b"])]) == (b"stop", ["a", "b"])
    assert check_control([b"kept", msgpack.packb(["n", 0, 2, 41])]) == (b"kept", ["n", 0, 2, 41])


STATUS_BAD = [
    [b""],
    [b"\xc1"],
    [msgpack.packb(42)],
    [msgpack.packb(["ready", "n"])],
    [msgpack.packb(["bogus", "n", 0, None])],
    [msgpack.packb([5, "n", 0, None])],
    [msgpack.packb(["ready", 5, 0, None])],
    [msgpack.packb(["ready", "n", "0", None])],
    [msgpack.packb(["stats", "n", 0, {"sent": 5}])],
    [msgpack.packb(["stats", "n", 0, {"items_in": "x"}])],
    [msgpack.packb(["error", "n", 0, "boom"])],
    [msgpack.packb(["drained", "n", 0, {"stats": {}}])],
    [msgpack.packb(["position", "n", 0, ["a", 0, "p"]])],
    [msgpack.packb(["released", "n", 0, [1]])],
    [msgpack.packb(["ready", "n", 0, None]), b"extra"],
]


@pytest.mark.parametrize("frames", STATUS_BAD)
def test_malformed_status_is_refused(frames: list[bytes]) -> None:
    with pytest.raises(ProtocolError):
        check_status(frames)


COMMAND_BAD = [
    [b"\xc1"],
    [msgpack.packb("status")],
    [msgpack.packb({"command": 5})],
    [msgpack.packb({"command": "stop", "nodes": "src"})],
    [msgpack.packb({"command": "restart", "node": 3})],
    [msgpack.packb({"command": "status"}), b"x"],
]


@pytest.mark.parametrize("frames", COMMAND_BAD)
def test_malformed_command_is_refused(frames: list[bytes]) -> None:
    with pytest.raises(ProtocolError):
        check_command(frames)


AGENT_BAD = [
    [b"id"],
    [b"id", b"\xc1"],
    [b"id", b"a", b"b"],
    [b"id", msgpack.packb(42)],
    [b"id", msgpack.packb(["hello", 5])],
    [b"id", msgpack.packb(["hello", {"token": "t"}])],
    [b"id", msgpack.packb(["spawn", {"token": 1, "label": "x", "argv": "sh", "env": {}, "cwd": "/"}])],
    [b"id", msgpack.packb(["spawn", {"token": 1, "label": "x", "argv": None, "env": {"A": 1}, "cwd": "/"}])],
    [b"id", msgpack.packb(["signal", {"token": 1, "signum": 0}])],
    [b"id", msgpack.packb(["ports", {"address": "x", "count": 10**9}])],
    [b"id", msgpack.packb(["format-disk", None])],
]


@pytest.mark.parametrize("frames", AGENT_BAD)
def test_malformed_agent_request_is_refused(frames: list[bytes]) -> None:
    with pytest.raises(ProtocolError):
        check_agent_request(frames)


def test_agent_messages_that_follow_the_protocol_pass() -> None:
    assert check_agent_request([b"id", msgpack.packb(["hello", {"flow": "f", "token": ""}])])[1] == "hello"
    assert check_agent_request([b"id", msgpack.packb(["heartbeat", None])])[1] == "heartbeat"
    assert check_agent_reply(msgpack.packb(["exit", {"token": 1, "code": 0}]), "a") == ("exit", {"token": 1, "code": 0})
    with pytest.raises(ProtocolError):
        check_agent_reply(msgpack.packb(["line", {"label": "x"}]), "a")


def test_size_limits_come_from_the_manifest(tmp_path) -> None:
    from flujo.launch.errors import ManifestError
    from flujo.launch.manifest import validate
    from flujo.launch.plan import plan

    nodes = {
        "src": {"run": "flujo.nodes.basic:Count", "args": {"n": 1}},
        "sink": {"run": "flujo.nodes.basic:Print", "inputs": ["src"], "max_message": "512KB"},
        "log": {"run": "flujo.nodes.basic:Print", "inputs": ["src"]},
    }
    flow = validate(
        {"flow": {"name": "f", "max_message": "32MB", "max_control_message": 1 << 20}, "nodes": nodes},
        tmp_path / "m.toml",
        "m.toml",
    )
    _, configs = plan(flow, tmp_path)
    assert configs[("sink", 0)].inputs[0].max_message == 512 << 10
    assert configs[("log", 0)].inputs[0].max_message == 32 << 20
    assert configs[("log", 0)].max_control_message == 1 << 20
    assert sorted(edge.max_message for edge in configs[("src", 0)].outputs) == [512 << 10, 32 << 20]
    with pytest.raises(ManifestError) as bad:
        validate(
            {
                "flow": {"name": "f", "max_message": "lots"},
                "nodes": {**nodes, "sink": {**nodes["sink"], "max_message": 10}},
            },
            tmp_path / "m.toml",
            "m.toml",
        )
    fields = {(problem.node, problem.field) for problem in bad.value.problems}
    assert fields == {(None, "max_message"), ("sink", "max_message")}


def test_a_sender_fails_loudly_on_a_frame_its_readers_would_drop() -> None:
    codec = Codec("src", 0, max_message=1024)
    codec.encode(0, np.zeros(1024, np.uint8))  # at the limit: fine
    with pytest.raises(ValueError, match="over the readers' max_message of 1024 bytes"):
        codec.encode(1, np.zeros(1025, np.uint8))
    with pytest.raises(ValueError, match="max_message"):
        codec.encode(2, "x" * 2000)


def test_refusal_log_holds_lines_over_its_rate_for_the_next_second(monkeypatch) -> None:
    import flujo.wire_check as wire_check

    clock = [100.0]
    monkeypatch.setattr(wire_check.time, "monotonic", lambda: clock[0])
    lines: list[str] = []
    log = RefusalLog("node", lines.append, per_second=2)
    for index in range(5):
        log.refused(ProtocolError("body", "bad", f"s{index}.0"))
    assert len(lines) == 2
    clock[0] += 1
    log.refused(ProtocolError("body", "bad", "s0.0"))  # a repeat: nothing new, but the waiting lines go on
    assert len(lines) == 4
    clock[0] += 1
    log.refused(ProtocolError("body", "bad", "s0.0"))
    assert [line.split(" from ")[1].split()[0] for line in lines] == ["s0.0", "s1.0", "s2.0", "s3.0", "s4.0"]


def test_stats_of_a_later_version_pass_with_their_new_keys() -> None:
    report = msgpack.packb(["stats", "n", 0, {"items_in": 3, "sent": {"b/in": 3}, "histogram": [1, 2]}])
    assert check_status([report])[3]["histogram"] == [1, 2]
