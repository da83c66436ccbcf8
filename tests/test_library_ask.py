"""The library store behind the memory's key index and archive, and answers across videos citing
(video, time). Files are indexed in this process (``IndexWorker`` called directly: Ray is not the point
here; tests/test_library.py covers the workers) into a Milvus Lite file."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("pymilvus")
pytest.importorskip("milvus_lite")

from streamvid_bench.samples import PALETTE, Scene, Text, write_video  # noqa: E402

from streamvid.errors import MemoryFormatError, StoreError  # noqa: E402
from streamvid.library import Library, MilvusStore, VideoRecord, content_id  # noqa: E402
from streamvid.library.index import SavedEvents, StoreKeyIndex, video_bank  # noqa: E402
from streamvid.library.workers import IndexWorker  # noqa: E402
from streamvid.memory import KeyIndex, MemoryBank  # noqa: E402
from streamvid.prompt import PromptBlock, build_messages  # noqa: E402
from streamvid.retrieve import gather  # noqa: E402
from streamvid.types import NOT_SEEN  # noqa: E402

pytestmark = pytest.mark.slow
ENV = {**os.environ, "HF_HUB_OFFLINE": "1"}


def index_here(paths: list[Path], uri: str, preset: str, **overrides) -> dict[str, VideoRecord]:
    """Index ``paths`` as ``index-library`` does (a worker saves each memory, the driver writes its keys),
    in this process. Returns file name → record."""
    store = MilvusStore(uri)
    store.store_dir.mkdir(parents=True, exist_ok=True)
    worker = IndexWorker(preset, overrides, str(store.store_dir))
    out = {}
    try:
        for p in paths:
            vid = content_id(p)
            res = worker.index(str(p), vid)
            rec = VideoRecord(vid, str(p), res["frames"], res["events"], len(res["rows"]["vector"]), res["duration"],
                              preset)
            store.write_video(rec, res["rows"])
            out[p.name] = rec
    finally:
        worker._models.close()
        store.close()
    return out


@pytest.fixture(scope="module")
def tiny_library(tmp_path_factory):
    """Two tiny-random clips of four scenes each (a moving ball); a RAM budget small enough that each saved memory holds
    archived events as well as events in RAM."""
    d = tmp_path_factory.mktemp("tiny")
    paths = []
    for i in range(2):
        p = d / f"clip{i}.mp4"
        write_video(p, duration=6.0, fps=10, width=128, height=96,
                    scenes=[Scene(1.5 * j, 1.5 * (j + 1), PALETTE[(2 * i + j) % len(PALETTE)], shape="ball")
                            for j in range(4)])
        paths.append(p)
    uri = f"milvus://{d / 'lib.db'}"
    return uri, index_here(paths, uri, "tiny-random", event_tokens=8, max_ram_tokens=32)


def test_bank_over_the_store_retrieves_as_the_faiss_bank(tiny_library):
    uri, records = tiny_library
    rec = records["clip0.mp4"]
    store = MilvusStore(uri)
    faiss_bank = MemoryBank.load(str(store.video_dir(rec.video_id)))
    bank = video_bank(store, rec.video_id, text_encoder=None)
    try:
        keys, ids = faiss_bank.index.vectors()
        skeys, sids = bank.index.vectors()
        assert np.array_equal(ids, sids) and np.allclose(keys, skeys, atol=1e-6)
        assert bank.index.ntotal == faiss_bank.index.ntotal == rec.keys
        assert bank.stats()["events"] == faiss_bank.stats()["events"] == rec.events
        stats = faiss_bank.stats()
        assert stats["archived_events"] >= 1 and stats["ram_events"] >= 1, stats  # both kinds read in place
        rng = np.random.default_rng(0)
        queries = [*keys, *(rng.normal(size=keys.shape[1]).astype(np.float32) for _ in range(4))]
        for q in queries:
            want = faiss_bank.search(q, k=2, neighbours=1)
            got = bank.search(q, k=2, neighbours=1)
            assert [e.id for e in got] == [e.id for e in want]
            for a, b in zip(got, want, strict=True):  # the events come back whole from the saved folder
                assert (a.t_start, a.t_end, a.grid) == (b.t_start, b.t_end, b.grid)
                assert torch.equal(a.tokens, b.tokens) and np.array_equal(a.thumbnail, b.thumbnail)
        # retrieval (planning, ranking, assembling blocks) is the same on both
        _, blocks_a, used_a = gather(faiss_bank.snapshot(), "what happened at the start?", budget=64, k=2)
        _, blocks_b, used_b = gather(bank.snapshot(), "what happened at the start?", budget=64, k=2)
        assert [(e.id, s) for e, s in used_a] == [(e.id, s) for e, s in used_b]
        assert [(b.event_id, b.t_start, b.n) for b in blocks_a] == [(b.event_id, b.t_start, b.n) for b in blocks_b]
        with pytest.raises(StoreError, match="read in place"):
            bank.archive.put(faiss_bank.snapshot().events_between(0, 1)[0])
    finally:
        bank.close()
        faiss_bank.close()
        store.close()


def test_store_key_index_behaves_as_key_index(tiny_library, tmp_path):
    """add / search / remove_range / vectors of a fresh video id agree with FAISS's KeyIndex."""
    uri, _ = tiny_library
    store = MilvusStore(uri)
    try:
        dim, vid = store.dim, "f" * 32
        rng = np.random.default_rng(1)
        keys = rng.normal(size=(12, dim)).astype(np.float32)
        ids = np.array([(e << 16) | s for e in range(4) for s in (0, 1, 1 << 15)], np.int64)
        spans = lambda ev: (ev * 2.0, ev * 2.0 + 1.5)  # noqa: E731
        index, ref = StoreKeyIndex(store, vid, spans=spans), KeyIndex(dim)
        index.add(keys, ids)
        ref.add(keys, ids)
        q = rng.normal(size=(3, dim)).astype(np.float32)
        (s1, i1), (s2, i2) = index.search(q, 5), ref.search(q, 5)
        assert np.array_equal(i1, i2) and np.allclose(s1, s2, atol=1e-5)
        assert index.remove_range(1 << 16, 3 << 16) == ref.remove_range(1 << 16, 3 << 16) == 6
        assert np.array_equal(index.vectors()[1], ref.vectors()[1]) and index.ntotal == 6
        hit = store.search(keys[-1:], k=1, video_id=vid)[0][0]
        assert (hit.event_id, hit.slot, hit.kind, hit.t_start, hit.t_end) == (3, 1 << 15, "caption", 6.0, 7.5)
        with pytest.raises(StoreError, match="spans"):
            StoreKeyIndex(store, vid).add(keys[:1], ids[:1])
        index.remove_range(0, 1 << 32)
        assert index.ntotal == 0
        # library-wide: ids carry the video; every stored key of every indexed video is there once
        everything = StoreKeyIndex(store)
        _, all_ids = everything.vectors()
        assert len(all_ids) == store.count_keys() and len(set(all_ids.tolist())) == len(all_ids)
        video, event, slot = everything.unpack(int(everything.search(q[:1], 1)[1][0, 0]))
        assert video in everything.video_ids and event >= 0 and slot >= 0
    finally:
        store.close()


def test_saved_events_refuse_a_damaged_file(tiny_library, tmp_path):
    import shutil

    uri, records = tiny_library
    store = MilvusStore(uri)
    src = store.video_dir(records["clip1.mp4"].video_id)
    store.close()
    copy = tmp_path / "mem"
    shutil.copytree(src, copy)
    tensors = copy / "tensors.safetensors"
    data = bytearray(tensors.read_bytes())
    data[-1] ^= 0xFF
    tensors.write_bytes(bytes(data))
    events = SavedEvents(copy)
    with pytest.raises(MemoryFormatError, match="tensors.safetensors"):
        events.spans()
    events.close()


def test_prompt_labels_blocks_with_their_video():
    def block(t0: float, source: str) -> PromptBlock:
        b = PromptBlock(t0, t0 + 1, torch.zeros(1, 4), [t0], torch.zeros(1, dtype=torch.long), (1, 1))
        b.source = source
        return b

    from streamvid.prompt import sort_blocks

    blocks = sort_blocks([block(5.0, "[b.mp4]"), block(1.0, "[b.mp4]"), block(3.0, "[a.mp4]")])
    text = "".join(c.get("text", "") for c in build_messages(blocks, "q?", "image")[0]["content"])
    assert text.index("[a.mp4] [00:00:03") < text.index("[b.mp4] [00:00:01") < text.index("[b.mp4] [00:00:05")
    plain = build_messages([PromptBlock(1.0, 2.0, torch.zeros(1, 4), [1.0], torch.zeros(1, dtype=torch.long),
                                        (1, 1))], "q?", "image")
    assert plain[0]["content"][0]["text"] == "[00:00:01–00:00:02] "


def test_vlm_answer_reads_several_videos(tiny_library):
    uri, records = tiny_library
    durations = {r.video_id: r.duration for r in records.values()}
    with Library(uri, max_videos=2) as lib:
        ans = lib.ask("what happened?")  # no content to search: every video up to the cap is read
        assert set(ans.videos) == set(durations) and ans.video_id in durations
        for c in ans.citations:
            assert 0.0 <= c.t_start <= c.t_end <= durations[c.video_id]
        one = records["clip1.mp4"]
        ans = lib.ask("what happened?", video=one.path)
        assert ans.videos == [one.video_id]
        c = ans.citations[0]
        event = lib.event(c.video_id, c.event_id)  # read by (video, event id) from the saved folder
        assert (event.t_start, event.t_end) == (c.t_start, c.t_end) and event.thumbnail.ndim == 3
        assert event.tokens is not None and lib.event(c.video_id, 10_000) is None
        with pytest.raises(StoreError, match="no video"):
            lib.ask("what happened?", video="nope.mp4")


TEXTS = {"red.mp4": "RED CAR", "door.mp4": "BLUE DOOR", "exit.mp4": "EXIT"}


@pytest.fixture(scope="module")
def offline_library(tmp_path_factory):
    """Three clips, each with its own on-screen text; red.mp4 also shows EXIT at its end."""
    d = tmp_path_factory.mktemp("offline")
    paths = []
    for i, (name, text) in enumerate(TEXTS.items()):
        p = d / name
        extra = [Text(5.0, 6.0, "EXIT")] if name == "red.mp4" else []
        write_video(p, duration=6.0, fps=10, width=320, height=180,
                    scenes=[Scene(0.0, 3.0, PALETTE[i]), Scene(3.0, 6.0, PALETTE[i + 3])],
                    texts=[Text(1.0, 5.0, text), *extra])
        paths.append(p)
    uri = f"milvus://{d / 'lib.db'}"
    return uri, index_here(paths, uri, "offline")


def cited(ans) -> dict[str, list[tuple[float, float]]]:
    out: dict[str, list] = {}
    for c in ans.citations:
        out.setdefault(Path(c.path).name, []).append((c.t_start, c.t_end))
    return out


def test_offline_answers_cite_the_video_that_showed_it(offline_library):
    uri, records = offline_library
    with Library(uri) as lib:
        ans = lib.ask("When did the red car text appear?")
        assert "RED CAR" in ans.text and set(cited(ans)) == {"red.mp4"}
        assert ans.video_id == records["red.mp4"].video_id
        assert all(t0 < 5.0 and t1 > 1.0 for t0, t1 in cited(ans)["red.mp4"])
        # shown in two videos: both cited, each at its own time
        ans = lib.ask("When did the EXIT text appear?")
        spans = cited(ans)
        assert set(spans) == {"red.mp4", "exit.mp4"}, ans
        assert any(t1 >= 5.0 for _, t1 in spans["red.mp4"]) and any(t0 <= 1.0 for t0, _ in spans["exit.mp4"])
        ans = lib.ask("When did the giraffe appear?")
        assert ans.text == NOT_SEEN and ans.citations == [] and ans.video_id is None
        # --video restricts: the red car is not in door.mp4
        ans = lib.ask("When did the red car text appear?", video=records["door.mp4"].path)
        assert ans.text == NOT_SEEN and ans.citations == []


def test_ask_store_from_another_process_cites_video_and_time(offline_library):
    uri, records = offline_library
    out = subprocess.run([sys.executable, "-m", "streamvid.cli", "ask", "--store", uri, "--json",
                          "When did the blue door text appear?"], capture_output=True, text=True, env=ENV,
                         timeout=300)
    assert out.returncode == 0, out.stderr
    payload = json.loads(out.stdout)
    door = records["door.mp4"]
    assert "BLUE DOOR" in payload["answer"] and payload["videos"] == [door.video_id]
    assert payload["citations"] and all(c["path"] == door.path and 0.0 <= c["t_start"] <= c["t_end"] <= 6.0
                                        for c in payload["citations"])


def test_ask_store_prints_each_citation_with_video_and_time(offline_library, capsys):
    from streamvid.cli import main

    uri, records = offline_library
    assert main(["ask", "--store", uri, "When did the EXIT text appear?"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert any(records["red.mp4"].path in line and "[00:00:0" in line for line in lines), lines
    assert any(records["exit.mp4"].path in line and records["exit.mp4"].video_id[:12] in line for line in lines)
    assert not any(records["door.mp4"].path in line for line in lines)
