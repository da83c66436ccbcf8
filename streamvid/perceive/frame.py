"""Everything perception reads from one kept frame, and the class that holds the loaded models."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field

import numpy as np

from streamvid.perceive._cv import check_rgb
from streamvid.perceive.colour import dominant_colours
from streamvid.perceive.faces import FaceDetector
from streamvid.perceive.motion import Motion, estimate_motion
from streamvid.perceive.ocr import TextBox, TextReader
from streamvid.perceive.people import Detection, PeopleDetector

STAGES = ("ocr", "people", "faces", "colour", "motion")


@dataclass
class FramePerception:
    """What the perception models found in one frame.

    texts:   text lines read, reading order
    people:  people boxes, best first
    faces:   frontal face boxes, best first
    colours: (colour name, share of pixels), largest first
    motion:  vs the previous perceived frame; None for the first frame
    timings: milliseconds per stage (keys from STAGES)
    t:       the frame's time in seconds, when the caller gave one
    """

    texts: list[TextBox]
    people: list[Detection]
    faces: list[Detection]
    colours: list[tuple[str, float]]
    motion: Motion | None
    timings: dict[str, float] = field(default_factory=dict)
    t: float | None = None


class Perceiver:
    """Holds the loaded perception models; ``perceive(rgb, prev_rgb)`` runs all of them on one frame."""

    def __init__(self, ocr_max_side: int = 640, people_max_side: int = 800, faces_max_side: int = 640) -> None:
        self.text_reader = TextReader(max_side=ocr_max_side)
        self.people_detector = PeopleDetector(max_side=people_max_side)
        self.face_detector = FaceDetector(max_side=faces_max_side)

    def perceive(self, rgb: np.ndarray, prev_rgb: np.ndarray | None = None, t: float | None = None) -> FramePerception:
        """Run OCR, people, faces, colour and motion (when ``prev_rgb`` is given) on an H×W×3 uint8 frame."""
        check_rgb(rgb, "perceive_frame")
        timings: dict[str, float] = {}

        def timed(stage: str, fn, *args):
            start = time.perf_counter()
            out = fn(*args)
            timings[stage] = (time.perf_counter() - start) * 1e3
            return out

        texts = timed("ocr", self.text_reader.read, rgb)
        people = timed("people", self.people_detector.detect, rgb)
        faces = timed("faces", self.face_detector.detect, rgb)
        colours = timed("colour", dominant_colours, rgb)
        motion = timed("motion", estimate_motion, rgb, prev_rgb) if prev_rgb is not None else None
        return FramePerception(texts, people, faces, colours, motion, timings, t)


_default: Perceiver | None = None
_default_lock = threading.Lock()


def default_perceiver() -> Perceiver:
    """One Perceiver per process, loaded on first use."""
    global _default
    with _default_lock:
        if _default is None:
            _default = Perceiver()
        return _default


def perceive_frame(rgb: np.ndarray, prev_rgb: np.ndarray | None = None, t: float | None = None) -> FramePerception:
    """Perceive one frame with the process-wide default Perceiver."""
    return default_perceiver().perceive(rgb, prev_rgb, t)
