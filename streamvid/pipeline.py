"""The per-frame write path, question-agnostic: key → gate → vision tokens → compression.

``FramePipeline.process(frames)`` turns decoded frames into what memory stores. It keeps the
state that spans frames (the last kept key for the duplicate gate, the last kept frame's full
tokens for the temporal drop) and times every stage, so benchmarks and ``streamvid bench`` can
report ms/frame per stage from one place.
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import cv2
import numpy as np
import torch

from streamvid.compress.gate import FrameGate
from streamvid.compress.merge import compress_frame
from streamvid.config import AgentConfig
from streamvid.segment import ShotDetector
from streamvid.types import Frame, FrameTokens

THUMBNAIL_SHORT_SIDE = 96


class StageTimer:
    """Accumulated wall-clock milliseconds and call counts per named stage."""

    def __init__(self) -> None:
        self.ms: dict[str, float] = defaultdict(float)
        self.frames: dict[str, int] = defaultdict(int)

    @contextmanager
    def stage(self, name: str, frames: int = 1) -> Iterator[None]:
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.ms[name] += (time.perf_counter() - t0) * 1000.0
            self.frames[name] += frames

    def ms_per_frame(self) -> dict[str, float]:
        """Mean ms per frame that went through each stage."""
        return {k: self.ms[k] / max(1, self.frames[k]) for k in self.ms}

    def reset(self) -> None:
        self.ms.clear()
        self.frames.clear()


@dataclass
class KeptFrame:
    """A frame that passed the gate, ready for ``MemoryBank.write``."""

    tokens: FrameTokens
    key: torch.Tensor  # [k] L2-normalised retrieval key
    thumbnail: np.ndarray  # small RGB uint8
    raw_tokens: int  # tokens the vision tower produced for this frame, before compression
    cut: bool = False  # the frame starts a new shot (ShotDetector): memory starts a new event with it
    hold: bool = False  # the pixels say the open shot goes on (e.g. inside a fade): no event split on key surprise


@dataclass
class DroppedRun:
    """Consecutive frames the gate dropped as repeats of the last kept frame, for ``MemoryBank.count_seen``.

    The newest one's time ``t_last`` extends the open event's span: its content was still on screen.
    """

    count: int
    t_last: float


Step = KeptFrame | DroppedRun


def add_dropped(steps: list, t: float) -> None:
    """Record one dropped frame at time ``t`` in ``steps``, growing the run that ends it, if any."""
    if steps and isinstance(steps[-1], DroppedRun):
        steps[-1].count += 1
        steps[-1].t_last = t
    else:
        steps.append(DroppedRun(1, t))


def thumbnail(rgb: np.ndarray, short_side: int = THUMBNAIL_SHORT_SIDE) -> np.ndarray:
    """A small copy of a frame, aspect kept, for citations and the memory timeline."""
    h, w = rgb.shape[:2]
    scale = short_side / min(h, w)
    if scale >= 1:
        return np.ascontiguousarray(rgb).copy()
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    return cv2.resize(rgb, size, interpolation=cv2.INTER_AREA)


class FramePipeline:
    """Gate, tokenize and compress frames for one stream, in order.

    encoder: a RetrievalEncoder (``encode_frames``: uint8 [B, H, W, 3] → [B, k] unit keys)
    llm:     a VideoLLM (``frame_tokens``: uint8 [B, H, W, 3] → VisualTokens [B, n, d])
    """

    def __init__(self, config: AgentConfig, encoder, llm) -> None:
        self.config = config
        self.encoder = encoder
        self.llm = llm
        self.timer = StageTimer()
        self.gate = FrameGate(config.tau_dup)
        self.shots = ShotDetector()
        self._last_tokens: torch.Tensor | None = None
        self.raw_tokens = 0
        self.stored_tokens = 0

    @property
    def frames_in(self) -> int:
        return self.gate.seen

    @property
    def frames_kept(self) -> int:
        return self.gate.kept

    def process(self, frames: Sequence[Frame]) -> list[Step]:
        """Frames in source order → kept frames (tokenized, compressed) and runs of dropped ones, in
        order. Each stage runs batched over the frames."""
        if not frames:
            return []
        n = len(frames)
        with self.timer.stage("key", n):
            keys = self.encoder.encode_frames([f.rgb for f in frames])
        steps: list = []  # kept frames as their index into ``frames`` until tokenized
        cuts: set[int] = set()
        fading: set[int] = set()
        with self.timer.stage("gate", n):
            for i in range(n):
                if self.shots.update(frames[i].rgb):
                    cuts.add(i)
                elif self.shots.in_transition:
                    fading.add(i)
                if self.gate.admit(keys[i], force=i in cuts):
                    steps.append(i)
                else:
                    add_dropped(steps, frames[i].t)
        kept_idx = [s for s in steps if isinstance(s, int)]
        if not kept_idx:
            return steps
        with self.timer.stage("vision", len(kept_idx)):
            visual = self.llm.frame_tokens([frames[i].rgb for i in kept_idx], times=[frames[i].t for i in kept_idx])
        tokenized: dict[int, KeptFrame] = {}
        with self.timer.stage("compress", len(kept_idx)):
            for j, i in enumerate(kept_idx):
                full = visual.tokens[j]
                if self._last_tokens is not None and self._last_tokens.shape != full.shape:
                    self._last_tokens = None  # the grid changed (new resolution): start over
                c = compress_frame(full, self._last_tokens, self.config.tau_temporal, self.config.tokens_per_frame)
                self._last_tokens = full
                ft = FrameTokens(tokens=c.tokens, positions=c.positions, sizes=c.sizes, grid=visual.grid,
                                 t=frames[i].t)
                tokenized[i] = KeptFrame(ft, keys[i], thumbnail(frames[i].rgb), int(full.shape[0]), cut=i in cuts,
                                         hold=i in fading)
                self.raw_tokens += int(full.shape[0])
                self.stored_tokens += ft.n
        return [tokenized[s] if isinstance(s, int) else s for s in steps]
