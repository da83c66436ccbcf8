"""Video files: probe once, decode with the chosen backend, resample on the container clock."""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import BinaryIO

from streamvid.errors import SourceError
from streamvid.sources.base import (
    FILE_BACKENDS,
    FpsSampler,
    FrameSource,
    TruncatedVideoWarning,
    short_side_shape,
)
from streamvid.sources.decoders import (
    Decoder,
    DecordDecoder,
    PyAVDecoder,
    StreamDamaged,
    VideoInfo,
    backend_available,
    open_file_decoder,
    probe_video,
    probe_video_opencv,
)
from streamvid.types import Frame

# decord keeps about 1.7 KB of index per frame (measured: +60 MB for 20 min at 30 fps), so memory
# would grow with length; longer files default to PyAV, whose memory does not.
DECORD_MAX_SECONDS = 20 * 60


class ClockedFrames:
    """Turns a decoder's ``(index, t, fetch)`` stream into Frames: t from the first frame, never
    decreasing, kept by an FpsSampler. Remembers how far decoding got, to spot early ends."""

    def __init__(self, fps: float | None) -> None:
        self.sampler = FpsSampler(fps)
        self.decoded = 0
        self.last_t = 0.0
        self._t0: float | None = None

    def run(self, decoder: Decoder, is_closed: Callable[[], bool]) -> Iterator[Frame]:
        for index, t_abs, fetch in decoder.frames():
            if is_closed():
                return
            if self._t0 is None:
                self._t0 = t_abs
            # Damaged files can carry a stray earlier PTS; the clock must never run backwards.
            t = max(t_abs - self._t0, self.last_t)
            self.last_t = t
            self.decoded += 1
            if self.sampler.keep(t):
                yield Frame(index, t, fetch())


def ended_early(info: VideoInfo, decoded: int, last_t: float) -> str | None:
    """Why the decoded frames fall short of the declared duration, or None if they do not."""
    if info.duration is None or decoded == 0:
        return None
    step = 1.0 / info.native_fps if info.native_fps else 0.0
    margin = max(0.5, 0.02 * info.duration)
    if last_t + step < info.duration - margin:
        return f"frames end at {last_t:.2f} s but the container declares {info.duration:.2f} s"
    return None


class FileSource(FrameSource):
    """A video file on disk. Each iteration decodes the file from the start.

    Attributes: ``backend`` ("decord" | "pyav" | "opencv"), ``duration`` (seconds from the first
    frame to the declared end, or None), ``native_fps``, ``width``/``height`` of the delivered
    frames, ``info`` (the probed VideoInfo).
    """

    is_live = False

    def __init__(self, path: str | os.PathLike, fps: float | None = None, size: int | None = None,
                 backend: str | None = None) -> None:
        super().__init__(path, fps, size)
        self.path = Path(path)
        if not self.path.exists():
            raise SourceError(path, "file not found")
        if not self.path.is_file():
            raise SourceError(path, "not a regular file")
        if not os.access(self.path, os.R_OK):
            raise SourceError(path, "permission denied")
        if self.path.stat().st_size == 0:
            raise SourceError(path, "zero-length video: the file is empty (0 bytes)")
        if backend is not None and backend not in FILE_BACKENDS:
            raise SourceError(path, f"unknown backend {backend!r}; choose one of {', '.join(FILE_BACKENDS)}")
        if backend is not None and not backend_available(backend):
            raise SourceError(path, f"backend {backend!r} is not installed")
        self.info = (probe_video(str(self.path), path) if backend_available("pyav")
                     else probe_video_opencv(str(self.path), path))
        self.duration = self.info.duration
        self.native_fps = self.info.native_fps
        self.height, self.width = short_side_shape(self.info.height, self.info.width, self.size)
        self._shape = (self.height, self.width) if self.size is not None else None
        self._decord: DecordDecoder | None = None
        self.backend = self._choose_backend(backend)

    def _choose_backend(self, forced: str | None) -> str:
        if forced is not None:
            if forced == "decord":
                self._decord = DecordDecoder(str(self.path), self.spec, self._shape, self.duration, self.info.time_base)
                if not self._decord.timestamps_ok:
                    warnings.warn(f"{self.spec}: decord finds no usable timestamps in this file; times are "
                                  "spread evenly over its duration (PyAV reads them)", stacklevel=3)
            return forced
        too_long = self.duration is not None and self.duration > DECORD_MAX_SECONDS
        if backend_available("decord") and not too_long:
            # decord indexes the whole file when it opens and refuses files with broken packets
            # (e.g. a cut-off MP4), where PyAV still delivers the frames before the damage; and it
            # has no timestamps for AVI files with B-frames, where PyAV recovers them from DTS.
            try:
                decoder = DecordDecoder(str(self.path), self.spec, self._shape, self.duration, self.info.time_base)
            except SourceError:
                decoder = None
            if decoder is not None and decoder.timestamps_ok:
                self._decord = decoder
                return "decord"
            if decoder is not None:
                decoder.close()
        return "pyav" if backend_available("pyav") else "opencv"

    def _open_decoder(self) -> Decoder:
        if self._decord is not None:
            decoder, self._decord = self._decord, None
            return decoder
        return open_file_decoder(self.backend, self.path, self.spec, self._shape, self.duration,
                                 self.info.time_base)

    def __iter__(self) -> Iterator[Frame]:
        if self._closed:
            raise SourceError(self.spec, "source is closed")
        decoder = self._open_decoder()
        clock = ClockedFrames(self.fps)
        damage = None
        try:
            yield from clock.run(decoder, lambda: self._closed)
        except StreamDamaged as exc:
            damage = f"decoding failed: {exc}"
        finally:
            decoder.close()
        if self._closed:
            return
        reason = damage or ended_early(self.info, clock.decoded, clock.last_t)
        if reason is not None:
            warnings.warn(f"{self.spec}: truncated or damaged video, delivered the frames up to "
                          f"{clock.last_t:.2f} s; {reason}", TruncatedVideoWarning, stacklevel=2)

    def close(self) -> None:
        super().close()
        if self._decord is not None:
            self._decord.close()
            self._decord = None


class StreamSource(FrameSource):
    """A video container read from a binary stream (e.g. stdin for ``streamvid caption -``), decoded
    with PyAV as it arrives. Frames come at the pipe's pace (a slow reader slows the writer; nothing is dropped);
    times come from the container's clock, counted from the first frame. The container must be
    streamable (MPEG-TS, Matroska, NUT, Y4M, or MP4 with its index first)."""

    backend = "pyav"
    is_live = False

    def __init__(self, stream: BinaryIO, fps: float | None = None, size: int | None = None) -> None:
        super().__init__(getattr(stream, "name", "stream"), fps, size)
        self._decoder = PyAVDecoder(stream, self.spec, None)
        if self.size is not None:
            st = self._decoder.stream
            self._decoder.shape = short_side_shape(st.height, st.width, self.size)

    def __iter__(self) -> Iterator[Frame]:
        clock = ClockedFrames(self.fps)
        try:
            yield from clock.run(self._decoder, lambda: self._closed)
        except StreamDamaged as exc:
            raise SourceError(self.spec, f"decoding failed after {clock.last_t:.2f} s ({exc})") from exc

    def close(self) -> None:
        super().close()
        self._decoder.close()
