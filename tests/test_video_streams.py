"""The video reader on a network stream: a clip served over HTTP on loopback."""

from __future__ import annotations

import functools
import threading
from collections.abc import Iterator
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import synthetic

from flujo.nodes.video import VideoReader
from flujo.testing import drive


class _QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def served(tmp_path: Path) -> Iterator[str]:
    """An HTTP server on a free loopback port, serving a synthetic clip; yields its URL."""
    synthetic.write_video(str(tmp_path / "clip.mp4"))
    server = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_QuietHandler, directory=str(tmp_path)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/clip.mp4"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def test_reader_takes_frames_from_an_http_stream(served: str) -> None:
    items = drive(VideoReader(served, max_frames=20, reconnect=0))
    assert [item["index"] for item in items] == list(range(20))
    assert items[0]["frame"].shape == (synthetic.HEIGHT, synthetic.WIDTH, 3) and items[0]["source"] == served
    timestamps = [item["timestamp"] for item in items]
    assert timestamps == sorted(timestamps)  # a live source: wall-clock time since it started


def test_an_unreachable_stream_is_named_in_the_error(served: str) -> None:
    missing = served.replace("clip.mp4", "nothing-here.mp4")
    with pytest.raises(OSError, match=r"cannot open video stream http://127\.0\.0\.1:.*/nothing-here\.mp4"):
        drive(VideoReader(missing, reconnect=0))
