"""Long-term memory: building a closed event from its frames and consolidating its tokens.

An open event accumulates its frames' compressed tokens; whenever the pool grows past a cap
it is consolidated (size-weighted token merging over the event's tokens in time order), and
when the event closes it is consolidated to at most ``event_tokens`` tokens. A merged token
keeps the time and grid position of the token it sits at, so every token time stays inside
the event's [t_start, t_end] and token times stay non-decreasing.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from streamvid.tensorops import l2_normalise
from streamvid.types import Event, TokenSet


def consolidate_groups(groups: Sequence[TokenSet], budget: int) -> TokenSet:
    """Merge consecutive token groups (frames, or an already consolidated run) to at most ``budget``.

    Groups are TokenSets of one grid in time order. MovieChat-style: the most similar adjacent
    groups merge first, then a spatial merge finishes (streamvid.compress.merge.merge_adjacent_frames).
    A merged token keeps the time and grid position of the member it sits at and the summed size.
    Returns one TokenSet, n <= budget, in time order.
    """
    return consolidate_counts(TokenSet.cat(groups), [g.n for g in groups], budget)


def consolidate_counts(pooled: TokenSet, counts: Sequence[int], budget: int) -> TokenSet:
    """``consolidate_groups`` of the groups packed one after another in ``pooled``, ``counts[i]`` tokens
    each (sum(counts) == pooled.n)."""
    if pooled.n <= budget:
        return pooled
    from streamvid.compress.merge import merge_adjacent_frames

    counts = [int(c) for c in counts]
    out = merge_adjacent_frames(list(pooled.tokens.split(counts)), budget, list(pooled.sizes.split(counts)))
    source = out.source.to(pooled.times.device)
    return TokenSet(out.tokens, pooled.times[source], pooled.positions[source], out.sizes, pooled.grid)


def consolidate(tokens: TokenSet, budget: int) -> TokenSet:
    """``consolidate_groups`` with each run of equal token time as one group (a frame)."""
    if tokens.n <= budget:
        return tokens
    _, counts = torch.unique_consecutive(tokens.times, return_counts=True)
    bounds = [0, *torch.cumsum(counts, 0).tolist()]
    return consolidate_groups([tokens.select(slice(a, b)) for a, b in zip(bounds[:-1], bounds[1:], strict=True)],
                              budget)


def own_tensor(t: torch.Tensor) -> torch.Tensor:
    """``t``, or a copy of it when it is a view into a larger tensor (e.g. one frame's slice of a batch),
    so that what memory keeps holds no more than it counts."""
    return t.clone() if t.untyped_storage().nbytes() > t.numel() * t.element_size() else t


def owned(tokens: TokenSet) -> TokenSet:
    """``tokens`` with each tensor ``own_tensor``."""
    return TokenSet(own_tensor(tokens.tokens), own_tensor(tokens.times), own_tensor(tokens.positions),
                    own_tensor(tokens.sizes), tokens.grid)


class EventBuilder:
    """The open event: its frames' keys, times, thumbnails and a pool of tokens (TokenSets in time order:
    the part consolidated so far, then runs of frames added since), with the token count of each
    group a consolidation merges as a unit (the consolidated part, then each frame since).

    Not thread-safe on its own: the memory bank guards it.
    """

    def __init__(self) -> None:
        self._pool: list[TokenSet] = []
        self._groups: list[int] = []  # tokens of each group, in pool order; sums to _n_tokens
        self._n_tokens = 0
        self.frame_keys: list[np.ndarray] = []
        self.frame_times: list[float] = []
        self.thumbnails: list[np.ndarray | None] = []
        self.grid: tuple[int, int] | None = None
        self.last_seen: float | None = None  # newest time a dropped near-duplicate of this event was seen

    @property
    def n_frames(self) -> int:
        return len(self.frame_times)

    @property
    def n_tokens(self) -> int:
        return self._n_tokens

    def add_run(self, tokens: TokenSet, counts: Sequence[int], keys: np.ndarray, times: Sequence[float],
                thumbnails: Sequence[np.ndarray | None]) -> None:
        """Append consecutive kept frames: ``tokens`` holds their tokens one frame after another,
        ``counts[i]`` for frame i; keys [f, k], times [f] (not before the previous frame's),
        thumbnails [f]."""
        if self.grid is None:
            self.grid = tokens.grid
        self._pool.append(tokens)
        self._groups.extend(int(c) for c in counts)
        self._n_tokens += tokens.n
        self.frame_keys.extend(np.asarray(keys, dtype=np.float32))
        self.frame_times.extend(float(t) for t in times)
        self.thumbnails.extend(thumbnails)

    def nbytes(self) -> int:
        return sum(p.nbytes() for p in self._pool)

    def extend_to(self, t: float) -> None:
        """The event was still on screen at ``t`` (frames the gate dropped as duplicates): its span reaches t."""
        if self.frame_times and t > self.frame_times[-1]:
            self.last_seen = t if self.last_seen is None else max(self.last_seen, t)

    @property
    def t_end(self) -> float:
        return max(self.frame_times[-1], self.last_seen or self.frame_times[-1])

    def pool(self) -> TokenSet:
        """The pooled tokens in time order."""
        if len(self._pool) > 1:
            self._pool = [TokenSet.cat(self._pool)]
        return self._pool[0]

    def compact(self, budget: int) -> None:
        """Consolidate the token pool to at most ``budget`` tokens.

        The groups are the part consolidated earlier (one group) and each frame added since, so
        repeated compactions stay cheap.
        """
        if self._n_tokens <= budget:
            return
        self._pool = [consolidate_counts(self.pool(), self._groups, budget)]
        self._n_tokens = self._pool[0].n
        self._groups = [self._n_tokens]

    def build(self, event_id: int, budget: int) -> Event:
        """The closed Event, tokens consolidated to at most ``budget``."""
        if not self.frame_times:
            raise ValueError("cannot close an event without frames")
        self.compact(budget)
        frame_keys = l2_normalise(np.stack(self.frame_keys))
        return Event.from_tokens(
            owned(self.pool()), id=event_id, t_start=self.frame_times[0], t_end=self.t_end,
            key=l2_normalise(frame_keys.mean(axis=0)),
            frame_keys=frame_keys,
            frame_times=np.asarray(self.frame_times, dtype=np.float64),
            thumbnail=self.thumbnails[len(self.thumbnails) // 2],
        )

    # ---- state -------------------------------------------------------------------------------
    def tensors(self) -> dict[str, torch.Tensor]:
        """The open event's arrays by name (empty without frames); the grid is the caller's to keep."""
        if not self.frame_times:
            return {}
        pool = self.pool()
        out = {"tokens": pool.tokens, "sizes": pool.sizes, "times": pool.times, "positions": pool.positions,
               "frame_keys": torch.from_numpy(np.stack(self.frame_keys)),
               "frame_times": torch.tensor(self.frame_times, dtype=torch.float64)}
        for i, thumb in enumerate(self.thumbnails):
            if thumb is not None:
                out[f"thumb.{i}"] = torch.from_numpy(np.ascontiguousarray(thumb))
        if self.last_seen is not None:
            out["last_seen"] = torch.tensor([self.last_seen], dtype=torch.float64)
        return out

    @classmethod
    def from_tensors(cls, tensors: dict[str, torch.Tensor], grid: tuple[int, int] | None) -> EventBuilder:
        """Inverse of ``tensors`` (the caller has checked names, shapes and dtypes)."""
        builder = cls()
        builder.grid = grid
        if "tokens" not in tensors:
            return builder
        pool = TokenSet(tensors["tokens"], tensors["times"], tensors["positions"], tensors["sizes"], grid or (0, 0))
        builder._pool = [pool]
        builder._groups = [pool.n]
        builder._n_tokens = pool.n
        builder.frame_keys = list(tensors["frame_keys"].numpy())
        builder.frame_times = [float(t) for t in tensors["frame_times"].tolist()]
        builder.thumbnails = [tensors[f"thumb.{i}"].numpy() if f"thumb.{i}" in tensors else None
                              for i in range(len(builder.frame_times))]
        if "last_seen" in tensors:
            builder.last_seen = float(tensors["last_seen"][0])
        return builder
