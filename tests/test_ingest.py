"""Staged ingestion (issue 13): the pre-gate, the staged path against the serial one, backpressure,
errors from every stage, and thread hygiene. tiny-random preset: real architectures, random weights."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import cv2
import numpy as np
import pytest
import torch
from streamvid_bench import samples as make_sample_video

from streamvid import SourceError, StreamvidError
from streamvid.agent import StreamAgent
from streamvid.compress.pregate import Change, PreGate, block_change, classify_change, gate_thumbnail, small_copy
from streamvid.imageops import reduced_copy
from streamvid.pipeline import StagedRun, thumbnail
from streamvid.sources import FrameSource
from streamvid.types import Frame

W, H = 160, 120
SCENES = [
    make_sample_video.Scene(0.0, 3.0, (225, 215, 185), "hallway", "door", (30, 70, 200)),
    make_sample_video.Scene(3.0, 6.0, (40, 120, 60), "field", "ball", (245, 220, 40)),
    make_sample_video.Scene(6.0, 9.0, (20, 20, 20), "dark", None),  # static: the pre-gate drops repeats
]
SETTINGS = dict(fps=4.0, batch_frames=4, segment_max_frames=4, short_term_frames=4, captions=False, device="cpu")


def streamvid_threads() -> set[str]:
    return {t.name for t in threading.enumerate() if t.name.startswith("streamvid") and t.is_alive()}


@pytest.fixture(scope="module")
def clip(make_video):
    path, _ = make_video("ingest.mp4", duration=9.0, fps=8.0, width=W, height=H, scenes=SCENES)
    return str(path)


# ------------------------------------------------------------------------------------------- pre-gate
def plain(h: int = 720, w: int = 1280) -> np.ndarray:
    return np.full((h, w, 3), (40, 90, 160), np.uint8)


def with_text(rgb: np.ndarray, text: str = "EXIT 12") -> np.ndarray:
    out = rgb.copy()
    cv2.putText(out, text, (900, 650), cv2.FONT_HERSHEY_SIMPLEX, 1.0, (255, 255, 255), 2)
    return out


def with_circle(rgb: np.ndarray, x: int) -> np.ndarray:
    out = rgb.copy()
    cv2.circle(out, (x, 300), 15, (230, 230, 40), -1)
    return out


def test_pregate_keeps_small_text_and_drops_exact_repeats():
    gate = PreGate()
    bg = plain()
    assert gate.check(bg) is Change.GLOBAL  # the first frame always passes
    assert gate.check(bg.copy()) is Change.SAME
    assert gate.check(with_text(bg)) is Change.LOCAL  # ~1 % of the frame: a global similarity misses it
    assert gate.check(with_text(bg)) is Change.SAME
    assert gate.stats.seen == 4 and gate.stats.passed == 2 and gate.stats.local == 1


def test_pregate_keeps_a_small_moving_circle():
    gate = PreGate()
    gate.check(with_circle(plain(), 300))
    assert gate.check(with_circle(plain(), 330)) is Change.LOCAL


def test_pregate_drops_codec_noise_and_passes_global_changes():
    """A still textured frame, H.264-encoded at a low quality: every decoded frame differs a little."""
    rng = np.random.default_rng(0)
    tex = cv2.resize(rng.integers(0, 255, (45, 80, 3), dtype=np.uint8), (640, 360), interpolation=cv2.INTER_CUBIC)
    noisy = [np.clip(tex + rng.normal(0, 4, tex.shape), 0, 255).astype(np.uint8) for _ in range(12)]
    gate = PreGate()
    assert [gate.check(f) for f in noisy][1:] == [Change.SAME] * 11
    brighter = np.clip(tex.astype(np.int16) + 40, 0, 255).astype(np.uint8)
    assert gate.check(brighter) is Change.GLOBAL  # a lighting change / cut is for the key gate to judge


def test_pregate_pure_functions_shapes_and_errors():
    a = gate_thumbnail(plain(480, 640))
    assert a.shape == (64, 64, 3) and a.dtype == np.float32
    cells = block_change(a, a + 1.0)
    assert cells.shape == (16, 16) and np.allclose(cells, 1.0)
    assert classify_change(np.zeros((16, 16), np.float32)) is Change.SAME
    with pytest.raises(StreamvidError, match="uint8"):
        gate_thumbnail(np.zeros((8, 8), np.float32))
    with pytest.raises(StreamvidError, match="multiple"):
        PreGate(side=30, block=4)


def test_reduced_copy_halves_exactly_and_the_small_copies_agree_with_the_frames():
    """The one full-size pass per frame: exact 2×2 means down to a short side ≥ 96; the 64×64 copy
    and the memory thumbnail are the same from the frame or from that copy, and within a few grey
    levels of an area resize of the full frame."""
    rng = np.random.default_rng(1)
    rgb = cv2.resize(rng.integers(0, 255, (45, 80, 3), dtype=np.uint8), (1280, 720), interpolation=cv2.INTER_CUBIC)
    reduced = reduced_copy(rgb)
    assert reduced.shape == (180, 320, 3) and reduced.dtype == np.uint8
    half = rgb[:, :].astype(np.float64).reshape(360, 2, 640, 2, 3).mean(axis=(1, 3))
    assert np.abs(reduced_copy(rgb, 360).astype(np.float64) - half).max() <= 0.5  # rounded 2×2 means
    assert reduced_copy(reduced) is reduced and reduced_copy(rgb[:120, :160]).shape == (120, 160, 3)
    assert reduced_copy(rgb[:721, :1281]).shape == (180, 320, 3)  # an odd last row/column is left out
    assert np.array_equal(small_copy(reduced, 64), small_copy(rgb, 64))
    assert np.array_equal(thumbnail(reduced), thumbnail(rgb)) and thumbnail(rgb).shape == (96, 171, 3)
    direct = cv2.resize(rgb, (64, 64), interpolation=cv2.INTER_AREA).astype(np.int16)
    error = np.abs(small_copy(rgb, 64).astype(np.int16) - direct)  # rounding of the halvings on a busy texture
    assert error.max() <= 6 and error.mean() < 1.0


def test_pregate_drops_repeats_before_any_encoder(clip):
    """The static last scene reaches neither encoder once its first frame is kept."""
    agent = StreamAgent.from_preset("tiny-random", **SETTINGS)
    try:
        calls = {"key": 0}
        encoder = agent.backend.encoder

        def counting(encode):
            def encode_counted(frames):
                calls["key"] += len(frames)
                return encode(frames)
            return encode_counted

        encoder.encode_batch = counting(encoder.encode_batch)
        stats = agent.ingest(clip, progress=False)
        assert stats["frames_seen"] == 36
        assert calls["key"] < 36  # repeats never reached the key encoder
        assert stats["frames_kept"] <= calls["key"]
    finally:
        agent.close()


# ------------------------------------------------------------------------------- staged vs serial
def memory_view(agent: StreamAgent) -> dict:
    snap = agent.memory.snapshot()
    return {
        "stats": agent.memory.stats(),
        "events": [(e.t_start, e.t_end, e.n_tokens, e.tokens.clone(), np.asarray(e.key).copy())
                   for e in agent.memory.events()],
        "short": [(f.t, f.n_tokens, np.asarray(f.key).copy()) for f in snap.short_term],
    }


def test_staged_path_gives_the_serial_paths_memory(clip):
    views = []
    for staged in (False, True):
        agent = StreamAgent.from_preset("tiny-random", staged_ingest=staged, **SETTINGS)
        try:
            agent.ingest(clip, progress=False)
            views.append(memory_view(agent))
        finally:
            agent.close()
    serial, staged = views
    assert serial["stats"] == staged["stats"]
    assert len(serial["events"]) == len(staged["events"]) >= 2
    for a, b in zip(serial["events"], staged["events"], strict=True):
        assert a[:3] == b[:3]  # same times and token counts, in the same order
        assert torch.equal(a[3], b[3])  # bit for bit
        np.testing.assert_array_equal(a[4], b[4])
    assert [s[:2] for s in serial["short"]] == [s[:2] for s in staged["short"]]
    for a, b in zip(serial["short"], staged["short"], strict=True):
        np.testing.assert_array_equal(a[2], b[2])


def test_batch_size_follows_the_device_unless_set():
    from streamvid.config import preset_config
    from streamvid.device import default_batch_size

    config = preset_config("tiny-random")
    assert config.batch_frames is None and config.frames_per_batch == default_batch_size("cpu")
    # Resolved when read, so a config moved to another device takes that device's batch size.
    assert config.replace(device="cuda").frames_per_batch == default_batch_size("cuda") > config.frames_per_batch
    assert config.replace(device="cuda", batch_frames=5).frames_per_batch == 5


def test_ingest_threading_follows_the_device_unless_set():
    from streamvid.config import preset_config

    config = preset_config("tiny-random")
    # One thread on a CPU (the towers take every core), stages on a GPU (they overlap the device's work).
    assert config.staged_ingest is None and config.ingest_staged is False
    assert config.replace(device="cuda").ingest_staged is True
    assert config.replace(staged_ingest=True).ingest_staged is True
    assert config.replace(device="cuda", staged_ingest=False).ingest_staged is False


# ---------------------------------------------------------------------------------------- backpressure
def test_a_slow_stage_never_grows_a_queue_past_its_bound():
    produced: list[int] = []
    seen_ahead: list[int] = []

    def produce() -> Iterator[int]:
        for i in range(40):
            produced.append(i)
            yield i

    def slow(i: int) -> int:
        seen_ahead.append(len(produced) - i)  # how far the producer ran ahead of this item
        time.sleep(0.01)
        return i

    run = StagedRun(produce(), [("fast", lambda i: i), ("slow", slow), ("after", lambda i: i)], maxsize=2)
    assert list(run) == list(range(40))
    assert all(p <= 2 for p in run.peaks.values()), run.peaks
    # Between the producer and the slow stage: 2 queues of 2 and the fast stage holding one item.
    assert max(seen_ahead) <= 2 + 1 + 2 + 1
    assert run.alive == 0


def test_in_flight_limit_keeps_a_live_producer_from_reading_ahead():
    taken: list[int] = []
    ahead: list[int] = []

    def produce() -> Iterator[int]:
        for i in range(20):
            taken.append(i)
            yield i

    run = StagedRun(produce(), [("a", lambda i: i), ("b", lambda i: i)], maxsize=4, max_in_flight=2)
    for i in run:
        ahead.append(len(taken) - i)  # items taken from the source but not yet finished, this one included
        time.sleep(0.005)
    assert max(ahead) <= 2


# ---------------------------------------------------------------------------------------- errors
class BreaksAfter(FrameSource):
    """A file-like source that delivers ``n`` frames and then fails."""

    backend = "test"

    def __init__(self, n: int) -> None:
        super().__init__("breaks-after", None, None)
        self.n = n

    def __iter__(self) -> Iterator[Frame]:
        for i in range(self.n):
            rgb = make_sample_video.render_frame(i / 4.0, W, H, SCENES, ())
            yield Frame(i, i / 4.0, rgb)
        raise SourceError(self.spec, "disk unplugged")


def fail_on_second_call(fn):
    calls = {"n": 0}

    def wrapped(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2:
            raise RuntimeError("stage broke")
        return fn(*args, **kwargs)

    return wrapped


@pytest.mark.parametrize("staged", [True, False])
@pytest.mark.parametrize("where", ["decode", "pregate_stage", "device_stage", "compress_stage", "memory"])
def test_an_error_in_any_stage_reaches_the_caller_and_memory_is_kept(clip, where, staged):
    before = streamvid_threads()
    agent = StreamAgent.from_preset("tiny-random", staged_ingest=staged, **SETTINGS)
    try:
        source: object = clip
        if where == "decode":
            source = BreaksAfter(6)
        elif where == "memory":
            agent._write_batch = fail_on_second_call(agent._write_batch)
        else:
            pipe = agent.backend.pipeline
            setattr(pipe, where, fail_on_second_call(getattr(pipe, where)))
        with pytest.raises((RuntimeError, StreamvidError), match="stage broke|disk unplugged"):
            agent.ingest(source, progress=False)
        stats = agent.memory.stats()
        # Everything made before the failure is in memory (the first batch of 4; the broken source's 6).
        assert stats["frames_seen"] == (6 if where == "decode" else 4)
        assert stats["open_event_frames"] == 0  # the open event was closed, not lost
        assert streamvid_threads() <= before  # no stage thread outlives the failure
        if where in ("memory", "decode"):  # the agent is still usable
            agent.ingest(clip, progress=False)
            assert agent.memory.stats()["frames_seen"] > stats["frames_seen"]
    finally:
        agent.close()


def test_start_stop_cycles_leave_no_threads_and_count_every_frame():
    before = streamvid_threads()
    agent = StreamAgent.from_preset("tiny-random", **SETTINGS)
    try:
        for cycle in range(3):
            seen = agent.memory.stats()["frames_seen"]
            agent.start()
            for i in range(6):
                agent.push(make_sample_video.render_frame((cycle * 6 + i) / 4.0, W, H, SCENES, ()))
            agent.stop()
            assert not agent.is_running
            assert streamvid_threads() <= before
            # every pushed frame was ingested or counted as dropped (the newest wins)
            new = agent.memory.stats()["frames_seen"] - seen
            assert new >= 1 and new + agent.dropped_frames == 6
    finally:
        agent.close()


# ------------------------------------------------------------------------------------- bench_gpu.py
def test_bench_gpu_records_a_failing_section_and_still_writes_json(tmp_path, capsys):
    """One section's failure is kept in the JSON and the table; the run still ends normally."""
    import json

    from streamvid_bench import gpu

    out = tmp_path / "gpu.json"
    code = gpu.main(["--device", "cpu", "--quick", "--sections", "gate", "--media", str(tmp_path / "none"),
                     "--out", str(out), "--cache-dir", str(tmp_path / "cache")])
    assert code == 0
    result = json.loads(out.read_text())
    assert "vtest.avi" in result["sections"]["gate"]["error"]
    assert [t["target"] for t in result["targets"]][0].startswith("CPU SmolVLM")
    assert "[gate] failed" in capsys.readouterr().out
    assert gpu.main(["--device", "cpu", "--sections", "nope", "--out", str(out)]) == 2
