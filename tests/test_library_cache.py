"""The local cache of object-store memories: bounded in bytes, least recently used copies evicted first,
never a copy another reader (in this process or another) holds, never a folder streamvid did not write."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from test_memory import KEY_DIM, TOKEN_DIM, make_stream, small_config

from streamvid.errors import ConfigError
from streamvid.library.cache import MemoryCache, max_bytes_from_env, parse_bytes
from streamvid.library.objects import ObjectMemories
from streamvid.memory import MemoryBank
from streamvid.memory.persist import MANIFEST

pytest.importorskip("fsspec")


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> tuple[str, list[str]]:
    """Four small memories uploaded to a file:// object store; returns its URL and the video ids."""
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("objects")
    url = f"file://{root}"
    up = ObjectMemories(url, cache_dir=tmp_path_factory.mktemp("uploader-cache"))
    up.prepare()
    vids = []
    for i in range(4):
        with MemoryBank(small_config(), key_dim=KEY_DIM, token_dim=TOKEN_DIM) as bank:
            for frame, key in make_stream(12, seed=i):
                bank.write(frame, key)
            vid = f"{i + 1:032x}"
            up.save(bank, vid)
            vids.append(vid)
    return url, vids


def cached(mem: ObjectMemories) -> set[str]:
    """Video ids with a complete copy in ``mem``'s cache."""
    return {p.name.split("-")[0] for p in mem.cache.iterdir() if (p / MANIFEST).is_file()}


def copy_bytes(mem: ObjectMemories) -> int:
    return max(size for _, size, _ in mem.copies.copies())


def test_the_cache_stays_within_its_bound_dropping_the_least_recently_used(store, tmp_path):
    url, (a, b, c, _) = store
    probe = ObjectMemories(url, cache_dir=tmp_path / "probe")
    probe.local_dir(a)
    bound = int(2.5 * copy_bytes(probe))  # room for two copies
    mem = ObjectMemories(url, cache_dir=tmp_path / "cache", cache_max_bytes=bound)
    for vid in (a, b, a):  # a is used again after b: b is now the least recently used
        with mem.checkout(vid) as lease:
            assert MemoryBank.load(str(lease.path)).stats()["frames_seen"] == 12
    assert cached(mem) == {a, b}
    with mem.checkout(c):
        pass
    assert cached(mem) == {a, c}
    assert sum(size for _, size, _ in mem.copies.copies()) <= bound
    with mem.checkout(b) as lease:  # an evicted copy is fetched again, whole
        bank = MemoryBank.load(str(lease.path))
        assert bank.stats()["frames_seen"] == 12
        bank.close()
    assert cached(mem) == {b, c}


def test_a_copy_held_by_another_process_is_never_evicted(store, tmp_path):
    url, (a, b, c, d) = store
    cache = tmp_path / "cache"
    mem = ObjectMemories(url, cache_dir=cache, cache_max_bytes=0)  # keep nothing that nobody holds
    holder = subprocess.Popen(
        [sys.executable, "-c",
         "import sys; from streamvid.library.objects import ObjectMemories as M; "
         f"lease = M({url!r}, cache_dir={str(cache)!r}, cache_max_bytes=0).checkout({a!r}); "
         "print(lease.path, flush=True); sys.stdin.readline(); "
         "from streamvid.memory import MemoryBank; print(MemoryBank.load(str(lease.path)).stats()['frames_seen'])"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=os.environ.copy())
    try:
        held = Path(holder.stdout.readline().strip())
        assert held.name.startswith(a)
        with mem.checkout(b), mem.checkout(c):  # over the bound: b and c are held here, a in the other process
            assert cached(mem) == {a, b, c}
        with mem.checkout(d):
            assert cached(mem) == {a, d}  # b and c let go: evicted; a still held
        out, _ = holder.communicate("go\n", timeout=120)
        assert holder.returncode == 0 and out.strip() == "12"  # its copy was whole all along
    finally:
        holder.kill()
    with mem.checkout(b):
        assert cached(mem) == {b}


def test_only_the_caches_own_copies_are_removed(store, tmp_path):
    url, (a, b, _, _) = store
    cache = tmp_path / "cache"
    mem = ObjectMemories(url, cache_dir=cache, cache_max_bytes=0)
    mem.local_dir(a)
    theirs = [cache / "notes.txt", mem.cache / "their-folder" / "x.bin", mem.cache / f"{b}-{'0' * 16}" / "x.bin",
              cache / ("e" * 12) / "y.bin"]
    for p in theirs:
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(b"x" * 100_000)
    stale = mem.cache / f".{a}-{'1' * 16}.partial-0badf00d"  # a download that was killed
    stale.mkdir()
    (stale / "state.json").write_text("{}")
    with mem.checkout(b):
        pass
    assert cached(mem) == {b} and not stale.exists()
    assert all(p.read_bytes() == b"x" * 100_000 for p in theirs)


def test_sizes_and_the_bound_from_the_environment(monkeypatch, tmp_path):
    assert parse_bytes("1024") == 1024 and parse_bytes("512M") == 512 * 2**20
    assert parse_bytes("1.5GiB") == 3 * 2**29 and parse_bytes("20g") == 20 * 2**30
    for bad in ("", "lots", "-1G", "5 parsecs"):
        with pytest.raises(ConfigError, match="not a size"):
            parse_bytes(bad)
    monkeypatch.setenv("STREAMVID_CACHE_MAX_BYTES", "2G")
    assert max_bytes_from_env() == 2 * 2**30 and MemoryCache(tmp_path).max_bytes == 2 * 2**30
    monkeypatch.setenv("STREAMVID_CACHE_MAX_BYTES", "a lot")
    with pytest.raises(ConfigError, match="'a lot' is not a size"):
        MemoryCache(tmp_path)
