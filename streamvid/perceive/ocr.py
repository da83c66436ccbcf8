"""On-screen text with RapidOCR (PP-OCRv4 detector + recogniser, ONNX models bundled in the wheel)."""

from __future__ import annotations

import threading
from dataclasses import dataclass

import numpy as np

from streamvid.errors import ModelError
from streamvid.perceive._cv import check_rgb, downscale


@dataclass(frozen=True)
class TextBox:
    """A line of text read in a frame.

    box: [4, 2] float32 corner points (x, y) in the original frame's pixels, clockwise from top-left.
    """

    text: str
    box: np.ndarray
    confidence: float


class TextReader:
    """Reads text lines from RGB frames. Frames are shrunk to ``max_side`` first (speed; the detector
    would otherwise enlarge small frames to 736 px on the short side)."""

    def __init__(self, max_side: int = 640, min_confidence: float = 0.6, threads: int = 0) -> None:
        try:
            from rapidocr_onnxruntime import RapidOCR
        except ImportError as exc:
            raise ModelError(
                f"on-screen text reading needs rapidocr-onnxruntime: pip install rapidocr-onnxruntime ({exc})"
            ) from exc
        kwargs = dict(det_limit_type="max", text_score=min_confidence)
        if threads > 0:
            kwargs.update(intra_op_num_threads=threads, inter_op_num_threads=1)
        self._ocr = RapidOCR(**kwargs)
        self.max_side = max_side
        self.min_confidence = min_confidence
        self._lock = threading.Lock()

    def read(self, rgb: np.ndarray) -> list[TextBox]:
        """Text lines in reading order (top to bottom, then left to right)."""
        check_rgb(rgb, "TextReader.read")
        small, scale = downscale(rgb, self.max_side)
        # RapidOCR takes OpenCV's BGR order.
        with self._lock:
            result, _ = self._ocr(np.ascontiguousarray(small[:, :, ::-1]))
        boxes: list[TextBox] = []
        for points, text, score in result or []:
            text = " ".join(str(text).split())
            if not text or float(score) < self.min_confidence:
                continue
            box = np.asarray(points, dtype=np.float32) / scale
            boxes.append(TextBox(text=text, box=box, confidence=float(score)))
        boxes.sort(key=lambda b: (round(float(b.box[:, 1].min()) / 16), float(b.box[:, 0].min())))
        return boxes
