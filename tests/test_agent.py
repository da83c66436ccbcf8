"""StreamAgent on the tiny-random preset (real architectures, random weights): threads, captions,
citations, index-once-ask-many, errors, live drops, determinism, save/load and follow-ups.

The answers' text is meaningless here; the tests check what the engine guarantees around it."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import numpy as np
import pytest
from streamvid_bench import samples as make_sample_video

from streamvid import QuestionError, SourceError, StreamvidError
from streamvid.agent import Dialogue, StreamAgent
from streamvid.sources import FrameSource
from streamvid.types import Frame

FPS = 2.0
# Small events (at most 4 kept frames) so a short clip has several to cite, follow and caption.
TINY = dict(fps=FPS, segment_max_frames=4, short_term_frames=4, device="cpu")
W, H = 160, 120
SCENES = [
    make_sample_video.Scene(0.0, 4.0, (225, 215, 185), "hallway", "door", (30, 70, 200)),
    make_sample_video.Scene(4.0, 8.0, (40, 120, 60), "field", "ball", (245, 220, 40)),
    make_sample_video.Scene(8.0, 12.0, (150, 190, 225), "street", "car", (210, 30, 30)),
    make_sample_video.Scene(12.0, 32.0, (110, 50, 150), "purple room", "ball", (245, 245, 245)),
    make_sample_video.Scene(32.0, 40.0, (20, 20, 20), "dark", None),
]
DURATION = 40.0  # longer than the 30 s "at the start" covers, so "and after that?" has a later part


def scene_frames(n: int, fps: float = FPS, start: int = 0) -> list[np.ndarray]:
    """n RGB frames of the three-scene clip, looping, sampled at ``fps``."""
    return [make_sample_video.render_frame(((start + i) / fps) % DURATION, W, H, SCENES, ())
            for i in range(n)]


@pytest.fixture(scope="module")
def clip(make_video):
    path, manifest = make_video("agent.mp4", duration=DURATION, fps=10.0, width=W, height=H, scenes=SCENES)
    return str(path), manifest


@pytest.fixture(scope="module")
def agent(clip):
    """An agent that ingested the clip once (index once; the tests ask many times)."""
    a = StreamAgent.from_preset("tiny-random", **TINY)
    a.ingest(clip[0], progress=False)
    yield a
    a.close()


@pytest.fixture(scope="module")
def live():
    a = StreamAgent.from_preset("tiny-random", **TINY)
    yield a
    a.close()


def span(c) -> tuple[int, float, float]:
    return (c.event_id, round(c.t_start, 6), round(c.t_end, 6))


# ---------------------------------------------------------------- file QA


def test_ingest_counts_every_frame_and_spans_reach_the_last_frame(agent, clip):
    stats = agent.memory.stats()
    n_sampled = int(DURATION * FPS)
    assert stats["frames_seen"] == n_sampled  # kept + dropped duplicates, each once
    assert 1 <= stats["frames_kept"] < n_sampled  # the gate dropped static frames
    events = agent.memory.snapshot().events_between(0, DURATION)
    assert len(events) >= 3
    assert events[0].t_start == 0.0
    # The last event ends at the last frame seen, though that frame duplicated an earlier one.
    assert events[-1].t_end == pytest.approx((n_sampled - 1) / FPS)
    for a, b in zip(events, events[1:], strict=False):
        assert a.t_start <= a.t_end < b.t_start


def test_captions_in_order_without_overlap(agent):
    caps = list(agent.captions())
    assert caps, "closed events were captioned"
    for c in caps:
        assert 0.0 <= c.t_start <= c.t_end <= DURATION
        assert c.text.strip()
    for a, b in zip(caps, caps[1:], strict=False):
        assert a.t_end < b.t_start
    ids = {e.id for e in agent.memory.snapshot().events_between(0, DURATION)}
    assert {c.event_id for c in caps} <= ids


def test_citations_lie_inside_the_video(agent):
    agent.dialogue = Dialogue()
    for question in ("what is on the street?", "what happened at the start?", "describe the field"):
        ans = agent.ask(question)
        assert ans.citations
        for c in ans.citations:
            assert 0.0 <= c.t_start <= c.t_end <= DURATION
        assert [c.t_start for c in ans.citations] == sorted(c.t_start for c in ans.citations)
        assert ans.timings["retrieval_ms"] >= 0 and ans.timings["prompt_tokens"] > 0


def test_index_once_ask_many_never_reencodes(agent):
    pipeline = agent.backend.pipeline
    vision_frames, frames_in = pipeline.timer.frames["vision"], pipeline.frames_in
    key_frames, stats = pipeline.timer.frames["key"], agent.memory.stats()
    for q in ("what colour is the car?", "was there a door?", "what rolled?", "what happened last?"):
        agent.ask(q)
    assert pipeline.timer.frames["vision"] == vision_frames
    assert pipeline.timer.frames["key"] == key_frames
    assert pipeline.frames_in == frames_in
    after = agent.memory.stats()
    assert (after["frames_seen"], after["events"]) == (stats["frames_seen"], stats["events"])


@pytest.mark.parametrize("question", ["", "   \n", None, 42, ["what?"], "x" * 5000])
def test_bad_questions_raise_and_keep_memory(agent, question):
    before = agent.memory.stats()
    with pytest.raises(QuestionError):
        agent.ask(question)
    with pytest.raises(QuestionError):
        agent.ask_stream(question)
    assert agent.memory.stats() == before
    assert agent.ask("what is there?").citations  # still answers


def test_ask_stream_pieces_make_the_answer(agent):
    stream = agent.ask_stream("what moved?")
    pieces = list(stream)
    assert stream.answer is not None
    assert "".join(pieces).strip() == stream.answer.text
    assert {span(c) for c in stream.answer.citations} <= {span(c) for c in stream.citations}


def test_follow_up_uses_the_previous_answers_times(agent):
    agent.dialogue = Dialogue()
    first = agent.ask("what happened at the start?")
    assert first.citations
    end = max(c.t_end for c in first.citations)
    follow = agent.ask("and after that?")
    assert follow.citations
    assert all(c.t_end > end for c in follow.citations), (end, [span(c) for c in follow.citations])
    before = agent.ask("before that?")
    start = min(c.t_start for c in follow.citations)
    assert all(c.t_start < start for c in before.citations)


def test_same_frames_same_memory(agent, clip):
    other = StreamAgent.from_preset("tiny-random", **TINY)
    try:
        other.ingest(clip[0], progress=False)
        a, b = agent.memory.stats(), other.memory.stats()
        for k in ("frames_seen", "frames_kept", "events", "tokens_in_ram", "short_term_frames", "index_keys"):
            assert a[k] == b[k], k
        ea, eb = agent.memory.events(), other.memory.events()
        assert [(e.t_start, e.t_end, e.n_tokens) for e in ea] == [(e.t_start, e.t_end, e.n_tokens) for e in eb]
        for x, y in zip(ea, eb, strict=True):
            np.testing.assert_allclose(x.key, y.key, atol=1e-5)
            np.testing.assert_allclose(x.tokens.numpy(), y.tokens.numpy(), atol=1e-5)
        for q in ("red car", "a yellow ball"):
            hits_a = [(e.id, e.t_start, e.t_end) for e in agent.memory.search(q, k=3)]
            hits_b = [(e.id, e.t_start, e.t_end) for e in other.memory.search(q, k=3)]
            assert hits_a == hits_b
    finally:
        other.close()


def test_save_then_from_memory_gives_the_same_citations(agent, tmp_path):
    questions = ("what is on the street?", "what happened at the start?")
    agent.dialogue = Dialogue()
    before = [agent.ask(q) for q in questions]
    agent.memory.save(str(tmp_path / "mem"))
    loaded = StreamAgent.from_memory(str(tmp_path / "mem"))
    try:
        assert loaded.memory.stats()["events"] == agent.memory.stats()["events"]
        after = [loaded.ask(q) for q in questions]
        for x, y in zip(before, after, strict=True):
            assert [span(c) for c in x.citations] == [span(c) for c in y.citations]
            assert x.text == y.text  # same weights (seeded), same prompt, greedy
    finally:
        loaded.close()


# ---------------------------------------------------------------- live


def test_ask_during_live_ingestion_returns_while_frames_keep_arriving(live):
    live.start()
    stop = threading.Event()
    pushed = [0]
    frames = scene_frames(40)

    def feed() -> None:
        i = 0
        while not stop.is_set():
            live.push(frames[i % len(frames)])
            pushed[0] += 1
            i += 1
            time.sleep(0.02)

    feeder = threading.Thread(target=feed, daemon=True)
    feeder.start()
    try:
        deadline = time.monotonic() + 30
        while live.memory.stats()["frames_kept"] < 3 and time.monotonic() < deadline:
            time.sleep(0.05)
        answers = []
        asker = threading.Thread(target=lambda: answers.append(live.ask("what is happening now?")))
        asker.start()
        asker.join(60)
        assert not asker.is_alive() and answers, "ask returned"
        assert feeder.is_alive() and live.is_running, "ingestion kept going while answering"
        seen_at_answer = live.memory.stats()["frames_seen"]
        deadline = time.monotonic() + 30
        while live.memory.stats()["frames_seen"] <= seen_at_answer and time.monotonic() < deadline:
            time.sleep(0.05)
        assert live.memory.stats()["frames_seen"] > seen_at_answer, "frames kept arriving after the answer"
        assert all(c.t_start <= c.t_end for c in answers[0].citations)
    finally:
        stop.set()
        feeder.join()
        stats = live.stop()
    assert not live.is_running
    assert stats["frames_seen"] + live.dropped_frames == pushed[0]


def test_slow_consumer_drops_are_counted(live):
    seen_before = live.memory.stats()["frames_seen"]
    live.start()
    frames = scene_frames(60, start=7)
    accepted = sum(live.push(f) for f in frames)  # far faster than the encoders run
    stats = live.stop()
    seen = stats["frames_seen"] - seen_before
    assert accepted == len(frames)
    assert live.dropped_frames > 0
    assert seen >= 1  # the newest frame wins: what was waiting at the end was ingested
    assert seen + live.dropped_frames == len(frames)


def test_stop_is_clean_and_idempotent(live):
    before = set(threading.enumerate())
    src = live.start()
    live.push(scene_frames(1)[0])
    assert set(threading.enumerate()) - before, "ingestion runs on its own thread"
    live.stop()
    assert not live.is_running and src.closed
    assert not {t for t in set(threading.enumerate()) - before if t.name.startswith("streamvid")}
    live.stop()  # a second stop is harmless
    with pytest.raises(StreamvidError):
        live.push(scene_frames(1)[0])  # no running push source


class BreaksAfter(FrameSource):
    """A source that delivers ``n`` frames and then fails, as a camera that is unplugged would."""

    backend = "test"
    is_live = True

    def __init__(self, n: int) -> None:
        super().__init__("breaks-after", None, None)
        self.n = n

    def __iter__(self) -> Iterator[Frame]:
        for i, rgb in enumerate(scene_frames(self.n, start=3)):
            yield Frame(i, i / FPS, rgb)
        raise SourceError(self.spec, "camera unplugged")


def test_ingestion_error_reaches_the_caller_and_memory_is_kept(live):
    before = live.memory.stats()["frames_seen"]
    live.start(BreaksAfter(6))
    deadline = time.monotonic() + 60
    while live.is_running and time.monotonic() < deadline:
        time.sleep(0.05)
    with pytest.raises(SourceError, match="camera unplugged"):
        live.ask("what happened?")
    stats = live.stop()  # the error was delivered once; stopping is clean
    assert stats["frames_seen"] == before + 6
    assert stats["open_event_frames"] == 0  # the open event was closed, not lost
    assert live.ask("what happened?").citations


def test_ingest_of_a_failing_source_raises_after_keeping_frames(tmp_path):
    a = StreamAgent.from_preset("tiny-random", **TINY, captions=False)
    try:
        with pytest.raises(SourceError, match="camera unplugged"):
            a.ingest(BreaksAfter(5), progress=False)
        stats = a.memory.stats()
        assert stats["frames_seen"] == 5 and stats["events"] >= 1
        with pytest.raises(SourceError, match="file not found"):
            a.ingest(str(tmp_path / "missing.mp4"), progress=False)
        assert a.memory.stats() == stats
    finally:
        a.close()
