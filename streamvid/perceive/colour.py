"""Dominant colour names of a frame: each pixel of a small copy gets a basic colour name by its HSV
value; the names are ranked by the share of pixels they cover."""

from __future__ import annotations

import cv2
import numpy as np

from streamvid.perceive._cv import check_rgb

# Hue bins on OpenCV's 0–180 hue scale: (upper bound exclusive, name).
_HUES = ((8, "red"), (22, "orange"), (34, "yellow"), (80, "green"), (100, "cyan"), (130, "blue"),
         (150, "purple"), (170, "pink"), (181, "red"))
COLOUR_NAMES = ("black", "white", "grey", "brown", "red", "orange", "yellow", "green", "cyan", "blue",
                "purple", "pink")


def colour_names_of_pixels(rgb: np.ndarray) -> np.ndarray:
    """RGB uint8 [..., 3] → colour-name indices into COLOUR_NAMES, same leading shape."""
    flat = np.ascontiguousarray(rgb.reshape(-1, 1, 3))
    hsv = cv2.cvtColor(flat, cv2.COLOR_RGB2HSV).reshape(-1, 3).astype(np.int32)
    h, s, v = hsv[:, 0], hsv[:, 1], hsv[:, 2]
    names = np.empty(len(hsv), dtype=np.int64)
    hue_idx = np.zeros(len(hsv), dtype=np.int64)
    lower = 0
    for upper, name in _HUES:
        hue_idx[(h >= lower) & (h < upper)] = COLOUR_NAMES.index(name)
        lower = upper
    names[:] = hue_idx
    # Dark orange/red/yellow reads as brown.
    brown = np.isin(hue_idx, [COLOUR_NAMES.index(c) for c in ("orange", "yellow", "red")]) & (v < 150) & (s > 80)
    names[brown & (h >= 8) & (h < 34)] = COLOUR_NAMES.index("brown")
    achromatic = s < 50
    names[achromatic & (v >= 200)] = COLOUR_NAMES.index("white")
    names[achromatic & (v < 200)] = COLOUR_NAMES.index("grey")
    names[v < 45] = COLOUR_NAMES.index("black")
    return names.reshape(rgb.shape[:-1])


def dominant_colours(rgb: np.ndarray, top: int = 3, min_share: float = 0.1, size: int = 64) -> list[tuple[str, float]]:
    """The frame's main colours as (name, share of pixels), largest share first, shares ≥ ``min_share``."""
    check_rgb(rgb, "dominant_colours")
    small = cv2.resize(rgb, (size, size), interpolation=cv2.INTER_AREA)
    counts = np.bincount(colour_names_of_pixels(small).ravel(), minlength=len(COLOUR_NAMES))
    shares = counts / counts.sum()
    order = np.argsort(-shares, kind="stable")
    return [(COLOUR_NAMES[i], float(shares[i])) for i in order[:top] if shares[i] >= min_share]


def is_greyscale(rgb: np.ndarray, mean_sat: float = 8.0, high_sat: float = 30.0, size: int = 64) -> bool:
    """True for a frame without colour (greyscale footage, give or take codec tint): HSV saturation's
    mean below ``mean_sat`` and its 99th percentile below ``high_sat`` (0–255 scale)."""
    check_rgb(rgb, "is_greyscale")
    small = cv2.resize(rgb, (size, size), interpolation=cv2.INTER_AREA)
    sat = cv2.cvtColor(small, cv2.COLOR_RGB2HSV)[..., 1]
    return float(sat.mean()) < mean_sat and float(np.percentile(sat, 99)) < high_sat
