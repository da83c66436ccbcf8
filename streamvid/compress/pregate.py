"""The pre-gate: a cheap pixel check that runs before any encoder and drops frames that did not change.

It works on tiny copies of the frames (``side``×``side`` colour thumbnails, area-averaged, so codec
noise and sensor grain mostly average out) and measures change block by block, not globally: a
frame is compared with the last frame the gate let through, the mean absolute difference is taken
in every ``block``×``block`` cell, and

* ``LOCAL``  — some cell changed clearly more than the frame as a whole: something small and new
  appeared (text on a plain background, a small moving object). Keep it; a global similarity such
  as a CLIP cosine would call such a frame a near-duplicate.
* ``GLOBAL`` — the whole frame changed alike (a cut, a fade, a pan, a lighting change). Let a
  semantic check (the retrieval key gate) decide.
* ``SAME``   — nothing beyond noise changed (exact repeats, codec noise). Drop it before any encoder.

The threshold is relative to noise: the median cell change is the frame's noise floor (noise and
flicker touch every cell alike, a new object touches few), and a cell must exceed it by
``delta + noise_k · floor`` grey levels to count as a local change.

API (pure functions + one small class; all arrays are numpy, CPU only)::

    small = small_copy(rgb)                      # H×W×3 uint8 → uint8 [side, side, 3] (area-averaged)
    thumb = gate_thumbnail(rgb)                  # the same as float32
    cells = block_change(thumb, last)            # → float32 [side/block, side/block], grey levels
    verdict = classify_change(cells)             # → Change.SAME | Change.LOCAL | Change.GLOBAL
    gate = PreGate(); gate.check(rgb) → Change   # stateful: compares with the last frame let through
    gate.check_thumbnail(thumb) → Change         # the same from a thumbnail made elsewhere (same side)

Cost: exact 2×2 halvings of the full frame (``imageops.reduced_copy``, which the pipeline makes once
per frame and shares with the memory thumbnail), one area resize of that to 64×64 (shared with the
shot detector), then arithmetic on 64×64×3 numbers.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

import cv2
import numpy as np

from streamvid.errors import ConfigError
from streamvid.imageops import REDUCED_SHORT_SIDE, reduced_copy

GATE_SIDE = 64
GATE_BLOCK = 4
LOCAL_DELTA = 8.0  # grey levels (of 255) a cell must change beyond the frame's noise floor
NOISE_K = 1.0  # ... plus this multiple of the floor, so noisier footage needs a clearer change
GLOBAL_DELTA = 8.0  # median cell change (grey levels) above which the whole frame counts as changed


class Change(enum.Enum):
    """What the pre-gate saw in a frame compared with the last one it let through."""

    SAME = 0  # drop: nothing changed beyond noise
    LOCAL = 1  # keep: a few cells changed clearly (something small and new)
    GLOBAL = 2  # the whole frame changed alike: a semantic check decides

    @property
    def passes(self) -> bool:
        return self is not Change.SAME


def gate_thumbnail(rgb: np.ndarray, side: int = GATE_SIDE) -> np.ndarray:
    """H×W×3 uint8 frame → float32 [side, side, 3] area-averaged thumbnail (aspect not kept)."""
    if not isinstance(rgb, np.ndarray) or rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
        got = f"{rgb.dtype} {rgb.shape}" if isinstance(rgb, np.ndarray) else type(rgb).__name__
        raise ConfigError(f"the pre-gate needs an H×W×3 uint8 RGB frame, got {got}")
    return small_copy(rgb, side).astype(np.float32)


def small_copy(rgb: np.ndarray, side: int = GATE_SIDE) -> np.ndarray:
    """H×W×3 uint8 → uint8 [side, side, 3], area-averaged from :func:`imageops.reduced_copy` (so the
    same from the frame or from its reduced copy, which the pipeline makes once per frame, for any
    ``side`` ≤ ``REDUCED_SHORT_SIDE``). The
    pipeline gives this same copy to the shot detector (``segment.shot_histogram`` takes 64×64)."""
    return cv2.resize(np.ascontiguousarray(reduced_copy(rgb, max(side, REDUCED_SHORT_SIDE))), (side, side),
                      interpolation=cv2.INTER_AREA)


def block_change(a: np.ndarray, b: np.ndarray, block: int = GATE_BLOCK) -> np.ndarray:
    """Mean absolute difference per ``block``×``block`` cell of two thumbnails.

    a, b: float32 [S, S, 3] (S divisible by ``block``) → float32 [S/block, S/block] in grey levels,
    averaged over the cell's pixels and the three channels.
    """
    if a.shape != b.shape or a.ndim != 3 or a.shape[0] % block or a.shape[1] % block:
        raise ConfigError(f"block_change needs two thumbnails of one shape divisible by {block}, "
                          f"got {a.shape} and {b.shape}")
    h, w = a.shape[0] // block, a.shape[1] // block
    diff = np.abs(a - b).reshape(h, block, w, block, a.shape[2])
    return diff.mean(axis=(1, 3, 4))


def classify_change(cells: np.ndarray, delta: float = LOCAL_DELTA, noise_k: float = NOISE_K,
                    global_delta: float = GLOBAL_DELTA) -> Change:
    """The verdict for one frame from its per-cell changes [h, w] (see :func:`block_change`).

    floor = median cell change (the frame's noise); LOCAL when the largest cell exceeds it by more
    than ``delta + noise_k · floor``, else GLOBAL when the floor itself is above ``global_delta``,
    else SAME.
    """
    floor = float(np.median(cells))
    if float(cells.max()) - floor > delta + noise_k * floor:
        return Change.LOCAL
    if floor > global_delta:
        return Change.GLOBAL
    return Change.SAME


@dataclass
class PreGateStats:
    seen: int = 0
    passed: int = 0
    local: int = 0


class PreGate:
    """The stateful pre-gate for one stream: ``check(rgb)`` → :class:`Change`, in frame order.

    A frame is compared with the last frame that PASSED (not the last one seen), so a slow drift
    accumulates until it counts. The first frame always passes as GLOBAL. Holds one thumbnail.
    ``reset()`` forgets it (e.g. a new source); counts are kept in ``stats``.
    """

    def __init__(self, side: int = GATE_SIDE, block: int = GATE_BLOCK, delta: float = LOCAL_DELTA,
                 noise_k: float = NOISE_K, global_delta: float = GLOBAL_DELTA) -> None:
        if side < block or side % block:
            raise ConfigError(f"the pre-gate side ({side}) must be a multiple of its block ({block})")
        self.side, self.block = side, block
        self.delta, self.noise_k, self.global_delta = delta, noise_k, global_delta
        self.last: np.ndarray | None = None
        self.stats = PreGateStats()

    def check(self, rgb: np.ndarray) -> Change:
        return self.check_thumbnail(gate_thumbnail(rgb, self.side))

    def check_thumbnail(self, thumb: np.ndarray) -> Change:
        """The verdict for a thumbnail from :func:`gate_thumbnail` (same ``side``)."""
        if self.last is None:
            verdict = Change.GLOBAL
        else:
            verdict = classify_change(block_change(thumb, self.last, self.block), self.delta, self.noise_k,
                                      self.global_delta)
        self.stats.seen += 1
        if verdict.passes:
            self.last = thumb
            self.stats.passed += 1
            self.stats.local += verdict is Change.LOCAL
        return verdict

    def reset(self) -> None:
        self.last = None
