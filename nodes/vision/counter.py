"""Line crossing counts: tracks item -> counts item.

Counts item::

    {"index": int, "timestamp": float,
     "in": int, "out": int,                        # cumulative since the stream began
     "crossings": [{"id": int, "direction": "in" | "out"}],   # in this frame only
     "line": [[x1, y1], [x2, y2]]}                 # the counting line, normalized (for drawing)

Direction: looking at the image (y grows downwards) and walking along the line from p1
to p2, "in" is a crossing from the right-hand side to the left-hand side, "out" the
reverse. For the default vertical line from top (0.5, 0) to bottom (0.5, 1) that makes
"in" = left to right on screen; for a line from (0, 0.5) to (1, 0.5), "in" = bottom to
top. Swap p1 and p2 to swap the directions.

The counter keeps per-track state: run it with ``replicas = 1``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from flujo.api import Processor


class LineCounter(Processor):
    """Counts tracks whose centroid crosses a line, by direction: each track once each way.

    Args:
        line: ``[[x1, y1], [x2, y2]]`` in normalized coordinates (fractions of the frame's
            width and height).
        margin: half-width of a dead band around the line, as a fraction of the frame
            diagonal. A centroid inside the band has no side, so a track jittering on the
            line counts only when it really reaches the other side (hysteresis).
        use_predicted: also use positions of tracks not matched in this frame
            (``missed`` > 0); off by default, so only measured positions count.
        forget_after: frames after which the side of an unseen track is forgotten.
        once_per_direction: count a track at most once each way, so a person dithering
            at the line, or walking back and forth across it, counts as one "in" and at
            most one "out" (``False``: every completed crossing counts).
    """

    def __init__(
        self,
        line: Sequence[Sequence[float]] = ((0.5, 0.0), (0.5, 1.0)),
        margin: float = 0.01,
        use_predicted: bool = False,
        forget_after: int = 300,
        once_per_direction: bool = True,
    ) -> None:
        (x1, y1), (x2, y2) = line
        self.p1, self.p2 = np.array([x1, y1], float), np.array([x2, y2], float)
        if np.allclose(self.p1, self.p2):
            raise ValueError("the counting line needs two distinct points")
        self.margin, self.use_predicted, self.forget_after = float(margin), bool(use_predicted), int(forget_after)
        self.once_per_direction = bool(once_per_direction)

    def open(self) -> None:
        self.total = {"in": 0, "out": 0}
        self._side: dict[int, tuple[int, np.ndarray]] = {}  # id -> (last side, position there)
        self._seen: dict[int, int] = {}
        self._counted: set[tuple[int, str]] = set()  # (id, direction) already counted

    def summary(self) -> dict[str, int]:
        """The final counts, for the launcher's closing summary."""
        return dict(self.total)

    def _signed_distance(self, point: np.ndarray, scale: np.ndarray) -> float:
        """Distance from the line in pixels over the frame diagonal; > 0 on the right of p1->p2."""
        a, b, p = self.p1 * scale, self.p2 * scale, point * scale
        d = b - a
        cross = d[0] * (p[1] - a[1]) - d[1] * (p[0] - a[0])
        return float(cross / np.linalg.norm(d) / np.linalg.norm(scale))

    def _within_segment(self, point: np.ndarray, scale: np.ndarray) -> bool:
        a, b, p = self.p1 * scale, self.p2 * scale, point * scale
        d = b - a
        t = float(np.dot(p - a, d) / np.dot(d, d))
        return 0.0 <= t <= 1.0

    def process(self, item: dict[str, Any]) -> dict[str, Any]:
        index = int(item.get("index", 0))
        width, height = float(item.get("width") or 1), float(item.get("height") or 1)
        scale = np.array([width, height])
        crossings = []
        for track in item.get("tracks", ()):
            if track.get("missed", 0) and not self.use_predicted:
                continue
            track_id = int(track["id"])
            self._seen[track_id] = index
            point = np.asarray(track["centroid"], float) / scale
            distance = self._signed_distance(point, scale)
            side = 1 if distance > self.margin else -1 if distance < -self.margin else 0
            if side == 0:
                continue  # in the dead band: no decision either way
            previous = self._side.get(track_id)
            self._side[track_id] = (side, point)
            # A crossing is a completed change of side, through the segment (not its extension).
            if previous is not None and previous[0] != side and self._within_segment((previous[1] + point) / 2, scale):
                direction = "in" if previous[0] > 0 else "out"
                if self.once_per_direction and (track_id, direction) in self._counted:
                    continue
                self._counted.add((track_id, direction))
                self.total[direction] += 1
                crossings.append({"id": track_id, "direction": direction})
        for track_id in [t for t, last in self._seen.items() if index - last > self.forget_after]:
            self._seen.pop(track_id)
            self._side.pop(track_id, None)
            self._counted.discard((track_id, "in"))
            self._counted.discard((track_id, "out"))
        return {
            "index": index,
            "timestamp": item.get("timestamp", 0.0),
            "in": self.total["in"],
            "out": self.total["out"],
            "crossings": crossings,
            "line": [self.p1.tolist(), self.p2.tolist()],
        }
