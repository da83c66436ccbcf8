"""The video library: Ray actors index files into a Milvus Lite store; search and ask across videos."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest

ray = pytest.importorskip("ray")
pytest.importorskip("pymilvus")
pytest.importorskip("milvus_lite")

from streamvid_bench.samples import PALETTE, Scene, write_video  # noqa: E402

from streamvid.errors import SourceError, StoreError, WorkerStartError  # noqa: E402
from streamvid.library import Library, MilvusStore, VideoRecord, content_id, expand_paths, index_library  # noqa: E402
from streamvid.library.workers import SCRATCH_OWNER, SCRATCH_PREFIX, make_scratch, sweep_dead_scratch  # noqa: E402
from streamvid.sources import open_source  # noqa: E402

pytestmark = pytest.mark.slow
SHAPES = ["door", "car", "ball", None]


@pytest.fixture(scope="module")
def cluster():
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def videos(tmp_path_factory):
    """4 short clips, each one scene of its own colour and shape (content unique to each)."""
    d = tmp_path_factory.mktemp("videos")
    for i in range(4):
        write_video(d / f"clip{i}.mp4", duration=3.0, fps=10, width=128, height=96,
                    scenes=[Scene(0.0, 3.0, PALETTE[2 * i], shape=SHAPES[i])])
    return d


@pytest.fixture(scope="module")
def library(cluster, videos, tmp_path_factory):
    uri = f"milvus://{tmp_path_factory.mktemp('store') / 'lib.db'}"
    messages = []
    report = index_library([videos], uri, preset="tiny-random", workers=2,
                           on_progress=lambda p: messages.append(p.message))
    return uri, report, messages


def middle_frame(path) -> np.ndarray:
    frames = list(open_source(str(path), fps=2))
    return frames[len(frames) // 2].rgb


def test_four_videos_indexed_and_searchable_by_their_own_content(library, videos):
    uri, report, messages = library
    assert not report.failed and report.workers == 2
    assert len(report.indexed) == 4 and report.frames == sum(r.frames for r in report.indexed) > 0
    assert any(m.startswith("[4/4]") for m in messages)
    # the workers load their models after the command starts and before its last file ends
    assert 0 < report.workers_ready_s < report.seconds
    assert report.as_dict()["files_per_hour_after_ready"] > report.as_dict()["files_per_hour"]
    with Library(uri) as lib:
        recs = lib.videos()
        assert sorted(r.path for r in recs) == sorted(str(p.resolve()) for p in videos.glob("*.mp4"))
        ids = {r.path: r.video_id for r in recs}
        for r in recs:
            assert r.video_id == content_id(r.path)
            assert lib.store.count_keys(r.video_id) == r.keys > 0
            assert 0 < r.duration <= 3.0
        for path in sorted(videos.glob("*.mp4")):
            hits = lib.search(middle_frame(path), k=3)
            assert hits[0].video_id == ids[str(path.resolve())]
            assert hits[0].score > 0.95 and 0.0 <= hits[0].t_start <= hits[0].t_end <= 3.0
        # --video restricts the search to one video
        other = ids[str((videos / "clip1.mp4").resolve())]
        hits = lib.search(middle_frame(videos / "clip0.mp4"), k=5, video=other)
        assert hits and {h.video_id for h in hits} == {other}


def test_second_run_indexes_nothing_new(library, videos):
    uri, _, _ = library
    before = MilvusStore(uri)
    n_keys = before.count_keys()
    before.close()
    report = index_library([videos / "*.mp4"], uri, preset="tiny-random", workers=2)
    assert report.indexed == [] and len(report.skipped) == 4 and report.workers == 0
    after = MilvusStore(uri)
    assert after.count_keys() == n_keys and len(after.videos()) == 4
    after.close()


def test_killed_worker_is_retried_without_duplicates(cluster, tmp_path):
    path = tmp_path / "long.mp4"
    # Long enough (120 sampled frames) that the worker reports progress a few times before it is done,
    # however quiet the machine (progress goes out at most every PROGRESS_EVERY_S).
    write_video(path, duration=60.0, fps=10, width=128, height=96, cuts=[20.0, 40.0])
    uri = f"milvus://{tmp_path / 'lib.db'}"
    killed: list[int] = []

    def kill_mid_file(progress) -> None:
        if not killed and progress.worker_pids and progress.frames > 0 and progress.files_done == 0:
            pid = next(iter(progress.worker_pids.values()))
            os.kill(pid, signal.SIGKILL)
            killed.append(pid)

    report = index_library([path], uri, preset="tiny-random", workers=1, on_progress=kill_mid_file)
    assert killed, "the worker was never seen mid-file"
    assert report.retried == [str(path.resolve())] and not report.failed and len(report.indexed) == 1
    rec = report.indexed[0]
    store = MilvusStore(uri)
    try:
        assert store.count_keys() == store.count_keys(rec.video_id) == rec.keys
        assert [v.video_id for v in store.videos()] == [rec.video_id]
        # writing the same video again (a retry after a crash past the worker) replaces, never adds
        rows = store.client.query("keys", filter=f'video_id == "{rec.video_id}"',
                                  output_fields=["event_id", "kind", "t_start", "t_end", "vector"])
        again = {k: np.array([r[k] for r in rows]) for k in ("event_id", "kind", "t_start", "t_end", "vector")}
        store.write_video(rec, again)
        assert store.count_keys() == rec.keys and len(store.videos()) == 1
    finally:
        store.close()
    assert not list(tmp_path.glob("lib.store/.*"))  # no partial copy left by the killed worker's try
    # the killed worker's scratch (its live archive) was swept by the worker that replaced it
    assert not list(Path(tempfile.gettempdir()).glob(f"{SCRATCH_PREFIX}{killed[0]}-*"))


def test_workers_that_cannot_load_their_models_stop_the_run_with_the_cause(cluster, videos, tmp_path):
    uri = f"milvus://{tmp_path / 'lib.db'}"
    with pytest.raises(WorkerStartError, match="ModelError: .*'/nonexistent/model-dir'"):
        index_library([videos / "*.mp4"], uri, preset="tiny-random", workers=2,
                      overrides={"model": "/nonexistent/model-dir"})
    store = MilvusStore(uri)  # nothing half-written: no video, no key
    assert store.videos() == [] and store.count_keys() == 0
    store.close()


def test_sweep_removes_only_dead_workers_scratch(tmp_path):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead_pid = int(dead.stdout)
    here = make_scratch()  # a real one, to learn how this process writes its owner file
    namespace = (here / SCRATCH_OWNER).read_text().split()[1]
    shutil.rmtree(here)
    owners = {"dead": f"{dead_pid} {namespace}", "live": f"{os.getppid()} {namespace}",
              "other-container": f"{dead_pid} pidns:1", "garbled": "not a pid", "old-format": str(dead_pid)}
    for name, owner in owners.items():
        (tmp_path / f"streamvid-worker-{name}").mkdir()
        (tmp_path / f"streamvid-worker-{name}" / SCRATCH_OWNER).write_text(owner)
        (tmp_path / f"streamvid-worker-{name}" / "archive.db").write_text("x")
    (tmp_path / "streamvid-worker-foreign").mkdir()  # no owner file: not ours to judge
    removed = sweep_dead_scratch(tmp_path)
    assert removed == [tmp_path / "streamvid-worker-dead"]
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "streamvid-worker-foreign", "streamvid-worker-garbled", "streamvid-worker-live",
        "streamvid-worker-old-format", "streamvid-worker-other-container"]


def test_ask_store_from_another_process(library, videos):
    uri, report, _ = library
    ids = {r.video_id: r for r in report.indexed}
    out = subprocess.run([sys.executable, "-m", "streamvid.cli", "ask", "--store", uri, "--preset", "tiny-random",
                          "--json", "what shape is in the picture?"], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    payload = json.loads(out.stdout)
    assert payload["video_id"] in ids and payload["citations"]
    for c in payload["citations"]:
        rec = ids[c["video_id"]]
        assert c["path"] == rec.path and 0.0 <= c["t_start"] <= c["t_end"] <= rec.duration
    one = report.indexed[2].video_id
    out = subprocess.run([sys.executable, "-m", "streamvid.cli", "ask", "--store", uri, "--video", one,
                          "--json", "what happened?"], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert {c["video_id"] for c in json.loads(out.stdout)["citations"]} <= {one}


def test_bad_store_and_paths_are_clear_errors(tmp_path):
    with pytest.raises(StoreError, match="milvus:///path/lib.db"):
        MilvusStore(f"sqlite://{tmp_path}/x.db")
    with pytest.raises(StoreError, match="--store-dir"):  # a server store must be told where memories go
        index_library([tmp_path / "missing.mp4"], "milvus://localhost:19530")
    with pytest.raises(SourceError, match="no such file"):
        expand_paths([tmp_path / "missing.mp4"])
    (tmp_path / "empty").mkdir()
    with pytest.raises(SourceError, match="no video files"):
        expand_paths([tmp_path / "empty"])
    store = MilvusStore(f"milvus://{tmp_path / 'lib.db'}")
    rec = VideoRecord(video_id="ab" * 16, path="x.mp4", frames=1, events=1, keys=1, duration=1.0, preset="t")
    with pytest.raises(StoreError, match="no keys"):
        store.write_video(rec, {"vector": np.zeros((0, 4), np.float32)})
    store.close()


def test_bulk_keys_are_searchable_with_their_fields_when_add_keys_returns(tmp_path):
    rng = np.random.default_rng(0)
    n, d = 3000, 32
    keys = rng.normal(size=(n, d)).astype(np.float32)
    keys /= np.linalg.norm(keys, axis=1, keepdims=True)
    vids = [f"{i // 100:032x}" for i in range(n)]
    with MilvusStore(f"milvus://{tmp_path / 'lib.db'}", index_type="HNSW", index_params={"M": 16}) as store:
        store.add_keys({"vector": keys, "video_id": vids, "event_id": np.arange(n) % 100, "kind": ["frame"] * n,
                        "t_start": np.arange(n) * 0.5, "t_end": np.arange(n) * 0.5 + 0.5})
        assert store.count_keys() == n and store.count_keys(vids[1234]) == 100
        for i in (0, 1234, n - 1):
            hit = store.search(keys[i], k=3)[0][0]
            assert (hit.video_id, hit.event_id, hit.kind) == (vids[i], i % 100, "frame")
            assert (hit.t_start, hit.t_end) == (i * 0.5, i * 0.5 + 0.5) and hit.score == pytest.approx(1.0, abs=1e-4)
