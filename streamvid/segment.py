"""Online event segmentation: shot changes seen in the pixels, and surprise in the retrieval keys.

Two signals start a new event:

- a *shot change* (``ShotDetector``), computed on every sampled frame before the duplicate gate:
  a hard cut or a fade moves the frame's colour histogram far from the open shot's, while a pan or
  lighting drift moves it slowly enough for the reference to follow. A shot change always splits.
- *surprise* (``EventSegmenter``): a kept frame's key far from the running mean of the open event's
  keys (SceneTilling, EM-LLM). The threshold adapts to the stream: mean + z·std of the surprise of
  recent frames, so a busy stream needs a bigger jump than a static one. Minimum and maximum event
  lengths (in kept frames) bound these boundaries.
"""

from __future__ import annotations

from collections import deque
from typing import Any

import cv2
import numpy as np


def surprise(key: np.ndarray, event_mean: np.ndarray) -> float:
    """1 − cos(key, event_mean). key, event_mean: [k]; event_mean need not be normalised."""
    return float(surprises(np.asarray(key, np.float64)[None], np.asarray(event_mean, np.float64)[None])[0])


def surprises(keys: np.ndarray, event_means: np.ndarray) -> np.ndarray:
    """Row-wise 1 − cos(keys[i], event_means[i]): keys, event_means [n, k] → [n] (1 where a norm is 0).
    Each row is computed on its own, so a row's value does not depend on the rows beside it."""
    dots = np.einsum("ij,ij->i", keys, event_means)
    norms = np.sqrt(np.einsum("ij,ij->i", event_means, event_means)) * np.sqrt(np.einsum("ij,ij->i", keys, keys))
    out = np.ones(len(keys), dtype=np.float64)
    ok = norms != 0.0
    out[ok] = 1.0 - dots[ok] / norms[ok]
    return out


def adaptive_threshold(recent: np.ndarray, z: float) -> float:
    """mean + z·std of the recent surprise values [w]."""
    return float(recent.mean() + z * recent.std())


class EventSegmenter:
    """Decides, frame by frame, where events begin.

    ``update(key)`` is called once per kept frame, before the frame joins an event, and returns
    True when the frame starts a new event (the open one closes before it). Boundaries happen
    when the open event has at least ``min_frames`` frames and the surprise is above both the
    adaptive threshold and ``min_surprise`` (so that near-constant streams are not cut on noise),
    or when the open event already holds ``max_frames`` frames, or when the caller says the pixels
    show a new shot. The adaptive threshold is only
    used once ``warmup`` surprise values are known. A surprise above ``hard_surprise`` (when set)
    always cuts once the open event has ``min_frames``: a clear scene change early in a stream, or
    in a stream whose gate keeps few frames, needs no statistics to be seen.
    The settings come from AgentConfig, which checks them (1 <= min_frames <= max_frames, window >= 2).
    """

    def __init__(self, *, min_frames: int = 2, max_frames: int = 64, z: float = 2.0, window: int = 32,
                 min_surprise: float = 0.02, warmup: int = 4, hard_surprise: float | None = None) -> None:
        self.min_frames = min_frames
        self.max_frames = max_frames
        self.z = z
        self.min_surprise = min_surprise
        self.hard_surprise = hard_surprise
        self.warmup = max(2, min(warmup, window))
        self._recent: deque[float] = deque(maxlen=window)
        self._key_sum: np.ndarray | None = None
        self._open_frames = 0
        self.last_surprise = 0.0

    @property
    def open_frames(self) -> int:
        """Frames in the open event."""
        return self._open_frames

    def update(self, key: np.ndarray, shot: bool = False, hold: bool = False) -> bool:
        """Feed one L2-normalised key [k]; True when this frame starts a new event.

        shot: the pixels say this frame starts a new shot (a ShotDetector cut): it splits whenever the
        open event has a frame, whatever the key says.
        hold: the pixels say the open shot goes on (e.g. the frame is inside a fade after its cut, where
        keys are unsteady): it does not split on surprise.
        """
        return bool(self.update_batch(np.asarray(key)[None], np.array([shot]), np.array([hold]))[0])

    def update_batch(self, keys: np.ndarray, shots: np.ndarray, holds: np.ndarray) -> np.ndarray:
        """``update`` over consecutive kept frames: keys [B, k], shots / holds [B] bool → [B] bool, True
        where a frame starts a new event. The surprises of a run of frames are computed together (the
        running sums of the open event's keys as one cumulative sum, added in the same order as frame
        by frame, so the result is the same); only the threshold decisions go frame by frame."""
        keys = np.asarray(keys, dtype=np.float64)
        out = np.zeros(len(keys), dtype=bool)
        j = 0
        while j < len(keys):
            if self._key_sum is None or self._open_frames == 0:
                self._key_sum = keys[j].copy()
                self._open_frames = 1
                self.last_surprise = 0.0
                j += 1
                continue
            # sums[i]: the open event's key sum before frame j + i, if no frame from j on starts an event.
            sums = np.cumsum(np.concatenate([self._key_sum[None], keys[j:]]), axis=0)
            scores = surprises(keys[j:], sums[:-1])
            for i, s in enumerate(scores.tolist()):
                f = j + i
                self.last_surprise = s
                boundary = bool(shots[f]) or self._open_frames >= self.max_frames
                if not boundary and not holds[f] and self._open_frames >= self.min_frames:
                    if self.hard_surprise is not None and s > self.hard_surprise:
                        boundary = True
                    elif len(self._recent) >= self.warmup:
                        threshold = adaptive_threshold(np.fromiter(self._recent, dtype=np.float64), self.z)
                        boundary = s > max(threshold, self.min_surprise)
                self._recent.append(s)
                if boundary:
                    out[f] = True
                    self._key_sum = keys[f].copy()
                    self._open_frames = 1
                    j = f + 1
                    break
                self._key_sum = sums[i + 1]
                self._open_frames += 1
            else:
                j = len(keys)
        return out

    def reset(self) -> None:
        """Forget the open event (after the caller closed it at end of stream); keep the statistics."""
        self._key_sum = None
        self._open_frames = 0

    def state(self) -> dict[str, Any]:
        return {
            "key_sum": None if self._key_sum is None else self._key_sum.tolist(),
            "open_frames": self._open_frames,
            "recent": list(self._recent),
            "last_surprise": self.last_surprise,
        }

    def load_state(self, state: dict[str, Any]) -> None:
        self._key_sum = None if state["key_sum"] is None else np.asarray(state["key_sum"], dtype=np.float64)
        self._open_frames = int(state["open_frames"])
        self._recent.clear()
        self._recent.extend(float(v) for v in state["recent"])
        self.last_surprise = float(state.get("last_surprise", 0.0))


# ---- shot changes from pixels ------------------------------------------------------------------
SHOT_SIDE = 64
_HUE_BINS, _SAT_BINS, _VAL_BINS = 16, 4, 32
_VAL_SMOOTH = np.exp(-0.5 * (np.arange(-6, 7) / 2.0) ** 2)  # a Gaussian over V bins, sigma 2 bins


def shot_histogram(rgb: np.ndarray) -> np.ndarray:
    """A frame's colour signature: an H×S histogram and a V histogram, each summing to 1, concatenated.

    rgb: [H, W, 3] uint8 → float64 [_HUE_BINS·_SAT_BINS + _VAL_BINS]. Position-free, so a pan over
    one scene barely moves it; a different scene (or a fade's far end) moves it a lot.
    """
    small = cv2.resize(np.ascontiguousarray(rgb), (SHOT_SIDE, SHOT_SIDE), interpolation=cv2.INTER_AREA)
    hsv = cv2.cvtColor(small, cv2.COLOR_RGB2HSV)
    hs = cv2.calcHist([hsv], [0, 1], None, [_HUE_BINS, _SAT_BINS], [0, 180, 0, 256]).ravel()
    # Smoothed over neighbouring brightness levels, so a small lighting change moves little mass.
    v = np.convolve(cv2.calcHist([hsv], [2], None, [_VAL_BINS], [0, 256]).ravel(), _VAL_SMOOTH, mode="same")
    return np.concatenate([hs / max(hs.sum(), 1.0), v / max(v.sum(), 1.0)]).astype(np.float64)


def histogram_distance(a: np.ndarray, b: np.ndarray) -> float:
    """Half the L1 distance of two shot histograms, the larger of their two parts': 0 (same) … 1 (disjoint).

    The larger, so that greyscale frames (all mass in one H×S bin) are compared by brightness alone."""
    n = _HUE_BINS * _SAT_BINS
    return 0.5 * max(float(np.abs(a[:n] - b[:n]).sum()), float(np.abs(a[n:] - b[n:]).sum()))


def grey_thumbnail(rgb: np.ndarray, side: int = 32) -> np.ndarray:
    """float32 [side, side] grey levels 0–255 of an RGB frame."""
    small = cv2.resize(np.ascontiguousarray(rgb), (side, side), interpolation=cv2.INTER_AREA)
    return cv2.cvtColor(small, cv2.COLOR_RGB2GRAY).astype(np.float32)


def is_dark(rgb: np.ndarray, level: float = 24.0) -> bool:
    """Almost black (a fade's middle): mean and 95th-percentile grey level both low."""
    grey = cv2.cvtColor(cv2.resize(np.ascontiguousarray(rgb), (SHOT_SIDE, SHOT_SIDE),
                                   interpolation=cv2.INTER_AREA), cv2.COLOR_RGB2GRAY)
    return float(grey.mean()) < level and float(np.percentile(grey, 95)) < 2 * level


class ShotDetector:
    """Hard cuts and gradual transitions from every sampled frame, one frame at a time.

    Like PySceneDetect's content and adaptive detectors, but causal (no look-ahead), so a live
    stream's boundary is known when its first frame arrives. The signal ``score`` is the distance
    between the frame's colour histogram and a *reference* that follows the open shot as an
    exponential moving average (rate ``drift``). A frame starts a new shot when the score is at least
    ``hard`` (a plain cut), or at least ``threshold`` and ``ratio`` times the recent frame-to-frame
    changes (mean of the last ``window``): lighting drift and pans move the histogram a little on every
    frame, so they raise that mean and do not cut, while a cut in a steady shot stands out.
    A second signal catches cuts between shots of alike colours (greyscale footage): the pixel
    content change from the previous frame (mean absolute grey difference, 0–1) at least
    ``content`` and ``ratio`` + 1 times its recent mean, with the histogram score at least a quarter of
    ``threshold``: a content spike in a steady shot, while a pan changes the content on every frame.
    After a cut the detector is *in a transition* until the histogram settles (frame-to-frame distance
    below ``settle``, frame not dark): a fade, which changes over several frames or passes through
    black, splits once.

    ``update(rgb)`` returns True when this frame starts a new shot.
    """

    def __init__(self, *, threshold: float = 0.3, hard: float = 0.6, ratio: float = 3.0, drift: float = 0.5,
                 settle: float = 0.08, window: int = 8, max_transition: int = 16, content: float = 0.04) -> None:
        if not 0.0 < threshold <= hard <= 1.0:
            raise ValueError(f"need 0 < threshold <= hard <= 1, got {threshold}, {hard}")
        if not 0.0 < drift <= 1.0:
            raise ValueError(f"drift must be in (0, 1], got {drift}")
        self.threshold = threshold
        self.hard = hard
        self.ratio = ratio
        self.drift = drift
        self.settle = settle
        self.max_transition = max_transition
        self.content = content
        self._steps: deque[float] = deque(maxlen=max(1, window))
        self._contents: deque[float] = deque(maxlen=max(1, window))
        self._prev_grey: np.ndarray | None = None
        self._ref: np.ndarray | None = None
        self._prev: np.ndarray | None = None
        self._transition = 0  # frames spent in the current transition; 0 = settled
        self.score = 0.0

    @property
    def in_transition(self) -> bool:
        return self._transition > 0

    def update(self, rgb: np.ndarray) -> bool:
        """Feed one frame [H, W, 3] uint8; True when it starts a new shot."""
        hist = shot_histogram(rgb)
        grey = grey_thumbnail(rgb)
        if self._ref is None:
            self._ref = self._prev = hist
            self._prev_grey = grey
            self.score = 0.0
            return False
        step = histogram_distance(hist, self._prev)
        change = float(np.abs(grey - self._prev_grey).mean()) / 255.0
        self.score = histogram_distance(hist, self._ref)
        self._prev, self._prev_grey = hist, grey
        if self._transition:
            self._transition += 1
            self._ref = hist
            if (step < self.settle and not is_dark(rgb)) or self._transition > self.max_transition:
                self._transition = 0
                self._steps.clear()
                self._contents.clear()
            return False
        busy = max(0.02, float(np.mean(self._steps))) if self._steps else 0.02
        moving = max(0.01, float(np.mean(self._contents))) if self._contents else 0.01
        if self.score >= self.hard or (self.score >= self.threshold and self.score >= self.ratio * busy) or \
                (change >= self.content and change >= (self.ratio + 1) * moving and self.score >= self.threshold / 4):
            self._ref = hist
            self._transition = 1  # settled or not, the next frame tells
            return True
        self._steps.append(step)
        self._contents.append(change)
        self._ref = (1.0 - self.drift) * self._ref + self.drift * hist
        return False

    def reset(self) -> None:
        """Forget the reference (a new source)."""
        self._ref = self._prev = self._prev_grey = None
        self._steps.clear()
        self._contents.clear()
        self._transition = 0
        self.score = 0.0
