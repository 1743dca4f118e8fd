"""A failure keeps its reason: error reports reach the launcher, sinks and writers check every write."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import numpy as np
import pytest
import synthetic
from conftest import FlowRunner
from manifests import count, node

from flujo.nodes.sinks import JsonLinesSink
from flujo.nodes.video import VideoWriter
from flujo.testing import drive


def test_every_failure_in_open_reaches_the_launcher(flow: FlowRunner) -> None:
    """30 replicas fail in open() at once: each one's message and traceback is shown, none
    reduced to "exited with status 1" (its report used to be dropped at exit)."""
    manifest = flow.manifest({"numbers": count(), "bad": node("{nodes}:FailsInOpen", "numbers", replicas=30)})
    result = flow.run(manifest, timeout=90)
    assert result.returncode == 1
    for replica in range(30):
        assert f'node "bad.{replica}" failed: RuntimeError: camera 7 is not connected' in result.stderr, result.stderr
        label = f"bad.{replica}"
        assert f"{label:<7} | RuntimeError: camera 7 is not connected" in result.stdout  # its traceback
    assert "exited with status 1" not in result.stderr


def test_a_sink_on_a_full_device_fails_loudly(flow: FlowRunner) -> None:
    sink = node("flujo.nodes.sinks:JsonLinesSink", "numbers", {"path": "/dev/full"})
    manifest = flow.manifest({"numbers": count(100), "sink": sink})
    result = flow.run(manifest, timeout=30)
    assert result.returncode == 1
    assert 'node "sink" failed: OSError: [Errno 28] cannot write /dev/full: No space left on device' in result.stderr, (
        result.stderr
    )


def test_jsonlines_sink_names_the_file_it_cannot_write() -> None:
    with pytest.raises(OSError, match="cannot write /dev/full: No space left on device"):
        drive(JsonLinesSink("/dev/full"), [1])


@pytest.mark.parametrize("target", ["/dev/full", "link.avi"])
def test_video_writer_refuses_a_device(tmp_path: Path, target: str) -> None:
    (tmp_path / "link.avi").symlink_to("/dev/full")
    path = target if target.startswith("/") else str(tmp_path / target)
    with pytest.raises(OSError, match=f"cannot write video {path}"):
        drive(VideoWriter(path, codec="MJPG"), synthetic.frame_items(3))


@pytest.fixture
def tiny_disk(tmp_path: Path):
    """A 300 kB file system (tmpfs), where one can be mounted (root)."""
    folder = tmp_path / "tiny"
    folder.mkdir()
    if (
        subprocess.run(
            ["mount", "-t", "tmpfs", "-o", "size=300k", "tmpfs", str(folder)], capture_output=True
        ).returncode
        != 0
    ):
        pytest.skip("cannot mount a small file system here")
    try:
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], check=False)


def test_video_writer_on_a_full_disk_fails_loudly(tiny_disk: Path) -> None:
    path = tiny_disk / "out.avi"
    writer = VideoWriter(str(path))
    noise = np.random.default_rng(0).integers(0, 255, (20, synthetic.HEIGHT, synthetic.WIDTH, 3), dtype=np.uint8)
    # Noise is hard to compress.
    items = [{**item, "frame": frame} for item, frame in zip(synthetic.frame_items(20), noise, strict=True)]
    with pytest.raises(OSError, match=f"no space left on the device to write video {path}") as caught:
        drive(writer, items)
    assert caught.value.errno == 28
    assert 0 < writer.frames_written < 20
    assert os.path.getsize(path) > 0


def test_video_writer_in_a_flow_exits_1_with_a_named_error(flow: FlowRunner) -> None:
    target, clip = flow.path("video.avi"), synthetic.write_video(flow.path("in.avi"), 10)
    os.symlink("/dev/full", target)
    manifest = flow.manifest(
        {
            "frames": node("flujo.nodes.video:VideoReader", args={"source": clip}),
            "writer": node("flujo.nodes.video:VideoWriter", "frames", {"path": target}),
        }
    )
    result = flow.run(manifest, timeout=60)
    assert result.returncode == 1
    assert f'node "writer" failed: OSError: cannot write video {target}: not a regular file' in result.stderr, (
        result.stderr
    )
