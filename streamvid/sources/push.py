"""A source the caller feeds: the browser UI or an API pushes frames, the agent iterates them."""

from __future__ import annotations

import math
import numbers
import threading
import time

import numpy as np

from streamvid.errors import SourceError
from streamvid.imageops import resize_short_side
from streamvid.sources.base import (
    BufferedFrameSource,
    FpsSampler,
    LatestFrameBuffer,
    check_frame_shape,
)
from streamvid.types import Frame

# The latest source time push() accepts: about 31 years, so that a stray huge t (1e300) is refused
# instead of pinning every later frame's time to it.
MAX_PUSH_SECONDS = 1e9


class PushSource(BufferedFrameSource):
    """Frames handed in with ``push(rgb, t=None)`` from any thread, read by one consumer thread.

    At most ``max_pending`` frames wait; when the consumer is slower, the oldest waiting frame is
    dropped (the newest wins) and counted in ``dropped``. ``t=None`` stamps the arrival time on a
    monotonic clock, relative to the first push. ``close()`` ends iteration after the frames
    still waiting. ``Frame.index`` counts every accepted push, so gaps show drops and skips.
    """

    backend = "push"
    is_live = True

    def __init__(self, max_pending: int = 1, fps: float | None = None, size: int | None = None) -> None:
        super().__init__("push", fps, size)
        if isinstance(max_pending, bool) or not isinstance(max_pending, int) or max_pending < 1:
            raise SourceError(self.spec, f"max_pending must be an int >= 1, got {max_pending!r}")
        self._buffer = LatestFrameBuffer(max_pending)
        self._sampler = FpsSampler(self.fps)
        self._push_lock = threading.Lock()
        self._count = 0
        self._t_first: float | None = None
        self._last_t = -np.inf

    def push(self, rgb: np.ndarray, t: float | None = None) -> bool:
        """Offer one H×W×3 uint8 RGB frame (copied). Returns False when ``fps=`` skipped it.

        Raises SourceError, and keeps nothing of this frame, when the source is closed, the array is
        not H×W×3 uint8 (or a side is over the frame-side bound), or ``t`` is not a finite number of
        seconds in [0, MAX_PUSH_SECONDS] at or after the previous frame's time. The stream goes on.
        """
        if not isinstance(rgb, np.ndarray) or rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
            got = (f"{rgb.dtype} array of shape {rgb.shape}" if isinstance(rgb, np.ndarray)
                   else type(rgb).__name__)
            raise SourceError(self.spec, f"push() needs an H×W×3 uint8 RGB array, got {got}")
        if rgb.shape[0] < 1 or rgb.shape[1] < 1:
            raise SourceError(self.spec, f"push() got an empty image of shape {rgb.shape}")
        check_frame_shape(self.spec, rgb.shape[0], rgb.shape[1])
        if t is not None:
            t = self._check_time(t)
        with self._push_lock:
            if self._closed:
                raise SourceError(self.spec, "push() after close(): the source is closed")
            now = time.monotonic()
            if self._t_first is None:
                self._t_first = now
            if t is None:
                t = now - self._t_first
            elif t < self._last_t:
                raise SourceError(self.spec, f"push() time {t} s is earlier than the previous frame's "
                                             f"{self._last_t} s; times must not decrease")
            t = max(t, self._last_t)
            self._last_t = t
            index = self._count
            self._count += 1
            if not self._sampler.keep(t):
                return False
            # Under the lock so concurrent pushers cannot reorder frames against their times.
            out = resize_short_side(rgb, self.size) if self.size is not None else np.array(rgb, order="C", copy=True)
            if self._buffer.put(Frame(index, t, out)):
                with self._lock:
                    self._dropped += 1
        return True

    def _check_time(self, t: object) -> float:
        if isinstance(t, bool) or not isinstance(t, numbers.Real):
            raise SourceError(self.spec, f"push() time must be a number of seconds, got {type(t).__name__} {t!r}")
        value = float(t)
        if not math.isfinite(value) or not 0.0 <= value <= MAX_PUSH_SECONDS:
            raise SourceError(self.spec, f"push() time must be a finite number of seconds from 0 to "
                                         f"{MAX_PUSH_SECONDS:g}, got {t!r}")
        return value

    def close(self) -> None:
        with self._push_lock:
            super().close()
            self._buffer.finish()
