"""People with OpenCV's HOG + linear SVM pedestrian detector (Dalal–Triggs, trained weights in OpenCV)."""

from __future__ import annotations

import threading
from dataclasses import dataclass

import cv2
import numpy as np

from streamvid.perceive._cv import check_rgb, downscale, nms, require_cv


@dataclass(frozen=True)
class Detection:
    """A detected object. box is (x, y, w, h) in the original frame's pixels; score is the detector's."""

    box: tuple[int, int, int, int]
    score: float


def _to_original(rects: np.ndarray, scores: np.ndarray, scale: float) -> list[Detection]:
    return [
        Detection(box=tuple(int(round(v / scale)) for v in r), score=float(s))  # type: ignore[arg-type]
        for r, s in zip(rects, scores, strict=True)
    ]


class PeopleDetector:
    """Upright people, at least ~128 px tall after the frame is shrunk to ``max_side``."""

    def __init__(self, max_side: int = 800, min_score: float = 0.5) -> None:
        require_cv("HOGDescriptor", "HOG people detector")
        self._hog = cv2.HOGDescriptor()
        self._hog.setSVMDetector(cv2.HOGDescriptor_getDefaultPeopleDetector())
        self.max_side = max_side
        self.min_score = min_score
        self._lock = threading.Lock()

    def detect(self, rgb: np.ndarray) -> list[Detection]:
        """People in the frame, highest score first."""
        check_rgb(rgb, "PeopleDetector.detect")
        small, scale = downscale(rgb, self.max_side)
        gray = cv2.cvtColor(small, cv2.COLOR_RGB2GRAY)
        with self._lock:
            rects, weights = self._hog.detectMultiScale(gray, winStride=(8, 8), padding=(8, 8), scale=1.05)
        rects = np.asarray(rects, dtype=np.int64).reshape(-1, 4)
        scores = np.asarray(weights, dtype=np.float64).reshape(-1)
        mask = scores >= self.min_score
        rects, scores = rects[mask], scores[mask]
        keep = nms(rects, scores)
        return _to_original(rects[keep], scores[keep], scale)
