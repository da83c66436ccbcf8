"""A directory of still images played as a video: sorted names, ``t = i / image_fps``."""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np

from streamvid.errors import SourceError
from streamvid.imageops import resize_short_side
from streamvid.sources.base import FpsSampler, FrameSource, check_fps, check_frame_shape
from streamvid.types import Frame

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")


def natural_key(name: str) -> list[object]:
    """"img2.png" sorts before "img10.png"; zero-padded names sort as they read."""
    return [int(part) if part.isdigit() else part.lower() for part in re.split(r"(\d+)", name)]


class ImageDirSource(FrameSource):
    """Image files of a directory in natural name order, as frames ``image_fps`` per second.

    Images the fps sampler skips are never read. An image that cannot be decoded raises
    SourceError naming that file.
    """

    backend = "opencv"
    is_live = False

    def __init__(self, path: str | os.PathLike, fps: float | None = None, size: int | None = None,
                 image_fps: float | None = None) -> None:
        super().__init__(path, fps, size)
        self.path = Path(path)
        self.native_fps = check_fps(image_fps) or self.fps or 1.0
        try:
            names = [p.name for p in self.path.iterdir()
                     if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()]
        except OSError as exc:
            raise SourceError(path, f"cannot list the directory ({exc.strerror or exc})") from exc
        if not names:
            raise SourceError(path, f"directory contains no images (looked for {' '.join(IMAGE_SUFFIXES)})")
        self.files = [self.path / name for name in sorted(names, key=natural_key)]
        self.duration = len(self.files) / self.native_fps

    def _read(self, file: Path) -> np.ndarray:
        try:
            data = np.fromfile(file, dtype=np.uint8)  # imdecode, unlike imread, copes with any path encoding
            bgr = cv2.imdecode(data, cv2.IMREAD_COLOR) if data.size else None
        except (OSError, cv2.error) as exc:
            raise SourceError(self.spec, f"cannot read image {file.name} ({exc})") from exc
        if bgr is None:
            raise SourceError(self.spec, f"cannot decode image {file.name} (damaged or not an image)")
        check_frame_shape(f"{self.spec}/{file.name}", bgr.shape[0], bgr.shape[1])
        rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
        return resize_short_side(rgb, self.size)

    def __iter__(self) -> Iterator[Frame]:
        sampler = FpsSampler(self.fps)
        for index, file in enumerate(self.files):
            if self._closed:
                return
            t = index / self.native_fps
            if sampler.keep(t):
                yield Frame(index, t, self._read(file))
