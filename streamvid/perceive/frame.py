"""Everything perception reads from one kept frame, and the class that holds the loaded models."""

from __future__ import annotations

import math
import threading
import time
from dataclasses import dataclass, field

import numpy as np

from streamvid.perceive._cv import check_rgb
from streamvid.perceive.colour import dominant_colours, is_greyscale
from streamvid.perceive.faces import FaceDetector
from streamvid.perceive.motion import Motion, estimate_motion
from streamvid.perceive.objects import count_objects
from streamvid.perceive.ocr import TextBox, TextReader
from streamvid.perceive.people import Detection, PeopleDetector

STAGES = ("ocr", "people", "faces", "colour", "objects", "motion")
WEAK = 0.5  # a detection below this confidence is reported as uncertain


def detection_confidence(score: float) -> float:
    """A classic detector's score (the HOG SVM margin, the Haar cascade's final-stage weight) → a
    confidence 0–1: 1 − exp(−score), so a score of 0.7 is 0.5."""
    return 1.0 - math.exp(-max(0.0, score))


@dataclass
class FramePerception:
    """What the perception models found in one frame.

    texts:   text lines read, reading order
    people:  people boxes, best first
    faces:   frontal face boxes, best first
    colours: (colour name, share of pixels), largest first; empty for a greyscale frame
    motion:  vs the previous perceived frame; None for the first frame
    timings: milliseconds per stage (keys from STAGES)
    t:       the frame's time in seconds, when the caller gave one
    objects: compact objects standing out from the background (outside text), see count_objects
    grey:    the frame has no colour (greyscale footage): no colour names are given for it
    """

    texts: list[TextBox]
    people: list[Detection]
    faces: list[Detection]
    colours: list[tuple[str, float]]
    motion: Motion | None
    timings: dict[str, float] = field(default_factory=dict)
    t: float | None = None
    objects: int = 0
    grey: bool = False

    @property
    def people_confidence(self) -> float:
        """Confidence 0–1 of the best people detection (0 when none)."""
        return max((detection_confidence(d.score) for d in self.people), default=0.0)

    @property
    def face_confidence(self) -> float:
        return max((detection_confidence(d.score) for d in self.faces), default=0.0)


class Perceiver:
    """Holds the loaded perception models; ``perceive(rgb, prev_rgb)`` runs all of them on one frame."""

    def __init__(self, ocr_max_side: int = 640, people_max_side: int = 800, faces_max_side: int = 640) -> None:
        self.text_reader = TextReader(max_side=ocr_max_side)
        self.people_detector = PeopleDetector(max_side=people_max_side)
        self.face_detector = FaceDetector(max_side=faces_max_side)

    def perceive(self, rgb: np.ndarray, prev_rgb: np.ndarray | None = None, t: float | None = None) -> FramePerception:
        """Run OCR, people, faces, colour (none for a greyscale frame), objects and motion (when
        ``prev_rgb`` is given) on an H×W×3 uint8 frame."""
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
        grey = timed("colour", is_greyscale, rgb)
        if not grey:
            start = time.perf_counter()
            colours = dominant_colours(rgb)
            timings["colour"] += (time.perf_counter() - start) * 1e3
        else:
            colours = []
        objects = timed("objects", count_objects, rgb, [b.box for b in texts])
        motion = timed("motion", estimate_motion, rgb, prev_rgb) if prev_rgb is not None else None
        return FramePerception(texts, people, faces, colours, motion, timings, t, objects=objects, grey=grey)


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
