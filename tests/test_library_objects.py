"""A library whose per-video memories live in an object store: a real S3 API (moto's server on
127.0.0.1), s3fs through fsspec, Ray workers uploading, another process asking."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys

import numpy as np
import pytest

ray = pytest.importorskip("ray")
pytest.importorskip("pymilvus")
pytest.importorskip("milvus_lite")
pytest.importorskip("s3fs")
moto_server = pytest.importorskip("moto.server")

import fsspec  # noqa: E402
from streamvid_bench.samples import PALETTE, Scene, write_video  # noqa: E402

from streamvid.errors import ObjectStoreError  # noqa: E402
from streamvid.library import Library, MilvusStore, content_id, index_library  # noqa: E402
from streamvid.library.objects import UPLOAD_MARK, ObjectMemories  # noqa: E402
from streamvid.memory import MemoryBank  # noqa: E402
from streamvid.memory.persist import file_matches, read_manifest  # noqa: E402

pytestmark = pytest.mark.slow
PREFIX = "s3://bucket/lib"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def s3(tmp_path_factory):
    """A moto S3 server with one bucket; the AWS variables point every process (Ray workers, a CLI
    subprocess) at it. Started before Ray so that the workers inherit them."""
    port = _free_port()
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    env = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1",
           "AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}", "HF_HUB_OFFLINE": "1",
           "STREAMVID_CACHE_DIR": str(tmp_path_factory.mktemp("cache"))}
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    fs = fsspec.filesystem("s3")
    fs.mkdir("bucket")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        yield fs, port
    finally:
        ray.shutdown()
        server.stop()
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


@pytest.fixture(scope="module")
def indexed(s3, tmp_path_factory):
    """Two clips, each its own colour and shape, indexed by 2 workers into Milvus Lite + s3://bucket/lib."""
    d = tmp_path_factory.mktemp("videos")
    for i in range(2):
        write_video(d / f"clip{i}.mp4", duration=2.0, fps=10, width=128, height=96,
                    scenes=[Scene(0.0, 2.0, PALETTE[3 * i], shape=["door", "ball"][i])])
    root = tmp_path_factory.mktemp("store")
    uri = f"milvus://{root / 'lib.db'}"
    report = index_library([d], uri, store_dir=PREFIX, preset="tiny-random", workers=2)
    return uri, root, d, report


def _objects(fs, vid: str) -> dict[str, bytes]:
    fs.invalidate_cache()
    base = f"bucket/lib/{vid}/"
    return {p[len(base):]: fs.cat_file(p) for p in fs.find(base)}


def test_index_into_s3_then_ask_from_another_process(s3, indexed):
    fs, _ = s3
    uri, root, videos, report = indexed
    assert not report.failed and len(report.indexed) == 2
    assert not (root / "lib.store").exists()  # nothing written beside the .db: the memories are in the bucket
    for rec in report.indexed:
        objs = _objects(fs, rec.video_id)
        manifest = json.loads(objs["manifest.json"])
        assert set(objs) == set(manifest["files"]) | {"manifest.json"}  # exactly the memory, no upload mark left
        assert "archive/archive.db" in objs and "tensors.safetensors" in objs
    with MilvusStore(uri) as store:  # the store references where each video's memory is
        assert [v.memory for v in store.videos()] == [PREFIX, PREFIX]
    # so a reader needs no --store-dir
    out = subprocess.run([sys.executable, "-m", "streamvid.cli", "ask", "--store", uri,
                          "--preset", "tiny-random", "--json", "what shape is in the picture?"],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    payload = json.loads(out.stdout)
    recs = {r.video_id: r for r in report.indexed}
    assert payload["video_id"] in recs and payload["citations"]
    for c in payload["citations"]:
        assert c["video_id"] == payload["video_id"] and 0.0 <= c["t_start"] <= c["t_end"] <= 2.0
    # the reader's copy sits in the local cache, named by the video id and its manifest's hash
    cached = [p.name for p in (_cache(PREFIX)).iterdir()]
    assert any(name.startswith(payload["video_id"] + "-") for name in cached)
    assert not [n for n in cached if n.startswith(".")]  # no partial download left


def test_a_library_holds_the_cached_copies_it_reads(s3, indexed, tmp_path, monkeypatch):
    uri, _, _, report = indexed
    a, b = (r.video_id for r in report.indexed)
    monkeypatch.setenv("STREAMVID_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("STREAMVID_CACHE_MAX_BYTES", "0")  # keep nothing nobody holds
    with Library(uri) as lib:
        ids = lib.bank(a).archive.ids()
        with ObjectMemories(PREFIX).checkout(b):  # another reader's download: evicts every unheld copy
            pass
        assert ObjectMemories(PREFIX).copies.copies()[0][0].name.startswith(a + "-")  # a's copy stayed
        assert all(lib.event(a, i).n_tokens > 0 for i in ids)  # and reads whole
        # read lazily: the files the library read are there, checked; the key index (in Milvus) never came
        copy = lib.bank(a).archive.root
        listed = read_manifest(copy)["files"]
        assert {"state.json", "tensors.safetensors"} <= {p.name for p in copy.iterdir()}
        assert not (copy / "index.faiss").exists()
        assert all(file_matches(p, listed[p.relative_to(copy).as_posix()]) for p in copy.rglob("*")
                   if p.is_file() and p.name != "manifest.json")
    # the library closed: a's copy can go. A whole checkout of a completes the same copy in place (its
    # downloads evict b's unheld copy); then b's download evicts a's.
    whole = ObjectMemories(PREFIX).local_dir(a)
    assert whole == copy and (whole / "index.faiss").is_file()
    bank = MemoryBank.load(str(whole))
    assert bank.stats()["events"] >= len(ids)
    bank.close()
    with ObjectMemories(PREFIX).checkout(b):
        assert [c.name.split("-")[0] for c, _, _ in ObjectMemories(PREFIX).copies.copies()] == [b]


def _cache(url: str):
    return ObjectMemories(url).cache


def test_upload_stopped_before_manifest_is_not_indexed_and_is_redone(s3, indexed, tmp_path):
    fs, _ = s3
    uri, _, videos, report = indexed
    path_a, path_b = str((videos / "clip0.mp4").resolve()), str((videos / "clip1.mp4").resolve())
    vid_a = content_id(path_a)
    # objects streamvid did not write: beside the memories, and inside one video's prefix
    fs.pipe_file("bucket/lib/README.txt", b"the team's notes")
    fs.pipe_file(f"bucket/lib/{vid_a}/notes.txt", b"mine")
    mem = ObjectMemories(PREFIX, cache_dir=tmp_path / "cache")
    # re-upload video A from a local copy missing one file: the upload really fails midway
    copy = tmp_path / "copy"
    shutil.copytree(mem.local_dir(vid_a), copy)
    (copy / "tensors.safetensors").unlink()
    with pytest.raises(ObjectStoreError, match=f"{PREFIX}/{vid_a}"):
        mem.upload(copy, vid_a)
    left = _objects(fs, vid_a)
    assert "manifest.json" not in left and UPLOAD_MARK in left and "state.json" in left
    assert not mem.has(vid_a)
    with MilvusStore(uri, store_dir=PREFIX) as store:
        assert store.has_video(vid_a)  # its keys are still in Milvus, but without a memory it is not indexed
        with pytest.raises(ObjectStoreError, match="manifest.json is missing"):
            store.video_dir(vid_a)

    again = index_library([videos], uri, store_dir=PREFIX, preset="tiny-random", workers=1)
    assert [r.path for r in again.indexed] == [path_a] and again.skipped == [path_b] and not again.failed
    assert mem.has(vid_a)
    objs = _objects(fs, vid_a)
    assert UPLOAD_MARK not in objs and objs["notes.txt"] == b"mine"
    assert fs.cat_file("bucket/lib/README.txt") == b"the team's notes"
    with MilvusStore(uri, store_dir=PREFIX) as store:
        assert store.count_keys(vid_a) == again.indexed[0].keys
        bank = MemoryBank.load(str(store.video_dir(vid_a)))
        assert bank.stats()["frames_seen"] == again.indexed[0].frames
        bank.close()


def test_foreign_video_prefix_is_refused_and_left_alone(s3, indexed, tmp_path):
    fs, _ = s3
    _, _, _, report = indexed
    mem = ObjectMemories(PREFIX, cache_dir=tmp_path / "cache")
    folder = mem.local_dir(report.indexed[1].video_id)
    other = "ab" * 16
    fs.pipe_file(f"bucket/lib/{other}/state.json", b"someone else's")
    with pytest.raises(ObjectStoreError, match="streamvid did not write"):
        mem.upload(folder, other)
    assert _objects(fs, other) == {"state.json": b"someone else's"}
    # another tool's manifest.json does not make the prefix streamvid's
    theirs = json.dumps({"format": "other-tool", "files": {"state.json": {}}}).encode()
    fs.pipe_file(f"bucket/lib/{other}/manifest.json", theirs)
    with pytest.raises(ObjectStoreError, match="streamvid did not write"):
        mem.upload(folder, other)
    assert _objects(fs, other) == {"state.json": b"someone else's", "manifest.json": theirs}


def test_corrupt_or_missing_object_is_a_clear_error(s3, indexed, tmp_path):
    fs, _ = s3
    vid = indexed[3].indexed[1].video_id
    key = f"bucket/lib/{vid}/tensors.safetensors"
    good = fs.cat_file(key)
    try:
        fs.pipe_file(key, good[:-10] + b"0123456789")
        mem = ObjectMemories(PREFIX, cache_dir=tmp_path / "cache")
        with pytest.raises(ObjectStoreError, match=f"{PREFIX}/{vid}/tensors.safetensors: damaged"):
            mem.local_dir(vid)
        # nothing damaged or half-fetched in the cache: the copy holds its manifest and checked files only
        (copy,) = mem.cache.iterdir()
        listed = read_manifest(copy)["files"]
        present = [p for p in copy.rglob("*") if p.is_file() and p.name != "manifest.json"]
        assert "tensors.safetensors" not in {p.name for p in present}
        assert all(file_matches(p, listed[p.relative_to(copy).as_posix()]) for p in present)
        fs.rm_file(key)
        with pytest.raises(ObjectStoreError, match="tensors.safetensors: missing"):
            mem.local_dir(vid)
    finally:
        fs.pipe_file(key, good)
    manifest = f"bucket/lib/{vid}/manifest.json"
    good_manifest = fs.cat_file(manifest)
    try:
        fs.pipe_file(manifest, b'{"format": "streamvid-memory", "format_version": 1, "files": {"../x": {}}}')
        with pytest.raises(ObjectStoreError, match="not a streamvid memory manifest"):
            ObjectMemories(PREFIX, cache_dir=tmp_path / "cache2").local_dir(vid)
    finally:
        fs.pipe_file(manifest, good_manifest)
    # intact again: it loads, and the same bank is found as before
    bank = MemoryBank.load(str(ObjectMemories(PREFIX, cache_dir=tmp_path / "cache3").local_dir(vid)))
    assert bank.stats()["frames_seen"] == indexed[3].indexed[1].frames
    bank.close()


def test_unreachable_store_missing_bucket_and_credentials_name_the_cause(s3, monkeypatch, tmp_path):
    _, port = s3
    with pytest.raises(ObjectStoreError, match="s3://nobucket/lib: cannot reach.*nobucket does not exist"):
        ObjectMemories("s3://nobucket/lib").prepare()
    closed = _free_port()
    opts = {"client_kwargs": {"endpoint_url": f"http://127.0.0.1:{closed}"},
            "config_kwargs": {"retries": {"max_attempts": 1}}, "skip_instance_cache": True}
    with pytest.raises(ObjectStoreError, match=f"{PREFIX}: cannot reach.*EndpointConnectionError"):
        ObjectMemories(PREFIX, storage_options=opts).prepare()
    for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.delenv(k)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    with pytest.raises(ObjectStoreError, match="NoCredentialsError"):
        ObjectMemories(PREFIX, storage_options={"skip_instance_cache": True}).prepare()


def test_file_url_round_trip(s3, indexed, tmp_path):
    """Any fsspec URL works the same way: file:// here, one memory uploaded and fetched back."""
    vid = indexed[3].indexed[0].video_id
    src = MemoryBank.load(str(ObjectMemories(PREFIX, cache_dir=tmp_path / "c0").local_dir(vid)))
    url = f"file://{tmp_path / 'objects'}"
    mem = ObjectMemories(url, cache_dir=tmp_path / "c1")
    mem.prepare()
    (tmp_path / "objects" / "keep.txt").write_text("not streamvid's")
    mem.save(src, vid)
    # an earlier manifest naming a path outside the video's prefix: the next upload removes only plain names
    remote = tmp_path / "objects" / vid / "manifest.json"
    doc = json.loads(remote.read_text())
    doc["files"]["../keep.txt"] = {"bytes": 1, "sha256": "0" * 64}
    remote.write_text(json.dumps(doc))
    mem.save(src, vid)  # a second upload replaces the first
    back = MemoryBank.load(str(mem.local_dir(vid)))
    try:
        assert np.array_equal(src.index.vectors()[0], back.index.vectors()[0])
        q = src.index.vectors()[0][0]
        assert [(e.id, e.t_start, e.t_end) for e in src.search(q, k=3)] == \
            [(e.id, e.t_start, e.t_end) for e in back.search(q, k=3)]
    finally:
        src.close()
        back.close()
    assert (tmp_path / "objects" / "keep.txt").read_text() == "not streamvid's"
    assert not (tmp_path / "objects" / vid / UPLOAD_MARK).exists()
