"""Motion amount and direction between two frames from dense optical flow (Farnebäck)."""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from streamvid.errors import ModelError
from streamvid.perceive._cv import check_rgb


@dataclass(frozen=True)
class Motion:
    """How much of the frame moved and which way.

    amount:    share of pixels that changed (grey level differs by at least ``diff_level``), 0–1
    dx, dy:    mean optical flow over the changed pixels, as a fraction of the frame width per step
               (+x right, +y down)
    direction: "left", "right", "up", "down" or None when nothing moves or the motion has no clear way
    """

    amount: float
    dx: float
    dy: float
    direction: str | None


STILL = Motion(0.0, 0.0, 0.0, None)


def estimate_motion(rgb: np.ndarray, prev_rgb: np.ndarray, width: int = 160, diff_level: int = 20,
                    min_amount: float = 0.005, min_shift: float = 0.01) -> Motion:
    """Frame difference and optical flow from ``prev_rgb`` to ``rgb`` on grey copies ``width`` pixels wide.

    The changed pixels (blurred grey difference ≥ ``diff_level``) give the amount; the flow averaged over
    them gives the direction, named only when at least ``min_amount`` of the frame changed and the mean
    shift is at least ``min_shift`` of the width, with one axis dominating.
    """
    check_rgb(rgb, "estimate_motion")
    check_rgb(prev_rgb, "estimate_motion (previous frame)")
    if prev_rgb.shape != rgb.shape:
        prev_rgb = cv2.resize(prev_rgb, (rgb.shape[1], rgb.shape[0]), interpolation=cv2.INTER_AREA)
    h, w = rgb.shape[:2]
    size = (width, max(8, round(h * width / w)))
    if width < 16:
        raise ModelError(f"estimate_motion needs width >= 16, got {width}")
    cur = cv2.cvtColor(cv2.resize(rgb, size, interpolation=cv2.INTER_AREA), cv2.COLOR_RGB2GRAY)
    prev = cv2.cvtColor(cv2.resize(prev_rgb, size, interpolation=cv2.INTER_AREA), cv2.COLOR_RGB2GRAY)
    diff = cv2.absdiff(cv2.GaussianBlur(cur, (5, 5), 0), cv2.GaussianBlur(prev, (5, 5), 0))
    moving = diff >= diff_level
    amount = float(moving.mean())
    if amount == 0.0:
        return STILL
    flow = cv2.calcOpticalFlowFarneback(prev, cur, None, pyr_scale=0.5, levels=3, winsize=15, iterations=3,
                                        poly_n=5, poly_sigma=1.2, flags=0)
    dx = float(flow[..., 0][moving].mean()) / width
    dy = float(flow[..., 1][moving].mean()) / width
    direction = None
    if amount >= min_amount and max(abs(dx), abs(dy)) >= min_shift:
        if abs(dx) >= 1.5 * abs(dy):
            direction = "right" if dx > 0 else "left"
        elif abs(dy) >= 1.5 * abs(dx):
            direction = "down" if dy > 0 else "up"
    return Motion(amount, dx, dy, direction)
