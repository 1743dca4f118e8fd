"""A sender's graceful-restart decisions and batching, without sockets (flujo/pausing.py, flujo/batching.py)."""

from __future__ import annotations

from typing import Any

import msgpack
import pytest

from flujo.batching import BATCH_BYTES, BATCH_ITEMS, BATCH_PREFIX, Batch
from flujo.holds import Holds
from flujo.pausing import HOLD_BACK_BYTES, PauseDecisions
from flujo.protocol import Codec, MessageKind

TARGET = "down"


def decisions(
    aligned: bool,
    replicas: int = 1,
    last_seq: int = 10,
    hold: int | None = 4,
    limit: int | None = None,
    drained: bool = False,
) -> tuple[PauseDecisions, list[tuple[Any, ...]]]:
    """Decisions of a sender at ``last_seq`` towards ``down``, whose replica 0 is held (or not)."""
    reports: list[tuple[Any, ...]] = []
    holds = Holds(lambda node, replica, port, seq: reports.append((node, replica, port, seq)))
    if hold is not None:
        holds.hold((TARGET, 0), hold)
        if limit is not None:
            holds.align((TARGET, 0), hold, limit)
        if drained:
            holds.dismissed((TARGET, 0), hold)
    pauses = PauseDecisions(holds, TARGET, "in", replicas, aligned)
    pauses.last_seq = last_seq
    return pauses, reports


# aligned, hold, limit, seq of the message -> (must wait, pause first?), positions reported
MUST_WAIT = [
    ("not held", False, None, None, 11, (False, None), []),
    ("held: pause, then wait for the successor", False, 4, None, 11, (True, 4), []),
    (
        "zip held, within our position: still for the draining process",
        True,
        4,
        None,
        10,
        (False, None),
        [(TARGET, 0, "in", 10)],
    ),
    (
        "zip held, past our position, no limit yet: wait unpaused",
        True,
        4,
        None,
        11,
        (True, None),
        [(TARGET, 0, "in", 10)],
    ),
    ("zip held, within the agreed limit: send", True, 4, 12, 12, (False, None), []),
    ("zip held, past the agreed limit: pause, then wait", True, 4, 12, 13, (True, 4), []),
]


@pytest.mark.parametrize(
    ("name", "aligned", "hold", "limit", "seq", "expected", "reported"), MUST_WAIT, ids=[row[0] for row in MUST_WAIT]
)
def test_must_wait(
    name: str,
    aligned: bool,
    hold: int | None,
    limit: int | None,
    seq: int,
    expected: tuple[bool, int | None],
    reported: list[tuple[Any, ...]],
) -> None:
    pauses, reports = decisions(aligned, hold=hold, limit=limit)
    assert pauses.must_wait(0, seq) == expected
    assert reports == reported


def test_a_pause_is_due_once_per_hold() -> None:
    pauses, _ = decisions(aligned=False)
    assert pauses.must_wait(0, 11) == (True, 4)
    pauses.paused(0, 4)
    assert pauses.must_wait(0, 12) == (True, None)  # paused already: only wait
    assert pauses.pause_due(0) is None
    pauses.holds.resume((TARGET, 0), 4)
    pauses.holds.hold((TARGET, 0), 5)  # the next restart of that replica: a new pause
    assert pauses.pause_due(0) == 5


# aligned, last_seq, limit -> generation due (None: no pause now)
PAUSE_DUE = [
    ("not held", False, 10, None, None, None),
    ("held", False, 10, 4, None, 4),
    ("zip, no limit yet", True, 10, 4, None, None),
    ("zip, limit not yet sent", True, 10, 4, 12, None),
    ("zip, sent up to the limit", True, 12, 4, 12, 4),
    ("zip, sent past the limit", True, 13, 4, 12, 4),
]


@pytest.mark.parametrize(
    ("name", "aligned", "last_seq", "hold", "limit", "due"), PAUSE_DUE, ids=[row[0] for row in PAUSE_DUE]
)
def test_pause_due(
    name: str, aligned: bool, last_seq: int, hold: int | None, limit: int | None, due: int | None
) -> None:
    pauses, _ = decisions(aligned, last_seq=last_seq, hold=hold, limit=limit)
    assert pauses.pause_due(0) == due


def test_the_position_is_reported_once_per_hold_and_again_for_the_next() -> None:
    pauses, reports = decisions(aligned=True, replicas=2)
    pauses.report_positions()
    pauses.last_seq = 15
    pauses.report_positions()
    assert pauses.position(0, 4) == 10  # what was reported stays the position, until the limit
    assert reports == [(TARGET, 0, "in", 10)]  # replica 1 is not held
    pauses.holds.resume((TARGET, 0), 4)
    pauses.holds.hold((TARGET, 0), 5)
    pauses.report_positions()
    assert reports[-1] == (TARGET, 0, "in", 15)


def test_an_edge_to_a_plain_reader_reports_no_position() -> None:
    pauses, reports = decisions(aligned=False)
    pauses.report_positions()
    assert reports == []


# aligned, limit, drained, bytes already held back -> may hold back
HOLD_BACK = [
    ("not a zip", False, 12, False, 0, False),
    ("zip, no limit yet", True, None, False, 0, False),
    ("zip, limit agreed", True, 12, False, 0, True),
    ("zip, its draining process has everything", True, 12, True, 0, False),
    ("zip, the bound is reached", True, 12, False, HOLD_BACK_BYTES, False),
]


@pytest.mark.parametrize(
    ("name", "aligned", "limit", "drained", "held", "expected"), HOLD_BACK, ids=[row[0] for row in HOLD_BACK]
)
def test_may_hold_back(name: str, aligned: bool, limit: int | None, drained: bool, held: int, expected: bool) -> None:
    pauses, _ = decisions(aligned, limit=limit, drained=drained)
    assert pauses.may_hold_back(held) is expected


def test_a_batch_takes_consecutive_items_until_full() -> None:
    batch = Batch(5, b"x", since=1.0)
    assert batch.accepts(6, b"x") and not batch.accepts(7, b"x") and not batch.accepts(5, b"x")
    for _ in range(BATCH_ITEMS - 2):
        batch.add(b"x")
    assert not batch.full and batch.last_seq == 5 + BATCH_ITEMS - 2
    batch.add(b"x")
    assert batch.full and batch.size == BATCH_ITEMS and batch.since == 1.0


def test_a_batch_is_full_by_size() -> None:
    batch = Batch(0, b"x" * (BATCH_BYTES - 1), since=0.0)
    assert not batch.full
    batch.add(b"y")
    assert batch.full and len(batch.bodies) == 2


def test_a_batch_stays_within_the_readers_frame_limit() -> None:
    batch = Batch(0, b"x" * 3000, since=0.0, max_bytes=4096 - BATCH_PREFIX)
    assert not batch.accepts(1, b"y" * 1094)  # 4094 bytes and the array's header: over 4096
    assert batch.accepts(1, b"y" * 1093)
    batch.add(b"y" * 1093)
    assert batch.full  # exactly at the limit
    assert len(Codec("a", 0).batch(0, batch.bodies)[1]) <= 4096  # the frame the reader gets


def test_a_lone_item_of_a_batch_goes_as_a_data_message() -> None:
    codec = Codec("a", 0)
    header, body = codec.batch(7, [b"\x01"])
    assert msgpack.unpackb(header)[1:3] == [MessageKind.DATA, 7] and body == b"\x01"
    header, body = codec.batch(7, [b"\x01", b"\x02"])
    assert msgpack.unpackb(header)[1:3] == [MessageKind.BATCH, 7] and msgpack.unpackb(body) == [1, 2]
