"""Plain data records that flow through the pipeline.

Times are seconds on the source clock (container PTS for files, arrival time for live
sources), counted from the first frame of the source.

Array convention: every per-token array (tokens, times, positions, sizes) is a torch tensor,
on the tokens' device; per-frame keys and thumbnails are numpy arrays (they feed FAISS and
images, never a model).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from streamvid.errors import MemoryInputError

if TYPE_CHECKING:  # torch is imported where a method needs it: `import streamvid` stays quick
    import torch


@dataclass(frozen=True)
class Frame:
    """One decoded frame. ``rgb`` is an H×W×3 uint8 array."""

    index: int
    t: float
    rgb: np.ndarray


@dataclass(eq=False)
class TokenSet:
    """Visual tokens with the time, grid cell and weight of each one: the one record for a frame's
    compressed tokens, an open or closed event's tokens, and a block of a prompt.

    Dimensions:
        - n: number of tokens (0 allowed)
        - d: token width (the language model's hidden size)

    Type annotations, as vLLM's TensorSchema states them:
        tokens:    [n, d]  the model's dtype  visual tokens (projector output)
        times:     [n]     float64            seconds of the frame each token came from, non-decreasing
        positions: [n]     int64              flat row-major index into ``grid`` of each token's cell
        sizes:     [n]     float32            grid cells each token stands for (1 unmerged)
        grid:      (grid_h, grid_w)           the uncompressed frames' token grid

    The four tensors sit on one device. Construction checks shapes only (no host sync) and casts
    times, positions and sizes to their dtypes; a mismatch raises ``error``.
    """

    tokens: torch.Tensor
    times: torch.Tensor
    positions: torch.Tensor
    sizes: torch.Tensor
    grid: tuple[int, int]

    error = MemoryInputError  # what a malformed set raises; subclasses name their own

    def __post_init__(self) -> None:
        self._check()

    def _check(self) -> None:
        import torch

        what = type(self).__name__
        for name in ("tokens", "times", "positions", "sizes"):
            if not isinstance(getattr(self, name), torch.Tensor):
                raise self.error(f"{what}.{name} must be a torch tensor, got {type(getattr(self, name)).__name__}")
        if self.tokens.ndim != 2:
            raise self.error(f"{what}: tokens must be [n, d], got {list(self.tokens.shape)}")
        n = int(self.tokens.shape[0])
        if self.times.dtype != torch.float64 or self.times.ndim != 1:
            self.times = self.times.to(torch.float64).reshape(-1)
        self.positions = self.positions.to(torch.long).reshape(-1)
        self.sizes = self.sizes.to(torch.float32).reshape(-1)
        if len(self.times) != n or len(self.positions) != n or len(self.sizes) != n:
            raise self.error(f"{what}: {n} tokens but {len(self.times)} times, {len(self.positions)} "
                             f"positions and {len(self.sizes)} sizes")
        if len(self.grid) != 2:
            raise self.error(f"{what}: grid must be (grid_h, grid_w), got {self.grid!r}")
        self.grid = (int(self.grid[0]), int(self.grid[1]))

    @property
    def n(self) -> int:
        return int(self.tokens.shape[0])

    def select(self, index: torch.Tensor) -> TokenSet:
        """The tokens at ``index`` ([m] long or bool, on the set's device) as a new TokenSet."""
        return TokenSet(self.tokens[index], self.times[index], self.positions[index], self.sizes[index], self.grid)

    @staticmethod
    def cat(sets: Sequence[TokenSet]) -> TokenSet:
        """Sets of one grid, concatenated in the given order."""
        if not sets:
            raise MemoryInputError("TokenSet.cat needs at least one set")
        import torch

        if len(sets) == 1:
            s = sets[0]
            return TokenSet(s.tokens, s.times, s.positions, s.sizes, s.grid)
        return TokenSet(torch.cat([s.tokens for s in sets]), torch.cat([s.times for s in sets]),
                        torch.cat([s.positions for s in sets]), torch.cat([s.sizes for s in sets]), sets[0].grid)

    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in (self.tokens, self.times, self.positions, self.sizes))


class FrameTokens(TokenSet):
    """A TokenSet of one frame at time ``t``: what the language model reads for it after compression.

    ``FrameTokens(tokens [n, d], positions [n], sizes [n], grid, t)``; every token's time is ``t``
    (``times`` follows ``t`` if it is changed).
    """

    error = MemoryInputError

    def __init__(self, tokens: torch.Tensor, positions: torch.Tensor, sizes: torch.Tensor,
                 grid: tuple[int, int], t: float) -> None:
        self.tokens, self.positions, self.sizes, self.grid = tokens, positions, sizes, grid
        self.t = float(t)
        self._check()

    @property  # type: ignore[override]
    def times(self) -> torch.Tensor:
        import torch

        return torch.full((self.n,), self.t, dtype=torch.float64, device=self.tokens.device)

    def __repr__(self) -> str:
        return f"FrameTokens(t={self.t}, n={self.n}, grid={self.grid})"


@dataclass(eq=False)
class FrameBatch:
    """Consecutive frames of one batch as memory takes them in one call (``MemoryBank.write_batch``):
    the kept frames' compressed tokens packed one after another, and the runs of frames dropped as
    repeats between them. B kept frames, N = sum(counts) tokens, one token grid:

        tokens:     [N, d]  the kept frames' compressed tokens, frame after frame
        positions:  [N]     int64 grid index of each token
        sizes:      [N]     float32 grid cells each token stands for
        counts:     [B]     int64 numpy, tokens of each kept frame
        grid:       (grid_h, grid_w)
        times:      [B]     float64 numpy, seconds of each kept frame, non-decreasing
        keys:       [B, k]  float32 numpy retrieval keys
        thumbnails: B small RGB uint8 images (or None)
        cuts:       [B]     bool numpy: the frame starts a new shot (memory starts a new event with it)
        holds:      [B]     bool numpy: the pixels say the open shot goes on (no split on key surprise)
        dropped:    (before, count, t_last) runs: ``count`` frames dropped as repeats just before kept
                    frame ``before`` (B: after the last one), the newest of them at ``t_last``
        raw_tokens: tokens the vision tower made for the kept frames, before compression
        ready:      None, or an event to wait for before reading the tensors (a copy to the host that
                    is still in flight; see ``streamvid.device.to_host``)
    """

    tokens: torch.Tensor
    positions: torch.Tensor
    sizes: torch.Tensor
    counts: np.ndarray
    grid: tuple[int, int]
    times: np.ndarray
    keys: np.ndarray
    thumbnails: list[np.ndarray | None]
    cuts: np.ndarray
    holds: np.ndarray
    dropped: list[tuple[int, int, float]] = field(default_factory=list)
    raw_tokens: int = 0
    ready: object = None

    @property
    def n_kept(self) -> int:
        return len(self.times)

    @property
    def frames(self) -> int:
        """Source frames the batch stands for: kept and dropped."""
        return self.n_kept + sum(count for _, count, _ in self.dropped)

    @classmethod
    def of(cls, frames: Sequence[FrameTokens], keys: Sequence[np.ndarray] | np.ndarray,
           thumbnails: Sequence[np.ndarray | None] | None = None, *, cuts: Sequence[bool] | None = None,
           holds: Sequence[bool] | None = None, dropped: Sequence[tuple[int, int, float]] = (),
           token_dim: int | None = None, key_dim: int | None = None) -> FrameBatch:
        """Kept frames given one by one (``FrameTokens`` of one grid, each with its key [k]) packed as
        a batch. ``token_dim``/``key_dim``: the widths when there are no frames."""
        import torch

        b = len(frames)
        if not all(isinstance(f, FrameTokens) for f in frames):
            raise MemoryInputError("a frame batch is made of FrameTokens")
        grids = {f.grid for f in frames}
        if len(grids) > 1:
            raise MemoryInputError(f"the frames of one batch share one token grid, got {sorted(grids)}")
        d = int(frames[0].tokens.shape[1]) if b else int(token_dim or 1)

        def packed(name: str, empty: torch.Tensor) -> torch.Tensor:
            if b == 1:  # one frame: its own tensors, no copy
                return getattr(frames[0], name)
            return torch.cat([getattr(f, name) for f in frames]) if b else empty

        return cls(
            tokens=packed("tokens", torch.zeros(0, d)),
            positions=packed("positions", torch.zeros(0, dtype=torch.long)),
            sizes=packed("sizes", torch.zeros(0)),
            counts=np.array([f.n for f in frames], dtype=np.int64), grid=grids.pop() if b else (0, 0),
            times=np.array([f.t for f in frames], dtype=np.float64),
            keys=(np.stack([_key_array(k) for k in keys]) if b
                  else np.zeros((0, int(key_dim or 1)), np.float32)),
            thumbnails=list(thumbnails) if thumbnails is not None else [None] * b,
            cuts=np.zeros(b, bool) if cuts is None else np.asarray(cuts, dtype=bool),
            holds=np.zeros(b, bool) if holds is None else np.asarray(holds, dtype=bool),
            dropped=list(dropped), raw_tokens=sum(f.n for f in frames))


def _key_array(key: object) -> np.ndarray:
    """A key as float32 numpy (a torch tensor is brought to the host)."""
    if hasattr(key, "detach"):
        key = key.detach().to("cpu").float().numpy()  # type: ignore[attr-defined]
    return np.asarray(key, dtype=np.float32)


@dataclass(eq=False)
class Event:
    """A closed segment of the stream, as long-term memory keeps it.

    Its visual tokens are a TokenSet (``visual``) spread over four fields, so the record reads
    as it always has; m is the number of tokens, f the number of kept frames:

    tokens:      [m, d_llm] consolidated visual tokens, or None while archived on disk
    token_times: [m] float64 tensor, seconds of the frame each token came from
    token_positions: [m] int64 tensor, flat grid index (row-major in ``grid``) each token sits at
    grid:        (grid_h, grid_w) of the frames' token grid
    key:         [k] float32 numpy, L2-normalised mean of the frame keys
    frame_keys:  [f, k] float32 numpy, L2-normalised retrieval keys of the kept frames
    frame_times: [f] float64 numpy, seconds of those frames
    thumbnail:   small RGB uint8 image of the event's middle frame
    token_sizes: [m] float32 tensor, grid cells each token stands for (None: 1 each)

    token_times and token_positions given as arrays or lists are taken as tensors once, here.
    """

    id: int
    t_start: float
    t_end: float
    tokens: torch.Tensor | None
    token_times: torch.Tensor
    token_positions: torch.Tensor
    grid: tuple[int, int]
    key: np.ndarray
    frame_keys: np.ndarray
    frame_times: np.ndarray
    caption: str = ""
    thumbnail: np.ndarray | None = None
    recalls: int = 0
    token_sizes: torch.Tensor | None = None

    def __post_init__(self) -> None:
        import torch

        self.token_times = torch.as_tensor(self.token_times, dtype=torch.float64).reshape(-1)
        self.token_positions = torch.as_tensor(self.token_positions, dtype=torch.long).reshape(-1)
        if self.token_sizes is None:
            self.token_sizes = torch.ones(len(self.token_times), dtype=torch.float32,
                                          device=self.token_times.device)

    @classmethod
    def from_tokens(cls, visual: TokenSet, **fields: object) -> Event:
        """An event holding ``visual``; ``fields`` are the others (id, t_start, t_end, key, …)."""
        return cls(tokens=visual.tokens, token_times=visual.times, token_positions=visual.positions,
                   grid=visual.grid, token_sizes=visual.sizes, **fields)  # type: ignore[arg-type]

    @property
    def visual(self) -> TokenSet | None:
        """The event's tokens as a TokenSet (views, no copy); None while archived."""
        if self.tokens is None:
            return None
        return TokenSet(self.tokens, self.token_times, self.token_positions, self.token_sizes, self.grid)

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


NOT_SEEN = "I did not see that."  # the answer when what a question asks about is not in memory


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
