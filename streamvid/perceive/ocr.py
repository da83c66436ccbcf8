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
        return merge_lines(boxes)


def merge_lines(boxes: list[TextBox], max_gap: float = 1.0) -> list[TextBox]:
    """Join boxes the detector split within one line of text: consecutive boxes (reading order) whose
    vertical extents overlap by at least half and whose horizontal gap is under ``max_gap`` × the line
    height ("ZONE" + "B" → "ZONE B"). The joined box is the union's rectangle; its confidence the lower."""
    out: list[TextBox] = []
    for b in boxes:
        if out:
            a = out[-1]
            ay0, ay1 = float(a.box[:, 1].min()), float(a.box[:, 1].max())
            by0, by1 = float(b.box[:, 1].min()), float(b.box[:, 1].max())
            height = max(1.0, min(ay1 - ay0, by1 - by0))
            overlap = min(ay1, by1) - max(ay0, by0)
            gap = float(b.box[:, 0].min()) - float(a.box[:, 0].max())
            if overlap >= 0.5 * height and -0.5 * height <= gap <= max_gap * height:
                x0, y0 = min(a.box[:, 0].min(), b.box[:, 0].min()), min(ay0, by0)
                x1, y1 = max(a.box[:, 0].max(), b.box[:, 0].max()), max(ay1, by1)
                rect = np.array([[x0, y0], [x1, y0], [x1, y1], [x0, y1]], dtype=np.float32)
                out[-1] = TextBox(f"{a.text} {b.text}", rect, min(a.confidence, b.confidence))
                continue
        out.append(b)
    return out
