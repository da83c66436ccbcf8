"""Container probing and the three file decoders (decord, PyAV, OpenCV) behind one small interface.

A decoder yields ``(index, t, fetch)`` per decoded frame in presentation order: ``t`` is the
frame's presentation time in seconds (any origin; callers subtract the first), and ``fetch()``
converts that frame to RGB at the requested size. Callers call ``fetch`` only for the frames they
keep, before advancing, so frames skipped by ``fps=`` are decoded but never converted.
"""

from __future__ import annotations

import contextlib
import importlib.util
import math
import os
import re
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from streamvid.errors import SourceError
from streamvid.sources.base import resize_rgb, source_error

DecodedFrame = tuple[int, float, Callable[[], np.ndarray]]


class StreamDamaged(Exception):
    """Decoding stopped early because the data is damaged or the connection broke."""


_quieted: set[str] = set()


def quiet_ffmpeg(backend: str) -> None:
    """Silence the FFmpeg copy inside ``backend`` (each library bundles its own): damaged input is
    reported once, as a SourceError or a TruncatedVideoWarning, not as FFmpeg's lines on stderr."""
    if backend in _quieted:
        return
    _quieted.add(backend)
    if backend == "pyav":
        import av.logging

        av.logging.set_level(None)  # PyAV: no FFmpeg log callback at all
    elif backend == "decord":
        # decord's own "frames corrupted and recovered" warning (damage is reported once, by us). Read
        # when decord loads, and a value std::stof cannot parse aborts the process: set a valid one first.
        try:
            float(os.environ["DECORD_DUPLICATE_WARNING_THRESHOLD"])
        except (KeyError, ValueError):
            os.environ["DECORD_DUPLICATE_WARNING_THRESHOLD"] = "1.0"
        import decord

        decord.logging.set_level(decord.logging.QUIET)
    elif backend == "opencv":
        # Read when OpenCV first opens a file with FFmpeg; -8 is AV_LOG_QUIET.
        os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")
        os.environ.setdefault("OPENCV_LOG_LEVEL", "SILENT")
        with contextlib.suppress(AttributeError):
            cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_SILENT)


_stderr_lock = threading.Lock()


@contextlib.contextmanager
def native_stderr_silenced() -> Iterator[None]:
    """Send file descriptor 2 to /dev/null for a moment: decord's C++ code writes its open and seek
    errors there directly, past any logging setting. Only around calls that take milliseconds."""
    with _stderr_lock:
        try:
            saved = os.dup(2)
        except OSError:  # no stderr at all
            yield
            return
        try:
            with open(os.devnull, "wb") as null:
                os.dup2(null.fileno(), 2)
            yield
        finally:
            os.dup2(saved, 2)
            os.close(saved)


def failure(exc: BaseException) -> str:
    """One line from a decoder library's exception: decord's messages carry a C++ trace and
    time-stamped file positions; keep the last meaningful line."""
    lines = [line.strip() for line in str(exc).strip().splitlines() if line.strip()]
    text = lines[-1] if lines else ""
    if "Stack trace" in text or not text:
        text = next((line for line in reversed(lines) if "Stack trace" not in line and not line.startswith("[bt]")),
                    "")
    return re.sub(r"\[\d\d:\d\d:\d\d\] \S+:\d+: ", "", text)[:300] or type(exc).__name__


def backend_available(name: str) -> bool:
    module = {"decord": "decord", "pyav": "av", "opencv": "cv2"}[name]
    return importlib.util.find_spec(module) is not None


@dataclass(frozen=True)
class VideoInfo:
    """What the container says about its first video stream.

    duration:  seconds from the first frame to the declared end, or None when not declared
    time_base: seconds per timestamp tick of the stream, when known
    """

    width: int
    height: int
    codec: str
    container: str
    native_fps: float | None
    duration: float | None
    frame_count: int | None
    time_base: Fraction | None = None


def probe_video(target: str, spec: object, open_kwargs: dict[str, Any] | None = None) -> VideoInfo:
    """Open ``target`` with PyAV, check it holds a decodable video stream, read its metadata.

    Decodes the first frame, so "not a video", "unsupported codec" and "no frames" are all caught
    here with a SourceError naming ``spec``, before any backend is chosen.
    """
    import av

    quiet_ffmpeg("pyav")
    try:
        container = av.open(target, **(open_kwargs or {}))
    except av.EOFError as exc:
        raise source_error(spec, "zero-length or truncated video: the container ends before any frame",
                           exc) from exc
    except UnicodeDecodeError as exc:
        raise SourceError(spec, f"damaged metadata: a text field is not valid UTF-8 ({exc.reason})") from exc
    except Exception as exc:  # av.FFmpegError, OSError, …: every failure names the file
        raise source_error(spec, "not a video FFmpeg can read, or a damaged/truncated file", exc) from exc
    try:
        return _probe_open(container, spec)
    except SourceError:
        raise
    except UnicodeDecodeError as exc:
        raise SourceError(spec, f"damaged metadata: a text field is not valid UTF-8 ({exc.reason})") from exc
    except Exception as exc:
        raise source_error(spec, "damaged container: its video stream cannot be read", exc) from exc
    finally:
        container.close()


def _probe_open(container: Any, spec: object) -> VideoInfo:
    """probe_video's reading of an open container."""
    import av

    if not container.streams.video:
        kinds = sorted({s.type for s in container.streams})
        raise SourceError(spec, f"no video stream in the container (streams: {', '.join(kinds)})" if kinds
                          else "zero-length video: the container holds no streams")
    stream = container.streams.video[0]
    codec = stream.codec_context.name if stream.codec_context else "unknown"
    first = None
    try:
        for frame in container.decode(stream):
            first = frame
            break
    except av.FFmpegError as exc:
        raise source_error(spec, f"cannot decode the {codec!r} video stream (unsupported codec "
                                 "or damaged data)", exc) from exc
    if first is None:
        raise SourceError(spec, "zero-length video: the container has a video stream but no frames")
    first_t = float(first.time) if first.time is not None else 0.0
    rate = stream.average_rate or stream.guessed_rate
    native_fps = float(rate) if rate else None
    duration = None
    if stream.duration and stream.time_base:
        start = float(stream.start_time * stream.time_base) if stream.start_time is not None else 0.0
        duration = float(stream.duration * stream.time_base) - (first_t - start)
    elif container.duration:
        # Some muxers (Matroska) declare the end time rather than the span; taking the smaller
        # reading never reports an intact file as truncated.
        declared = container.duration / 1e6
        duration = declared - first_t if declared - first_t > 0 else declared
    return VideoInfo(
        width=int(first.width), height=int(first.height), codec=codec,
        container=container.format.name, native_fps=native_fps,
        duration=duration if duration and duration > 0 else None,
        frame_count=int(stream.frames) or None,
        time_base=Fraction(stream.time_base) if stream.time_base else None,
    )


def probe_video_opencv(path: str, spec: object) -> VideoInfo:
    """The same checks through OpenCV, for installs without PyAV."""
    quiet_ffmpeg("opencv")
    try:
        cap = cv2.VideoCapture(path, cv2.CAP_FFMPEG)
    except Exception as exc:  # cv2.error
        raise source_error(spec, "not a video OpenCV can read", exc) from exc
    try:
        if not cap.isOpened():
            raise SourceError(spec, "not a video OpenCV can read, or a damaged/truncated file")
        ok, bgr = cap.read()
        if not ok:
            raise SourceError(spec, "zero-length video or undecodable stream: no frame could be read")
        fps = cap.get(cv2.CAP_PROP_FPS) or None
        count = int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) or None
        return VideoInfo(width=bgr.shape[1], height=bgr.shape[0], codec="unknown", container="unknown",
                         native_fps=fps, duration=count / fps if fps and count else None, frame_count=count)
    except SourceError:
        raise
    except Exception as exc:
        raise source_error(spec, "OpenCV cannot read the file", exc) from exc
    finally:
        cap.release()


class Decoder:
    """One pass over a video's frames; ``close`` releases the underlying reader."""

    name = ""

    def frames(self) -> Iterator[DecodedFrame]:
        raise NotImplementedError

    def close(self) -> None:
        pass


class BestEffortClock:
    """Presentation time per decoded frame when containers lie: decoders emit frames in
    presentation order, so a PTS that goes backwards means the container's PTS are wrong (e.g.
    H.264 with B-frames in AVI). Like FFmpeg's best-effort timestamp, count backward steps in PTS
    and in DTS and trust whichever has fewer."""

    def __init__(self) -> None:
        self._last_pts = self._last_dts = -math.inf
        self._faulty_pts = self._faulty_dts = 0

    def __call__(self, pts: float | None, dts: float | None) -> float | None:
        if pts is not None:
            self._faulty_pts += pts <= self._last_pts
            self._last_pts = pts
        if dts is not None:
            self._faulty_dts += dts <= self._last_dts
            self._last_dts = dts
        if pts is not None and (dts is None or self._faulty_pts <= self._faulty_dts):
            return pts
        return dts


class PyAVDecoder(Decoder):
    """FFmpeg through PyAV: multi-threaded decode, RGB conversion and resize in one swscale pass."""

    name = "pyav"

    def __init__(self, target: str, spec: object, shape: tuple[int, int] | None,
                 open_kwargs: dict[str, Any] | None = None,
                 open_cause: str = "cannot open with PyAV") -> None:
        import av

        quiet_ffmpeg("pyav")
        try:
            self.container = av.open(target, **(open_kwargs or {}))
        except UnicodeDecodeError as exc:
            raise SourceError(spec, f"damaged metadata: a text field is not valid UTF-8 ({exc.reason})") from exc
        except Exception as exc:  # av.FFmpegError, OSError, …
            raise source_error(spec, open_cause, exc) from exc
        try:
            if not self.container.streams.video:
                raise SourceError(spec, "no video stream in the container")
            self.stream = self.container.streams.video[0]
            self.stream.thread_type = "AUTO"
            self._fallback_step = 1.0 / float(self.stream.average_rate or 30)
        except Exception as exc:
            self.container.close()
            if isinstance(exc, SourceError):
                raise
            raise source_error(spec, "damaged container: its video stream cannot be read", exc) from exc
        self.shape = shape

    def _rgb(self, frame: Any) -> np.ndarray:
        try:
            # threads=0: swscale converts to RGB on all cores (the conversion, not the decode, was most of
            # PyAV's time per 720p frame: 2.4 of 3.8 ms on one core; same pixels).
            if self.shape is None or self.shape == (frame.height, frame.width):
                return np.ascontiguousarray(frame.to_ndarray(format="rgb24", threads=0))
            h, w = self.shape
            return np.ascontiguousarray(frame.to_ndarray(format="rgb24", width=w, height=h, interpolation="AREA",
                                                         threads=0))
        except Exception as exc:  # a frame FFmpeg cannot convert (damaged size or format)
            raise StreamDamaged(f"cannot convert a decoded frame ({failure(exc)})") from exc

    def frames(self) -> Iterator[DecodedFrame]:
        t_prev = None
        clock = BestEffortClock()
        try:
            for index, frame in enumerate(self.container.decode(self.stream)):
                tb = frame.time_base or self.stream.time_base
                t = clock(None if frame.pts is None or tb is None else float(frame.pts * tb),
                          None if frame.dts is None or tb is None else float(frame.dts * tb))
                if t is None:
                    t = 0.0 if t_prev is None else t_prev + self._fallback_step
                t_prev = t
                yield index, t, lambda frame=frame: self._rgb(frame)
        except Exception as exc:  # av.FFmpegError, OSError, UnicodeDecodeError, …
            raise StreamDamaged(failure(exc)) from exc

    def close(self) -> None:
        self.container.close()


def snap_to_ticks(t, time_base: Fraction | None):
    """Seconds (a float or an array) rounded to the stream's timestamp ticks, as PyAV reports them.

    OpenCV (milliseconds) and decord (float32 seconds) lose the exact PTS; ticks·num/den in float64
    rounds exactly as PyAV's float(pts · time_base) does, so every backend gives the same times.
    """
    if not time_base:
        return t
    return np.round(np.asarray(t) / float(time_base)) * time_base.numerator / time_base.denominator


class OpenCVDecoder(Decoder):
    """FFmpeg through OpenCV: ``grab`` decodes, ``retrieve`` converts, so skipped frames stay YUV."""

    name = "opencv"

    def __init__(self, target: str, spec: object, shape: tuple[int, int] | None,
                 time_base: Fraction | None = None) -> None:
        quiet_ffmpeg("opencv")
        self.time_base = time_base
        self.shape = shape
        try:
            self._cap = cv2.VideoCapture(target, cv2.CAP_FFMPEG)
            opened = self._cap.isOpened()
            # PyAV and decord do not apply rotation metadata; match them.
            self._cap.set(cv2.CAP_PROP_ORIENTATION_AUTO, 0)
        except Exception as exc:  # cv2.error
            raise source_error(spec, "OpenCV cannot open the file", exc) from exc
        if not opened:
            raise SourceError(spec, "OpenCV cannot open the file")

    def _rgb(self) -> np.ndarray:
        try:
            ok, bgr = self._cap.retrieve()
            if ok and bgr is not None and bgr.ndim == 3:
                rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
                return rgb if self.shape is None else resize_rgb(rgb, self.shape)
        except Exception as exc:  # cv2.error
            raise StreamDamaged(f"OpenCV could not convert a decoded frame ({failure(exc)})") from exc
        raise StreamDamaged("OpenCV could not convert a decoded frame")

    def frames(self) -> Iterator[DecodedFrame]:
        index, prev, step = 0, None, 0.0
        try:
            while self._cap.grab():
                t = snap_to_ticks(self._cap.get(cv2.CAP_PROP_POS_MSEC) / 1000.0, self.time_base)
                if not math.isfinite(t):
                    t = 0.0
                if prev is not None:
                    # OpenCV reports 0 for a frame without a timestamp (often the last one flushed).
                    t = t if t > prev else prev + step
                    step = t - prev
                prev = t
                yield index, t, self._rgb
                index += 1
        except StreamDamaged:
            raise
        except Exception as exc:  # cv2.error
            raise StreamDamaged(failure(exc)) from exc

    def close(self) -> None:
        self._cap.release()


class DecordDecoder(Decoder):
    """decord's VideoReader: the frame index and timestamps are read once when it opens; frames are
    fetched by index, and decord decodes-and-discards up to the next wanted frame."""

    name = "decord"

    def __init__(self, target: str, spec: object, shape: tuple[int, int] | None,
                 duration: float | None = None, time_base: Fraction | None = None) -> None:
        quiet_ffmpeg("decord")
        import decord
        from torch.utils.dlpack import from_dlpack

        self._decord = decord
        self._from_dlpack = from_dlpack
        h, w = shape if shape is not None else (-1, -1)
        try:
            with native_stderr_silenced():
                self._reader = decord.VideoReader(target, ctx=decord.cpu(0), width=w, height=h, num_threads=0)
            n = len(self._reader)
            self._times = (self._reader.get_frame_timestamp(np.arange(n))[:, 0].astype(np.float64)
                           if n else np.zeros(0))
        except Exception as exc:  # DECORDError, RuntimeError, UnicodeDecodeError, …
            raise SourceError(spec, f"decord cannot open the file ({failure(exc)})") from exc
        # decord reports missing PTS as huge negative numbers (AVI has no PTS, only DTS).
        self.timestamps_ok = bool(n) and bool(np.all(np.isfinite(self._times))) and \
            self._times.min() > -1e6 and bool(np.all(np.diff(self._times) >= 0))
        if self.timestamps_ok and time_base:
            self._times = snap_to_ticks(self._times, time_base)  # decord hands times over as float32
        if not self.timestamps_ok and n:
            try:
                fps = float(self._reader.get_avg_fps())
            except Exception:  # a damaged rate only changes the fallback step
                fps = 0.0
            step = duration / n if duration else (1.0 / fps if math.isfinite(fps) and fps > 0 else 1.0 / 30)
            self._times = np.arange(n) * step

    def _rgb(self, index: int) -> np.ndarray:
        try:
            # Through DLPack, the decoded frame itself (no copy): asnumpy() copies every 720p frame, which
            # took 3× as long as decoding it (scripts/bench_ingest_stages.py --pipeline, docs/BENCHMARKS.md).
            return np.ascontiguousarray(self._from_dlpack(self._reader[index].to_dlpack()).numpy())
        except Exception as exc:  # DECORDError from a damaged packet at fetch time
            raise StreamDamaged(failure(exc)) from exc

    def frames(self) -> Iterator[DecodedFrame]:
        try:
            with native_stderr_silenced():
                self._reader.seek(0)
        except Exception as exc:
            raise StreamDamaged(failure(exc)) from exc
        for index, t in enumerate(self._times.tolist()):
            yield index, t, lambda index=index: self._rgb(index)

    def close(self) -> None:
        self._reader = None


def open_file_decoder(backend: str, path: Path, spec: object, shape: tuple[int, int] | None,
                      duration: float | None = None, time_base: Fraction | None = None) -> Decoder:
    if backend == "decord":
        return DecordDecoder(str(path), spec, shape, duration, time_base)
    if backend == "pyav":
        return PyAVDecoder(str(path), spec, shape)
    return OpenCVDecoder(str(path), spec, shape, time_base)
