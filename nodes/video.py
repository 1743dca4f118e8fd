"""Video and image input/output nodes, and frame geometry (resize, crop).

Frame item (what readers produce and frame nodes pass on)::

    {"frame": ndarray HxWx3 uint8 BGR,
     "index": int,        # 0-based frame number in the source
     "timestamp": float,  # seconds of media time (index / fps); live sources: wall clock since start
     "source": str,       # path, URL or camera index the frame came from
     "fps": float, "width": int, "height": int}

Frames arrive read-only in downstream nodes: copy one before drawing on it.
"""

from __future__ import annotations

import errno
import glob
import os
import time
from collections.abc import Iterator
from typing import Any

import cv2
import numpy as np

from flujo.api import Consumer, Processor, Producer
from flujo.nodes.h264 import H264File
from flujo.shm import frame_buffer

#: Codec per file extension; each was checked to write and read back. "h264" is written with
#: PyAV (flujo.nodes.h264), since OpenCV's pip wheels cannot encode H.264; the others with OpenCV.
CODECS = {".mp4": "h264", ".m4v": "h264", ".mov": "h264", ".avi": "MJPG", ".mkv": "h264"}
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")
#: Frame rate assumed when neither the source nor the arguments give one.
DEFAULT_FPS = 25.0


def frame_item(frame: np.ndarray, index: int, timestamp: float, source: str, fps: float) -> dict[str, Any]:
    """Build a frame item (the schema in this module's docstring)."""
    height, width = frame.shape[:2]
    return {
        "frame": frame,
        "index": int(index),
        "timestamp": float(timestamp),
        "source": source,
        "fps": float(fps),
        "width": int(width),
        "height": int(height),
    }


def _is_live(source: str | int) -> bool:
    return isinstance(source, int) or "://" in str(source)


def open_capture(source: str | int) -> cv2.VideoCapture:
    """Open a file path, camera index (int or digits) or stream URL; raise naming the source."""
    if isinstance(source, str) and source.strip().isdigit():
        source = int(source)
    if isinstance(source, int):
        capture = cv2.VideoCapture(source)
        if not capture.isOpened():
            raise OSError(f"cannot open camera {source}")
        return capture
    if "://" not in source:
        path = os.path.abspath(source)
        if not os.path.isfile(path):
            raise FileNotFoundError(f"video file not found: {path}")
        capture = cv2.VideoCapture(path)
        if not capture.isOpened():
            raise OSError(f"cannot open video file {path} (not a video, or a codec this OpenCV lacks)")
        return capture
    capture = cv2.VideoCapture(source)
    if not capture.isOpened():
        raise OSError(f"cannot open video stream {source}")
    return capture


class VideoReader(Producer):
    """Reads frames from a video file, a camera or a stream URL (rtsp://, http(s)://).

    Args:
        source: file path (relative to the working directory, which the launcher sets to
            the manifest's folder), camera index (``0`` or ``"0"``) or URL.
        realtime: pace files to their frame rate; live sources are always read as they come.
        loop: start a file over at its end (``index`` and ``timestamp`` keep growing, so
            stateful nodes downstream see one continuous stream).
        start: first frame number to emit; stop: frame number to stop before (exclusive).
        max_frames: emit at most this many frames.
        fps: override the frame rate the source reports (sets timestamps and pacing).
        reconnect: for live sources, how many times to reopen after a failed read.
    """

    def __init__(
        self,
        source: str | int,
        realtime: bool = False,
        loop: bool = False,
        start: int = 0,
        stop: int | None = None,
        max_frames: int | None = None,
        fps: float | None = None,
        reconnect: int = 3,
    ) -> None:
        self.source, self.realtime, self.loop = source, realtime, loop
        self.start, self.stop, self.max_frames = int(start), stop, max_frames
        self.fps_override, self.reconnect = fps, int(reconnect)
        self.live = _is_live(source) or (isinstance(source, str) and source.strip().isdigit())
        self._capture: cv2.VideoCapture | None = None

    def open(self) -> None:
        self._capture = open_capture(self.source)
        reported = self._capture.get(cv2.CAP_PROP_FPS)
        valid = reported and np.isfinite(reported) and 0 < reported < 1000
        self.fps = float(self.fps_override or (reported if valid else DEFAULT_FPS))

    def close(self) -> None:
        if self._capture is not None:
            self._capture.release()
            self._capture = None

    def length(self) -> int | None:
        """The frames this reader will emit, for a file read once (progress and ETA)."""
        if self.live or self.loop or self._capture is None:
            return self.max_frames if self.loop else None
        frames = int(self._capture.get(cv2.CAP_PROP_FRAME_COUNT) or 0)
        if frames <= 0:
            return self.max_frames
        end = min(frames, self.stop) if self.stop is not None else frames
        count = max(0, end - self.start)
        return min(count, self.max_frames) if self.max_frames is not None else count

    def resume_from(self, position: int) -> bool:
        """Go on from the frame numbered ``position`` of this reader's stream (docs/PROTOCOL.md,
        section 9.4), frames counted from ``start``; exact (frames are decoded up to it, as for
        ``start``). A live source or a looping file cannot: False (at most once for its crash)."""
        if self.live or self.loop:
            return False
        self.start += position
        if self.max_frames is not None:
            self.max_frames = max(0, self.max_frames - position)
        return True

    @property
    def _opened(self) -> cv2.VideoCapture:
        if self._capture is None:
            raise RuntimeError("VideoReader read before open()")
        return self._capture

    def _skip_to_start(self) -> bool:
        # grab() decodes sequentially: exact where seeking by frame number is not for some codecs.
        return all(self._opened.grab() for _ in range(self.start))

    def _decode(self) -> tuple[bool, np.ndarray | None]:
        """Decode the next frame straight into a frame buffer (shared memory on a shared-memory
        edge) once its shape is known; OpenCV allocates anew when the shape changes."""
        shape = getattr(self, "_shape", None)
        buffer = frame_buffer(shape, np.uint8) if shape is not None else None
        ok, frame = self._opened.read(buffer) if buffer is not None else self._opened.read()
        if ok and frame is not None:
            self._shape = frame.shape
        return ok, frame

    def _read(self) -> np.ndarray | None:
        ok, frame = self._decode()
        attempts = 0
        while not ok and self.live and attempts < self.reconnect:
            attempts += 1
            time.sleep(1.0)
            self._opened.release()
            try:
                self._capture = open_capture(self.source)
            except OSError:
                continue
            ok, frame = self._decode()
        return frame if ok else None

    def produce(self) -> Iterator[dict[str, Any]]:
        source = str(self.source)
        emitted, position = 0, self.start  # position: frame number within the current pass
        began = time.monotonic()
        if not self.live and not self._skip_to_start():
            return
        while self.max_frames is None or emitted < self.max_frames:
            frame = None if (self.stop is not None and position >= self.stop) else self._read()
            if frame is None:
                if not self.loop or self.live or emitted == 0:
                    return
                self._opened.set(cv2.CAP_PROP_POS_FRAMES, 0)
                position = self.start
                if not self._skip_to_start():
                    return
                continue
            index = self.start + emitted
            if self.live:
                timestamp = time.monotonic() - began
            else:
                timestamp = index / self.fps
                if self.realtime:
                    delay = began + emitted / self.fps - time.monotonic()
                    if delay > 0:
                        time.sleep(delay)
            yield frame_item(frame, index, timestamp, source, self.fps)
            emitted += 1
            position += 1


class VideoWriter(Consumer):
    """Writes frame items (key ``"frame"``) to a video file.

    The codec follows the extension (``.mp4``/``.mov``/``.mkv`` -> H.264, which browsers
    play, ``.avi`` -> MJPG) unless ``codec`` (``"h264"`` or an OpenCV four-character code such
    as ``"mp4v"``) is given. The size comes
    from the first frame (later frames of another size are resized to it), ``fps`` from
    the argument or the first item. Parent folders are created.

    OpenCV's writer reports no write error (it drops the frame and logs a warning), so this
    node checks for itself and fails loudly rather than leave a truncated file: the target
    must be a regular file, the disk must still have room for a whole raw frame before each
    write, and the file must not be empty at the end.
    """

    def __init__(self, path: str, fps: float | None = None, codec: str | None = None) -> None:
        self.path, self.fps, self.codec = path, fps, codec
        self._target = os.path.abspath(path)
        self._writer: cv2.VideoWriter | H264File | None = None
        self._size: tuple[int, int] | None = None
        self.frames_written = 0

    def _open_writer(self, item: dict[str, Any], frame: np.ndarray) -> None:
        path = os.path.abspath(self.path)
        extension = os.path.splitext(path)[1].lower()
        codec = self.codec or CODECS.get(extension)
        if codec is None:
            raise ValueError(f"cannot choose a codec for {path}: use one of {sorted(CODECS)} or pass codec=")
        os.makedirs(os.path.dirname(path), exist_ok=True)
        if os.path.exists(path) and not os.path.isfile(path):
            raise OSError(f"cannot write video {path}: not a regular file")
        fps = float(self.fps or item.get("fps") or DEFAULT_FPS)
        self._size = (frame.shape[1], frame.shape[0])
        if codec == "h264":
            self._writer = H264File(path, fps, self._size)
            return
        fourcc = cv2.VideoWriter_fourcc(*codec)  # type: ignore[attr-defined]  # absent from OpenCV's stubs
        writer = cv2.VideoWriter(path, fourcc, fps, self._size)
        if not writer.isOpened():
            raise OSError(f"cannot write video {path} with codec {codec!r}")
        self._writer = writer

    def consume(self, item: dict[str, Any]) -> None:
        frame = np.asarray(item["frame"])
        if frame.ndim == 2:
            frame = cv2.cvtColor(frame, cv2.COLOR_GRAY2BGR)
        if self._writer is None:
            self._open_writer(item, frame)
        if (frame.shape[1], frame.shape[0]) != self._size:
            frame = cv2.resize(frame, self._size)  # the writer silently drops mismatched frames
        self._check_room(frame.nbytes)
        assert self._writer is not None  # opened just above
        self._writer.write(np.ascontiguousarray(frame))
        self.frames_written += 1

    def _check_room(self, needed: int) -> None:
        """Fail before the disk is full: the writer would drop frames without a word."""
        disk = os.statvfs(os.path.dirname(self._target))
        free = disk.f_bavail * disk.f_frsize
        if free < needed:
            raise OSError(
                errno.ENOSPC,
                f"no space left on the device to write video {self._target} "
                f"({free} bytes free, a frame needs up to {needed}; "
                f"{self.frames_written} frames written)",
            )

    def close(self) -> None:
        if self._writer is not None:
            writer, self._writer = self._writer, None
            if isinstance(writer, H264File):
                writer.close()
            else:
                writer.release()
            if self.frames_written and not os.path.getsize(self._target):
                raise OSError(f"video {self._target} is empty after {self.frames_written} frames: the writes failed")


class ImageFolderReader(Producer):
    """Reads the images in ``folder`` matching ``pattern``, in sorted name order, as frame items.

    ``fps`` sets the timestamps (``index / fps``); ``max_frames`` limits the count.
    """

    def __init__(
        self, folder: str, pattern: str = "*", fps: float = DEFAULT_FPS, max_frames: int | None = None
    ) -> None:
        self.folder, self.pattern, self.fps, self.max_frames = folder, pattern, float(fps), max_frames
        self._first = 0  # resume_from: the first image to read

    def open(self) -> None:
        folder = os.path.abspath(self.folder)
        if not os.path.isdir(folder):
            raise FileNotFoundError(f"image folder not found: {folder}")
        self.paths = sorted(
            path for path in glob.glob(os.path.join(folder, self.pattern)) if path.lower().endswith(IMAGE_EXTENSIONS)
        )
        if not self.paths:
            raise FileNotFoundError(f"no images matching {self.pattern!r} in {folder}")

    def length(self) -> int:
        """The images this reader will emit (progress and ETA)."""
        return len(self.paths[self._first : self.max_frames])

    def resume_from(self, position: int) -> bool:
        """Go on from the image numbered ``position`` (docs/PROTOCOL.md, section 9.4)."""
        self._first = position
        return True

    def produce(self) -> Iterator[dict[str, Any]]:
        for index, path in enumerate(self.paths[: self.max_frames]):
            if index < self._first:
                continue
            frame = cv2.imread(path, cv2.IMREAD_COLOR)
            if frame is None:
                raise OSError(f"cannot read image {path}")
            yield frame_item(frame, index, index / self.fps, path, self.fps)


class ImageFolderWriter(Consumer):
    """Writes each frame item to ``folder/{index:06d}.{extension}`` (jpg or png); creates the folder."""

    def __init__(self, folder: str, extension: str = "jpg", quality: int = 95) -> None:
        self.folder, self.extension, self.quality = folder, extension.lstrip(".").lower(), int(quality)

    def open(self) -> None:
        self._folder = os.path.abspath(self.folder)
        os.makedirs(self._folder, exist_ok=True)
        self._params = [cv2.IMWRITE_JPEG_QUALITY, self.quality] if self.extension in ("jpg", "jpeg") else []

    def consume(self, item: dict[str, Any]) -> None:
        path = os.path.join(self._folder, f"{int(item['index']):06d}.{self.extension}")
        if not cv2.imwrite(path, np.ascontiguousarray(item["frame"]), self._params):
            raise OSError(f"cannot write image {path}")


class Resize(Processor):
    """Resizes the frame of a frame item; other fields are kept, width/height updated.

    Give ``width`` and/or ``height`` in pixels (one alone keeps the aspect ratio) or ``scale``.
    """

    def __init__(
        self,
        width: int | None = None,
        height: int | None = None,
        scale: float | None = None,
        interpolation: str = "area",
    ) -> None:
        if width is None and height is None and scale is None:
            raise ValueError("Resize needs width, height or scale")
        self.width, self.height, self.scale = width, height, scale
        self.interpolation = {
            "area": cv2.INTER_AREA,
            "linear": cv2.INTER_LINEAR,
            "nearest": cv2.INTER_NEAREST,
            "cubic": cv2.INTER_CUBIC,
        }[interpolation]

    def target_size(self, width: int, height: int) -> tuple[int, int]:
        if self.scale is not None:
            return max(1, round(width * self.scale)), max(1, round(height * self.scale))
        if self.width is not None and self.height is not None:
            return int(self.width), int(self.height)
        if self.width is not None:
            return int(self.width), max(1, round(height * self.width / width))
        assert self.height is not None  # the constructor requires one of the three
        return max(1, round(width * self.height / height)), int(self.height)

    def process(self, item: dict[str, Any]) -> dict[str, Any]:
        frame = item["frame"]
        size = self.target_size(frame.shape[1], frame.shape[0])
        resized = cv2.resize(frame, size, interpolation=self.interpolation)
        return {**item, "frame": resized, "width": size[0], "height": size[1]}


class Crop(Processor):
    """Crops the frame of a frame item to the rectangle ``x, y, w, h``.

    Each value is in pixels when an int, or a fraction of the frame's width/height when a
    float between 0 and 1 (``w=1.0`` is the full width, ``w=1`` one pixel). The rectangle
    is clipped to the frame.
    """

    def __init__(self, x: float = 0, y: float = 0, w: float = 1.0, h: float = 1.0) -> None:
        self.rect = (x, y, w, h)

    @staticmethod
    def _pixels(value: float, extent: int) -> int:
        if isinstance(value, float) and 0.0 <= value <= 1.0:
            return round(value * extent)
        return int(value)

    def process(self, item: dict[str, Any]) -> dict[str, Any]:
        frame = item["frame"]
        height, width = frame.shape[:2]
        x, w = (self._pixels(v, width) for v in (self.rect[0], self.rect[2]))
        y, h = (self._pixels(v, height) for v in (self.rect[1], self.rect[3]))
        x0, y0 = min(max(x, 0), width - 1), min(max(y, 0), height - 1)
        x1, y1 = min(max(x + w, x0 + 1), width), min(max(y + h, y0 + 1), height)
        cropped = frame[y0:y1, x0:x1]
        return {**item, "frame": cropped, "width": x1 - x0, "height": y1 - y0}
