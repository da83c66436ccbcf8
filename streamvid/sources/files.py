"""Video files: probe once, decode with the chosen backend, resample on the container clock."""

from __future__ import annotations

import contextlib
import logging
import math
import os
import shutil
import tempfile
import warnings
import weakref
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import BinaryIO

from streamvid.errors import SourceError
from streamvid.sources.base import (
    FILE_BACKENDS,
    FpsSampler,
    FrameSource,
    TruncatedVideoWarning,
    check_frame_shape,
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

log = logging.getLogger(__name__)

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

    def run(self, decoder: Decoder, is_closed: Callable[[], bool], after: float | None = None) -> Iterator[Frame]:
        """Frames from ``decoder``; with ``after``, only those later than that time (a second backend
        taking over where the first one broke off)."""
        for index, t_abs, fetch in decoder.frames():
            if is_closed():
                return
            if not math.isfinite(t_abs):  # a damaged timestamp: hold the clock
                t_abs = (self._t0 or 0.0) + self.last_t
            if self._t0 is None:
                self._t0 = t_abs
            if after is not None and t_abs - self._t0 <= after:
                continue
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
        try:
            if not self.path.exists():
                raise SourceError(path, "file not found")
            if not self.path.is_file():
                raise SourceError(path, "not a regular file")
            if not os.access(self.path, os.R_OK):
                raise SourceError(path, "permission denied")
            if self.path.stat().st_size == 0:
                raise SourceError(path, "zero-length video: the file is empty (0 bytes)")
        except OSError as exc:  # a name too long, a loop of links, …
            raise SourceError(path, f"cannot open the file ({exc.strerror or exc})") from exc
        if backend is not None and backend not in FILE_BACKENDS:
            raise SourceError(path, f"unknown backend {backend!r}; choose one of {', '.join(FILE_BACKENDS)}")
        if backend is not None and not backend_available(backend):
            raise SourceError(path, f"backend {backend!r} is not installed")
        self._pyav_ok = backend_available("pyav")
        if self._pyav_ok:
            try:
                self.info = probe_video(str(self.path), path)
            except SourceError as exc:
                # PyAV refuses some damage the other FFmpeg copies read past (metadata that is not
                # UTF-8, …): let OpenCV probe, then decode with decord or OpenCV.
                if backend == "pyav" or not backend_available("opencv"):
                    raise
                try:
                    self.info = probe_video_opencv(str(self.path), path)
                except SourceError:
                    raise exc from None
                log.info("%s: PyAV cannot read it (%s); trying the other decoders", self.spec, exc.cause)
                self._pyav_ok = False
        else:
            self.info = probe_video_opencv(str(self.path), path)
        self.duration = self.info.duration
        self.native_fps = self.info.native_fps
        self.height, self.width = short_side_shape(self.info.height, self.info.width, self.size)
        check_frame_shape(self.spec, self.height, self.width)
        self._shape = (self.height, self.width) if self.size is not None else None
        self._decord: DecordDecoder | None = None
        self._forced = backend is not None
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
        return "pyav" if self._pyav_ok else "opencv"

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
        if damage and self.backend == "decord" and self._pyav_ok and not self._forced and not self._closed:
            # decord gave up on a damaged packet; PyAV often decodes past it. Go on from the last frame.
            log.info("%s: decord stopped (%s); going on with PyAV", self.spec, damage)
            damage = None
            try:
                decoder = open_file_decoder("pyav", self.path, self.spec, self._shape)
                try:
                    yield from clock.run(decoder, lambda: self._closed, after=clock.last_t if clock.decoded else None)
                finally:
                    decoder.close()
            except (StreamDamaged, SourceError) as exc:
                damage = f"decoding failed: {exc}"
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
        st = self._decoder.stream
        try:
            check_frame_shape(self.spec, *short_side_shape(st.height, st.width, self.size))
        except SourceError:
            self._decoder.close()
            raise
        if self.size is not None:
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


class _Replay:
    """A read-only stream that gives ``head`` first, then the rest of ``stream`` (no seeking)."""

    def __init__(self, head: bytes, stream: BinaryIO) -> None:
        self._head = memoryview(head)
        self._stream = stream
        self.name = getattr(stream, "name", "stream")

    def read(self, n: int = -1) -> bytes:
        if self._head.nbytes:
            take = self._head.nbytes if n is None or n < 0 else min(n, self._head.nbytes)
            out, self._head = bytes(self._head[:take]), self._head[take:]
            return out
        return self._stream.read(n)


# How far into a piped MP4 to look for its index (the boxes before "mdat" are small).
PEEK_LIMIT = 16 * 1024 * 1024
MP4_TOP_BOXES = {b"ftyp", b"styp", b"free", b"skip", b"wide", b"pdin", b"uuid", b"moov", b"moof", b"mdat", b"sidx"}


def _read_exact(stream: BinaryIO, n: int) -> bytes:
    parts, left = [], n
    while left > 0:
        chunk = stream.read(left)
        if not chunk:
            break
        parts.append(chunk)
        left -= len(chunk)
    return b"".join(parts)


def peek_mp4_index(stream: BinaryIO) -> tuple[bytes, bool]:
    """Read the top-level boxes at the start of ``stream`` → (the bytes read, True when the stream is
    an MP4/MOV whose media data comes before its index "moov", so it cannot be decoded as it arrives)."""
    head = bytearray(_read_exact(stream, 8))
    if len(head) < 8 or bytes(head[4:8]) not in MP4_TOP_BOXES:
        return bytes(head), False
    pos = 0
    while len(head) < PEEK_LIMIT:
        head += _read_exact(stream, pos + 16 - len(head)) if len(head) < pos + 16 else b""
        if len(head) < pos + 8:
            return bytes(head), False
        size, kind = int.from_bytes(head[pos:pos + 4], "big"), bytes(head[pos + 4:pos + 8])
        if kind in (b"moov", b"moof"):
            return bytes(head), False
        if kind == b"mdat":
            return bytes(head), True
        if size == 1 and len(head) >= pos + 16:
            size = int.from_bytes(head[pos + 8:pos + 16], "big")
        if size < 8 or kind not in MP4_TOP_BOXES or pos + size > PEEK_LIMIT:
            return bytes(head), False
        if len(head) < pos + size:
            head += _read_exact(stream, pos + size - len(head))
        pos += size
    return bytes(head), False


class SpooledStreamSource(FileSource):
    """A piped file that cannot be decoded as it arrives (an MP4 with its index at the end), copied
    to a temporary file first. The file is streamvid's own and is deleted on ``close``."""

    def __init__(self, head: bytes, stream: BinaryIO, fps: float | None = None, size: int | None = None) -> None:
        name = getattr(stream, "name", "stream")
        log.info("%s: an MP4 with its index at the end cannot be decoded as it arrives; reading it all into "
                 "a temporary file first (remux it with `ffmpeg -movflags +faststart` to stream it)", name)
        fd, tmp = tempfile.mkstemp(prefix="streamvid-pipe-", suffix=".mp4")
        self._tmp = tmp
        self._cleanup = weakref.finalize(self, _unlink, tmp)
        try:
            with os.fdopen(fd, "wb") as out:
                out.write(head)
                shutil.copyfileobj(stream, out, 1 << 20)
            super().__init__(tmp, fps, size)
        except SourceError as exc:
            self._cleanup()
            raise SourceError(name, exc.cause) from exc
        except OSError as exc:
            self._cleanup()
            raise SourceError(name, f"cannot buffer the piped video to a temporary file ({exc})") from exc
        except BaseException:
            self._cleanup()
            raise
        self.spec = str(name)

    def close(self) -> None:
        super().close()
        self._cleanup()


def _unlink(path: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)


def open_stream(stream: BinaryIO, fps: float | None = None, size: int | None = None) -> FrameSource:
    """The source for a binary stream: decoded as it arrives, or spooled to a temporary file first
    when it is an MP4 whose index comes after its media data."""
    try:
        head, index_at_end = peek_mp4_index(stream)
    except OSError as exc:
        raise SourceError(getattr(stream, "name", "stream"), f"cannot read the stream ({exc})") from exc
    if index_at_end:
        return SpooledStreamSource(head, stream, fps, size)
    return StreamSource(_Replay(head, stream), fps, size)
