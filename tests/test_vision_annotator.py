"""Annotator: draws on a copy of the frame, keeps trails per id."""

from __future__ import annotations

import numpy as np
import synthetic

from flujo.nodes.vision import Annotator
from flujo.nodes.vision.annotator import track_color


def inputs(index: int, x: float) -> dict:
    frame = synthetic.wire(synthetic.frame_items(index + 1)[index])
    tracks = synthetic.wire(
        {
            "index": index,
            "timestamp": 0.0,
            "width": 320,
            "height": 240,
            "tracks": [{"id": 5, "box": [x, 100, 20, 40], "centroid": [x + 10, 120], "age": 1, "hits": 1, "missed": 0}],
        }
    )
    counts = synthetic.wire(
        {"index": index, "timestamp": 0.0, "in": 3, "out": 1, "crossings": [], "line": [[0.5, 0.0], [0.5, 1.0]]}
    )
    return {"frame": frame, "tracks": tracks, "counts": counts}


def test_draws_box_line_and_totals_on_a_copy():
    node = Annotator(credit="synthetic scene")
    node.open()
    ports = inputs(0, 40)
    before = ports["frame"]["frame"].copy()
    out = node.process(**ports)
    image = out["frame"]
    assert np.array_equal(ports["frame"]["frame"], before)  # the (read-only) input is untouched
    assert image.shape == before.shape and image.flags.writeable
    assert {k: v for k, v in out.items() if k != "frame"} == {k: v for k, v in ports["frame"].items() if k != "frame"}
    assert tuple(image[120, 40]) == track_color(5)  # left edge of the box
    assert tuple(image[200, 160]) == (0, 255, 255)  # the counting line, from the counts item
    assert (image[:40, :120] != before[:40, :120]).any()  # the totals
    assert (image[-20:, :100] != before[-20:, :100]).any()  # the credit


def test_counts_port_is_optional_and_trails_are_bounded():
    node = Annotator(trail=3)
    node.open()
    for index, x in enumerate(range(20, 120, 10)):
        ports = inputs(index, x)
        out = node.process(frame=ports["frame"], tracks=ports["tracks"])
    assert len(node._trails[5]) == 3
    assert tuple(out["frame"][200, 160]) != (0, 255, 255)  # no counts, no line
    node.process(frame=inputs(20, 0)["frame"], tracks={"tracks": []})
    assert node._trails == {}  # ids unseen for longer than the trail are forgotten


def _arrow_side(line: list) -> str:
    """Which side of a vertical counting line the "in" arrow's head is drawn on."""
    node = Annotator(trail=0)
    node.open()
    ports = inputs(0, 40)
    ports["counts"] = {**ports["counts"], "line": line}
    image = node.process(frame=ports["frame"], counts=ports["counts"])["frame"]
    yellow = np.all(image == (0, 255, 255), axis=2)
    middle_rows = yellow[100:140]  # the arrow crosses the line at mid-height (y = 120)
    left, right = middle_rows[:, :150].sum(), middle_rows[:, 171:].sum()
    return "right" if right > left else "left"


def test_the_arrow_points_the_way_the_counter_calls_in():
    # LineCounter's convention: for a line drawn top to bottom, "in" is left to right.
    assert _arrow_side([[0.5, 0.0], [0.5, 1.0]]) == "right"
    assert _arrow_side([[0.5, 1.0], [0.5, 0.0]]) == "left"
