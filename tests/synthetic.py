"""Synthetic video with known ground truth for the video and vision tests.

A 320x240 dark scene in which four bright "people" (rectangles) walk along straight
horizontal lines, each in its own lane so they never overlap:

    id 1  left -> right  crosses x = 0.5 once ("in" for the default counting line)
    id 2  right -> left  crosses once ("out")
    id 3  left -> right  passes behind a static grey pillar (occluded for several frames)
    id 4  right -> left  starts later

The first frames are empty so a background subtractor learns the scene first.
Everything is deterministic (noise comes from a seeded generator).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np

from flujo import testing as flujo_testing

WIDTH, HEIGHT, FPS, FRAMES = 320, 240, 10.0, 80
BACKGROUND = 30
#: Static occluder drawn over the figures: x, y, w, h.
OCCLUDER = (130, 170, 34, 70)


@dataclass(frozen=True)
class Figure:
    id: int
    start: int  # first frame it is visible
    end: int  # last frame it is visible
    x0: float  # top-left corner at `start`
    y0: float
    vx: float  # pixels per frame
    w: int = 16
    h: int = 36
    color: tuple[int, int, int] = (220, 220, 220)

    def box(self, index: int) -> tuple[float, float, float, float] | None:
        if not self.start <= index <= self.end:
            return None
        return (self.x0 + self.vx * (index - self.start), self.y0, self.w, self.h)


FIGURES = (
    Figure(1, 5, 65, 20, 10, 4.0, color=(230, 230, 230)),
    Figure(2, 8, 70, 284, 62, -4.0, color=(60, 200, 240)),
    Figure(3, 6, 66, 30, 190, 4.0, color=(240, 160, 90)),
    Figure(4, 20, 75, 290, 118, -4.5, color=(120, 240, 120)),
)
#: Crossings of the vertical line x = 0.5 * WIDTH by each figure's centroid.
CROSSINGS = {"in": 2, "out": 2}


def occluded_fraction(box: tuple[float, float, float, float]) -> float:
    """Fraction of ``box`` hidden by the occluder."""
    x, y, w, h = box
    ox, oy, ow, oh = OCCLUDER
    ix = max(0.0, min(x + w, ox + ow) - max(x, ox))
    iy = max(0.0, min(y + h, oy + oh) - max(y, oy))
    return ix * iy / (w * h)


def ground_truth(index: int) -> list[tuple[int, tuple[float, float, float, float]]]:
    """(id, box) of every figure present in frame ``index``, occluded or not."""
    return [(figure.id, box) for figure in FIGURES if (box := figure.box(index)) is not None]


def render(index: int, seed: int = 0) -> np.ndarray:
    """Frame ``index`` as a BGR uint8 array with a little sensor noise."""
    rng = np.random.default_rng(seed * 100_003 + index)
    frame = np.full((HEIGHT, WIDTH, 3), BACKGROUND, np.uint8)
    frame += rng.integers(0, 4, frame.shape, dtype=np.uint8)
    for figure in FIGURES:
        box = figure.box(index)
        if box is not None:
            x, y, w, h = (round(v) for v in box)
            cv2.rectangle(frame, (x, y), (x + w - 1, y + h - 1), figure.color, -1)
    ox, oy, ow, oh = OCCLUDER
    cv2.rectangle(frame, (ox, oy), (ox + ow - 1, oy + oh - 1), (90, 90, 90), -1)
    return frame


def frames(count: int = FRAMES) -> list[np.ndarray]:
    return [render(index) for index in range(count)]


def frame_items(count: int = FRAMES) -> list[dict[str, Any]]:
    """Frame items as a video reader would produce them."""
    return [
        {
            "frame": render(index),
            "index": index,
            "timestamp": index / FPS,
            "source": "synthetic",
            "fps": FPS,
            "width": WIDTH,
            "height": HEIGHT,
        }
        for index in range(count)
    ]


def write_video(path: str, count: int = FRAMES) -> str:
    """Write the synthetic clip to ``path`` (MJPG .avi or mp4v .mp4); returns the path."""
    codec = "mp4v" if path.endswith(".mp4") else "MJPG"
    writer = cv2.VideoWriter(path, cv2.VideoWriter_fourcc(*codec), FPS, (WIDTH, HEIGHT))
    assert writer.isOpened(), path
    for frame in frames(count):
        writer.write(frame)
    writer.release()
    return path


def detection_items(
    noise: float = 1.5,
    drop: dict[int, range] | None = None,
    seed: int = 1,
    max_occlusion: float = 0.5,
    count: int = FRAMES,
) -> list[dict[str, Any]]:
    """Detections items from the ground truth: boxes jittered by ``noise`` pixels, figures
    hidden more than ``max_occlusion`` behind the occluder left out, and the frames in
    ``drop[id]`` left out for that figure (a detector missing someone)."""
    rng = np.random.default_rng(seed)
    drop = drop or {}
    items = []
    for index in range(count):
        boxes = []
        for figure_id, box in ground_truth(index):
            if occluded_fraction(box) > max_occlusion or index in drop.get(figure_id, ()):
                continue
            boxes.append(np.asarray(box, np.float32) + rng.normal(0.0, noise, 4).astype(np.float32))
        items.append(
            {
                "index": index,
                "timestamp": index / FPS,
                "width": WIDTH,
                "height": HEIGHT,
                "boxes": np.asarray(boxes, np.float32).reshape(-1, 4),
                "scores": np.ones(len(boxes), np.float32),
            }
        )
    return items


# Nodes see items as they arrive over the wire (lists for tuples, read-only arrays).
wire = flujo_testing.wire
run = flujo_testing.drive
