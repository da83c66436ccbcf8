"""Short-term memory: a ring buffer of the most recent kept frames with their full compressed tokens."""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from streamvid.types import FrameTokens


@dataclass(frozen=True)
class ShortTermFrame:
    """One recent kept frame. ``key`` [k] float32 L2-normalised; thumbnail RGB uint8 or None."""

    frame: FrameTokens
    key: np.ndarray
    thumbnail: np.ndarray | None = None

    @property
    def t(self) -> float:
        return self.frame.t

    @property
    def n_tokens(self) -> int:
        return self.frame.n


class ShortTermMemory:
    """The last ``max_frames`` frames, holding at most ``max_tokens`` tokens in total.

    Pushing a frame evicts the oldest ones until both limits hold. The caller makes sure a
    single frame fits within ``max_tokens`` (the bank merges an oversize frame down first).
    Not thread-safe on its own: the memory bank guards it.
    """

    def __init__(self, max_frames: int, max_tokens: int) -> None:
        if max_frames < 1 or max_tokens < 1:
            raise ValueError(f"short-term memory needs max_frames >= 1 and max_tokens >= 1, "
                             f"got {max_frames}, {max_tokens}")
        self.max_frames = max_frames
        self.max_tokens = max_tokens
        self._frames: deque[ShortTermFrame] = deque()
        self._tokens = 0

    def push(self, item: ShortTermFrame) -> list[ShortTermFrame]:
        """Append the newest frame; returns the frames evicted to stay within the limits."""
        if item.n_tokens > self.max_tokens:
            raise ValueError(f"frame of {item.n_tokens} tokens exceeds the short-term cap {self.max_tokens}")
        self._frames.append(item)
        self._tokens += item.n_tokens
        evicted = []
        while len(self._frames) > self.max_frames or self._tokens > self.max_tokens:
            old = self._frames.popleft()
            self._tokens -= old.n_tokens
            evicted.append(old)
        return evicted

    def push_many(self, counts: Sequence[int], make: Callable[[int], ShortTermFrame]) -> list[int]:
        """Append new frames oldest first, as ``push`` one by one would, building only those that stay:
        ``counts[j]`` is new frame j's token count and ``make(j)`` builds it. Returns the ring's tokens
        after each push."""
        old = list(self._frames)
        sizes = [f.n_tokens for f in old] + [int(n) for n in counts]
        start, total, after = 0, self._tokens, []
        for j, n in enumerate(counts):
            if n > self.max_tokens:
                raise ValueError(f"frame of {n} tokens exceeds the short-term cap {self.max_tokens}")
            total += n
            end = len(old) + j + 1
            while end - start > self.max_frames or total > self.max_tokens:
                total -= sizes[start]
                start += 1
            after.append(total)
        new = [make(j) for j in range(max(0, start - len(old)), len(counts))]
        self._frames = deque(old[start:] + new)
        self._tokens = sum(f.n_tokens for f in self._frames)
        return after

    @property
    def n_tokens(self) -> int:
        return self._tokens

    def __len__(self) -> int:
        return len(self._frames)

    def frames(self) -> tuple[ShortTermFrame, ...]:
        """Oldest first; a tuple copy so readers never see the buffer change under them."""
        return tuple(self._frames)
