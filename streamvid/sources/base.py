"""What every frame source shares: the FrameSource interface, fps resampling on the source clock,
short-side resizing, and the bounded "newest frame wins" buffer live sources hand frames through."""

from __future__ import annotations

import collections
import math
import threading
from collections.abc import Iterator

from streamvid.config import check_fps, check_size, max_frame_side
from streamvid.errors import ConfigError, SourceError
from streamvid.imageops import resize_rgb, short_side_shape  # noqa: F401 (part of streamvid.sources' API)
from streamvid.types import Frame

FILE_BACKENDS = ("decord", "pyav", "opencv")


class TruncatedVideoWarning(UserWarning):
    """A file ended (or broke) before its declared end; the frames up to the damage were delivered."""


class FrameSource:
    """An iterable of :class:`streamvid.Frame` in presentation order.

    ``Frame.t`` is seconds on the source clock counted from the first frame (container PTS for
    files, arrival time for live sources) and never decreases. ``Frame.index`` is the frame's
    position in the source's own sequence (before ``fps=`` resampling and drops), so gaps show
    what was skipped. ``Frame.rgb`` is an H×W×3 uint8 C-contiguous array.
    """

    spec: str
    backend: str
    is_live: bool = False
    duration: float | None = None
    native_fps: float | None = None

    def __init__(self, spec: object, fps: float | None = None, size: int | None = None) -> None:
        self.spec = str(spec)
        self.fps = check_fps(fps)
        self.size = check_size(size)
        self._closed = False
        self._dropped = 0
        self._lock = threading.Lock()

    @property
    def dropped(self) -> int:
        """Frames discarded because the consumer was slower than the source (live sources only)."""
        with self._lock:
            return self._dropped

    @property
    def closed(self) -> bool:
        return self._closed

    def __iter__(self) -> Iterator[Frame]:
        raise NotImplementedError

    def close(self) -> None:
        """Release the decoder / device. Iteration ends; calling close twice is harmless."""
        self._closed = True

    def __enter__(self) -> FrameSource:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.spec!r}, backend={self.backend!r}, live={self.is_live})"


def check_frame_shape(spec: object, height: int, width: int) -> None:
    """SourceError when frames of height×width would exceed the frame-side bound (see max_frame_side)."""
    limit = max_frame_side()
    if max(height, width) > limit:
        raise SourceError(spec, f"frames would be {width}×{height} pixels, over the limit of {limit} per side; "
                                "pass a smaller size= or raise STREAMVID_MAX_FRAME_SIDE")


class FpsSampler:
    """Picks frames on the source clock: the first frame at or after each tick of a 1/fps grid.

    Working on timestamps rather than frame counts keeps variable-frame-rate files right, and a
    gap in the source (a stall, a VFR pause) yields one frame, not a burst of catch-up frames.
    """

    # Float slack so a frame exactly on a grid tick (e.g. 0.5 s from 1/30 steps) counts as on it.
    _EPS = 1e-6

    def __init__(self, fps: float | None) -> None:
        self.fps = fps
        self._next_t = -math.inf

    def keep(self, t: float) -> bool:
        if self.fps is None:
            return True
        if t + self._EPS < self._next_t:
            return False
        self._next_t = (math.floor(t * self.fps + self._EPS) + 1) / self.fps
        return True


class LatestFrameBuffer:
    """A bounded hand-off between one producer thread and one consumer.

    ``put`` never blocks: when ``capacity`` frames are already waiting, the oldest is discarded and
    counted, so a slow consumer always gets the newest frames and memory stays bounded.
    ``finish(error)`` ends the stream; the consumer drains what is left, then gets the error (if any).
    """

    def __init__(self, capacity: int = 1) -> None:
        if capacity < 1:
            raise ConfigError(f"capacity must be >= 1, got {capacity}")
        self._frames: collections.deque[Frame] = collections.deque()
        self._capacity = capacity
        self._cond = threading.Condition()
        self._finished = False
        self._error: BaseException | None = None
        self.dropped = 0

    def put(self, frame: Frame) -> bool:
        """Add a frame; True when an older waiting frame had to be dropped for it."""
        with self._cond:
            if self._finished:
                return False
            dropped = len(self._frames) >= self._capacity
            if dropped:
                self._frames.popleft()
                self.dropped += 1
            self._frames.append(frame)
            self._cond.notify_all()
            return dropped

    def finish(self, error: BaseException | None = None, discard: bool = False) -> None:
        with self._cond:
            if not self._finished:
                self._finished = True
                self._error = error
            if discard:
                self._frames.clear()
            self._cond.notify_all()

    @property
    def finished(self) -> bool:
        with self._cond:
            return self._finished and not self._frames

    def get(self, timeout: float | None = None) -> Frame | None:
        """The next frame; None on timeout or at the end. Raises the producer's error at the end."""
        with self._cond:
            self._cond.wait_for(lambda: self._frames or self._finished, timeout=timeout)
            if self._frames:
                return self._frames.popleft()
            if self._finished and self._error is not None:
                error, self._error = self._error, None
                raise error
            return None

    def __iter__(self) -> Iterator[Frame]:
        while True:
            frame = self.get()
            if frame is None:
                return
            yield frame


class BufferedFrameSource(FrameSource):
    """A live source whose frames wait in a LatestFrameBuffer (``self._buffer``) filled by another thread."""

    _buffer: LatestFrameBuffer

    def read(self, timeout: float | None = None) -> Frame | None:
        """The next frame, or None after ``timeout`` seconds without one or once finished and drained.
        Raises SourceError when the source failed or closed on its own."""
        return self._buffer.get(timeout)

    @property
    def finished(self) -> bool:
        """True once the producer finished and every waiting frame has been read."""
        return self._buffer.finished

    def __iter__(self) -> Iterator[Frame]:
        return iter(self._buffer)


def source_error(spec: object, cause: str, exc: BaseException | None = None) -> SourceError:
    """A SourceError whose cause also carries the underlying library's message."""
    if exc is not None:
        detail = str(exc).strip() or type(exc).__name__
        cause = f"{cause} ({detail})"
    return SourceError(spec, cause)
