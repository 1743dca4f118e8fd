"""Video input/output and frame geometry nodes."""

from __future__ import annotations

import os

import cv2
import numpy as np
import pytest
import synthetic

from flujo.nodes.h264 import H264File
from flujo.nodes.video import Crop, ImageFolderReader, ImageFolderWriter, Resize, VideoReader, VideoWriter
from flujo.testing import drive


@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> str:
    return synthetic.write_video(str(tmp_path_factory.mktemp("clip") / "synthetic.avi"))


def test_reader_reads_every_frame_with_index_timestamp_and_fps(clip):
    items = drive(VideoReader(clip))
    assert len(items) == synthetic.FRAMES
    assert [item["index"] for item in items] == list(range(synthetic.FRAMES))
    assert items[10]["timestamp"] == pytest.approx(10 / synthetic.FPS)
    first = items[0]
    assert first["fps"] == pytest.approx(synthetic.FPS)
    assert (first["width"], first["height"]) == (synthetic.WIDTH, synthetic.HEIGHT)
    assert first["frame"].shape == (synthetic.HEIGHT, synthetic.WIDTH, 3) and first["frame"].dtype == np.uint8
    assert first["source"] == clip
    # The content is the synthetic scene (MJPG is lossy, so compare loosely).
    assert np.abs(items[30]["frame"].astype(int) - synthetic.render(30)).mean() < 4


def test_reader_limits_and_fps_override(clip):
    assert len(drive(VideoReader(clip, max_frames=7))) == 7
    items = drive(VideoReader(clip, start=10, stop=20, fps=5.0))
    assert [item["index"] for item in items] == list(range(10, 20))
    assert items[0]["timestamp"] == pytest.approx(2.0)  # frame 10 at 5 fps
    assert np.abs(items[0]["frame"].astype(int) - synthetic.render(10)).mean() < 4


def test_reader_loop_keeps_counting(clip):
    items = drive(VideoReader(clip, stop=5, loop=True, max_frames=12))
    assert [item["index"] for item in items] == list(range(12))
    assert np.abs(items[5]["frame"].astype(int) - items[0]["frame"]).mean() < 1  # back at frame 0


def test_reader_relative_path_and_missing_file(clip, tmp_path, monkeypatch):
    monkeypatch.chdir(os.path.dirname(clip))
    assert len(drive(VideoReader(os.path.basename(clip), max_frames=2))) == 2
    missing = tmp_path / "nope" / "missing.mp4"
    with pytest.raises(FileNotFoundError, match=r"missing\.mp4"):
        drive(VideoReader(str(missing)))
    not_video = tmp_path / "text.avi"
    not_video.write_text("not a video")
    with pytest.raises(OSError, match=r"text\.avi"):
        drive(VideoReader(str(not_video)))


@pytest.mark.parametrize("extension", [".mp4", ".avi", ".mkv"])
def test_writer_writes_a_playable_file(tmp_path, extension):
    path = tmp_path / "out" / "deeper" / f"video{extension}"
    items = synthetic.frame_items(12)
    writer = VideoWriter(str(path))
    drive(writer, items)
    capture = cv2.VideoCapture(str(path))
    assert capture.isOpened()
    assert capture.get(cv2.CAP_PROP_FPS) == pytest.approx(synthetic.FPS)
    read = []
    while (frame := capture.read()[1]) is not None:
        read.append(frame)
    assert len(read) == 12
    assert read[0].shape == (synthetic.HEIGHT, synthetic.WIDTH, 3)
    assert np.abs(read[6].astype(int) - items[6]["frame"]).mean() < 6


@pytest.mark.parametrize("extension", [".mp4", ".mkv"])
def test_writer_makes_h264_that_browsers_play(tmp_path, extension):
    import av

    path = tmp_path / f"video{extension}"
    drive(VideoWriter(str(path)), synthetic.frame_items(12))
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        # H.264 in 4:2:0: the pairing every browser decodes (MPEG-4 part 2 plays in none).
        assert (stream.codec_context.name, stream.codec_context.pix_fmt) == ("h264", "yuv420p")
        assert sum(1 for _ in container.decode(stream)) == 12


def test_writer_keeps_odd_sizes_playable(tmp_path):
    items = [{**item, "frame": item["frame"][:239, :319]} for item in synthetic.frame_items(3)]
    drive(VideoWriter(str(tmp_path / "odd.mp4")), items)
    capture = cv2.VideoCapture(str(tmp_path / "odd.mp4"))
    assert capture.read()[1].shape == (238, 318, 3)  # 4:2:0 needs even sizes: one row and column dropped


@pytest.mark.parametrize("where", ["missing-folder", "/dev/full"])
def test_h264_write_errors_raise_naming_the_path(tmp_path, where):
    path = str(tmp_path / where / "x.mp4") if where == "missing-folder" else where
    with pytest.raises(OSError, match=f"cannot (write|finish) video {path}"):
        video = H264File(path, 10.0, (320, 240))
        for item in synthetic.frame_items(30):
            video.write(item["frame"])
        video.close()


def test_writer_errors_name_the_path(tmp_path):
    with pytest.raises(ValueError, match=r"video\.xyz"):
        drive(VideoWriter(str(tmp_path / "video.xyz")), synthetic.frame_items(1))


def test_image_folder_round_trip(tmp_path):
    drive(ImageFolderWriter(str(tmp_path / "images"), extension="png"), synthetic.frame_items(5))
    assert sorted(os.listdir(tmp_path / "images")) == [f"{i:06d}.png" for i in range(5)]
    items = drive(ImageFolderReader(str(tmp_path / "images"), pattern="*.png", fps=10))
    assert [item["index"] for item in items] == list(range(5))
    assert items[3]["timestamp"] == pytest.approx(0.3)
    assert np.array_equal(items[3]["frame"], synthetic.render(3))  # png is lossless
    with pytest.raises(FileNotFoundError, match="nothing-here"):
        drive(ImageFolderReader(str(tmp_path / "nothing-here")))


def test_resize_and_crop_keep_fields():
    item = synthetic.frame_items(1)[0]
    half = drive(Resize(scale=0.5), [item])[0]
    assert half["frame"].shape == (120, 160, 3) and (half["width"], half["height"]) == (160, 120)
    assert half["index"] == 0 and half["fps"] == synthetic.FPS and half["source"] == "synthetic"
    wide = drive(Resize(width=640), [item])[0]
    assert wide["frame"].shape == (480, 640, 3)

    crop = drive(Crop(x=10, y=20, w=100, h=50), [item])[0]
    assert crop["frame"].shape == (50, 100, 3) and (crop["width"], crop["height"]) == (100, 50)
    assert np.array_equal(crop["frame"], item["frame"][20:70, 10:110])
    right_half = drive(Crop(x=0.5, w=0.5), [item])[0]
    assert right_half["frame"].shape == (240, 160, 3)
    assert np.array_equal(right_half["frame"], item["frame"][:, 160:])
    clipped = drive(Crop(x=300, y=0, w=100, h=10), [item])[0]
    assert clipped["frame"].shape == (10, 20, 3)


@pytest.mark.timeout(30)
def test_h264_keeps_colours_in_bgr_order(tmp_path):
    # Blue, green, red and grey quarters: a channel swap or a wrong YUV conversion shows at once.
    frame = np.zeros((96, 128, 3), np.uint8)
    frame[:48, :64] = (255, 0, 0)
    frame[:48, 64:] = (0, 255, 0)
    frame[48:, :64] = (0, 0, 255)
    frame[48:, 64:] = (128, 128, 128)
    path = tmp_path / "colours.mp4"
    drive(VideoWriter(str(path)), [{"frame": frame, "index": i, "fps": 10.0} for i in range(3)])
    capture = cv2.VideoCapture(str(path))
    decoded = capture.read()[1]
    for rows, columns in (
        (slice(8, 40), slice(8, 56)),
        (slice(8, 40), slice(72, 120)),
        (slice(56, 88), slice(8, 56)),
        (slice(56, 88), slice(72, 120)),
    ):
        assert np.abs(decoded[rows, columns].astype(int) - frame[rows, columns]).mean() < 8
