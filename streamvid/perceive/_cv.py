"""OpenCV helpers shared by the perception models: a bounded resize, NMS and the classic detectors' check."""

from __future__ import annotations

import cv2
import numpy as np
import torch
import torchvision
from torchvision.ops import box_area, box_convert

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


def nms(boxes: np.ndarray, scores: np.ndarray, iou_max: float = 0.4, inside_max: float = 0.8) -> list[int]:
    """Non-maximum suppression. boxes [n, 4] as (x, y, w, h), scores [n] → kept indices, best first.

    torchvision.ops.nms drops a box whose IoU with a better kept one is above ``iou_max``; then a box
    with more than ``inside_max`` of its area inside a better kept box goes too (HOG fires on a
    person and on their torso, boxes whose IoU is small).
    """
    if len(boxes) == 0:
        return []
    xyxy = box_convert(torch.as_tensor(np.asarray(boxes), dtype=torch.float64), "xywh", "xyxy")
    order = torchvision.ops.nms(xyxy, torch.as_tensor(np.asarray(scores), dtype=torch.float64), iou_max)
    kept = xyxy[order]
    # inside[i, j]: the share of box i's area that lies inside box j
    inter = (torch.minimum(kept[:, None, 2:], kept[None, :, 2:]) - torch.maximum(kept[:, None, :2], kept[None, :, :2]))
    inside = inter.clamp(min=0).prod(-1) / box_area(kept).clamp(min=1e-9)[:, None]
    keep: list[int] = []
    for i in range(len(order)):  # the few boxes NMS left, best first
        if not any(bool(inside[i, j] > inside_max) for j in keep):
            keep.append(i)
    return [int(order[i]) for i in keep]
