"""Multi-object tracking: detections item -> tracks item.

Tracks item::

    {"index": int, "timestamp": float, "width": int, "height": int,
     "tracks": [{"id": int,             # stable for the life of the track, from 1, in order of confirmation
                 "box": [x, y, w, h],   # filtered box in pixels
                 "centroid": [cx, cy],  # centre of the box
                 "velocity": [vx, vy],  # pixels per frame
                 "age": int,            # frames since the track's first detection
                 "hits": int,           # frames in which a detection was matched to it
                 "missed": int}]}       # frames since its last match (0 = matched in this frame)

Only confirmed tracks (``min_hits`` matches in a row) are reported; a confirmed track
keeps its id through up to ``max_age`` frames without detections (occlusion, a missed
detection), moving by its predicted velocity meanwhile.

The tracker keeps state across frames: run it with ``replicas = 1``.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy.optimize import linear_sum_assignment

from flujo.api import Processor


class _Track:
    """One object: constant-velocity Kalman filter on the centroid, smoothed box size."""

    def __init__(self, box: np.ndarray, index: int, position_noise: float, accel_noise: float) -> None:
        x, y, w, h = (float(v) for v in box)
        self.state = np.array([x + w / 2, y + h / 2, 0.0, 0.0])
        size = max(w, h)
        # Velocity starts unknown: a large variance lets the first matches set it.
        self.cov = np.diag([(position_noise * size) ** 2] * 2 + [(0.5 * size) ** 2] * 2)
        self.w, self.h = w, h
        self.first_index = index
        self.hits, self.missed = 1, 0
        self.id: int | None = None  # assigned when confirmed, so ids have no gaps
        self.position_noise, self.accel_noise = position_noise, accel_noise

    def predict(self, steps: int) -> None:
        dt = float(steps)
        transition = np.array([[1, 0, dt, 0], [0, 1, 0, dt], [0, 0, 1, 0], [0, 0, 0, 1]])
        # White-acceleration process noise, scaled to the object's size (far objects move fewer pixels).
        sigma = (self.accel_noise * max(self.w, self.h)) ** 2
        q = np.array([[dt**4 / 4, dt**3 / 2], [dt**3 / 2, dt**2]]) * sigma
        noise = np.zeros((4, 4))
        noise[np.ix_([0, 2], [0, 2])] = q
        noise[np.ix_([1, 3], [1, 3])] = q
        self.state = transition @ self.state
        self.cov = transition @ self.cov @ transition.T + noise

    def update(self, box: np.ndarray) -> None:
        x, y, w, h = (float(v) for v in box)
        measured = np.array([x + w / 2, y + h / 2])
        observe = np.array([[1.0, 0, 0, 0], [0, 1.0, 0, 0]])
        noise = np.eye(2) * (self.position_noise * max(w, h)) ** 2
        innovation_cov = observe @ self.cov @ observe.T + noise
        gain = self.cov @ observe.T @ np.linalg.inv(innovation_cov)
        self.state = self.state + gain @ (measured - observe @ self.state)
        self.cov = (np.eye(4) - gain @ observe) @ self.cov
        # Box size changes slowly and detectors jitter it: smooth rather than filter.
        self.w, self.h = 0.5 * self.w + 0.5 * w, 0.5 * self.h + 0.5 * h
        self.hits += 1
        self.missed = 0

    def to_state(self) -> list[Any]:
        """Plain values (msgpack), for a snapshot (PROTOCOL 9.6)."""
        return [
            self.state.tolist(),
            self.cov.flatten().tolist(),
            self.w,
            self.h,
            self.first_index,
            self.hits,
            self.missed,
            self.id,
        ]

    @classmethod
    def from_state(cls, values: list[Any], position_noise: float, accel_noise: float) -> _Track:
        state, cov, w, h, first_index, hits, missed, track_id = values
        track = cls(np.zeros(4), int(first_index), position_noise, accel_noise)
        track.state = np.array(state, np.float64).reshape(4)
        track.cov = np.array(cov, np.float64).reshape(4, 4)
        track.w, track.h = float(w), float(h)
        track.hits, track.missed = int(hits), int(missed)
        track.id = None if track_id is None else int(track_id)
        return track

    @property
    def box(self) -> np.ndarray:
        cx, cy = self.state[:2]
        return np.array([cx - self.w / 2, cy - self.h / 2, self.w, self.h])


def iou_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Intersection over union of every box in ``a`` with every box in ``b`` ([x, y, w, h])."""
    if len(a) == 0 or len(b) == 0:
        return np.zeros((len(a), len(b)))
    ax0, ay0, ax1, ay1 = a[:, 0, None], a[:, 1, None], (a[:, 0] + a[:, 2])[:, None], (a[:, 1] + a[:, 3])[:, None]
    bx0, by0, bx1, by1 = b[:, 0], b[:, 1], b[:, 0] + b[:, 2], b[:, 1] + b[:, 3]
    inter = np.clip(np.minimum(ax1, bx1) - np.maximum(ax0, bx0), 0, None) * np.clip(
        np.minimum(ay1, by1) - np.maximum(ay0, by0), 0, None
    )
    union = (a[:, 2] * a[:, 3])[:, None] + b[:, 2] * b[:, 3] - inter
    return inter / np.maximum(union, 1e-9)


#: The centroid gate stops widening after this many missed frames: a track lost for long
#: must not claim whoever walks by far from where it was last seen.
_GATE_GROWTH_FRAMES = 3
#: Cost of a pair the gates forbid: never chosen by the assignment.
_FORBIDDEN = 1e6


def assign(cost: np.ndarray) -> list[tuple[int, int]]:
    """The pairs (row, column) of least total cost, leaving out forbidden ones.

    A global assignment (the Hungarian method, scipy's ``linear_sum_assignment``) rather
    than best-pair-first: when two people pass close by, best-first takes the one good
    pair and forces the swap of the other, which is how a track jumps to another person.
    """
    if cost.size == 0:
        return []
    rows, cols = linear_sum_assignment(cost)
    return sorted((int(r), int(c)) for r, c in zip(rows, cols, strict=False) if cost[r, c] < _FORBIDDEN)


class Tracker(Processor):
    """Follows detections from frame to frame and gives each person a stable id.

    Association is one global assignment per frame (least total cost, scipy's
    ``linear_sum_assignment``) between predicted track boxes and detections: overlapping
    boxes by IoU first, then nearest centroids within ``max_distance`` box sizes (the gate
    widens by 20 % per missed frame, as the prediction grows less certain). Confirmed
    tracks are matched before tentative ones.

    Args:
        max_age: frames a confirmed track survives without a matched detection.
        min_hits: consecutive matches before a track is confirmed and reported.
        iou_threshold: smallest IoU for a match in the first pass.
        max_distance: centroid distance gate of the second pass, in box sizes (the larger side).
        coasting: also report confirmed tracks not matched in this frame (``missed`` > 0),
            at their predicted position, for at most ``coast_frames`` frames (the track
            itself lives on for ``max_age`` frames, to take its person back).
        coast_damping: factor applied to an unmatched track's velocity per missed frame.
        gate_growth: widening of the centroid gate per missed frame (for the first 3).
        position_noise, accel_noise: Kalman measurement and acceleration noise, as
            fractions of the box size.
    """

    def __init__(
        self,
        max_age: int = 15,
        min_hits: int = 3,
        iou_threshold: float = 0.2,
        max_distance: float = 1.0,
        coasting: bool = True,
        coast_frames: int = 5,
        coast_damping: float = 0.95,
        gate_growth: float = 0.2,
        position_noise: float = 0.05,
        accel_noise: float = 0.02,
    ) -> None:
        self.max_age, self.min_hits = int(max_age), int(min_hits)
        self.iou_threshold, self.max_distance = float(iou_threshold), float(max_distance)
        self.coasting, self.coast_frames = bool(coasting), int(coast_frames)
        self.coast_damping, self.gate_growth = float(coast_damping), float(gate_growth)
        self.position_noise, self.accel_noise = float(position_noise), float(accel_noise)

    def open(self) -> None:
        self._tracks: list[_Track] = []
        self._next_id = 1
        self._last_index: int | None = None

    def snapshot(self) -> dict[str, Any]:
        """Its tracks and id counter: after a crash on lossless edges the successor goes on from
        them (PROTOCOL 9.6), so ids continue instead of starting again at 1."""
        return {
            "tracks": [track.to_state() for track in self._tracks],
            "next_id": self._next_id,
            "last_index": self._last_index,
        }

    def restore(self, state: dict[str, Any]) -> None:
        self._tracks = [_Track.from_state(values, self.position_noise, self.accel_noise) for values in state["tracks"]]
        self._next_id = int(state["next_id"])
        self._last_index = None if state["last_index"] is None else int(state["last_index"])

    def _cost(self, tracks: list[_Track], boxes: np.ndarray) -> np.ndarray:
        """Cost of giving each detection to each track: 1 - IoU (+ half the centroid distance)
        for overlapping boxes, else 1 + the centroid distance in box sizes within the gate (which widens by 20 % per
        missed frame, as the prediction grows less certain), else forbidden."""
        predicted = np.array([track.box for track in tracks]).reshape(-1, 4)
        overlap = iou_matrix(predicted, boxes)
        centres = boxes[:, :2] + boxes[:, 2:] / 2
        cost = np.full((len(tracks), len(boxes)), _FORBIDDEN)
        for row, track in enumerate(tracks):
            gate = max(track.w, track.h) * (1 + self.gate_growth * min(track.missed, _GATE_GROWTH_FRAMES))
            distance = np.linalg.norm(centres - track.state[:2], axis=1) / gate
            near = distance <= self.max_distance
            cost[row, near] = 1 + distance[near]
            overlapping = overlap[row] >= self.iou_threshold
            # Distance to the predicted centre breaks near-ties of overlap: when two people
            # pass each other their boxes overlap both tracks alike, but the velocities differ.
            cost[row, overlapping] = 1 - overlap[row, overlapping] + 0.5 * distance[overlapping]
        return cost

    def _associate(self, boxes: np.ndarray) -> tuple[list[tuple[int, int]], list[int]]:
        """Confirmed tracks choose first, tentative ones share what is left (a matching
        cascade): a fresh, possibly spurious track never takes a person from an established one."""
        pairs: list[tuple[int, int]] = []
        free_boxes = list(range(len(boxes)))
        for confirmed in (True, False):
            group = [t for t, track in enumerate(self._tracks) if (track.id is not None) == confirmed]
            if not group or not free_boxes:
                continue
            cost = self._cost([self._tracks[t] for t in group], boxes[free_boxes])
            chosen = assign(cost)
            pairs += [(group[row], free_boxes[col]) for row, col in chosen]
            taken = {free_boxes[col] for _, col in chosen}
            free_boxes = [d for d in free_boxes if d not in taken]
        return pairs, free_boxes

    def process(self, item: dict[str, Any]) -> dict[str, Any]:
        index = int(item.get("index", 0))
        width, height = int(item["width"]), int(item["height"])
        boxes = np.asarray(item["boxes"], np.float64).reshape(-1, 4)
        # A gap in frame numbers (frames skipped upstream) is predicted over in one step.
        steps = 1 if self._last_index is None else max(1, index - self._last_index)
        self._last_index = index
        for track in self._tracks:
            track.predict(steps)

        pairs, unmatched = self._associate(boxes)
        matched_tracks = {t for t, _ in pairs}
        for t, d in pairs:
            self._tracks[t].update(boxes[d])
        survivors = []
        for t, track in enumerate(self._tracks):
            if t not in matched_tracks:
                track.missed += steps
                # Unseen, a person is more likely to have stopped or turned than to keep going:
                # fading the velocity keeps the predicted box near them, not drifting off.
                track.state[2:] *= self.coast_damping**steps
                cx, cy = track.state[:2]
                outside = not (0 <= cx < width and 0 <= cy < height)
                # A tentative track that misses is noise; a confirmed one may be occluded.
                if track.id is None or track.missed > self.max_age or outside:
                    continue
            survivors.append(track)
        for d in unmatched:
            survivors.append(_Track(boxes[d], index, self.position_noise, self.accel_noise))
        self._tracks = survivors

        reported = []
        for track in self._tracks:
            if track.id is None and track.hits >= self.min_hits:
                track.id, self._next_id = self._next_id, self._next_id + 1
            if track.id is not None and (track.missed == 0 or (self.coasting and track.missed <= self.coast_frames)):
                reported.append(_describe(track, index))
        reported.sort(key=lambda entry: entry["id"])
        return {
            "index": index,
            "timestamp": item.get("timestamp", 0.0),
            "width": width,
            "height": height,
            "tracks": reported,
        }


def _describe(track: _Track, index: int) -> dict[str, Any]:
    box = [round(float(v), 2) for v in track.box]
    return {
        "id": track.id,
        "box": box,
        "centroid": [round(float(track.state[0]), 2), round(float(track.state[1]), 2)],
        "velocity": [round(float(track.state[2]), 3), round(float(track.state[3]), 3)],
        "age": index - track.first_index + 1,
        "hits": track.hits,
        "missed": track.missed,
    }
