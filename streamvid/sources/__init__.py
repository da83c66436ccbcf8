"""Frame sources: video files, cameras, network streams, image directories and pushed frames.

``open_source(spec)`` picks the right one; every source iterates :class:`streamvid.Frame`.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from streamvid.errors import SourceError
from streamvid.sources.base import (
    FILE_BACKENDS,
    FpsSampler,
    FrameSource,
    LatestFrameBuffer,
    TruncatedVideoWarning,
    check_fps,
    check_size,
    short_side_shape,
)
from streamvid.sources.files import FileSource, StreamSource, open_stream
from streamvid.sources.images import ImageDirSource
from streamvid.sources.live import NETWORK_SCHEMES, CameraSource, NetworkSource, ThreadedLiveSource
from streamvid.sources.push import PushSource

_CAMERA = re.compile(r"^(camera:\d+|/dev/video\d+)$")


def open_source(spec: int | str | os.PathLike, fps: float | None = None, size: int | None = None,
                backend: str | None = None, *, timeout: float = 10.0, live: bool | None = None,
                image_fps: float | None = None) -> FrameSource:
    """Open a frame source.

    spec:      a video file, a directory of images, a URL (rtsp://, rtmp://, udp://, srt://,
               http(s)://), a camera (0, "camera:0", "/dev/video0"), or a binary stream holding
               a streamable container (e.g. ``sys.stdin.buffer``).
    fps:       resample to this rate on the source clock (None: every frame).
    size:      resize so the short side has this many pixels, keeping the aspect ratio.
    backend:   files only: force "decord" | "pyav" | "opencv" (default: decord when importable,
               else PyAV, else OpenCV; the one used is ``source.backend``).
    timeout:   seconds to wait for a network or camera to connect / deliver each read.
    live:      network streams: force live (newest-frame-wins reader thread) or file-like reading.
    image_fps: image directories: the rate the images are played at (default: ``fps``, else 1).

    Raises SourceError naming the source and the cause when it cannot be opened.
    """
    check_fps(fps)
    check_size(size)
    if isinstance(spec, bool):
        raise SourceError(spec, "not a source: expected a path, URL or camera index")
    if isinstance(spec, int):
        return CameraSource(spec, fps, size, timeout)
    if isinstance(spec, (str, os.PathLike)):
        text = os.fspath(spec)
        if isinstance(text, bytes):
            text = os.fsdecode(text)
        scheme = text.split("://", 1)[0].lower() if "://" in text else ""
        if scheme in NETWORK_SCHEMES:
            if backend not in (None, "pyav"):
                raise SourceError(text, f"backend {backend!r} cannot read network streams; PyAV reads them")
            return NetworkSource(text, fps, size, timeout=timeout, live=live)
        if scheme == "file":
            text = text[len("file://"):]
        elif scheme:
            known = ", ".join(NETWORK_SCHEMES)
            raise SourceError(text, f"unsupported URL scheme {scheme!r}; use one of {known}")
        try:
            is_camera = bool(_CAMERA.match(text)) or (text.isdigit() and not Path(text).exists())
            is_dir = not is_camera and Path(text).is_dir()
        except (OSError, ValueError) as exc:  # a name too long, an embedded NUL, …
            raise SourceError(text[:200] + ("…" if len(text) > 200 else ""),
                              f"not a usable path ({getattr(exc, 'strerror', None) or exc})") from exc
        if is_camera:
            if backend not in (None, "opencv"):
                raise SourceError(text, f"backend {backend!r} cannot read cameras; OpenCV reads them")
            return CameraSource(text, fps, size, timeout)
        if is_dir:
            return ImageDirSource(text, fps, size, image_fps=image_fps)
        return FileSource(text, fps, size, backend=backend)
    if hasattr(spec, "read"):
        return open_stream(spec, fps, size)
    raise SourceError(spec, f"not a source: expected a path, URL, camera index or binary stream, "
                            f"got {type(spec).__name__}")


__all__ = [
    "FILE_BACKENDS", "CameraSource", "FileSource", "FpsSampler", "FrameSource", "ImageDirSource",
    "LatestFrameBuffer", "NetworkSource", "PushSource", "StreamSource", "ThreadedLiveSource", "TruncatedVideoWarning",
    "open_source", "short_side_shape",
]
