"""Producers that can resume (docs/PROTOCOL.md, section 9.4): ``resume_from(position)`` on the
file and list sources, and the runtime numbering a successor's items from where it resumed."""

from __future__ import annotations

import numpy as np
import pytest
import synthetic

from flujo.api import Producer
from flujo.config import NodeConfig
from flujo.nodes.basic import Count, Items
from flujo.nodes.video import VideoReader
from flujo.runtime import NodeRuntime
from flujo.testing import drive
from flujo.vocab import NodeKind

pytestmark = pytest.mark.timeout(60)


@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> str:
    return synthetic.write_video(str(tmp_path_factory.mktemp("clip") / "synthetic.avi"))


def _resumed(node: Producer, position: int) -> Producer:
    assert node.resume_from(position) is True  # type: ignore[attr-defined]
    return node


def test_count_and_items_resume_at_a_position() -> None:
    assert drive(_resumed(Count(n=10), 4)) == [4, 5, 6, 7, 8, 9]
    assert drive(_resumed(Count(n=10, start=100), 8)) == [108, 109]
    assert drive(_resumed(Count(n=3), 5)) == []
    assert drive(_resumed(Items(["a", "b", "c", "d"]), 1)) == ["b", "c", "d"]


def test_video_reader_resumes_exactly_at_a_frame(clip: str) -> None:
    items = drive(_resumed(VideoReader(clip, start=5, max_frames=20), 10))
    assert [item["index"] for item in items] == list(range(15, 25))
    assert np.abs(items[0]["frame"].astype(int) - synthetic.render(15)).mean() < 4  # that frame's content


def test_live_and_looping_readers_cannot_resume(clip: str) -> None:
    assert VideoReader(clip, loop=True).resume_from(3) is False
    assert VideoReader("rtsp://camera.invalid/stream").resume_from(3) is False


def _runtime(node: Producer, resume_at: int | None) -> NodeRuntime:
    config = NodeConfig(
        flow="f", node="src", replica=0, replicas=1, kind=NodeKind.PRODUCER, control="", status="",
        seq_start=(1 << 24) + 50, resume_at=resume_at,
    )  # fmt: skip
    return NodeRuntime(config, lambda: node)


def test_runtime_numbers_a_resumed_successor_from_where_it_resumed() -> None:
    node = Count(n=100)
    runtime = _runtime(node, resume_at=42)
    runtime._resume(node)
    assert runtime.next_seq == 42 and next(iter(node.produce())) == 42


def test_runtime_keeps_the_jump_for_a_producer_that_cannot_resume(clip: str, capsys) -> None:
    reader = VideoReader(clip, loop=True)
    runtime = _runtime(reader, resume_at=42)
    runtime._resume(reader)
    assert runtime.next_seq == (1 << 24) + 50
    assert "cannot resume from item 42" in capsys.readouterr().err
    plain = Count(n=5)
    runtime = _runtime(plain, resume_at=None)  # not a crash successor
    runtime._resume(plain)
    assert runtime.next_seq == (1 << 24) + 50 and plain.start == 0
