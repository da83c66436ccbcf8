"""The retrieval planner: time phrases → ranges, ranking, constant-budget chronological assembly."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from streamvid.config import AgentConfig
from streamvid.errors import QuestionError
from streamvid.memory import MemoryBank
from streamvid.retrieve import (
    JUST,
    QueryPlan,
    assemble,
    gather,
    parse_clock,
    plan_query,
    rank_events,
    retrieve,
    temporal_relevance,
)
from streamvid.types import Event, FrameTokens

KEY_DIM = 16
TOKEN_DIM = 8
NOW = 3600.0


@pytest.fixture(autouse=True)
def one_torch_thread():
    """See tests/test_memory.py: tiny merges stall with a 2-thread pool on a loaded 2-core machine."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


# ---- time phrases ---------------------------------------------------------------------------------
@pytest.mark.parametrize("question, content, time_range, about_now", [
    ("what did I hold up in the last 5 minutes?", "what did I hold up", (3300.0, 3600.0), True),
    ("What happened over the past hour?", "", (0.0, 3600.0), True),
    ("anything red in the last minute", "anything red", (3540.0, 3600.0), True),
    ("what is on the table just now?", "what is on the table", (3570.0, 3600.0), True),
    ("what is happening right now?", "", (3570.0, 3600.0), True),
    ("who was there at the start?", "who was there", (0.0, 360.0), False),
    ("what was on screen at the beginning of the video", "what was on screen", (0.0, 360.0), False),
    ("what happened at the end?", "", (3240.0, 3600.0), True),
    ("what was written on the board at 00:12:30?", "what was written on the board", (735.0, 765.0), False),
    ("what was on screen at 1:02:03", "what was on screen", (3708.0, 3738.0), False),
    ("who spoke at 12:30?", "who spoke", (735.0, 765.0), False),
    ("what happened around 2 minutes in?", "", (90.0, 150.0), False),
    ("what did the man carry about 40 minutes into the video", "what did the man carry", (1800.0, 3000.0), False),
    ("what happened 3 minutes ago?", "", (3330.0, 3510.0), False),
    ("who came in after 10 minutes?", "who came in", (600.0, 3600.0), False),
    ("where is the red car?", "where is the red car", None, False),
])
def test_time_phrases_become_ranges(question, content, time_range, about_now):
    plan = plan_query(question, NOW)
    assert plan.content == content
    assert plan.time_range == time_range
    assert plan.about_now is about_now


def test_edges_are_clipped_to_a_short_stream():
    assert plan_query("what happened at the start?", 20.0).time_range == (0.0, 20.0)
    assert plan_query("what happened at the end?", 20.0).time_range == (0.0, 20.0)
    assert plan_query("in the last 10 minutes?", 120.0).time_range == (0.0, 120.0)


@pytest.mark.parametrize("question, relation, time_range", [
    ("and after that?", "after", (140.0 + JUST, NOW)),
    ("What happened next?", "after", (140.0 + JUST, NOW)),
    ("and then?", "after", (140.0 + JUST, NOW)),
    ("what happened before that?", "before", (0.0, 100.0 - JUST)),
    ("and before this, where was the cup?", "before", (0.0, 100.0 - JUST)),
])
def test_follow_ups_resolve_against_the_previous_answer(question, relation, time_range):
    plan = plan_query(question, NOW, previous=[(100.0, 120.0), (130.0, 140.0)])
    assert (plan.relation, plan.time_range) == (relation, time_range)
    assert plan_query(question, NOW).time_range is None  # no previous answer: no constraint


def test_follow_up_keeps_its_content():
    plan = plan_query("and before this, where was the cup?", NOW, previous=[(100.0, 120.0)])
    assert plan.content == "where was the cup"


def _event(eid: int, t0: float, t1: float, n: int = 4, seed: int = 0) -> Event:
    g = torch.Generator().manual_seed(seed + eid)
    times = np.linspace(t0, t1, n)
    key = np.ones(KEY_DIM, np.float32) / np.sqrt(KEY_DIM)
    return Event(id=eid, t_start=t0, t_end=t1, tokens=torch.randn(n, TOKEN_DIM, generator=g), token_times=times,
                 token_positions=np.arange(n), grid=(4, 4), key=key, frame_keys=key[None],
                 frame_times=np.array([t0, t1]))


def test_before_and_after_something_are_resolved_through_search():
    dog = _event(7, 500.0, 520.0)
    asked = []

    def search(text):
        asked.append(text)
        return [dog]

    before = plan_query("what did I hold up before the dog came in?", NOW, search=search)
    assert asked == ["the dog came in"]
    assert (before.relation, before.anchor, before.time_range) == ("before", "the dog came in", (0.0, 500.0 - JUST))
    assert before.content == "what did I hold up"
    after = plan_query("where did the cat go after the dog came in", NOW, search=search)
    assert (after.relation, after.time_range, after.content) == ("after", (520.0 + JUST, NOW), "where did the cat go")
    unresolved = plan_query("what happened before the dog came in?", NOW, search=lambda text: [])
    assert unresolved.time_range is None and unresolved.anchor == "the dog came in"


def test_clock_parsing_and_empty_question():
    assert parse_clock("00:12:30") == 750.0
    assert parse_clock("1:02:03") == 3723.0
    assert parse_clock("12:30") == 750.0
    with pytest.raises(QuestionError, match="empty"):
        plan_query("   ", NOW)


# ---- ranking ---------------------------------------------------------------------------------------
def test_temporal_relevance_is_one_inside_and_decays_outside():
    assert temporal_relevance(10, 20, None) == 1.0
    assert temporal_relevance(10, 20, (15, 100)) == 1.0
    near, far = temporal_relevance(110, 120, (0, 100)), temporal_relevance(300, 320, (0, 100))
    assert 1.0 > near > far > 0.0


def test_rank_is_semantic_times_temporal():
    inside, outside = _event(0, 10.0, 20.0), _event(1, 500.0, 510.0)
    plan = QueryPlan("q", "red car", time_range=(0.0, 60.0))
    ranked = rank_events([(outside, 0.9), (inside, 0.5)], plan)
    assert [e.id for e, _ in ranked] == [0, 1]
    no_content = QueryPlan("q", "", time_range=(0.0, 60.0))
    assert [e.id for e, _ in rank_events([(outside, 0.9), (inside, 0.1)], no_content)] == [0, 1]
    no_time = QueryPlan("q", "red car")
    assert [e.id for e, _ in rank_events([(inside, 0.5), (outside, 0.9)], no_time)] == [1, 0]


# ---- retrieval and assembly on a real memory --------------------------------------------------------
SCENES = ["kitchen", "red car", "blue door", "garden", "red car again", "office", "street", "desk"]


def _scene_keys() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(42)
    keys = rng.normal(size=(len(SCENES), KEY_DIM)).astype(np.float32)
    keys[4] = keys[1] + 0.2 * keys[4]  # "red car again" looks like "red car"
    return {s: k / np.linalg.norm(k) for s, k in zip(SCENES, keys, strict=True)}


def _memory(max_ram_tokens: int = 4096) -> MemoryBank:
    keys = _scene_keys()
    config = AgentConfig(short_term_frames=4, event_tokens=8, max_ram_tokens=max_ram_tokens, segment_min_frames=2,
                         segment_max_frames=64, segment_window=8)

    def text_encoder(texts):  # the key of the longest scene name the text mentions
        def key(text):
            named = [s for s in SCENES if s in text]
            return keys[max(named, key=len)] if named else keys["desk"]
        return torch.from_numpy(np.stack([key(t) for t in texts]))

    bank = MemoryBank(config, key_dim=KEY_DIM, token_dim=TOKEN_DIM, text_encoder=text_encoder)
    rng = np.random.default_rng(0)
    t = 0.0
    for i, scene in enumerate(SCENES):  # 8 scenes of 10 frames, 60 s apart
        for j in range(10):
            g = torch.Generator().manual_seed(i * 100 + j)
            frame = FrameTokens(torch.randn(6, TOKEN_DIM, generator=g), torch.arange(6) * 2, torch.ones(6), (4, 4),
                                t=t)
            key = keys[scene] + 0.02 * rng.normal(size=KEY_DIM)
            bank.write(frame, key)
            t += 6.0
    return bank


def test_retrieve_ranks_inside_the_time_range_first():
    with _memory() as bank:
        snap = bank.snapshot()
        plain = retrieve(snap, plan_query("red car", snap.now), k=2)
        assert sorted(e.t_start for e, _ in plain) == [60.0, 240.0]
        late = retrieve(snap, plan_query("red car in the last 4 minutes", snap.now), k=2)
        assert late[0][0].t_start == 240.0  # inside the range beats the earlier, equally similar one
        early = retrieve(snap, plan_query("red car at the start", snap.now), k=1)
        assert early[0][0].t_start == 60.0
        start = retrieve(snap, plan_query("what happened at the start?", snap.now), k=3)
        assert [e.t_start for e, _ in start] == [0.0]  # no content: the events inside the range, by time
        later = retrieve(snap, plan_query("what happened around 3 minutes in?", snap.now), k=3)
        assert sorted(e.t_start for e, _ in later) == [120.0, 180.0]


@pytest.mark.parametrize("question, order, content", [
    ("What text appeared last?", "last", "What text appeared"),
    ("When did the red car appear?", "first", "When did the red car appear"),
    ("What did I hold up first?", "first", "What did I hold up"),
    ("What was the last thing I held up before the door opened?", "last", "What was the thing I held up"),
    ("What happened in the last 5 minutes?", None, ""),
    ("What came after the dog?", None, "What came"),
])
def test_first_and_last_are_an_order_not_content(question, order, content):
    plan = plan_query(question, 600.0)
    assert plan.order == order and plan.content == content


def test_first_and_last_questions_are_answered_from_event_times():
    with _memory() as bank:
        bank.flush()  # the last scene becomes an event too
        snap = bank.snapshot()
        first = retrieve(snap, plan_query("When did the red car first appear?", snap.now), k=1)
        last = retrieve(snap, plan_query("When did I last see the red car?", snap.now), k=1)
        assert first[0][0].t_start == 60.0 and last[0][0].t_start == 240.0
        assert retrieve(snap, plan_query("What happened first?", snap.now), k=1)[0][0].t_start == 0.0
        assert retrieve(snap, plan_query("What happened last?", snap.now), k=1)[0][0].t_start == 420.0


@settings(max_examples=25, deadline=None)
@given(budget=st.integers(1, 400), k=st.integers(1, 6), about_now=st.booleans(), use_query=st.booleans())
def test_assemble_spends_a_constant_budget_in_chronological_order(budget, k, about_now, use_query):
    with _memory() as bank:
        snap = bank.snapshot()
        events = [e for e, _ in retrieve(snap, QueryPlan("q", "red car"), k=k)]
        short = snap.short_term if about_now else ()
        query = torch.ones(TOKEN_DIM) if use_query else None
        blocks = assemble(events, short, budget, query=query)
        covered_by_short = [e for e in events if short and short[0].t <= e.t_start and e.t_end <= short[-1].t]
        available = sum(f.n_tokens for f in short) + sum(e.n_tokens for e in events if e not in covered_by_short)
        assert sum(int(b.tokens.shape[0]) for b in blocks) == min(budget, available)
        assert [(b.t_start, b.t_end) for b in blocks] == sorted((b.t_start, b.t_end) for b in blocks)
        for b in blocks:
            assert bool(((b.token_times >= b.t_start) & (b.token_times <= b.t_end)).all())
            assert bool((b.token_times.diff() >= 0).all())
            assert int(b.positions.max()) < b.grid[0] * b.grid[1]
        assert (-1 in {b.event_id for b in blocks}) == (about_now and budget >= 1 and bool(short))


def test_gather_includes_short_term_for_questions_about_now():
    with _memory() as bank:
        snap = bank.snapshot()
        plan, blocks, used = gather(snap, "what is on the desk right now?", budget=32, k=3)
        assert plan.about_now
        assert blocks[-1].event_id == -1 and blocks[-1].t_end == snap.now
        assert sum(int(b.tokens.shape[0]) for b in blocks) == 32
        plan, blocks, used = gather(snap, "where was the red car?", budget=64, k=2)
        assert not plan.about_now and all(b.event_id >= 0 for b in blocks)
        assert {e.id for e, _ in used} == {b.event_id for b in blocks}
        plan, blocks, _ = gather(snap, "and after that?", budget=64, k=2, previous=[(60.0, 114.0)])
        assert plan.time_range == (114.0 + JUST, snap.now)
        assert blocks and all(b.t_start > 114.0 for b in blocks)
        plan, blocks, _ = gather(snap, "what did I see before the garden?", budget=64, k=2)
        assert plan.time_range == (0.0, 180.0 - JUST)
        assert [b.t_start for b in blocks] == [60.0, 120.0]  # the two events just before the garden


def test_assemble_rejects_a_zero_budget():
    with pytest.raises(QuestionError, match="budget"):
        assemble([_event(0, 0.0, 1.0)], (), 0)
