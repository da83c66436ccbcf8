"""Frontal faces with the Viola–Jones Haar cascade that ships with OpenCV."""

from __future__ import annotations

import os
import threading

import cv2
import numpy as np

from streamvid.errors import ModelError
from streamvid.perceive._cv import check_rgb, downscale, nms, require_cv
from streamvid.perceive.people import Detection, _to_original

CASCADE = "haarcascade_frontalface_default.xml"


class FaceDetector:
    """Frontal faces at least ``min_size`` px after the frame is shrunk to ``max_side``."""

    def __init__(self, max_side: int = 640, min_neighbors: int = 6, min_size: int = 30) -> None:
        require_cv("CascadeClassifier", "Haar cascade classifier")
        path = os.path.join(getattr(getattr(cv2, "data", None), "haarcascades", ""), CASCADE)
        if not os.path.isfile(path):
            raise ModelError(
                f"the Haar cascade {CASCADE} is not in this OpenCV install ({cv2.__version__}); "
                "install an OpenCV 4 wheel, which ships cv2.data.haarcascades: "
                "pip install 'opencv-python-headless>=4.10,<5'"
            )
        self._cascade = cv2.CascadeClassifier(path)
        if self._cascade.empty():
            raise ModelError(f"cannot load the Haar cascade {path}")
        self.max_side = max_side
        self.min_neighbors = min_neighbors
        self.min_size = min_size
        self._lock = threading.Lock()

    def detect(self, rgb: np.ndarray) -> list[Detection]:
        """Faces in the frame, highest score (the cascade's final-stage weight) first."""
        check_rgb(rgb, "FaceDetector.detect")
        small, scale = downscale(rgb, self.max_side)
        gray = cv2.equalizeHist(cv2.cvtColor(small, cv2.COLOR_RGB2GRAY))
        with self._lock:
            rects, _, weights = self._cascade.detectMultiScale3(
                gray, scaleFactor=1.15, minNeighbors=self.min_neighbors, minSize=(self.min_size, self.min_size),
                outputRejectLevels=True,
            )
        rects = np.asarray(rects, dtype=np.int64).reshape(-1, 4)
        scores = np.asarray(weights, dtype=np.float64).reshape(-1)
        if len(scores) != len(rects):
            scores = (rects[:, 2] * rects[:, 3]).astype(np.float64)
        keep = nms(rects, scores)
        return _to_original(rects[keep], scores[keep], scale)
