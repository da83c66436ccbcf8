"""Online event segmentation from the stream of retrieval keys.

A new event starts where a frame is *surprising* given the open event: its key is far from
the running mean of the open event's keys (SceneTilling, EM-LLM). The threshold adapts to
the stream: mean + z·std of the surprise of recent frames, so a busy stream needs a bigger
jump than a static one. Minimum and maximum event lengths (in kept frames) bound the result.
"""

from __future__ import annotations

from collections import deque
from typing import Any

import numpy as np


def surprise(key: np.ndarray, event_mean: np.ndarray) -> float:
    """1 − cos(key, event_mean). key, event_mean: [k]; event_mean need not be normalised."""
    norm = float(np.linalg.norm(event_mean)) * float(np.linalg.norm(key))
    if norm == 0.0:
        return 1.0
    return 1.0 - float(np.dot(key, event_mean)) / norm


def adaptive_threshold(recent: np.ndarray, z: float) -> float:
    """mean + z·std of the recent surprise values [w]."""
    return float(recent.mean() + z * recent.std())


class EventSegmenter:
    """Decides, frame by frame, where events begin.

    ``update(key)`` is called once per kept frame, before the frame joins an event, and returns
    True when the frame starts a new event (the open one closes before it). Boundaries happen
    when the open event has at least ``min_frames`` frames and the surprise is above both the
    adaptive threshold and ``min_surprise`` (so that near-constant streams are not cut on noise),
    or when the open event already holds ``max_frames`` frames. The adaptive threshold is only
    used once ``warmup`` surprise values are known. A surprise above ``hard_surprise`` (when set)
    always cuts once the open event has ``min_frames``: a clear scene change early in a stream, or
    in a stream whose gate keeps few frames, needs no statistics to be seen.
    """

    def __init__(self, *, min_frames: int = 2, max_frames: int = 64, z: float = 2.0, window: int = 32,
                 min_surprise: float = 0.02, warmup: int = 4, hard_surprise: float | None = None) -> None:
        if min_frames < 1 or max_frames < min_frames:
            raise ValueError(f"need 1 <= min_frames <= max_frames, got {min_frames}, {max_frames}")
        if window < 2:
            raise ValueError(f"window must be >= 2, got {window}")
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

    def update(self, key: np.ndarray) -> bool:
        """Feed one L2-normalised key [k]; True when this frame starts a new event."""
        key = np.asarray(key, dtype=np.float64)
        if self._key_sum is None or self._open_frames == 0:
            self._key_sum = key.copy()
            self._open_frames = 1
            self.last_surprise = 0.0
            return False
        s = surprise(key, self._key_sum)
        self.last_surprise = s
        boundary = self._open_frames >= self.max_frames
        if not boundary and self._open_frames >= self.min_frames:
            if self.hard_surprise is not None and s > self.hard_surprise:
                boundary = True
            elif len(self._recent) >= self.warmup:
                threshold = adaptive_threshold(np.fromiter(self._recent, dtype=np.float64), self.z)
                boundary = s > max(threshold, self.min_surprise)
        self._recent.append(s)
        if boundary:
            self._key_sum = key.copy()
            self._open_frames = 1
        else:
            self._key_sum += key
            self._open_frames += 1
        return boundary

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
