"""Distinct compact objects (discs, blobs, markers) standing out from the frame's background colour.

Pixels far (in CIE Lab) from the frame's median colour are foreground; its connected parts that are
compact (filled, roughly as wide as tall) and not tiny count as objects. Thin strokes, such as the
letters of on-screen text, are not compact and do not count.
"""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np

from streamvid.perceive._cv import check_rgb

WORK_SIDE = 160


def count_objects(rgb: np.ndarray, ignore: Sequence[np.ndarray] = (), min_distance: float = 80.0,
                  min_area: float = 0.002, max_area: float = 0.2, min_solidity: float = 0.85,
                  min_extent: float = 0.6) -> int:
    """Objects in an H×W×3 uint8 frame: connected foreground parts covering ``min_area``–``max_area`` of
    the frame, with solidity (area / convex hull area) ≥ ``min_solidity``, extent (area / bounding-box
    area) ≥ ``min_extent`` and aspect ratio within 1:2. ``ignore``: [4, 2] corner boxes (x, y) in the
    frame's pixels, e.g. where text was read, left out."""
    check_rgb(rgb, "count_objects")
    h, w = rgb.shape[:2]
    scale = WORK_SIDE / max(h, w)
    step = max(1, int(1 / scale) // 4)  # a strided view first: less to average on large frames
    small = cv2.resize(rgb[::step, ::step], (max(8, round(w * scale)), max(8, round(h * scale))),
                       interpolation=cv2.INTER_AREA)
    lab = cv2.cvtColor(small, cv2.COLOR_RGB2LAB).astype(np.float32)
    background = np.median(lab[::3, ::3].reshape(-1, 3), axis=0)
    fg = (np.linalg.norm(lab - background, axis=2) >= min_distance).astype(np.uint8)
    for box in ignore:
        pts = np.round(np.asarray(box, np.float32) * scale).astype(np.int32)
        x0, y0 = np.maximum(pts.min(axis=0) - 2, 0)
        x1, y1 = pts.max(axis=0) + 3
        fg[y0:y1, x0:x1] = 0
    fg = cv2.morphologyEx(fg, cv2.MORPH_OPEN, np.ones((3, 3), np.uint8))
    n, labels, stats, _ = cv2.connectedComponentsWithStats(fg, connectivity=8)
    total = fg.shape[0] * fg.shape[1]
    count = 0
    for i in range(1, n):
        x, y, bw, bh, area = (int(v) for v in stats[i])
        if not min_area * total <= area <= max_area * total or max(bw, bh) > 2 * min(bw, bh):
            continue
        if area / float(bw * bh) < min_extent:
            continue
        contours, _ = cv2.findContours((labels[y:y + bh, x:x + bw] == i).astype(np.uint8), cv2.RETR_EXTERNAL,
                                       cv2.CHAIN_APPROX_SIMPLE)
        hull = cv2.contourArea(cv2.convexHull(max(contours, key=cv2.contourArea)))
        if hull > 0 and area / hull >= min_solidity:
            count += 1
    return count
