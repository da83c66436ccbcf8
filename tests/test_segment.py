"""Online event segmentation: boundaries at surprising keys, bounded event lengths."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streamvid.segment import EventSegmenter, adaptive_threshold, surprise


def _scene_stream(scene_lengths: list[int], dim: int = 32, noise: float = 0.05, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    keys = []
    for length in scene_lengths:
        centre = rng.normal(size=dim)
        for _ in range(length):
            k = centre / np.linalg.norm(centre) + noise * rng.normal(size=dim) / np.sqrt(dim)
            keys.append(k / np.linalg.norm(k))
    return np.stack(keys)


def _boundaries(seg: EventSegmenter, keys: np.ndarray) -> list[int]:
    return [i for i, k in enumerate(keys) if seg.update(k)]


def test_surprise_is_one_minus_cosine():
    a = np.array([1.0, 0.0])
    assert surprise(a, np.array([2.0, 0.0])) == pytest.approx(0.0)
    assert surprise(a, np.array([0.0, 3.0])) == pytest.approx(1.0)
    assert surprise(a, np.array([-1.0, 0.0])) == pytest.approx(2.0)
    assert adaptive_threshold(np.array([0.1, 0.3]), 2.0) == pytest.approx(0.2 + 2 * 0.1)


def test_hard_surprise_cuts_before_the_adaptive_threshold_has_statistics():
    keys = _scene_stream([2, 2, 3], noise=0.0)  # three scenes, too few frames to warm the threshold up
    assert _boundaries(EventSegmenter(min_frames=1, warmup=4), keys) == []
    assert _boundaries(EventSegmenter(min_frames=1, warmup=4, hard_surprise=0.3), keys) == [2, 4]


def test_boundaries_fall_on_scene_changes():
    lengths = [12, 20, 9, 15, 30]
    keys = _scene_stream(lengths)
    seg = EventSegmenter(min_frames=2, max_frames=64, z=2.0, window=32)
    expected = list(np.cumsum(lengths)[:-1])
    assert _boundaries(seg, keys) == expected


def test_static_stream_is_cut_only_at_max_length():
    keys = _scene_stream([50], noise=0.01)
    seg = EventSegmenter(min_frames=2, max_frames=16, z=2.0, window=32)
    assert _boundaries(seg, keys) == [16, 32, 48]


def test_min_length_suppresses_early_cuts():
    keys = _scene_stream([6, 2, 6, 6])  # the 2-frame scene is shorter than min_frames
    seg = EventSegmenter(min_frames=4, max_frames=64, z=1.0, window=8)
    cuts = _boundaries(seg, keys)
    starts = [0, *cuts]
    assert all(b - a >= 4 for a, b in zip(starts, starts[1:], strict=False))


@settings(max_examples=40, deadline=None)
@given(
    lengths=st.lists(st.integers(1, 30), min_size=1, max_size=8),
    min_frames=st.integers(1, 5),
    extra=st.integers(0, 20),
    seed=st.integers(0, 1000),
)
def test_event_lengths_stay_within_bounds(lengths, min_frames, extra, seed):
    max_frames = min_frames + extra
    keys = _scene_stream(lengths, seed=seed, noise=0.3)
    seg = EventSegmenter(min_frames=min_frames, max_frames=max_frames)
    cuts = _boundaries(seg, keys)
    starts = [0, *cuts, len(keys)]
    sizes = [b - a for a, b in zip(starts, starts[1:], strict=False)]
    assert all(s <= max_frames for s in sizes)
    assert all(s >= min_frames for s in sizes[:-1])  # the last (open) event may be shorter


def test_state_round_trip_continues_identically():
    keys = _scene_stream([10, 14, 8, 20], seed=3)
    a = EventSegmenter(window=8)
    first = _boundaries(a, keys[:20])
    b = EventSegmenter(window=8)
    b.load_state(a.state())
    assert first == [10]
    assert _boundaries(a, keys[20:]) == _boundaries(b, keys[20:])


def test_bad_lengths_raise():
    with pytest.raises(ValueError, match="min_frames"):
        EventSegmenter(min_frames=5, max_frames=2)
