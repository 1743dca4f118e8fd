"""Python equivalents of the nodes in other languages, for bench/foreign.py (loaded by file path)."""

from __future__ import annotations

from typing import Any

import cv2
import numpy as np

from flujo.api import Processor


class Gray(Processor):
    """What sdk/c's `gray` does: the BGR frame as grayscale, plus its mean, min and max."""

    def __init__(self, **cfg: Any) -> None:
        self.keep_frame = bool(cfg.get("frame", True))

    def process(self, item: dict[str, Any]) -> dict[str, Any]:
        gray = cv2.cvtColor(item["frame"], cv2.COLOR_BGR2GRAY)
        low, high, _, _ = cv2.minMaxLoc(gray)
        result = {**item, "gray_mean": float(np.mean(gray)), "gray_min": int(low), "gray_max": int(high)}
        if self.keep_frame:
            result["frame"] = gray
        else:
            del result["frame"]
        return result
