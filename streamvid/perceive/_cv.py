"""OpenCV helpers shared by the perception models: a bounded resize and the classic detectors' check."""

from __future__ import annotations

import cv2
import numpy as np

from streamvid.errors import ModelError

_OPENCV_FIX = (
    "OpenCV {version} has no {what}: OpenCV 5 moved the HOG people detector and the Haar cascades out of "
    "the main wheels. Install OpenCV 4 with them: pip install 'opencv-python-headless>=4.10,<5' "
    "'opencv-python>=4.10,<5'"
)


def require_cv(attr: str, what: str) -> None:
    """Raise ModelError naming the fix when this OpenCV build lacks ``cv2.<attr>``."""
    if not hasattr(cv2, attr):
        raise ModelError(_OPENCV_FIX.format(version=cv2.__version__, what=what))


def check_rgb(rgb: np.ndarray, who: str) -> None:
    if not isinstance(rgb, np.ndarray) or rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
        got = f"{rgb.dtype} {tuple(rgb.shape)}" if isinstance(rgb, np.ndarray) else type(rgb).__name__
        raise ModelError(f"{who} expects an H×W×3 uint8 RGB frame; got {got}")


def downscale(rgb: np.ndarray, max_side: int) -> tuple[np.ndarray, float]:
    """Shrink so the longer side is at most ``max_side`` (never enlarge).

    Returns (image, scale) where original coordinates = image coordinates / scale.
    """
    h, w = rgb.shape[:2]
    scale = min(1.0, max_side / max(h, w))
    if scale >= 1.0:
        return rgb, 1.0
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    return cv2.resize(rgb, size, interpolation=cv2.INTER_AREA), scale


def nms(boxes: np.ndarray, scores: np.ndarray, iou_max: float = 0.4) -> list[int]:
    """Greedy non-maximum suppression. boxes [n, 4] as (x, y, w, h); returns kept indices, best first."""
    if len(boxes) == 0:
        return []
    x1, y1 = boxes[:, 0].astype(float), boxes[:, 1].astype(float)
    x2, y2 = x1 + boxes[:, 2], y1 + boxes[:, 3]
    area = (x2 - x1) * (y2 - y1)
    order = np.argsort(-scores, kind="stable")
    keep: list[int] = []
    while order.size:
        i = int(order[0])
        keep.append(i)
        rest = order[1:]
        iw = np.clip(np.minimum(x2[i], x2[rest]) - np.maximum(x1[i], x1[rest]), 0, None)
        ih = np.clip(np.minimum(y2[i], y2[rest]) - np.maximum(y1[i], y1[rest]), 0, None)
        inter = iw * ih
        iou = inter / np.maximum(area[i] + area[rest] - inter, 1e-9)
        # Also drop a box mostly inside a better one (HOG fires on a person and on their torso).
        inside = inter / np.maximum(area[rest], 1e-9)
        order = rest[(iou <= iou_max) & (inside <= 0.8)]
    return keep
