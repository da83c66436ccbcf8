"""Live sources: cameras and network streams, read on a background thread.

The reader thread decodes as fast as the source delivers, converts only the frames the fps
sampler keeps, and hands them over through a one-slot LatestFrameBuffer: a slow consumer gets
the newest frame and the overwritten ones are counted in ``dropped``; nothing queues up.
"""

from __future__ import annotations

import math
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import cv2

from streamvid.errors import SourceError
from streamvid.imageops import resize_short_side
from streamvid.sources.base import (
    BufferedFrameSource,
    FpsSampler,
    FrameSource,
    LatestFrameBuffer,
    short_side_shape,
    source_error,
)
from streamvid.sources.decoders import DecodedFrame, PyAVDecoder, StreamDamaged, VideoInfo
from streamvid.sources.files import ClockedFrames, ended_early
from streamvid.types import Frame

# Schemes whose streams have no natural end: always read as live.
LIVE_SCHEMES = ("rtsp", "rtsps", "rtmp", "rtmps", "udp", "rtp", "srt", "tcp")
NETWORK_SCHEMES = (*LIVE_SCHEMES, "http", "https")


class ThreadedLiveSource(BufferedFrameSource):
    """Base of live sources: a reader thread runs ``_produce`` into a one-slot buffer.

    Subclasses open their device in ``__init__``, then call ``_start(open_timeout)``, which waits
    for the first frame so that a dead source fails at open, not on the first read.
    """

    is_live = True

    def __init__(self, spec: object, fps: float | None, size: int | None) -> None:
        super().__init__(spec, fps, size)
        self._buffer = LatestFrameBuffer(1)
        self._stop = threading.Event()
        self._first = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"streamvid-reader:{self.spec}", daemon=True)

    def _produce(self) -> Iterator[DecodedFrame]:
        """Yield (index, t seconds, fetch) per frame the device delivers; raise SourceError on failure."""
        raise NotImplementedError

    def _release(self) -> None:
        """Free the device; called on the reader thread when it ends."""

    def _end_error(self, frames: int) -> SourceError | None:
        """The error to raise when ``_produce`` runs out on its own (None: a normal end)."""
        return SourceError(self.spec, f"stream ended: the source stopped after {frames} frames")

    def _run(self) -> None:
        sampler = FpsSampler(self.fps)
        error: BaseException | None = None
        t0, last_t, frames = None, 0.0, 0
        try:
            for index, t_abs, fetch in self._produce():
                if self._stop.is_set():
                    break
                t0 = t_abs if t0 is None else t0
                last_t = max(t_abs - t0, last_t)
                frames += 1
                if sampler.keep(last_t) and self._buffer.put(Frame(index, last_t, fetch())):
                    with self._lock:
                        self._dropped += 1
                self._first.set()
            if not self._stop.is_set():
                error = self._end_error(frames)
        except SourceError as exc:
            error = exc
        except Exception as exc:  # the reader thread must always report, never die silently
            error = source_error(self.spec, "reading failed", exc)
        finally:
            try:
                self._release()
            finally:
                self._buffer.finish(None if self._stop.is_set() else error)
                self._first.set()

    def _start(self, open_timeout: float) -> None:
        self._thread.start()
        if not self._first.wait(open_timeout):
            self.close()
            raise SourceError(self.spec, f"no frame arrived within {open_timeout:g} s")
        if self._buffer.finished:  # failed before delivering anything: raise at open
            try:
                self._buffer.get(0)
            finally:
                self.close()

    def close(self, join_timeout: float = 5.0) -> None:
        """Stop the reader; it exits after its current read (bounded by the read timeout)."""
        super().close()
        self._stop.set()
        self._buffer.finish(discard=True)
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(join_timeout)


def camera_device(spec: int | str) -> int | str:
    """0 | "0" | "camera:0" → 0; "/dev/video2" stays a path. Anything else raises SourceError."""
    if isinstance(spec, int):
        return spec
    text = str(spec)
    if text.startswith("camera:"):
        text = text[len("camera:"):]
    if text.isdigit():
        return int(text)
    if text.startswith("/dev/video"):
        return text
    raise SourceError(spec, "not a camera: use an index (0), 'camera:0' or '/dev/videoN'")


class CameraSource(ThreadedLiveSource):
    """A local camera through OpenCV. ``t`` is arrival time on a monotonic clock from the first frame."""

    backend = "opencv"

    def __init__(self, spec: int | str, fps: float | None = None, size: int | None = None,
                 timeout: float = 10.0) -> None:
        super().__init__(spec if not isinstance(spec, int) else f"camera:{spec}", fps, size)
        self.device = camera_device(spec)
        if sys.platform.startswith("linux"):
            node = Path(f"/dev/video{self.device}" if isinstance(self.device, int) else self.device)
            if not node.exists():
                raise SourceError(self.spec, f"camera not available: {node} does not exist")
            api = cv2.CAP_V4L2
        else:
            api = cv2.CAP_ANY
        self._cap = cv2.VideoCapture(self.device, api)
        if not self._cap.isOpened():
            self._cap.release()
            raise SourceError(self.spec, "camera not available: it could not be opened (in use, or no "
                                         "permission?)")
        self.native_fps = self._cap.get(cv2.CAP_PROP_FPS) or None
        self._start(timeout)

    def _produce(self) -> Iterator[DecodedFrame]:
        index = 0
        while not self._stop.is_set():
            ok, bgr = self._cap.read()
            if not ok:
                raise SourceError(self.spec, f"camera stopped delivering frames after {index}")
            t = time.monotonic()
            yield index, t, lambda bgr=bgr: self._rgb(bgr)
            index += 1

    def _rgb(self, bgr: Any) -> Any:
        rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
        return resize_short_side(rgb, self.size)

    def _release(self) -> None:
        self._cap.release()


def _network_open_kwargs(timeout: float) -> dict[str, Any]:
    us = str(int(timeout * 1e6))
    # PyAV's (open, read) timeouts interrupt any blocking FFmpeg call; rw_timeout/timeout make the
    # protocol layers give up on a silent socket themselves.
    return {"timeout": (timeout, timeout), "options": {"rw_timeout": us, "timeout": us}}


def _network_cause(exc: BaseException, timeout: float) -> str:
    import av

    root = exc.__cause__ if isinstance(exc, StreamDamaged) and exc.__cause__ is not None else exc
    if isinstance(root, av.ExitError) or "timed out" in str(root).lower():
        return f"no data for {timeout:g} s (timed out)"
    return "the stream closed or broke"


class NetworkSource(FrameSource):
    """An rtsp://, rtmp://, udp://, srt:// or http(s):// stream through PyAV, with a timeout on
    every network read.

    Live streams (streaming protocols, or HTTP without a declared duration) are read on a reader
    thread, newest frame wins; ``t`` is the stream's own clock (PTS) from the first frame. An
    HTTP(S) URL of a finite file (declared duration) is read like a file: every frame, in order.
    Losing the connection raises SourceError after the frames received so far.
    """

    backend = "pyav"

    def __init__(self, url: str, fps: float | None = None, size: int | None = None, timeout: float = 10.0,
                 live: bool | None = None) -> None:
        super().__init__(url, fps, size)
        if not (isinstance(timeout, (int, float)) and math.isfinite(timeout) and timeout > 0):
            raise SourceError(url, f"timeout must be a positive number of seconds, got {timeout!r}")
        self.url = url
        self.timeout = float(timeout)
        decoder = self._connect()
        container = decoder.container
        stream = container.streams.video[0]
        declared = container.duration / 1e6 if container.duration else None
        scheme = url.split("://", 1)[0].lower()
        self.is_live = live if live is not None else (scheme in LIVE_SCHEMES or declared is None)
        rate = stream.average_rate or stream.guessed_rate
        self.native_fps = float(rate) if rate else None
        self.duration = None if self.is_live else declared
        self.info = VideoInfo(width=stream.width, height=stream.height, codec=stream.codec_context.name,
                              container=container.format.name, native_fps=self.native_fps,
                              duration=self.duration, frame_count=int(stream.frames) or None)
        if self.is_live:
            self._live = _LiveNetworkReader(self, decoder)
            self._pending = None
        else:
            self._live = None
            self._pending = decoder

    def _connect(self) -> PyAVDecoder:
        import av

        try:
            # The frame size is only known once the stream is open; the shape is set just below.
            decoder = PyAVDecoder(self.url, self.spec, None, _network_open_kwargs(self.timeout),
                                  open_cause="cannot connect")
        except SourceError as exc:
            if isinstance(exc.__cause__, av.ExitError):
                raise source_error(self.spec, f"cannot connect: no response within {self.timeout:g} s "
                                              "(timed out)", exc.__cause__) from exc
            raise
        stream = decoder.stream
        if self.size is not None:
            decoder.shape = short_side_shape(stream.height, stream.width, self.size)
        return decoder

    @property
    def dropped(self) -> int:
        return self._live.dropped if self._live is not None else 0

    def read(self, timeout: float | None = None) -> Frame | None:
        """Live streams only: the newest frame, or None after ``timeout`` seconds without one."""
        if self._live is None:
            raise SourceError(self.spec, "read() is for live streams; iterate a finite stream instead")
        return self._live.read(timeout)

    def __iter__(self) -> Iterator[Frame]:
        if self._live is not None:
            yield from self._live
            return
        if self._closed:
            raise SourceError(self.spec, "source is closed")
        decoder, self._pending = self._pending, None
        decoder = decoder or self._connect()
        clock = ClockedFrames(self.fps)
        try:
            yield from clock.run(decoder, lambda: self._closed)
        except StreamDamaged as exc:
            cause = _network_cause(exc, self.timeout)
            raise source_error(self.spec, f"{cause} after {clock.last_t:.2f} s of video", exc) from exc
        finally:
            decoder.close()
        if not self._closed:
            short = ended_early(self.info, clock.decoded, clock.last_t)
            if short is not None:
                raise SourceError(self.spec, f"the stream closed early: {short}")

    def close(self) -> None:
        super().close()
        if self._live is not None:
            self._live.close()
        if self._pending is not None:
            self._pending.close()
            self._pending = None


class _LiveNetworkReader(ThreadedLiveSource):
    """The reader thread behind a live NetworkSource."""

    backend = "pyav"

    def __init__(self, owner: NetworkSource, decoder: PyAVDecoder) -> None:
        super().__init__(owner.spec, owner.fps, owner.size)
        self._owner = owner
        self._decoder = decoder
        self._start(owner.timeout)

    def _produce(self) -> Iterator[DecodedFrame]:
        try:
            yield from self._decoder.frames()
        except StreamDamaged as exc:
            raise source_error(self.spec, _network_cause(exc, self._owner.timeout), exc) from exc

    def _end_error(self, frames: int) -> SourceError:
        return SourceError(self.spec, f"stream closed: the server ended it after {frames} frames")

    def _release(self) -> None:
        self._decoder.close()

