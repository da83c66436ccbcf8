"""Plain data records that flow through the pipeline.

Times are seconds on the source clock (container PTS for files, arrival time for live
sources), counted from the first frame of the source.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:  # torch is only named in annotations: importing a source stays light
    import torch


@dataclass(frozen=True)
class Frame:
    """One decoded frame. ``rgb`` is an H×W×3 uint8 array."""

    index: int
    t: float
    rgb: np.ndarray


@dataclass
class FrameTokens:
    """What the language model reads for one frame, after compression.

    tokens:    [n, d_llm] visual tokens (projector output)
    positions: [n] long, flat index into the frame's token grid (row-major, grid_h × grid_w)
               of the location each token sits at
    sizes:     [n] float, how many original grid tokens each token stands for
    grid:      (grid_h, grid_w) of the uncompressed frame
    t:         the frame's time in seconds
    """

    tokens: torch.Tensor
    positions: torch.Tensor
    sizes: torch.Tensor
    grid: tuple[int, int]
    t: float

    @property
    def n(self) -> int:
        return int(self.tokens.shape[0])


@dataclass
class Event:
    """A closed segment of the stream, as long-term memory keeps it.

    tokens:      [m, d_llm] consolidated visual tokens, or None while archived on disk
    token_times: [m] float64 seconds, the time of the frame each token came from
    token_positions: [m] int64 flat grid index (row-major in ``grid``) each token sits at
    grid:        (grid_h, grid_w) of the frames' token grid
    key:         [k] float32, L2-normalised mean of the frame keys
    frame_keys:  [f, k] float32, L2-normalised retrieval keys of the kept frames
    frame_times: [f] float64 seconds of those frames
    thumbnail:   small RGB uint8 image of the event's middle frame
    """

    id: int
    t_start: float
    t_end: float
    tokens: torch.Tensor | None
    token_times: np.ndarray
    token_positions: np.ndarray
    grid: tuple[int, int]
    key: np.ndarray
    frame_keys: np.ndarray
    frame_times: np.ndarray
    caption: str = ""
    thumbnail: np.ndarray | None = None
    recalls: int = 0

    @property
    def n_tokens(self) -> int:
        return 0 if self.tokens is None else int(self.tokens.shape[0])

    def __repr__(self) -> str:
        where = "archived" if self.tokens is None else f"{self.n_tokens} tokens"
        caption = f", caption={self.caption!r}" if self.caption else ""
        return (f"Event(id={self.id}, {format_span(self.t_start, self.t_end)}, {where}, "
                f"{len(self.frame_times)} frames{caption})")


@dataclass(frozen=True)
class Citation:
    """A moment an answer used: an event's time span and its thumbnail."""

    event_id: int
    t_start: float
    t_end: float
    thumbnail: np.ndarray | None = None


@dataclass
class Answer:
    """An answer with the events whose tokens were in its prompt and per-stage timings."""

    text: str
    citations: list[Citation] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class Caption:
    """One caption per closed event, like a subtitle line."""

    t_start: float
    t_end: float
    text: str
    event_id: int


def format_time(t: float) -> str:
    """Seconds → "hh:mm:ss" (hours always shown, seconds truncated)."""
    t = max(0.0, float(t))
    h, rem = divmod(int(t), 3600)
    m, s = divmod(rem, 60)
    return f"{h:02d}:{m:02d}:{s:02d}"


def format_span(t_start: float, t_end: float) -> str:
    """The prompt's and the CLI's time label: "[00:01:23–00:01:31]"."""
    return f"[{format_time(t_start)}–{format_time(t_end)}]"
