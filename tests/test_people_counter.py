"""The main job on the real clip and on another video: it finishes, keeps every frame, counts stably."""

from __future__ import annotations

import itertools
import json
import re
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import cv2
import pytest
import synthetic
from conftest import FlowRunner, Result, poll_for
from flow_nodes import line_count

ROOT = Path(__file__).resolve().parent.parent
SAMPLE = ROOT / "samples" / "people_counter"
CLIP = ROOT / "samples" / "data" / "vtest.avi"


def _video_facts(path: Path) -> tuple[int, int, int, float]:
    capture = cv2.VideoCapture(str(path))
    try:
        frames = 0
        while capture.grab():  # demuxes and decodes each frame, without converting it: half the CPU of read()
            frames += 1
        return (
            frames,
            int(capture.get(cv2.CAP_PROP_FRAME_WIDTH)),
            int(capture.get(cv2.CAP_PROP_FRAME_HEIGHT)),
            capture.get(cv2.CAP_PROP_FPS),
        )
    finally:
        capture.release()


def _counts(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def _run_script(flow: FlowRunner, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(SAMPLE / "people_counter.py"), "--name", flow.name, *args],
        capture_output=True,
        text=True,
        timeout=150,
        env=flow.env,
        cwd=flow.folder,
    )


@dataclass
class WholeClip:
    """The manifest sample's run over the whole clip: its folder and what the launcher said."""

    folder: Path
    result: Result


@pytest.fixture(scope="module")
def whole_clip(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WholeClip]:
    """One run of the sample's manifest over the whole clip, for the module: its counts are also
    the reference the script's runs must match (the tracker and the counter are causal, so the
    first N frames count the same in a run of N frames). Both tests that use it share one worker
    (xdist_group), so the clip is detected once per suite run."""
    flow = FlowRunner(tmp_path_factory.mktemp("whole-clip"))
    try:
        text = (SAMPLE / "manifest.toml").read_text()
        text = text.replace('name = "people-counter"', f'name = "{flow.name}"')
        text = text.replace('"../data/vtest.avi"', f'"{CLIP}"').replace('"../../out/', f'"{flow.folder}/out/')
        manifest = flow.folder / "manifest.toml"
        manifest.write_text(text)
        yield WholeClip(flow.folder, flow.run(manifest, timeout=170))
    finally:
        orphans = flow.cleanup()
    assert not orphans, f"processes left behind: {orphans}"


@pytest.mark.timeout(180)
@pytest.mark.xdist_group("people-counter")
def test_manifest_sample_runs_the_whole_clip(whole_clip: WholeClip) -> None:
    folder, result = whole_clip.folder, whole_clip.result
    assert result.returncode == 0, result.stderr
    assert "console" in result.stdout and "in: " in result.stdout  # counts printed live
    frames, width, height, _ = _video_facts(folder / "out" / "people_counter.mp4")
    assert (frames, width, height) == (795, 768, 576)
    counts = _counts(folder / "out" / "counts.jsonl")
    assert [item["index"] for item in counts] == list(range(795))
    last = counts[-1]
    # About a dozen people cross each way in the clip; the counts must be of that order.
    assert 5 <= last["in"] <= 30 and 5 <= last["out"] <= 30, last
    assert all(a["in"] <= b["in"] and a["out"] <= b["out"] for a, b in itertools.pairwise(counts))
    # The closing summary prints the final counts, as the counter reported them.
    assert re.search(rf"counter: exit 0, .*; in {last['in']}, out {last['out']}\n", result.stderr), result.stderr


@pytest.mark.timeout(300)
@pytest.mark.xdist_group("people-counter")
def test_counts_are_the_same_from_run_to_run_even_across_restarts(flow: FlowRunner, whole_clip: WholeClip) -> None:
    """The Python script on the clip's first 120 frames counts what the manifest sample counted
    on them in its run of the whole clip (the fixture), even when the script's run is played at
    the clip's 10 fps so that three graceful restarts requested 3 s in land with 9 s of the clip
    still to come. (By frame 120 three people have crossed the line: two in, one out.)"""
    frames = 120
    assert whole_clip.result.returncode == 0, whole_clip.result.stderr
    first = _counts(whole_clip.folder / "out" / "counts.jsonl")[:frames]
    assert len(first) == frames and first[-1]["in"] >= 1 and first[-1]["out"] >= 1  # crossings each way
    # Restarting both detector replicas and the annotator (a zip of three inputs) gracefully,
    # one by one, mid-run.
    out = flow.folder / "second"
    second_run = subprocess.Popen(
        [
            sys.executable,
            str(SAMPLE / "people_counter.py"),
            "--name",
            flow.name,
            "--source",
            str(CLIP),
            "--out",
            str(out),
            "--max-frames",
            str(frames),
            "--realtime",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=flow.env,
        cwd=flow.folder,
    )
    flow.running.append(second_run)
    poll_for(lambda: line_count(str(out / "counts.jsonl")) >= 30, timeout=60)
    reply = flow.command("restart", "detector", "--flow", flow.name)
    assert reply.returncode == 0 and reply.stdout.strip() == "restarting detector.0, detector.1", reply
    assert flow.command("restart", "annotator", "--flow", flow.name).returncode == 0
    stdout, stderr = second_run.communicate(timeout=90)
    assert second_run.returncode == 0, stderr
    assert stdout.splitlines()[-1] == f"counted {first[-1]['in']} in, {first[-1]['out']} out"
    for label in ("detector.0", "detector.1", "annotator"):
        assert f'restarting node "{label}": draining it first' in stderr
    assert "before it had drained" not in stderr
    assert _counts(out / "counts.jsonl") == first  # every frame, in order, counted the same
    assert _video_facts(out / "people_counter.mp4")[0] == frames  # and every frame drawn


@pytest.mark.timeout(120)
def test_python_sample_runs_unchanged_on_another_video(flow: FlowRunner) -> None:
    """Another size (320x240), codec (mp4v) and frame rate (25 fps) than the bundled clip."""
    clip = flow.folder / "other.mp4"
    writer = cv2.VideoWriter(str(clip), cv2.VideoWriter_fourcc(*"mp4v"), 25.0, (synthetic.WIDTH, synthetic.HEIGHT))
    for frame in synthetic.frames():
        writer.write(frame)
    writer.release()
    done = _run_script(flow, "--source", str(clip), "--out", str(flow.folder / "out"))
    assert done.returncode == 0, done.stderr
    frames, width, height, fps = _video_facts(flow.folder / "out" / "people_counter.mp4")
    assert (frames, width, height) == (synthetic.FRAMES, 320, 240) and fps == pytest.approx(25.0)
    assert len(_counts(flow.folder / "out" / "counts.jsonl")) == synthetic.FRAMES
