"""Long-term memory: building a closed event from its frames and consolidating its tokens.

An open event accumulates its frames' compressed tokens; whenever the pool grows past a cap
it is consolidated (size-weighted token merging over the event's tokens in time order), and
when the event closes it is consolidated to at most ``event_tokens`` tokens. A merged token
keeps the time and grid position of the token it sits at, so every token time stays inside
the event's [t_start, t_end] and token times stay non-decreasing.
"""

from __future__ import annotations

import numpy as np
import torch

from streamvid.types import Event, FrameTokens


def consolidate_groups(tokens: list[torch.Tensor], sizes: list[torch.Tensor], times: list[np.ndarray],
                       positions: list[np.ndarray], budget: int
                       ) -> tuple[torch.Tensor, torch.Tensor, np.ndarray, np.ndarray]:
    """Merge consecutive token groups (frames, or an already consolidated run) to at most ``budget``.

    Group i: tokens [n_i, d], sizes [n_i] (patches each token stands for), times [n_i] float64,
    positions [n_i] int64, in time order. MovieChat-style: the most similar adjacent groups merge
    first, then a spatial merge finishes (streamvid.compress.merge.merge_adjacent_frames). A
    merged token keeps the time and grid position of the member it sits at. Returns the
    concatenated (tokens [n, d], sizes [n], times [n], positions [n]), n <= budget, in time order.
    """
    all_times = np.concatenate(times)
    all_positions = np.concatenate(positions)
    if len(all_times) <= budget:
        return torch.cat(tokens), torch.cat(sizes), all_times, all_positions
    from streamvid.compress.merge import merge_adjacent_frames

    out = merge_adjacent_frames(tokens, budget, sizes)
    idx = out.source.to(torch.long).cpu().numpy()
    return out.tokens, out.sizes, all_times[idx], all_positions[idx]


def consolidate(tokens: torch.Tensor, sizes: torch.Tensor, times: np.ndarray, positions: np.ndarray,
                budget: int) -> tuple[torch.Tensor, torch.Tensor, np.ndarray, np.ndarray]:
    """``consolidate_groups`` with each run of equal token time as one group (a frame).

    tokens [n, d] in time order, sizes [n], times [n], positions [n] → the same four, n' <= budget.
    """
    n = int(tokens.shape[0])
    if n <= budget:
        return tokens, sizes, times, positions
    bounds = [0, *(np.flatnonzero(np.diff(times) != 0) + 1).tolist(), n]
    spans = list(zip(bounds[:-1], bounds[1:], strict=True))
    return consolidate_groups([tokens[a:b] for a, b in spans], [sizes[a:b] for a, b in spans],
                              [times[a:b] for a, b in spans], [positions[a:b] for a, b in spans], budget)


def l2_normalise(x: np.ndarray) -> np.ndarray:
    """Unit-norm copy of a vector [k] (or rows of [n, k]) as float32."""
    x = np.asarray(x, dtype=np.float32)
    norm = np.linalg.norm(x, axis=-1, keepdims=True)
    return (x / np.maximum(norm, 1e-12)).astype(np.float32)


class EventBuilder:
    """The open event: its frames' keys, times, thumbnails and a pool of tokens.

    Not thread-safe on its own: the memory bank guards it.
    """

    def __init__(self) -> None:
        self._tokens: list[torch.Tensor] = []
        self._sizes: list[torch.Tensor] = []
        self._times: list[np.ndarray] = []
        self._positions: list[np.ndarray] = []
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

    def add(self, frame: FrameTokens, key: np.ndarray, thumbnail: np.ndarray | None) -> None:
        """Append one kept frame (its time must not precede the previous frame's)."""
        if self.grid is None:
            self.grid = (int(frame.grid[0]), int(frame.grid[1]))
        n = frame.n
        self._tokens.append(frame.tokens)
        self._sizes.append(frame.sizes.to(torch.float32).reshape(n))
        self._times.append(np.full(n, float(frame.t), dtype=np.float64))
        self._positions.append(frame.positions.to(torch.long).reshape(n).cpu().numpy())
        self._n_tokens += n
        self.frame_keys.append(np.asarray(key, dtype=np.float32))
        self.frame_times.append(float(frame.t))
        self.thumbnails.append(thumbnail)

    def extend_to(self, t: float) -> None:
        """The event was still on screen at ``t`` (frames the gate dropped as duplicates): its span reaches t."""
        if self.frame_times and t > self.frame_times[-1]:
            self.last_seen = t if self.last_seen is None else max(self.last_seen, t)

    @property
    def t_end(self) -> float:
        return max(self.frame_times[-1], self.last_seen or self.frame_times[-1])

    def pool(self) -> tuple[torch.Tensor, torch.Tensor, np.ndarray, np.ndarray]:
        """The pooled (tokens [n, d], sizes [n], times [n], positions [n]) in time order."""
        if len(self._tokens) > 1:
            self._tokens = [torch.cat(self._tokens)]
            self._sizes = [torch.cat(self._sizes)]
            self._times = [np.concatenate(self._times)]
            self._positions = [np.concatenate(self._positions)]
        return self._tokens[0], self._sizes[0], self._times[0], self._positions[0]

    def compact(self, budget: int) -> None:
        """Consolidate the token pool to at most ``budget`` tokens.

        The groups are the pool's chunks: the part consolidated earlier counts as one group and
        each frame added since as one more, so repeated compactions stay cheap.
        """
        if self._n_tokens <= budget:
            return
        tokens, sizes, times, positions = consolidate_groups(self._tokens, self._sizes, self._times,
                                                             self._positions, budget)
        self._tokens, self._sizes, self._times, self._positions = [tokens], [sizes], [times], [positions]
        self._n_tokens = int(tokens.shape[0])

    def build(self, event_id: int, budget: int) -> Event:
        """The closed Event, tokens consolidated to at most ``budget``."""
        if not self.frame_times:
            raise ValueError("cannot close an event without frames")
        self.compact(budget)
        tokens, _, times, positions = self.pool()
        frame_keys = l2_normalise(np.stack(self.frame_keys))
        return Event(
            id=event_id, t_start=self.frame_times[0], t_end=self.t_end,
            tokens=tokens, token_times=times, token_positions=positions,
            grid=self.grid or (0, 0),
            key=l2_normalise(frame_keys.mean(axis=0)),
            frame_keys=frame_keys,
            frame_times=np.asarray(self.frame_times, dtype=np.float64),
            thumbnail=self.thumbnails[len(self.thumbnails) // 2],
        )

    # ---- persistence ------------------------------------------------------------------------
    def tensors(self, prefix: str) -> dict[str, torch.Tensor]:
        if not self.frame_times:
            return {}
        tokens, sizes, times, positions = self.pool()
        out = {
            f"{prefix}tokens": tokens.contiguous(), f"{prefix}sizes": sizes.contiguous(),
            f"{prefix}times": torch.from_numpy(np.ascontiguousarray(times)),
            f"{prefix}positions": torch.from_numpy(np.ascontiguousarray(positions)),
            f"{prefix}frame_keys": torch.from_numpy(np.stack(self.frame_keys)),
            f"{prefix}frame_times": torch.from_numpy(np.asarray(self.frame_times, dtype=np.float64)),
        }
        for i, thumb in enumerate(self.thumbnails):
            if thumb is not None:
                out[f"{prefix}thumb.{i}"] = torch.from_numpy(np.ascontiguousarray(thumb))
        if self.last_seen is not None:
            out[f"{prefix}last_seen"] = torch.tensor([self.last_seen], dtype=torch.float64)
        return out

    @classmethod
    def from_tensors(cls, tensors: dict[str, torch.Tensor], prefix: str, grid: tuple[int, int] | None) -> EventBuilder:
        builder = cls()
        if f"{prefix}tokens" not in tensors:
            return builder
        builder._tokens = [tensors[f"{prefix}tokens"]]
        builder._sizes = [tensors[f"{prefix}sizes"]]
        builder._times = [tensors[f"{prefix}times"].numpy()]
        builder._positions = [tensors[f"{prefix}positions"].numpy()]
        builder._n_tokens = int(builder._tokens[0].shape[0])
        builder.frame_keys = list(tensors[f"{prefix}frame_keys"].numpy())
        builder.frame_times = [float(t) for t in tensors[f"{prefix}frame_times"].numpy()]
        builder.thumbnails = [
            tensors[f"{prefix}thumb.{i}"].numpy() if f"{prefix}thumb.{i}" in tensors else None
            for i in range(len(builder.frame_times))
        ]
        builder.grid = grid
        if f"{prefix}last_seen" in tensors:
            builder.last_seen = float(tensors[f"{prefix}last_seen"][0])
        return builder
