"""MemoryBank: budget, timestamps, search, archive, persistence, threads, errors; KeyIndex."""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import streamvid
from streamvid.config import AgentConfig
from streamvid.errors import ConfigError, MemoryFormatError, QuestionError
from streamvid.memory import KeyIndex, MemoryBank, MemoryInputError, measure_recall
from streamvid.memory.archive import EventArchive
from streamvid.memory.bank import distinct_rows
from streamvid.memory.persist import backup_path
from streamvid.types import Event, FrameBatch, FrameTokens

KEY_DIM = 16
TOKEN_DIM = 8
GRID = (8, 8)


def small_config(**overrides) -> AgentConfig:
    base = dict(short_term_frames=4, event_tokens=8, max_ram_tokens=96, segment_min_frames=2,
                segment_max_frames=8, segment_window=8, archive_max_bytes=10**8)
    return AgentConfig(**{**base, **overrides})


def make_frame(t: float, n: int, seed: int) -> FrameTokens:
    g = torch.Generator().manual_seed(seed)
    positions = torch.randperm(64, generator=g)[:n].sort().values
    return FrameTokens(tokens=torch.randn(n, TOKEN_DIM, generator=g), positions=positions, sizes=torch.ones(n),
                       grid=GRID, t=float(t))


def make_stream(n_frames: int, seed: int = 0, scene_len: int = 6, n_tokens: int = 6, dt: float = 1.0):
    """[(frame, key)] with a new scene (a new key centre) every ``scene_len`` frames."""
    rng = np.random.default_rng(seed)
    out = []
    centre = rng.normal(size=KEY_DIM)
    for i in range(n_frames):
        if i % scene_len == 0:
            centre = rng.normal(size=KEY_DIM)
        key = centre / np.linalg.norm(centre) + 0.05 * rng.normal(size=KEY_DIM) / np.sqrt(KEY_DIM)
        out.append((make_frame(i * dt, n_tokens, seed * 100_000 + i), (key / np.linalg.norm(key)).astype(np.float32)))
    return out


def fill(bank: MemoryBank, stream) -> list[Event]:
    closed = []
    for frame, key in stream:
        closed += bank.write(frame, key)
    return closed + bank.flush()


def all_events(bank: MemoryBank) -> list[Event]:
    """Every live event, RAM ones and archived ones (loaded), by id."""
    ram = {e.id: e for e in bank.events()}
    archived = {i: bank.archive.get(i) for i in bank.archive.ids()}
    return [v for _, v in sorted({**archived, **ram}.items())]


def result_signature(events: list[Event]) -> list[tuple]:
    return [(e.id, e.t_start, e.t_end, e.n_tokens, None if e.tokens is None else e.tokens.sum().item()) for e in events]


@pytest.fixture(autouse=True)
def one_torch_thread():
    """Tiny tensor ops (the merges of the write path) stall for ~10 ms each when torch's 2-thread pool
    competes with other processes on a loaded 2-core machine; one thread keeps these tests fast."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def bank():
    b = MemoryBank(small_config(), key_dim=KEY_DIM, token_dim=TOKEN_DIM)
    yield b
    b.close()


# ---- budget and timestamps --------------------------------------------------------------------
frames_strategy = st.lists(
    st.tuples(st.floats(0.0, 3.0), st.integers(0, 40), st.booleans()),  # (dt, n tokens, new scene)
    min_size=1, max_size=80,
)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(frames=frames_strategy, event_tokens=st.integers(1, 12), slack=st.integers(0, 120),
       short=st.integers(1, 6), max_frames=st.integers(1, 10), seed=st.integers(0, 10_000))
def test_budget_never_exceeded_and_times_stay_inside_events(frames, event_tokens, slack, short, max_frames, seed):
    config = small_config(event_tokens=event_tokens, max_ram_tokens=4 * event_tokens + slack, short_term_frames=short,
                          segment_min_frames=1, segment_max_frames=max_frames, archive_max_bytes=20_000)
    rng = np.random.default_rng(seed)
    key = rng.normal(size=KEY_DIM)
    t = 0.0
    with MemoryBank(config, key_dim=KEY_DIM, token_dim=TOKEN_DIM) as bank:
        for i, (dt, n, new_scene) in enumerate(frames):
            t += dt
            if new_scene:
                key = rng.normal(size=KEY_DIM)
            bank.write(make_frame(t, n, seed + i), key + 0.1 * rng.normal(size=KEY_DIM))
            stats = bank.stats()
            recount = (sum(f.n_tokens for f in bank.short.frames()) + sum(e.n_tokens for e in bank.events())
                       + bank._builder.n_tokens)
            assert stats["tokens_in_ram"] == recount <= config.max_ram_tokens
            assert bank.archive.total_bytes <= config.archive_max_bytes
        bank.flush()
        assert bank.stats()["tokens_in_ram"] <= config.max_ram_tokens
        events = all_events(bank)
        for prev, e in zip(events, events[1:], strict=False):
            assert prev.t_end <= e.t_start
        for e in events:
            assert e.t_start <= e.t_end
            assert e.n_tokens <= event_tokens
            assert bool((e.token_times.diff() >= 0).all())
            assert bool(((e.token_times >= e.t_start) & (e.token_times <= e.t_end)).all())
            assert np.all(np.diff(e.frame_times) >= 0)
            assert e.frame_times[0] == e.t_start and e.frame_times[-1] == e.t_end
            assert bool(((e.token_positions >= 0) & (e.token_positions < GRID[0] * GRID[1])).all())
            assert np.allclose(np.linalg.norm(e.frame_keys, axis=1), 1.0, atol=1e-5)


def test_stats_count_seen_kept_and_events(bank):
    stream = make_stream(80)
    for frame, key in stream:
        bank.write(frame, key)
        bank.count_seen(2)  # two frames dropped by the gate for each kept one
    bank.flush()
    stats = bank.stats()
    assert {"frames_seen", "frames_kept", "short_term_frames", "events", "archived_events", "tokens_in_ram",
            "bytes_in_ram"} <= set(stats)
    assert stats["frames_seen"] == 240 and stats["frames_kept"] == 80
    assert stats["short_term_frames"] == 4
    assert stats["events"] == len(all_events(bank)) > 0
    assert stats["archived_events"] == len(bank.archive) > 0  # budget 96 tokens cannot hold all events
    assert stats["bytes_in_ram"] > stats["tokens_in_ram"] * TOKEN_DIM * 4


def test_events_close_at_scene_changes_and_flush_closes_the_open_one(bank):
    stream = make_stream(18, scene_len=6)
    closed = []
    for frame, key in stream:
        closed += [(e.t_start, e.t_end) for e in bank.write(frame, key)]
    assert closed == [(0.0, 5.0), (6.0, 11.0)]
    assert [(e.t_start, e.t_end) for e in bank.flush()] == [(12.0, 17.0)]
    assert bank.flush() == []


def test_dropped_repeats_stretch_the_open_event_to_when_they_were_seen(bank, tmp_path):
    stream = make_stream(12, scene_len=6, dt=2.0)  # kept frames at 0, 2, ..., 22 s
    closed = []
    for frame, key in stream:
        closed += bank.write(frame, key)
        bank.count_seen(1, t=frame.t + 1.5)  # a repeat of this frame, seen 1.5 s later
    assert [(e.t_start, e.t_end) for e in closed] == [(0.0, 11.5)]  # not 10.0: the repeat at 11.5 was seen
    assert bank.snapshot().now == 23.5
    with pytest.raises(MemoryInputError, match="non-decreasing"):
        bank.count_seen(1, t=20.0)
    bank.save(str(tmp_path / "mem"))
    loaded = MemoryBank.load(str(tmp_path / "mem"))
    assert [(e.t_start, e.t_end) for e in loaded.flush()] == [(12.0, 23.5)]  # the open event's stretch survives
    loaded.close()
    assert bank.stats()["frames_seen"] == 24


def test_same_input_gives_same_memory():
    stream = make_stream(60, seed=4)
    queries = [k for _, k in stream[::7]]
    banks = [MemoryBank(small_config(), key_dim=KEY_DIM, token_dim=TOKEN_DIM) for _ in range(2)]
    try:
        for b in banks:
            fill(b, stream)
        ea, eb = all_events(banks[0]), all_events(banks[1])
        assert len(ea) == len(eb) > 3
        for x, y in zip(ea, eb, strict=True):
            assert (x.id, x.t_start, x.t_end, x.grid) == (y.id, y.t_start, y.t_end, y.grid)
            assert torch.equal(x.tokens, y.tokens)
            assert torch.equal(x.token_times, y.token_times)
            assert torch.equal(x.token_positions, y.token_positions)
        for q in queries:
            assert result_signature(banks[0].search(q, k=3)) == result_signature(banks[1].search(q, k=3))
    finally:
        for b in banks:
            b.close()


def varied_steps(n: int, seed: int = 0) -> list[tuple]:
    """A stream as the pipeline hands it on: ("keep", frame, key, thumbnail, cut, hold) and ("drop", count,
    t_last) steps, with token counts from 0 (a frame the temporal drop emptied) to 40 (more than the
    short-term cap, merged down there), shot cuts, holds, dropped runs, and a token grid that changes."""
    rng = np.random.default_rng(seed)
    steps, t = [], 0.0
    for i, (frame, key) in enumerate(make_stream(n, seed=seed, scene_len=7)):
        if rng.random() < 0.25:  # a run of repeats, the newest seen later than the frame they repeat or with it
            count = int(rng.integers(1, 4))
            t += 0.25 * count * int(rng.integers(0, 2))
            steps.append(("drop", count, t))
        t += 0.5
        n_tok = int(rng.choice([0, 0, 3, 6, 12, 40])) if i % 3 == 2 else 6
        grid = (4, 16) if n // 2 <= i < n // 2 + 9 else GRID
        g = torch.Generator().manual_seed(seed * 1000 + i)
        positions = torch.randperm(64, generator=g)[:n_tok].sort().values
        frame = FrameTokens(torch.randn(n_tok, TOKEN_DIM, generator=g), positions, torch.rand(n_tok, generator=g) + 0.5,
                            grid, t)
        thumb = np.full((6, 8, 3), i % 256, np.uint8)
        steps.append(("keep", frame, key, thumb, bool(i % 11 == 10), bool(i % 13 == 3)))
    return steps


def write_in_batches(bank: MemoryBank, steps: list[tuple], size: int) -> list[Event]:
    """``steps`` through ``write_batch``, at most ``size`` kept frames per batch (a new batch at a grid change);
    the events closed, in order."""
    closed: list[Event] = []
    kept: list[tuple] = []
    dropped: list[tuple[int, int, float]] = []

    def send() -> None:
        nonlocal kept, dropped
        batch = FrameBatch.of([k[1] for k in kept], [k[2] for k in kept], [k[3] for k in kept],
                              cuts=[k[4] for k in kept], holds=[k[5] for k in kept], dropped=dropped,
                              token_dim=TOKEN_DIM, key_dim=KEY_DIM)
        closed.extend(bank.write_batch(batch))
        kept, dropped = [], []

    for step in steps:
        if step[0] == "drop":
            dropped.append((len(kept), step[1], step[2]))
            continue
        if kept and (len(kept) == size or step[1].grid != kept[-1][1].grid):
            send()
        kept.append(step)
    send()
    return closed


def test_batched_writes_give_the_frame_by_frame_memory():
    """write_batch at any batch size equals write / count_seen frame by frame: the same events closed in
    the same order, the same short-term frames, open event, archive and index, bit for bit."""
    steps = varied_steps(90, seed=3)
    config = small_config(max_ram_tokens=160, segment_max_frames=6)
    banks = [MemoryBank(config, key_dim=KEY_DIM, token_dim=TOKEN_DIM) for _ in range(4)]
    try:
        reference = banks[0]
        closed_ref: list[Event] = []
        for step in steps:
            if step[0] == "drop":
                reference.count_seen(step[1], t=step[2])
            else:
                closed_ref += reference.write(step[1], step[2], step[3], cut=step[4], hold=step[5])
        mid_ref = reference.state_dict()  # before the flush: short-term frames and an open event
        closed_ref += reference.flush()
        assert reference.stats()["archived_events"] > 0 and len(closed_ref) > 10  # the budget and cuts were hit
        for bank, size in zip(banks[1:], (4, 13, 1000), strict=True):
            closed = write_in_batches(bank, steps, size)
            mid = bank.state_dict()
            closed += bank.flush()
            assert [(e.id, e.t_start, e.t_end, e.n_tokens) for e in closed] == \
                [(e.id, e.t_start, e.t_end, e.n_tokens) for e in closed_ref]
            assert mid["meta"] == mid_ref["meta"]
            assert mid["index"] == mid_ref["index"]
            assert mid["tensors"].keys() == mid_ref["tensors"].keys()
            for name, t in mid_ref["tensors"].items():
                assert torch.equal(mid["tensors"][name], t), name
            assert bank.stats() == reference.stats()
            for a, b in zip(all_events(bank), all_events(reference), strict=True):
                assert (a.id, a.t_start, a.t_end, a.caption) == (b.id, b.t_start, b.t_end, b.caption)
                assert torch.equal(a.tokens, b.tokens) and torch.equal(a.token_times, b.token_times)
                np.testing.assert_array_equal(a.frame_keys, b.frame_keys)
    finally:
        for b in banks:
            b.close()


def test_write_batch_checks_the_whole_batch_before_writing_any_of_it(bank):
    steps = [s for s in varied_steps(12, seed=1) if s[0] == "keep"]
    bank.write(steps[0][1], steps[0][2])
    before = bank.state_dict()
    frames = [s[1] for s in steps[1:6]]
    keys = [s[2] for s in steps[1:6]]
    keys[3] = np.zeros(KEY_DIM, np.float32)
    with pytest.raises(MemoryInputError, match="finite and non-zero"):
        bank.write_batch(FrameBatch.of(frames, keys))
    late = FrameTokens(frames[2].tokens, frames[2].positions, frames[2].sizes, frames[2].grid, 0.0)
    with pytest.raises(MemoryInputError, match="non-decreasing"):
        bank.write_batch(FrameBatch.of([*frames[:2], late], [s[2] for s in steps[1:4]]))
    with pytest.raises(MemoryInputError, match="non-decreasing"):  # a dropped run dated before the frame it follows
        bank.write_batch(FrameBatch.of(frames[:2], keys[:2], dropped=[(1, 2, 0.1)]))
    after = bank.state_dict()
    assert after["meta"] == before["meta"] and after["index"] == before["index"]


# ---- search -------------------------------------------------------------------------------------
def test_search_finds_archived_events_and_counts_recalls(bank):
    stream = make_stream(60, scene_len=6)
    fill(bank, stream)
    archived = bank.archive.ids()
    assert archived, "the 96-token budget must have pushed events to the archive"
    target = archived[0]
    key = next(k for f, k in stream if f.t == bank.archive.get(target).t_start)
    hits = bank.search(key, k=1, neighbours=0)
    assert [e.id for e in hits] == [target]
    assert hits[0].tokens is not None and hits[0].n_tokens > 0
    assert bank.archive.get(target).recalls == 1
    ram_event = bank.events()[-1]
    before = ram_event.recalls
    bank.search(ram_event.frame_keys[0], k=1, neighbours=0)
    assert ram_event.recalls == before + 1


def test_search_time_range_and_neighbours(bank):
    stream = make_stream(48, scene_len=6)
    fill(bank, stream)
    key = stream[20][1]  # scene 3: t in [18, 23]
    hits = bank.search(key, k=1, neighbours=1)
    assert (hits[0].t_start, hits[0].t_end) == (18.0, 23.0)
    assert [e.id for e in hits] == [hits[0].id, hits[0].id - 1, hits[0].id + 1]
    assert hits[1].t_end < hits[0].t_start and hits[2].t_start > hits[0].t_end
    ranged = bank.search(key, k=2, time_range=(30.0, 47.0), neighbours=0)
    assert len(ranged) == 2 and all(e.t_end >= 30.0 for e in ranged)
    assert bank.search(key, k=0) == []


def test_text_and_image_queries_use_the_encoders():
    stream = make_stream(24, scene_len=6)
    words = {"red car": stream[3][1], "blue door": stream[15][1]}

    def text_encoder(texts):
        return torch.from_numpy(np.stack([words[t] for t in texts]))

    def image_encoder(images):  # mean colour → one of the two keys, a real function of the pixels
        return torch.from_numpy(np.stack([words["red car"] if im[..., 0].mean() > 128 else words["blue door"]
                                          for im in images]))

    with MemoryBank(small_config(max_ram_tokens=4096), key_dim=KEY_DIM, token_dim=TOKEN_DIM,
                    text_encoder=text_encoder, image_encoder=image_encoder) as bank:
        fill(bank, stream)
        assert bank.search("red car", k=1, neighbours=0)[0].t_start == 0.0
        assert bank.search("blue door", k=1, neighbours=0)[0].t_start == 12.0
        red = np.zeros((8, 8, 3), np.uint8)
        red[..., 0] = 255
        assert bank.search(red, k=1, neighbours=0)[0].t_start == 0.0
        assert bank.search(np.zeros((8, 8, 3), np.uint8), k=1, neighbours=0)[0].t_start == 12.0
        with pytest.raises(QuestionError, match="empty"):
            bank.search("  ")


def test_text_keys_make_an_event_findable(bank):
    fill(bank, make_stream(24))
    caption_key = np.eye(KEY_DIM, dtype=np.float32)[3]
    target = bank.events()[1].id
    bank.set_caption(target, "a man opens a door", key=caption_key)
    hit = bank.search(caption_key, k=1, neighbours=0)[0]
    assert hit.id == target and hit.caption == "a man opens a door"
    with pytest.raises(MemoryInputError, match="no event 999"):
        bank.add_text_key(999, caption_key)


def test_archive_byte_limit_deletes_oldest_first():
    config = small_config(archive_max_bytes=6_000)
    with MemoryBank(config, key_dim=KEY_DIM, token_dim=TOKEN_DIM) as bank:
        stream = make_stream(120, scene_len=6)
        fill(bank, stream)
        ids = bank.archive.ids()
        assert bank.archive.total_bytes <= 6_000
        assert ids == list(range(ids[0], ids[0] + len(ids))) and ids[0] > 0  # the oldest went first
        gone_key = stream[0][1]
        assert all(e.id >= ids[0] for e in bank.search(gone_key, k=3))
        assert bank.stats()["events"] == len(bank.events()) + len(ids)


def test_owned_archive_dir_is_removed_and_given_dir_must_be_empty(tmp_path):
    bank = MemoryBank(small_config(), key_dim=KEY_DIM, token_dim=TOKEN_DIM)
    root = bank.archive.root
    assert root.is_dir()
    bank.close()
    assert not root.exists()
    (tmp_path / "junk").write_text("x")
    with pytest.raises(ConfigError, match="not empty"):
        MemoryBank(small_config(archive_dir=str(tmp_path)), key_dim=KEY_DIM, token_dim=TOKEN_DIM)
    given_dir = tmp_path / "arch"
    with MemoryBank(small_config(archive_dir=str(given_dir)), key_dim=KEY_DIM, token_dim=TOKEN_DIM) as b:
        fill(b, make_stream(60))
        assert len(list((given_dir / "shards").iterdir())) == len(b.archive) > 0
    assert given_dir.exists()  # a directory the user named is kept


def test_near_duplicate_frame_keys_are_indexed_once_and_a_distinct_frame_stays_findable():
    bank = MemoryBank(small_config(segment_min_frames=8), key_dim=KEY_DIM, token_dim=TOKEN_DIM)  # one 8-frame event
    rng = np.random.default_rng(5)
    base = rng.normal(size=KEY_DIM)
    odd = rng.normal(size=KEY_DIM)  # one frame unlike the others, inside the same event
    for i in range(8):
        key = odd if i == 5 else base + 0.001 * rng.normal(size=KEY_DIM)
        bank.write(make_frame(float(i), 4, i), key)
    (event,) = bank.flush()
    assert len(event.frame_keys) == 8
    assert bank.index.ntotal == 1 + 2  # the event key, one of the 7 near-identical frame keys, the odd one
    assert bank.search(odd, k=1, neighbours=0)[0].id == event.id
    bank.close()
    keys = np.stack([base, base, odd, base])
    assert list(distinct_rows(keys / np.linalg.norm(keys, axis=1, keepdims=True), 0.98)) == [0, 2]


# ---- errors --------------------------------------------------------------------------------------
def test_bad_input_raises_and_loses_nothing(bank):
    fill(bank, make_stream(20))
    bank.write(make_frame(30.0, 4, 1), make_stream(1)[0][1])
    before = bank.stats()
    with pytest.raises(MemoryInputError, match="key must have shape"):
        bank.write(make_frame(31.0, 4, 2), np.ones(KEY_DIM + 1))
    with pytest.raises(MemoryInputError, match="precedes"):
        bank.write(make_frame(29.0, 4, 2), np.ones(KEY_DIM))
    with pytest.raises(MemoryInputError, match="tokens must be"):
        bank.write(FrameTokens(torch.zeros(3, TOKEN_DIM + 1), torch.arange(3), torch.ones(3), GRID, 31.0),
                   np.ones(KEY_DIM))
    with pytest.raises(MemoryInputError, match="finite"):
        bank.write(make_frame(31.0, 4, 2), np.full(KEY_DIM, np.nan))
    assert bank.stats() == before
    with pytest.raises(QuestionError, match="no text encoder"):
        bank.search("a dog")
    with pytest.raises(QuestionError, match="search key"):
        bank.search(np.ones(3))


def test_too_small_budget_is_a_config_error():
    with pytest.raises(ConfigError, match="max_ram_tokens"):
        MemoryBank(small_config(event_tokens=64, max_ram_tokens=100), key_dim=KEY_DIM, token_dim=TOKEN_DIM)


# ---- persistence ---------------------------------------------------------------------------------
def _queries(stream, n=6):
    return [k for _, k in stream[:: max(1, len(stream) // n)]]


@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(n_frames=st.integers(1, 70), seed=st.integers(0, 1000), flush=st.booleans())
def test_save_load_gives_identical_search_results(tmp_path_factory, n_frames, seed, flush):
    stream = make_stream(n_frames, seed=seed, scene_len=5)
    path = tmp_path_factory.mktemp("mem") / "saved"
    with MemoryBank(small_config(), key_dim=KEY_DIM, token_dim=TOKEN_DIM) as bank:
        for frame, key in stream:
            bank.write(frame, key)
        if flush:
            bank.flush()
        bank.save(str(path))
        with MemoryBank.load(str(path)) as loaded:
            assert loaded.stats() == bank.stats()
            for q in _queries(stream):
                assert result_signature(loaded.search(q, k=3)) == result_signature(bank.search(q, k=3))
            # Both continue identically: the open event, short-term and segmenter state were saved too.
            more = make_stream(12, seed=seed + 1)
            t0 = stream[-1][0].t + 1
            for i, (frame, key) in enumerate(more):
                frame.t = t0 + i
                assert [e.t_start for e in bank.write(frame, key)] == [e.t_start for e in loaded.write(frame, key)]
            assert result_signature(bank.flush()) == result_signature(loaded.flush())


def test_save_replaces_an_earlier_save_atomically(tmp_path, bank, monkeypatch):
    stream = make_stream(60)
    path = tmp_path / "mem"
    fill(bank, stream[:30])
    bank.save(str(path))
    expected = {i: result_signature(MemoryBank.load(str(path)).search(q, k=3)) for i, q in enumerate(_queries(stream))}
    for frame, key in stream[30:]:
        bank.write(frame, key)

    def crash(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(EventArchive, "copy_to", crash)
    with pytest.raises(RuntimeError, match="disk full"):
        bank.save(str(path))
    monkeypatch.undo()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mem"]  # no half-written directory left
    with MemoryBank.load(str(path)) as old:
        assert {i: result_signature(old.search(q, k=3)) for i, q in enumerate(_queries(stream))} == expected
    # A crash between moving the old save aside and moving the new one in: load finds the old one.
    os.rename(path, backup_path(path))
    with MemoryBank.load(str(path)) as old:
        assert {i: result_signature(old.search(q, k=3)) for i, q in enumerate(_queries(stream))} == expected
    bank.save(str(path))  # the next save cleans up
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mem"]
    with MemoryBank.load(str(path)) as new:
        assert new.stats()["frames_kept"] == 60


def _damage_missing_manifest(p: Path):
    (p / "manifest.json").unlink()


def _damage_truncate_tensors(p: Path):
    f = p / "tensors.safetensors"
    f.write_bytes(f.read_bytes()[:100])


def _damage_flip_index_byte(p: Path):
    f = p / "index.faiss"
    data = bytearray(f.read_bytes())
    data[len(data) // 2] ^= 0xFF
    f.write_bytes(bytes(data))


def _damage_remove_shard(p: Path):
    next((p / "archive" / "shards").iterdir()).unlink()


def _damage_other_version(p: Path):
    m = json.loads((p / "manifest.json").read_text())
    m["format_version"] = 999
    m["streamvid_version"] = "9.9.9"
    (p / "manifest.json").write_text(json.dumps(m))


def _damage_garbage_manifest(p: Path):
    (p / "manifest.json").write_text("{not json")


@pytest.mark.parametrize("damage, cause", [
    (_damage_missing_manifest, "manifest.json is missing"),
    (_damage_truncate_tensors, "tensors.safetensors has 100 bytes"),
    (_damage_flip_index_byte, "index.faiss does not match its checksum"),
    (_damage_remove_shard, r"archive/shards/\d+\.safetensors is missing"),
    (_damage_other_version, "format version 999 .*streamvid 9.9.9.*reads version 1"),
    (_damage_garbage_manifest, "damaged manifest.json"),
])
def test_damaged_or_other_version_directory_raises_a_clear_error(tmp_path, bank, damage, cause):
    stream = make_stream(60)
    fill(bank, stream)
    path = tmp_path / "mem"
    bank.save(str(path))
    before = result_signature(bank.search(stream[0][1], k=3))
    damage(path)
    with pytest.raises(MemoryFormatError, match=cause):
        MemoryBank.load(str(path))
    assert result_signature(bank.search(stream[0][1], k=3)) == before  # the live memory is untouched


def test_load_of_a_missing_directory_raises(tmp_path):
    with pytest.raises(MemoryFormatError, match="no saved memory"):
        MemoryBank.load(str(tmp_path / "nothing"))


def test_memorybank_is_exported():
    assert streamvid.MemoryBank is MemoryBank


# ---- threads -------------------------------------------------------------------------------------
def test_readers_search_snapshots_while_a_writer_writes():
    stream = make_stream(400, scene_len=7)
    errors: list[BaseException] = []
    stop = threading.Event()
    with MemoryBank(small_config(max_ram_tokens=200), key_dim=KEY_DIM, token_dim=TOKEN_DIM) as bank:
        def reader(seed: int) -> None:
            rng = np.random.default_rng(seed)
            try:
                while not stop.is_set():
                    snap = bank.snapshot()
                    for e in snap.search(stream[int(rng.integers(len(stream)))][1], k=3):
                        assert e.tokens is not None
                        assert bool(((e.token_times >= e.t_start) & (e.token_times <= e.t_end)).all())
                    assert sum(f.n_tokens for f in snap.short_term) <= bank.short_cap
            except BaseException as exc:  # noqa: BLE001 - reported to the main thread
                errors.append(exc)

        threads = [threading.Thread(target=reader, args=(s,)) for s in range(2)]
        for t in threads:
            t.start()
        try:
            for frame, key in stream:
                bank.write(frame, key)
                assert bank.tokens_in_ram <= 200
        finally:
            stop.set()
            for t in threads:
                t.join()
        assert not errors, errors
        assert bank.stats()["archived_events"] > 0


# ---- index ---------------------------------------------------------------------------------------
def _clustered(n: int, dim: int, seed: int) -> np.ndarray:
    """Keys around 300 fixed centres (like frames around scenes); ``seed`` picks the samples."""
    centres = np.random.default_rng(1234).normal(size=(300, dim))
    rng = np.random.default_rng(seed)
    x = centres[rng.integers(len(centres), size=n)] + 0.3 * rng.normal(size=(n, dim))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def test_index_switches_to_ivf_keeps_recall_and_round_trips():
    dim = 32
    keys = _clustered(6000, dim, 0)
    index = KeyIndex(dim, exact_max=2000)
    index.add(keys[:1500], np.arange(1500))
    assert index.kind == "flat"
    index.add(keys[1500:], np.arange(1500, 6000))
    assert index.kind == "ivf" and index.ntotal == 6000 and index.nprobe >= 1
    queries = _clustered(200, dim, 1)
    assert measure_recall(index, queries, k=10) >= 0.9
    assert index.remove_range(0, 1000) == 1000
    assert index.ntotal == 5000
    _, ids = index.search(queries, 10)
    assert ids.min() >= 1000
    copy = KeyIndex(dim)
    copy.load_bytes(index.to_bytes())
    assert copy.kind == "ivf"
    assert np.array_equal(copy.search(queries, 10)[1], ids)
    stored, stored_ids = copy.vectors()
    assert np.array_equal(stored_ids, np.arange(1000, 6000))
    assert np.allclose(stored, keys[1000:], atol=1e-6)


def test_flat_index_is_exact():
    dim = 16
    keys = _clustered(500, dim, 2)
    index = KeyIndex(dim)
    index.add(keys, np.arange(500) * 7)
    queries = _clustered(50, dim, 3)
    assert measure_recall(index, queries, k=10) == 1.0
    scores, ids = index.search(queries[:1], 3)
    assert np.allclose(scores[0], np.sort(keys @ queries[0])[::-1][:3], atol=1e-5)
    assert set(ids[0] // 7) <= set(range(500))


# ---- needle in a 30-minute stream ------------------------------------------------------------------
NEEDLE_TIMES = [138.0, 524.0, 912.0, 1288.0, 1650.0]


def _background(t: float) -> np.ndarray:
    """A 64×64 frame: a two-colour gradient that changes every 45 s, and a moving white square."""
    scene = int(t // 45)
    rng = np.random.default_rng(scene)
    c0, c1 = rng.integers(40, 200, size=3), rng.integers(40, 200, size=3)
    y, x = np.mgrid[0:64, 0:64] / 63.0
    w = (x * np.cos(scene) + y * np.sin(scene) + 1) / 2
    img = c0[None, None] * (1 - w[..., None]) + c1[None, None] * w[..., None]
    cx, cy = int(32 + 20 * np.sin(t / 7)), int(32 + 20 * np.cos(t / 11))
    img[max(0, cy - 5):cy + 5, max(0, cx - 5):cx + 5] = 230
    return img.astype(np.uint8)


def _needle(j: int) -> np.ndarray:
    """Five distinct patterns: checkerboard, stripes, rings, diagonals, a cross."""
    y, x = np.mgrid[0:64, 0:64]
    img = np.zeros((64, 64, 3), np.uint8)
    if j == 0:
        img[((x // 8 + y // 8) % 2) == 1] = (255, 0, 255)
    elif j == 1:
        img[(x // 4) % 2 == 0] = (0, 255, 0)
        img[(x // 4) % 2 == 1] = (0, 0, 255)
    elif j == 2:
        img[(np.hypot(x - 32, y - 32) // 5) % 2 == 0] = (255, 255, 0)
    elif j == 3:
        img[((x + y) // 6) % 2 == 0] = (255, 80, 0)
        img[((x + y) // 6) % 2 == 1] = (20, 20, 20)
    else:
        img[:] = 255
        img[28:36] = (200, 0, 0)
        img[:, 28:36] = (200, 0, 0)
    return img


def _patch_tokens(img: np.ndarray, t: float) -> FrameTokens:
    """16 tokens (a 4×4 grid of 16×16 patches), each its patch pooled to 4×4×3 values."""
    patches = img.reshape(4, 16, 4, 16, 3).transpose(0, 2, 1, 3, 4).reshape(16, 4, 4, 4, 4, 3).mean(axis=(2, 4))
    tokens = torch.from_numpy(patches.reshape(16, 48).astype(np.float32) / 255.0)
    return FrameTokens(tokens=tokens, positions=torch.arange(16), sizes=torch.ones(16), grid=(4, 4), t=t)


def test_needles_in_a_30_minute_stream_are_found_by_image():
    from streamvid.encoders import RetrievalEncoder

    encoder = RetrievalEncoder("tiny", "", device="cpu", seed=0)  # real open_clip architecture, seeded weights
    times = np.arange(0.0, 1800.0, 2.0)  # 30 minutes sampled at 0.5 fps
    frames = [_needle(NEEDLE_TIMES.index(t)) if t in NEEDLE_TIMES else _background(t) for t in times]
    keys = encoder.encode_frames(np.stack(frames))
    config = small_config(event_tokens=16, max_ram_tokens=256, short_term_frames=8, segment_max_frames=32,
                          segment_window=32)
    with MemoryBank(config, key_dim=encoder.dim, token_dim=48,
                    image_encoder=lambda images: encoder.encode_frames(images)) as bank:
        for t, img, key in zip(times, frames, keys, strict=True):
            bank.write(_patch_tokens(img, float(t)), key, thumbnail=img[::4, ::4])
        bank.flush()
        assert bank.stats()["archived_events"] > 0
        rng = np.random.default_rng(0)
        for j, t in enumerate(NEEDLE_TIMES):
            query = (_needle(j).astype(int) + rng.integers(-8, 9, size=(64, 64, 3))).clip(0, 255).astype(np.uint8)
            hits = bank.search(query, k=3, neighbours=0)
            assert any(e.t_start <= t <= e.t_end for e in hits), (t, [(e.t_start, e.t_end) for e in hits])
            needle_event = next(e for e in hits if e.t_start <= t <= e.t_end)
            assert t in needle_event.frame_times and needle_event.tokens is not None


# ---- state dict and recalls ------------------------------------------------------------------------
def test_state_dict_round_trip_gives_the_same_memory_and_needs_a_new_bank(bank):
    stream = make_stream(30, scene_len=6)
    for frame, key in stream:
        bank.write(frame, key)
    state = bank.state_dict()
    assert set(state) == {"meta", "tensors", "index"}
    assert all(t.device.type == "cpu" and t.is_contiguous() for t in state["tensors"].values())
    json.dumps(state["meta"])  # plain data
    with MemoryBank.from_state_dict(state) as copy:
        assert copy.stats() == bank.stats()
        for _, key in stream[::4]:
            assert result_signature(copy.search(key, k=3)) == result_signature(bank.search(key, k=3))
        with pytest.raises(MemoryInputError, match="new, empty MemoryBank"):
            copy.load_state_dict(state)


def test_concurrent_searches_count_every_recall_in_the_bank(bank):
    stream = make_stream(60, scene_len=6)
    fill(bank, stream)
    ids = [e.id for e in bank.events()] + bank.archive.ids()
    before = {e.id: e.recalls for e in all_events(bank)}
    counts = [0] * 4

    def reader(j: int) -> None:
        snap = bank.snapshot()
        for i in range(25):
            counts[j] += len(snap.search(stream[(7 * i + j) % len(stream)][1], k=2, neighbours=1))

    threads = [threading.Thread(target=reader, args=(j,)) for j in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    after = {e.id: e.recalls for e in all_events(bank)}
    assert set(after) == set(ids)
    assert sum(after.values()) - sum(before.values()) == sum(counts) > 0
