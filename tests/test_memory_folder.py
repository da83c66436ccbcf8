"""Memory folders: saving never deletes what streamvid did not write, loading trusts nothing in the
folder, and a save killed at any moment leaves the previous memory or the new one."""

from __future__ import annotations

import hashlib
import json
import logging
import multiprocessing
import os
import random
import signal
import sqlite3
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load, save
from test_memory import KEY_DIM, TOKEN_DIM, fill, make_stream, result_signature, small_config

from streamvid.errors import MemoryFolderError, MemoryFormatError, StreamvidError
from streamvid.memory import MemoryBank
from streamvid.memory.persist import SAVING_MARK, backup_path


@pytest.fixture(autouse=True)
def one_torch_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def tree(root: Path) -> dict[str, str]:
    """Every file and folder under ``root`` → sha256 of its bytes ("dir" for a folder)."""
    return {p.relative_to(root).as_posix(): "dir" if p.is_dir() else hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*"))}


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """A saved memory with RAM events, archived events, short-term frames and an open event, and the
    search results it gives."""
    stream = make_stream(60, scene_len=6)
    root = tmp_path_factory.mktemp("saved") / "mem"
    with MemoryBank(small_config(), key_dim=KEY_DIM, token_dim=TOKEN_DIM) as bank:
        fill(bank, stream[:57])
        for frame, key in stream[57:]:
            bank.write(frame, key)  # an open event and short-term frames
        assert bank.archive.ids() and bank.events()
        bank.save(str(root))
        queries = [k for _, k in stream[::5]]
        expected = [result_signature(bank.search(q, k=3)) for q in queries]
    return root, queries, expected


@pytest.fixture
def copy(saved, tmp_path):
    """A fresh copy of the saved memory to damage."""
    src = saved[0]
    dst = tmp_path / "mem"
    for p in sorted(src.rglob("*")):
        q = dst / p.relative_to(src)
        if p.is_dir():
            q.mkdir(parents=True)
        else:
            q.parent.mkdir(parents=True, exist_ok=True)
            q.write_bytes(p.read_bytes())
    return dst


def rewrite(folder: Path, name: str, data: bytes) -> None:
    """Replace a file and update the manifest to match it: tampering that checksums cannot see."""
    (folder / name).write_bytes(data)
    m = json.loads((folder / "manifest.json").read_text())
    m["files"][name] = {"bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}
    (folder / "manifest.json").write_text(json.dumps(m))


def edit_tensors(folder: Path, name: str, change) -> None:
    tensors = load((folder / name).read_bytes())
    change(tensors)
    rewrite(folder, name, save(tensors))


def edit_state(folder: Path, change) -> None:
    doc = json.loads((folder / "state.json").read_text())
    change(doc)
    rewrite(folder, "state.json", json.dumps(doc).encode())


def a_shard(folder: Path) -> str:
    return "archive/shards/" + sorted(p.name for p in (folder / "archive" / "shards").iterdir())[0]


# ---- saving never deletes what streamvid did not write -------------------------------------------
def test_a_foreign_folder_with_a_manifest_is_refused_and_untouched(tmp_path, saved):
    app = tmp_path / "webapp"
    (app / "src").mkdir(parents=True)
    (app / "manifest.json").write_text(json.dumps({"name": "my web app", "icons": []}))
    (app / "src" / "app.js").write_text("console.log('hi')\n")
    (app / "README.md").write_text("# my app\n")
    before = tree(app)
    with MemoryBank.load(str(saved[0])) as bank:
        with pytest.raises(MemoryFolderError, match=f"refusing to save memory over {app}.*not a saved streamvid"):
            bank.save(str(app))
        plain = tmp_path / "plain"
        plain.mkdir()
        (plain / "notes.txt").write_text("mine")
        with pytest.raises(MemoryFolderError, match="not empty and not a saved streamvid memory"):
            bank.save(str(plain))
        a_file = tmp_path / "file.txt"
        a_file.write_text("mine")
        with pytest.raises(MemoryFolderError, match="it is a file"):
            bank.save(str(a_file))
        assert a_file.read_text() == "mine" and (plain / "notes.txt").read_text() == "mine"
    assert tree(app) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file.txt", "plain", "webapp"]  # nothing left beside
    assert issubclass(MemoryFolderError, StreamvidError)


def test_a_user_file_inside_a_saved_memory_is_not_deleted(copy):
    (copy / "my notes.txt").write_text("keep me")
    with MemoryBank.load(str(copy)) as bank:
        with pytest.raises(MemoryFolderError, match="my notes.txt, which streamvid did not write"):
            bank.save(str(copy))
        assert (copy / "my notes.txt").read_text() == "keep me"
        (copy / "my notes.txt").unlink()
        (copy / "archive" / "extra").mkdir()
        with pytest.raises(MemoryFolderError, match="archive/extra"):
            bank.save(str(copy))
        (copy / "archive" / "extra").rmdir()
        bank.save(str(copy))  # only its own files there: replaced
    with MemoryBank.load(str(copy)):
        pass


def test_a_symlinked_target_is_refused(tmp_path, saved):
    real = tmp_path / "real"
    real.mkdir()
    (real / "keep.txt").write_text("x")
    (tmp_path / "link").symlink_to(real)
    with MemoryBank.load(str(saved[0])) as bank, pytest.raises(MemoryFolderError, match="symbolic link"):
        bank.save(str(tmp_path / "link"))
    assert (real / "keep.txt").read_text() == "x"


def test_partial_copies_of_killed_saves_are_cleaned_and_others_left(tmp_path, saved):
    target = tmp_path / "mem"
    dead = multiprocessing.get_context("fork").Process(target=os._exit, args=(0,))
    dead.start()
    dead.join()
    stale = tmp_path / ".mem.saving-0badcafe"
    (stale / "archive").mkdir(parents=True)
    (stale / "state.json").write_text("{}")
    (stale / SAVING_MARK).write_text(json.dumps({"format": "streamvid-memory", "pid": dead.pid}))
    running = tmp_path / ".mem.saving-00c0ffee"  # a save still running in another process
    running.mkdir()
    (running / SAVING_MARK).write_text(json.dumps({"format": "streamvid-memory", "pid": os.getppid()}))
    unmarked = tmp_path / ".mem.saving-12345678"  # looks like ours, but streamvid did not write it
    unmarked.mkdir()
    (unmarked / "data.bin").write_bytes(b"mine")
    with MemoryBank.load(str(saved[0])) as bank:
        bank.save(str(target))
    assert not stale.exists()
    assert running.exists() and (unmarked / "data.bin").read_bytes() == b"mine"
    assert sorted(p.name for p in target.iterdir()) == ["archive", "index.faiss", "manifest.json", "state.json",
                                                        "tensors.safetensors"]
    # load cleans up too
    stale.mkdir()
    (stale / SAVING_MARK).write_text(json.dumps({"format": "streamvid-memory", "pid": dead.pid}))
    with MemoryBank.load(str(target)):
        pass
    assert not stale.exists() and running.exists() and unmarked.exists()


# ---- loading trusts nothing ------------------------------------------------------------------------
def test_manifest_paths_outside_the_folder_are_refused_unread(copy, tmp_path):
    secret = tmp_path / "secret.txt"
    secret.write_text("x" * 1234)
    for bad in ["../secret.txt", str(secret), "archive/../../secret.txt", "./state.json", "archive//x"]:
        m = json.loads((copy / "manifest.json").read_text())
        m["files"][bad] = {"bytes": 1234, "sha256": hashlib.sha256(secret.read_bytes()).hexdigest()}
        (copy / "manifest.json").write_text(json.dumps(m))
        with pytest.raises(MemoryFormatError, match="a path outside the memory folder") as err:
            MemoryBank.load(str(copy))
        assert "1234" not in str(err.value)
        del m["files"][bad]
        (copy / "manifest.json").write_text(json.dumps(m))
    with MemoryBank.load(str(copy)):
        pass


def test_a_shard_symlinked_out_of_the_folder_is_refused(copy, tmp_path):
    name = a_shard(copy)
    outside = tmp_path / "outside.safetensors"
    outside.write_bytes((copy / name).read_bytes())  # same bytes: its checksum matches the manifest
    (copy / name).unlink()
    (copy / name).symlink_to(outside)
    with pytest.raises(MemoryFormatError, match=f"{name} is a symbolic link"):
        MemoryBank.load(str(copy))
    (copy / name).unlink()
    (copy / "archive" / "shards").rename(tmp_path / "shards")
    (copy / "archive" / "shards").symlink_to(tmp_path / "shards")  # a linked folder on the way
    with pytest.raises(MemoryFormatError, match="archive/shards is a symbolic link"):
        MemoryBank.load(str(copy))


def _wrong_dtype(t):
    t["table.t0"] = t["table.t0"].to(torch.float32)


def _wrong_width(t):
    name = next(k for k in t if k.startswith("e") and k.endswith(".tokens"))
    t[name] = torch.zeros(t[name].shape[0], TOKEN_DIM + 1)


def _positions_off_grid(t):
    name = next(k for k in t if k.startswith("s") and k.endswith(".positions"))
    t[name] = t[name] + 10_000


def _unknown_array(t):
    t["e999.tokens"] = torch.zeros(1, TOKEN_DIM)


def _missing_array(t):
    del t[next(k for k in t if k.endswith(".token_times"))]


@pytest.mark.parametrize("change", [_wrong_dtype, _wrong_width, _positions_off_grid, _unknown_array, _missing_array])
def test_tampered_but_consistent_tensors_name_the_file(copy, change):
    edit_tensors(copy, "tensors.safetensors", change)
    with pytest.raises(MemoryFormatError, match=r"damaged \(tensors.safetensors: "):
        MemoryBank.load(str(copy))


@pytest.mark.parametrize("change", [
    lambda d: d.update(frames_seen="many"),
    lambda d: d.update(events="none"),
    lambda d: d["events"][0].update(grid="8x8"),
    lambda d: d["events"][0].update(t_start=None),
    lambda d: d["events"].pop(),
    lambda d: d.update(text_keys={"1": "x"}),
    lambda d: d["segmenter"].update(key_sum=[1.0, 2.0]),
    lambda d: d.update(key_dim=-3),
    lambda d: d.update(last_t=float("nan")),
    lambda d: d["config"].update(event_tokens="lots"),
    lambda d: d.clear(),
])
def test_tampered_but_consistent_state_names_the_file(copy, change):
    edit_state(copy, change)
    with pytest.raises(MemoryFormatError, match=r"damaged \(state.json: "):
        MemoryBank.load(str(copy))


def test_a_json_list_instead_of_a_state_names_the_file(copy):
    rewrite(copy, "state.json", b"[1, 2, 3]")
    with pytest.raises(MemoryFormatError, match="state.json"):
        MemoryBank.load(str(copy))


@pytest.mark.parametrize("name, data", [
    ("tensors.safetensors", lambda b: b[: len(b) // 2]),
    ("tensors.safetensors", lambda b: b"\xff" * 16 + b[16:]),
    ("index.faiss", lambda b: b[:8] + b"garbage" * 10),
    ("index.faiss", lambda b: b[:4]),
    ("archive/archive.db", lambda b: b"not a database" * 100),
    ("state.json", lambda b: b"{not json"),
])
def test_damaged_files_with_matching_checksums_name_the_file(copy, name, data):
    rewrite(copy, name, data((copy / name).read_bytes()))
    with pytest.raises(MemoryFormatError, match=name):
        MemoryBank.load(str(copy))


@pytest.mark.parametrize("damage", [
    lambda b: b[: len(b) - 7],                                        # truncated
    lambda b: b[:8] + b"[" + b[9:],                                   # a damaged header
    lambda b: b.replace(b'"F64"', b'"F32"', 1),                       # another dtype, same length
])
def test_a_damaged_shard_is_found_at_load_not_at_ask(copy, damage):
    name = a_shard(copy)
    data = damage((copy / name).read_bytes())
    assert data != (copy / name).read_bytes()
    rewrite(copy, name, data)
    with pytest.raises(MemoryFormatError, match=f"{name} is damaged"):
        MemoryBank.load(str(copy))


def test_archive_rows_are_checked(copy):
    db = copy / "archive" / "archive.db"
    con = sqlite3.connect(db)
    con.execute("UPDATE events SET recalls = 'many' WHERE id = (SELECT MIN(id) FROM events)")
    con.commit()
    con.close()
    rewrite(copy, "archive/archive.db", db.read_bytes())
    with pytest.raises(MemoryFormatError, match="archive/archive.db is damaged"):
        MemoryBank.load(str(copy))


def test_an_archive_that_disagrees_with_the_event_table_is_refused(copy):
    name = a_shard(copy)
    db = copy / "archive" / "archive.db"
    con = sqlite3.connect(db)
    con.execute("DELETE FROM events WHERE id = ?", (int(Path(name).stem),))
    con.commit()
    con.close()
    rewrite(copy, "archive/archive.db", db.read_bytes())
    with pytest.raises(MemoryFormatError, match="archive/archive.db: its events"):
        MemoryBank.load(str(copy))


def test_a_verified_load_answers_every_search_and_reads_every_archived_event(saved):
    path, queries, expected = saved
    with MemoryBank.load(str(path)) as bank:
        assert [result_signature(bank.search(q, k=3)) for q in queries] == expected
        for event_id in bank.archive.ids():
            assert bank.archive.get(event_id).n_tokens > 0


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_a_memory_saved_on_cuda_loads_on_the_cpu_with_a_note(copy, caplog):
    edit_state(copy, lambda d: d["config"].update(device="cuda"))
    with caplog.at_level(logging.INFO, logger="streamvid"), MemoryBank.load(str(copy)) as bank:
        assert bank.config.device == "cpu"
        assert bank.search(np.ones(KEY_DIM, np.float32), k=1)
    notes = [r.getMessage() for r in caplog.records if "not available here" in r.getMessage()]
    assert len(notes) == 1 and "'cuda'" in notes[0] and "\n" not in notes[0]


# ---- kill -9 during save ---------------------------------------------------------------------------
def _save_forever(path: str, archive: str, saves) -> None:
    """Child process: write a frame and save, over and over; ``saves`` counts the saves completed (= frames).
    Its live archive is ``archive`` (the test's folder), so the kill leaves nothing in the temp folder."""
    torch.set_num_threads(1)
    stream = make_stream(400, scene_len=6, seed=3)
    with MemoryBank(small_config(archive_dir=archive), key_dim=KEY_DIM, token_dim=TOKEN_DIM) as bank:
        for i, (frame, key) in enumerate(stream):
            bank.write(frame, key)
            bank.save(path)
            saves.value = i + 1
    os._exit(0)


def kill_saves(root: Path, kills: int, seed: int = 0) -> dict[str, int]:
    """Kill a saving process ``kills`` times at random moments; after each kill the folder must load as
    the last completed save or the one that was being written (one frame more). Returns counts."""
    rng = random.Random(seed)
    ctx = multiprocessing.get_context("fork")
    path = root / "mem"
    out = {"kills": 0, "mid_save": 0, "old": 0, "new": 0, "lost": 0, "partial_copies_left": 0}
    for k in range(kills):
        saves = ctx.Value("i", -1, lock=False)  # a lock held by a killed child would block
        child = ctx.Process(target=_save_forever, args=(str(path), str(root / f"live-archive-{k}"), saves))
        child.start()
        deadline = time.monotonic() + 60
        while saves.value < 1 and child.is_alive() and time.monotonic() < deadline:
            time.sleep(0.005)
        time.sleep(rng.uniform(0.0, 0.4))
        os.kill(child.pid, signal.SIGKILL)
        child.join()
        done = saves.value
        out["kills"] += 1
        out["mid_save"] += any(p.name.startswith((".mem.saving-", ".mem.previous")) for p in root.iterdir())
        try:
            with MemoryBank.load(str(path)) as bank:
                kept = bank.stats()["frames_kept"]
                bank.search(np.ones(KEY_DIM, np.float32), k=3)
        except MemoryFormatError:
            kept = -1
        if kept == done:
            out["old"] += 1
        elif kept == done + 1:
            out["new"] += 1
        else:
            out["lost"] += 1
        out["partial_copies_left"] += sum(p.name.startswith(".mem.saving-") for p in root.iterdir())
    return out


def test_kill_9_during_save_leaves_the_previous_or_the_new_memory(tmp_path):
    kills = int(os.environ.get("STREAMVID_KILL_SAVES", "20"))
    result = kill_saves(tmp_path, kills)
    assert result["kills"] == kills and result["lost"] == 0, result
    assert result["partial_copies_left"] == 0, result  # each load cleaned what the killed save left
    assert not backup_path(tmp_path / "mem").exists() or (tmp_path / "mem").exists()
    print(result)
