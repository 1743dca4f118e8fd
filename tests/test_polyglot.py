"""samples/polyglot: Python, C and JavaScript nodes in one flow on the bundled clip, every item checked.

CI builds sdk/c and installs sdk/js's packages (.ci/run): when they are missing these tests fail."""

from __future__ import annotations

import json
import urllib.request
from pathlib import Path

import cv2
import numpy as np
import pytest
from conftest import FlowRunner, build_c_sdk, poll_for
from flow_nodes import read_lines

pytestmark = pytest.mark.timeout(240)

ROOT = Path(__file__).parent.parent
SAMPLE = ROOT / "samples" / "polyglot"
CLIP = ROOT / "samples" / "data" / "vtest.avi"


@pytest.fixture(scope="module")
def c_built() -> None:
    done = build_c_sdk(timeout=180)
    assert done.returncode == 0, f"sdk/c does not build: {done.stderr[-2000:]}"


def sample_manifest(flow: FlowRunner, out: str, frames: int, **counts_args: object) -> Path:
    """The sample's own manifest, run from a temporary folder: paths made absolute, the clip cut short."""
    text = (SAMPLE / "manifest.toml").read_text()
    replacements = {
        'name = "polyglot"': f'name = "{flow.name}"',
        '"../data/vtest.avi" }': f'"{CLIP}", max_frames = {frames} }}',
        '"../../sdk/c/build/gray"': f'"{ROOT / "sdk" / "c" / "build" / "gray"}"',
        '"counts.js"': f'"{SAMPLE / "counts.js"}"',
        'args = { path = "../../out/polyglot.jsonl", port = 8765 }': "args = { "
        + ", ".join(f"{name} = {json.dumps(value)}" for name, value in {"path": out, "port": 0, **counts_args}.items())
        + " }",
    }
    for old, new in replacements.items():
        assert old in text, f"samples/polyglot/manifest.toml changed: update this test ({old})"
        text = text.replace(old, new)
    path = flow.folder / "manifest.toml"
    path.write_text(text)
    return path


def clip_frames(count: int) -> list[np.ndarray]:
    capture = cv2.VideoCapture(str(CLIP))
    frames = []
    while len(frames) < count:
        ok, frame = capture.read()
        assert ok, "the clip ended early"
        frames.append(frame)
    capture.release()
    return frames


def test_the_polyglot_sample_gets_every_frame_right(flow: FlowRunner, c_built: None) -> None:
    frames = 60
    out = flow.path("polyglot.jsonl")
    result = flow.run(sample_manifest(flow, out, frames), timeout=180)
    assert result.returncode == 0, result.stderr
    lines = read_lines(out)
    assert [line["index"] for line in lines] == list(range(frames))  # every frame, once, in order

    from flujo.nodes.video import frame_item
    from flujo.nodes.vision import PeopleDetector

    detector = PeopleDetector()
    detector.open()
    for index, (line, frame) in enumerate(zip(lines, clip_frames(frames), strict=False)):
        gray = cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY)  # what the C node computes, by OpenCV and numpy
        assert line["gray_min"] == int(gray.min()) and line["gray_max"] == int(gray.max()), index
        assert line["gray_mean"] == pytest.approx(float(np.mean(gray)), rel=1e-12), index
        assert line["timestamp"] == pytest.approx(index / 10)
        # The JS node counted the boxes the Python detector finds in the same frame.
        boxes = detector.process(frame_item(frame, index, index / 10, str(CLIP), 10.0))["boxes"]
        assert line["people"] == len(boxes), index
    assert sum(line["people"] for line in lines) > 0


def test_the_js_node_serves_the_counts_while_the_flow_runs(flow: FlowRunner, c_built: None) -> None:
    frames = 40
    out, port_file, timing = flow.path("polyglot.jsonl"), Path(flow.path("port")), Path(flow.path("timing.json"))
    manifest = sample_manifest(flow, out, frames, port_file=str(port_file), timing=str(timing))
    manifest.write_text(
        manifest.read_text().replace(f"max_frames = {frames} }}", f"max_frames = {frames}, realtime = true }}")
    )  # 10 fps: 4 s
    launcher = flow.start(manifest)
    port = int(poll_for(lambda: port_file.exists() and port_file.read_text(), timeout=60))

    def counts() -> dict:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/counts", timeout=5) as response:
            assert response.headers["content-type"] == "application/json"
            return json.load(response)

    seen = poll_for(lambda: (reply := counts())["frames"] >= 5 and reply, timeout=60)
    assert 5 <= seen["frames"] < frames  # served mid-stream
    assert seen["last"]["index"] == seen["frames"] - 1
    assert seen["people"] >= seen["people_max"] >= 0
    _stdout, stderr = launcher.communicate(timeout=120)
    assert launcher.returncode == 0, stderr
    lines = read_lines(out)
    assert [line["index"] for line in lines] == list(range(frames))
    assert json.loads(timing.read_text())["frames"] == frames
    with pytest.raises(OSError):  # the endpoint closed with the node
        counts()
