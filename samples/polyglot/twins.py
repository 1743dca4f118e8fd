"""Python equivalents of the sample's foreign nodes, and the nodes measure.py feeds them with.

* ``Counts``: what counts.js does (zip stats and detections, JSON lines, HTTP endpoint).
* The C node's equivalent is bench/foreign_nodes.py's ``Gray`` (OpenCV), shared with the benchmark.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from flujo.api import Consumer, Producer


class Counts(Consumer):
    """counts.js in Python: one JSON line per frame, running totals served at GET /counts."""

    def __init__(self, path: str, port: int = 0, host: str = "127.0.0.1", timing: str | None = None) -> None:
        self.path, self.port, self.host, self.timing = Path(path), port, host, timing
        self.totals: dict[str, Any] = {"frames": 0, "people": 0, "people_max": 0, "last": None}

    def open(self) -> None:
        totals = self.totals

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                body = json.dumps(totals).encode()
                self.send_response(200 if self.path in ("/", "/counts") else 404)
                self.send_header("content-type", "application/json")
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer((self.host, self.port), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.file = self.path.open("w")
        self.first = 0.0

    def consume(self, stats: dict[str, Any], people: dict[str, Any]) -> None:
        if stats["index"] != people["index"]:
            raise ValueError(f"frame {stats['index']} zipped with detections of {people['index']}")
        count = int(people["boxes"].shape[0])
        line = {
            "index": stats["index"],
            "timestamp": stats["timestamp"],
            "gray_mean": stats["gray_mean"],
            "gray_min": stats["gray_min"],
            "gray_max": stats["gray_max"],
            "people": count,
        }
        self.first = self.first or time.perf_counter()
        totals = self.totals
        totals["frames"] += 1
        totals["people"] += count
        totals["people_max"] = max(totals["people_max"], count)
        totals["last"] = line
        self.file.write(json.dumps(line) + "\n")

    def close(self) -> None:
        self.file.close()
        self.server.shutdown()
        self.server.server_close()
        if self.timing:
            Path(self.timing).write_text(
                json.dumps({"frames": self.totals["frames"], "seconds": time.perf_counter() - self.first})
            )


# -- what measure.py feeds the nodes with -------------------------------------------------------
class ClipFrames(Producer):
    """The clip's first ``frames`` frames, decoded once, sent ``repeat`` times: a source faster than decoding."""

    def __init__(self, source: str, frames: int = 100, repeat: int = 5) -> None:
        self.source, self.frames, self.repeat = source, frames, repeat

    def open(self) -> None:
        capture = cv2.VideoCapture(self.source)
        self.cache = []
        while len(self.cache) < self.frames:
            ok, frame = capture.read()
            if not ok:
                break
            self.cache.append(frame)
        capture.release()

    def produce(self) -> Iterator[dict[str, Any]]:
        for index in range(len(self.cache) * self.repeat):
            yield {"frame": self.cache[index % len(self.cache)], "index": index, "timestamp": index / 10}


class StatsItems(Producer):
    """Items as the gray node sends them (statistics only)."""

    def __init__(self, n: int) -> None:
        self.n = n

    def produce(self) -> Iterator[dict[str, Any]]:
        for index in range(self.n):
            yield {
                "index": index,
                "timestamp": index / 10,
                "source": "vtest.avi",
                "fps": 10.0,
                "gray_mean": 119.9 + index % 7,
                "gray_min": 0,
                "gray_max": 255,
            }


class PeopleItems(Producer):
    """Items as the detector sends them: 0 to 5 boxes a frame."""

    def __init__(self, n: int) -> None:
        self.n = n

    def produce(self) -> Iterator[dict[str, Any]]:
        for index in range(self.n):
            count = index % 6
            yield {
                "index": index,
                "timestamp": index / 10,
                "width": 768,
                "height": 576,
                "boxes": np.full((count, 4), 10.0, np.float32),
                "scores": np.ones(count, np.float32),
            }


class Timing(Consumer):
    """Counts items and the time from the first to the last; writes {"frames", "seconds"} at the end."""

    def __init__(self, timing: str) -> None:
        self.timing, self.count, self.first, self.last = Path(timing), 0, 0.0, 0.0

    def consume(self, item: Any) -> None:
        self.last = time.perf_counter()
        self.first = self.first or self.last
        self.count += 1

    def close(self) -> None:
        self.timing.write_text(json.dumps({"frames": self.count, "seconds": self.last - self.first}))
