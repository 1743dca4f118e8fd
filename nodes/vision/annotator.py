"""Drawing: frame + tracks (+ counts) -> annotated frame item.

Input ports: ``frame`` (frame item), ``tracks`` (tracks item), optional ``counts``
(counts item). Output: the frame item with a new, annotated ``frame`` array; its other
fields are kept. The trails are kept in the node, so run it with ``replicas = 1``
(or without trails, ``trail = 0``, as many replicas as you like).
"""

from __future__ import annotations

import colorsys
from collections import deque
from collections.abc import Sequence
from typing import Any

import cv2
import numpy as np

from flujo.api import Processor
from flujo.shm import frame_buffer


def track_color(track_id: int) -> tuple[int, int, int]:
    """A distinct, stable BGR colour per id (hues spread by the golden ratio)."""
    hue = (track_id * 0.618033988749895) % 1.0
    r, g, b = colorsys.hsv_to_rgb(hue, 0.85, 1.0)
    return int(b * 255), int(g * 255), int(r * 255)


#: BGR colour of the counting line and its "in" arrow.
LINE_COLOR = (0, 255, 255)


class Annotator(Processor):
    """Draws track boxes with ids, short trails, the counting line with an arrow showing which
    way counts as "in", and the in/out totals.

    Args:
        trail: number of past centroids drawn per track (0: none).
        line: counting line ``[[x1, y1], [x2, y2]]`` normalized; by default the one the
            counts item carries.
        credit: small text drawn at the bottom left (e.g. the footage's credit).
        thickness: line thickness in pixels; text scales with the frame width.
    """

    def __init__(
        self,
        trail: int = 20,
        line: Sequence[Sequence[float]] | None = None,
        credit: str | None = None,
        thickness: int = 2,
    ) -> None:
        self.trail, self.line, self.credit, self.thickness = int(trail), line, credit, int(thickness)

    def open(self) -> None:
        self._trails: dict[int, deque] = {}
        self._last_seen: dict[int, int] = {}

    def process(
        self, frame: dict[str, Any], tracks: dict[str, Any] | None = None, counts: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        image = frame_buffer(frame["frame"].shape, frame["frame"].dtype)  # arrays arrive read-only: draw on a
        np.copyto(image, frame["frame"])  # copy, in shared memory when the next edge is
        height, width = image.shape[:2]
        font = max(0.4, width / 1600)
        index = int(frame.get("index", 0))
        entries = (tracks or {}).get("tracks", [])
        self._remember(entries, index)

        line = self.line or (counts or {}).get("line")
        if line is not None:
            self._draw_line(image, line, font)

        for entry in entries:
            color = track_color(int(entry["id"]))
            points = self._trails.get(int(entry["id"]))
            if points and len(points) > 1:
                polyline = np.array(points, np.int32).reshape(-1, 1, 2)
                cv2.polylines(image, [polyline], False, color, max(1, self.thickness - 1), cv2.LINE_AA)
            x, y, w, h = (round(float(v)) for v in entry["box"])
            # A predicted (unmatched) track gets a thin box: it is where we think the person is.
            weight = self.thickness if not entry.get("missed") else 1
            cv2.rectangle(image, (x, y), (x + w, y + h), color, weight)
            _label(image, str(entry["id"]), (x, max(0, y - 4)), font, color)

        if counts is not None:
            _label(
                image,
                f"in {counts.get('in', 0)}  out {counts.get('out', 0)}",
                (8, round(28 * font / 0.5)),
                font * 1.6,
                (255, 255, 255),
            )
        if self.credit:
            _label(image, self.credit, (8, height - 8), font * 0.8, (230, 230, 230))
        return {**frame, "frame": image}

    def _draw_line(self, image: np.ndarray, line: Sequence[Sequence[float]], font: float) -> None:
        """The counting line, and an arrow across its middle pointing the way that counts as "in"."""
        height, width = image.shape[:2]
        start, end = (np.array(point, float) * (width, height) for point in line)
        cv2.line(image, _pixel(start), _pixel(end), LINE_COLOR, self.thickness, cv2.LINE_AA)
        direction = (end - start) / max(np.linalg.norm(end - start), 1e-9)
        # LineCounter: "in" goes from the right-hand side of start->end to its left (y grows down),
        # i.e. along (dy, -dx).
        inward = np.array([direction[1], -direction[0]])
        middle = (start + end) / 2
        reach = 0.06 * max(width, height)
        tip = middle + inward * reach
        cv2.arrowedLine(
            image, _pixel(middle - inward * reach), _pixel(tip), LINE_COLOR, self.thickness, cv2.LINE_AA, tipLength=0.3
        )
        _label(image, "in", _pixel(tip + inward * 6 + (0, 5)), font, LINE_COLOR)

    def _remember(self, entries: list[dict[str, Any]], index: int) -> None:
        if self.trail <= 0:
            return
        for entry in entries:
            track_id = int(entry["id"])
            cx, cy = entry["centroid"]
            self._trails.setdefault(track_id, deque(maxlen=self.trail)).append((round(cx), round(cy)))
            self._last_seen[track_id] = index
        for track_id in [t for t, last in self._last_seen.items() if index - last > self.trail]:
            del self._last_seen[track_id], self._trails[track_id]


def _pixel(point: np.ndarray) -> tuple[int, int]:
    return round(float(point[0])), round(float(point[1]))


def _label(image: np.ndarray, text: str, origin: tuple[int, int], scale: float, color: tuple[int, int, int]) -> None:
    """Text with a dark outline, readable on any background."""
    thickness = max(1, round(scale * 2))
    cv2.putText(image, text, origin, cv2.FONT_HERSHEY_SIMPLEX, scale, (0, 0, 0), thickness + 2, cv2.LINE_AA)
    cv2.putText(image, text, origin, cv2.FONT_HERSHEY_SIMPLEX, scale, color, thickness, cv2.LINE_AA)
