"""People detector: HOG on the bundled clip, background subtraction end to end on synthetic video."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import synthetic
from synthetic import run

from flujo.nodes.video import VideoReader
from flujo.nodes.vision import LineCounter, PeopleDetector

CLIP = Path(__file__).resolve().parents[1] / "samples" / "data" / "vtest.avi"


@pytest.fixture(scope="module")
def clip_frames() -> list[dict]:
    """Five frames spread over the first 40 seconds of the sample clip."""
    reader = VideoReader(str(CLIP), stop=401)
    reader.open()
    try:
        return [synthetic.wire(item) for item in reader.produce() if item["index"] % 100 == 0]
    finally:
        reader.close()


def check_boxes(detections: list[dict], width: int = 768, height: int = 576) -> None:
    for item in detections:
        boxes, scores = item["boxes"], item["scores"]
        assert boxes.dtype == np.float32 and boxes.shape == (len(scores), 4) and scores.dtype == np.float32
        assert (boxes[:, :2] >= 0).all() and (boxes[:, 2:] > 0).all()
        assert (boxes[:, 0] + boxes[:, 2] <= width).all() and (boxes[:, 1] + boxes[:, 3] <= height).all()
        assert "frame" not in item and (item["width"], item["height"]) == (width, height)


def test_hog_finds_the_walkers_in_the_sample_clip(clip_frames):
    detections = run(PeopleDetector(), clip_frames)
    assert [item["index"] for item in detections] == [0, 100, 200, 300, 400]
    check_boxes(detections)
    per_frame = [len(item["scores"]) for item in detections]
    assert 1 <= np.mean(per_frame) <= 8, per_frame
    assert (np.concatenate([item["scores"] for item in detections]) >= 1.0).all()  # default min_score
    heights = np.concatenate([item["boxes"][:, 3] for item in detections])
    assert 60 <= np.median(heights) <= 160  # person-sized, not the whole frame


def test_hog_with_the_default_model_and_resizing(clip_frames):
    detections = run(PeopleDetector(model="default", resize_width=960, scale=1.2), clip_frames[:2])
    check_boxes(detections)
    assert sum(len(item["scores"]) for item in detections) >= 1


def test_haar_cascade_runs_and_stays_in_the_frame(clip_frames):
    check_boxes(run(PeopleDetector(method="haar", scale=1.2, resize_width=384), clip_frames[:2]))


def test_unknown_method_is_refused():
    with pytest.raises(ValueError, match="teleport"):
        PeopleDetector(method="teleport")


def test_background_detector_tracker_counter_count_the_synthetic_clip_exactly(tmp_path):
    from flujo.nodes.vision import Tracker  # SciPy: imported by the test that needs it, not at collection

    path = synthetic.write_video(str(tmp_path / "walkers.avi"))
    frames = run(VideoReader(path))
    detections = run(PeopleDetector(method="background"), frames)
    check_boxes(detections, synthetic.WIDTH, synthetic.HEIGHT)
    # Once the scene is learnt, every visible, unoccluded figure is found.
    for item in detections[25:60]:
        visible = [box for _, box in synthetic.ground_truth(item["index"]) if synthetic.occluded_fraction(box) == 0]
        assert len(item["boxes"]) == len(visible), item["index"]
    tracks = run(Tracker(), detections)
    counts = run(LineCounter(), tracks)
    assert (counts[-1]["in"], counts[-1]["out"]) == (synthetic.CROSSINGS["in"], synthetic.CROSSINGS["out"])
    assert {entry["id"] for item in tracks for entry in item["tracks"]} == {1, 2, 3, 4}


@pytest.mark.timeout(60)
def test_vision_nodes_load_only_their_own_module():
    # Each node process imports one class: the counter must not pay for the tracker's SciPy.
    import subprocess
    import sys

    code = (
        "import sys\nfrom flujo.nodes.vision import LineCounter\nprint('scipy' in sys.modules)\n"
        "from flujo.nodes.vision import Tracker\nprint('scipy' in sys.modules)\n"
        "try:\n    from flujo.nodes.vision import Nope\nexcept ImportError as error:\n    print(error)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=50)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[:2] == ["False", "True"]
    assert "Nope" in done.stdout.splitlines()[2]
