"""JSON Lines and console sinks."""

from __future__ import annotations

import json

import numpy as np
from synthetic import run

from flujo.nodes.sinks import ConsoleSink, JsonLinesSink


def test_json_lines_one_valid_line_per_item_with_arrays_converted(tmp_path):
    path = tmp_path / "deep" / "er" / "out.jsonl"
    items = [
        {
            "index": i,
            "score": np.float32(0.5 + i),
            "boxes": np.arange(8, dtype=np.float32).reshape(2, 4) + i,
            "empty": np.zeros((0, 4), np.float32),
            "frame": np.zeros((4, 4, 3), np.uint8),
            "tracks": [{"id": np.int64(i), "box": (1, 2, 3, 4)}],
        }
        for i in range(3)
    ]
    run(JsonLinesSink(str(path)), items)
    lines = path.read_text().splitlines()
    assert len(lines) == 3
    first = json.loads(lines[0])
    assert first == {
        "index": 0,
        "score": 0.5,
        "boxes": [[0, 1, 2, 3], [4, 5, 6, 7]],
        "empty": [],
        "tracks": [{"id": 0, "box": [1, 2, 3, 4]}],
    }  # frame left out by default
    assert json.loads(lines[2])["boxes"][1] == [6, 7, 8, 9]


def test_json_lines_flushes_each_line_and_selects_fields(tmp_path):
    path = tmp_path / "out.jsonl"
    sink = JsonLinesSink(str(path), fields=["index", "in"])
    sink.open()
    try:
        sink.consume({"index": 4, "in": 2, "out": 1})
        # Readable before close: a follower of the file sees the line at once.
        assert json.loads(path.read_text()) == {"index": 4, "in": 2}
    finally:
        sink.close()
    run(JsonLinesSink(str(path), append=True), [{"index": 5}])
    assert len(path.read_text().splitlines()) == 2


def test_console_sink_prints_compact_lines(capsys):
    items = [{"index": i, "frame": np.zeros((240, 320, 3), np.uint8), "t": 0.123456} for i in range(5)]
    run(ConsoleSink(every=2, prefix="> "), items)
    lines = capsys.readouterr().out.splitlines()
    assert lines == [f"> {{index: {i}, frame: <uint8 240x320x3>, t: 0.123}}" for i in (0, 2, 4)]
    run(ConsoleSink(fields=["index"]), items[:1])
    assert capsys.readouterr().out == "{index: 0}\n"
