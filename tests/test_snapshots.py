"""The pure parts of snapshots of stateful user code (flujo/snapshots.py, PROTOCOL 9.6)."""

from __future__ import annotations

import msgpack
import pytest

from flujo.snapshots import (
    MAX_PENDING,
    SNAPSHOT_INTERVAL,
    SNAPSHOT_MAX_BYTES,
    SnapshotError,
    Snapshots,
    decode_restore,
    encode_restore,
    pack_state,
    snapshot_report_ok,
)
from flujo.wire_check import ProtocolError, check_status

pytestmark = pytest.mark.timeout(10)


def test_acknowledges_only_through_a_committed_snapshot() -> None:
    snapshots = Snapshots()
    assert snapshots.wants(4, now=0.0)
    snapshots.take(4, b"s4", now=0.0)
    assert not snapshots.wants(9, now=SNAPSHOT_INTERVAL / 2)  # not yet due while items flow
    assert snapshots.wants(9, now=SNAPSHOT_INTERVAL / 2, waiting=True)  # about to wait: take one
    snapshots.take(9, b"s9", now=SNAPSHOT_INTERVAL)
    assert snapshots.commit(3) is None and snapshots.committed == -1  # results of 4 not yet acknowledged
    assert snapshots.commit(8) == (4, b"s4") and snapshots.committed == 4
    assert snapshots.commit(8) is None
    assert snapshots.commit(20) == (9, b"s9") and snapshots.committed == 9


def test_acknowledges_upstream_only_through_what_the_launcher_keeps() -> None:
    """Reported is not enough (the report and the acknowledgement leave on two sockets): the
    acknowledgement waits for the launcher's ``kept``, and never passes this process's reports."""
    snapshots = Snapshots()
    snapshots.take(4, b"s4", now=0.0)
    snapshots.take(9, b"s9", now=1.0)
    assert snapshots.commit(8) == (4, b"s4")
    assert snapshots.unconfirmed and snapshots.acknowledgeable() is None  # reported, not yet kept
    snapshots.confirm(4)
    assert not snapshots.unconfirmed and snapshots.acknowledgeable() == 4
    assert snapshots.acknowledgeable() is None  # once
    snapshots.confirm(2)  # a late, older answer
    assert snapshots.kept == 4 and snapshots.acknowledgeable() is None
    snapshots.confirm(50)  # an answer beyond what this process reported (a predecessor's late report)
    assert snapshots.acknowledgeable() is None  # 9 is taken, not reported
    assert snapshots.commit(20) == (9, b"s9") and snapshots.acknowledgeable() == 9


def test_a_restored_successor_has_nothing_to_acknowledge_until_it_reports() -> None:
    snapshots = Snapshots(restored_through=41)  # the launcher gave it 41: kept
    assert not snapshots.unconfirmed and snapshots.acknowledgeable() is None
    snapshots.take(45, b"s45", now=0.0)
    assert snapshots.commit(45) == (45, b"s45") and snapshots.unconfirmed
    snapshots.confirm(45)
    assert snapshots.acknowledgeable() == 45


def test_the_newest_committable_snapshot_wins_and_pending_ones_are_bounded() -> None:
    snapshots = Snapshots()
    for item in range(MAX_PENDING):
        assert snapshots.wants(item, now=float(item))
        snapshots.take(item, bytes([item]), now=float(item))
    assert not snapshots.wants(MAX_PENDING, now=1e9)  # full: none taken until one commits
    assert snapshots.commit(5) == (5, bytes([5]))  # 0..4 dropped, never reported
    assert snapshots.wants(MAX_PENDING, now=1e9)


def test_a_restored_successor_takes_none_before_a_new_item() -> None:
    snapshots = Snapshots(restored_through=41)
    assert snapshots.committed == 41
    assert not snapshots.wants(41, now=1e9, waiting=True)
    assert snapshots.wants(42, now=1e9)


def test_the_state_travels_exactly_through_the_configuration() -> None:
    state = {"tracks": [[1.5, 2.0, 3, 4]], "next_id": 7, "raw": b"\x00\xff"}
    packed = pack_state(state, "tracker")
    assert decode_restore(encode_restore(12, packed)) == (12, state)


@pytest.mark.parametrize("value", [None, [1], ["1", "e30="], [1, "not base64!"], [1, 2]])
def test_a_malformed_restore_state_is_refused(value: object) -> None:
    with pytest.raises(ValueError):
        decode_restore(value)


def test_a_state_that_is_not_msgpack_or_too_big_is_refused_naming_the_node() -> None:
    with pytest.raises(SnapshotError, match=r"node tracker: .*not msgpack"):
        pack_state({"when": object()}, "tracker")
    with pytest.raises(SnapshotError, match=rf"node tracker: .*more than {SNAPSHOT_MAX_BYTES}"):
        pack_state(b"x" * SNAPSHOT_MAX_BYTES, "tracker")


def _report(payload: object) -> list[bytes]:
    return [msgpack.packb(["snapshot", "tracker", 0, payload])]


def test_the_launcher_accepts_a_well_formed_snapshot_report() -> None:
    assert check_status(_report([3, b"state"])) == ("snapshot", "tracker", 0, [3, b"state"])


@pytest.mark.parametrize(
    "payload",
    [
        None,
        [3],
        ["3", b"state"],
        [-2, b"state"],
        [3, "state as text"],
        [3, {"total": 1}],
        [3, b"x" * (SNAPSHOT_MAX_BYTES + 1)],
        [3, b"state", "extra"],
    ],
)
def test_a_hostile_snapshot_report_is_refused(payload: object) -> None:
    assert not snapshot_report_ok(payload)
    with pytest.raises(ProtocolError, match="snapshot payload"):
        check_status(_report(payload))
