"""Online event segmentation: boundaries at surprising keys, bounded event lengths."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streamvid.config import AgentConfig
from streamvid.errors import ConfigError
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
    with pytest.raises(ConfigError, match="segment_max_frames"):
        AgentConfig(segment_min_frames=5, segment_max_frames=2)
    with pytest.raises(ConfigError, match="segment_window"):
        AgentConfig(segment_window=1)


# ---- shot changes from pixels ------------------------------------------------------------------
from streamvid_bench.clips import Clip, Overlay, Scene, frames  # noqa: E402

from streamvid.segment import ShotDetector, histogram_distance, shot_histogram  # noqa: E402

COLOURS6 = ["red", "green", "blue", "yellow", "purple", "cyan"]


def _shot_cuts(clip: Clip, fps: float) -> list[float]:
    det = ShotDetector()
    return [t for t, rgb in frames(clip, fps) if det.update(rgb)]


@pytest.mark.parametrize("fps", [1.0, 2.0])
@pytest.mark.parametrize("grey", [False, True])
def test_every_hard_cut_splits(fps, grey):
    clip = Clip("cuts", tuple(Scene(10 * i, 10 * i + 10, c, seed=i) for i, c in enumerate(COLOURS6[:5])), grey=grey)
    assert _shot_cuts(clip, fps) == [10.0, 20.0, 30.0, 40.0]


@pytest.mark.parametrize("fps", [1.0, 2.0])
@pytest.mark.parametrize("motion", ["pan", "drift"])
def test_pans_and_lighting_drift_do_not_split(fps, motion):
    clip = Clip(motion, (Scene(0, 30, "green", motion=motion), Scene(30, 60, "orange", motion=motion, seed=3)))
    assert _shot_cuts(clip, fps) == [30.0]


@pytest.mark.parametrize("fps", [1.0, 2.0, 4.0])
@pytest.mark.parametrize("enter", ["fade", "black"])
def test_a_fade_splits_once_within_a_second_of_its_middle(fps, enter):
    clip = Clip("fade", (Scene(0, 10, "red"), Scene(10, 20, "blue", enter=enter, fade_s=2.0),
                         Scene(20, 30, "yellow", seed=2)))
    cuts = _shot_cuts(clip, fps)
    assert len(cuts) == 2 and abs(cuts[0] - 11.0) <= 1.0 and cuts[1] == 20.0


def test_small_overlays_do_not_split():
    clip = Clip("text", (Scene(0, 20, "blue"),), overlays=(Overlay(5, 10, text="EXIT"), Overlay(12, 16, count=3)))
    assert _shot_cuts(clip, 2.0) == []


def test_histogram_distance_bounds():
    a = shot_histogram(np.zeros((48, 64, 3), np.uint8))
    b = shot_histogram(np.full((48, 64, 3), 255, np.uint8))
    assert histogram_distance(a, a) == pytest.approx(0.0)
    assert histogram_distance(a, b) == pytest.approx(1.0)
    with pytest.raises(ValueError):
        ShotDetector(threshold=0.7, hard=0.6)


@pytest.fixture(scope="module")
def cut_clip(tmp_path_factory):
    """A cut, a cross-fade, a pan and lighting drift; true boundaries at 8, 17 and 24 s."""
    from streamvid_bench.clips import write_clip

    clip = Clip("mixed", (Scene(0, 8, "red"), Scene(8, 16, "blue", seed=1), Scene(16, 24, "green", enter="fade",
                          fade_s=2.0, seed=2), Scene(24, 34, "yellow", motion="pan", seed=3)))
    return clip, write_clip(clip, tmp_path_factory.mktemp("seg") / "mixed.mp4")


@pytest.mark.parametrize("preset", ["tiny-random", "offline"])
def test_agent_events_follow_the_shots(cut_clip, preset):
    import streamvid

    clip, path = cut_clip
    with streamvid.StreamAgent.from_preset(preset, captions=False, fps=2.0) as agent:
        agent.ingest(str(path), progress=False)
        starts = [e.t_start for e in agent.memory.snapshot().events][1:]
    assert len(starts) == len(clip.cuts())
    for got, want in zip(starts, clip.cuts(), strict=True):
        assert abs(got - want) <= 1.0, (starts, clip.cuts())
