"""Saving and loading a MemoryBank: files, the manifest and the atomic rename.

The bank's contents come from ``MemoryBank.state_dict()`` (and go back through
``MemoryBank.from_state_dict``); the archive copies itself. Layout of a saved folder::

    manifest.json        format name + version, streamvid version, every file's size and sha256
    state.json           the state dict's "meta": config, counters, segmenter state, event metadata
    tensors.safetensors  the state dict's "tensors": RAM events, short-term frames, the open event, the event table
    index.faiss          the state dict's "index": the key index
    archive/             archive.db (SQLite) + shards/*.safetensors

Saving is atomic: everything is written to a hidden sibling ``.<name>.saving-<id>`` (marked as
streamvid's by a ``.streamvid-saving`` file naming the writing process), fsynced, then renamed
into place. An earlier save at the target is first renamed to ``.<name>.previous`` and deleted
only after the new one is in place; if a crash comes between the two renames, ``load`` finds
the previous save there. Partial copies left by a killed save are removed by the next save or
load of that folder.

Saving never deletes what streamvid did not write: a non-empty target must be a saved memory
(its manifest names the format and a version) holding only the files its manifest lists.
Loading trusts nothing in the folder: manifest paths must stay inside it (no absolute paths,
no "..", no symbolic links), every file must match its size and checksum, and every array and
record is checked for type, dtype and shape before the bank is built; any damage raises
MemoryFormatError naming the file.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import re
import time
import uuid
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any

import numpy as np
from safetensors.torch import load_file, save_file

import streamvid
from streamvid.config import AgentConfig
from streamvid.errors import MemoryFolderError, MemoryFormatError

if TYPE_CHECKING:
    from streamvid.memory.bank import MemoryBank

log = logging.getLogger("streamvid.memory")

FORMAT_NAME = "streamvid-memory"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"
SAVING_MARK = ".streamvid-saving"
STATE_FILES = {"meta": "state.json", "tensors": "tensors.safetensors", "index": "index.faiss"}
REQUIRED = ("state.json", "tensors.safetensors", "index.faiss", "archive/archive.db")
_SAFE_NAME = re.compile(r"[A-Za-z0-9._-]+")
_SHA256 = re.compile(r"[0-9a-f]{64}")


def sha256_file(path: str | os.PathLike) -> str:
    """The SHA-256 of a file's bytes, as 64 hex digits (read in 1 MiB blocks)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_dir(path: Path) -> None:
    with contextlib.suppress(OSError):  # some filesystems do not allow fsync on a directory
        _fsync_file(path)


def backup_path(target: Path) -> Path:
    return target.parent / f".{target.name}.previous"


def _hidden_folders(target: Path, kind: str) -> list[Path]:
    """Real folders (not symlinks) beside ``target`` named ``.<name>.<kind>-<8 hex digits>``."""
    pattern = re.compile(rf"\.{re.escape(target.name)}\.{kind}-[0-9a-f]{{8}}")
    try:
        return [p for p in target.parent.iterdir()
                if pattern.fullmatch(p.name) and not p.is_symlink() and p.is_dir()]
    except OSError:
        return []


def _partial_copies(target: Path) -> list[Path]:
    """Hidden ``.<name>.saving-*`` siblings of ``target`` that a streamvid save wrote and whose process is
    gone (a save killed midway). A folder without streamvid's mark, or whose process still runs, is left."""
    out = []
    for p in _hidden_folders(target, "saving"):
        try:
            mark = json.loads((p / SAVING_MARK).read_text())
            pid = int(mark["pid"]) if mark.get("format") == FORMAT_NAME else None
        except (OSError, ValueError, KeyError, TypeError):
            continue
        if pid is not None and not _alive(pid):
            out.append(p)
    return out


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return False  # this process saves under its lock: a copy of its own is left over from an error
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True  # it exists but belongs to someone else
    return True


def _remove_tree(folder: Path, last: str) -> None:
    """Delete ``folder`` (which streamvid wrote) with the file ``last`` deleted last, so that a process
    killed midway leaves a folder still recognisable as streamvid's by that file (or an empty one)."""
    for p in sorted(folder.rglob("*"), key=lambda p: len(p.parts), reverse=True):
        if p == folder / last:
            continue
        if p.is_dir() and not p.is_symlink():
            p.rmdir()
        else:
            p.unlink()
    (folder / last).unlink(missing_ok=True)
    folder.rmdir()


def _marked_copy_folder(target: Path) -> Path:
    """A new ``.<name>.saving-<id>`` folder that already holds streamvid's mark.

    The mark is written in a ``.<name>.staging-<id>`` folder first and the folder renamed, so a save
    killed at any moment never leaves a ``saving`` copy without its mark (one the next load could
    not prove it may delete)."""
    token = uuid.uuid4().hex[:8]
    staging = target.parent / f".{target.name}.staging-{token}"
    staging.mkdir()
    (staging / SAVING_MARK).write_text(json.dumps({"format": FORMAT_NAME, "pid": os.getpid()}))
    tmp = target.parent / f".{target.name}.saving-{token}"
    os.rename(staging, tmp)
    return tmp


def _stale_staging(target: Path, min_age_s: float = 60.0) -> list[Path]:
    """``.<name>.staging-*`` folders left by a save killed before its copy was marked: each holds
    nothing but streamvid's (possibly half-written) mark, and is older than ``min_age_s``."""
    out = []
    for p in _hidden_folders(target, "staging"):
        with contextlib.suppress(OSError):
            if {c.name for c in p.iterdir()} <= {SAVING_MARK} and time.time() - p.stat().st_mtime > min_age_s:
                out.append(p)
    return out


def clean_partial_copies(target: Path) -> int:
    """Remove what killed saves left beside ``target``; returns how many copies were removed."""
    removed = 0
    for p in _partial_copies(target):
        with contextlib.suppress(OSError):
            _remove_tree(p, SAVING_MARK)
            removed += 1
    for p in _stale_staging(target):
        with contextlib.suppress(OSError):
            (p / SAVING_MARK).unlink(missing_ok=True)
            p.rmdir()
    if removed:
        log.info("removed %d partial copies left by an interrupted save of %s", removed, target)
    return removed


def read_manifest(directory: Path) -> dict[str, Any]:
    """The manifest of a saved memory, with its format, version and file list checked for type."""
    mpath = directory / MANIFEST
    if mpath.is_symlink() or not mpath.is_file():
        raise MemoryFormatError(f"{directory}: not a saved memory or damaged ({MANIFEST} is missing)")
    try:
        manifest = json.loads(mpath.read_text())
        files = manifest["files"]
        fmt, version = manifest["format"], manifest["format_version"]
        if not isinstance(files, dict):
            raise TypeError("files is not a mapping")
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise MemoryFormatError(f"{directory}: damaged {MANIFEST} ({type(e).__name__}: {e})") from e
    if fmt != FORMAT_NAME:
        raise MemoryFormatError(f"{directory}: {MANIFEST} names format {fmt!r}, not {FORMAT_NAME!r}")
    if version != FORMAT_VERSION:
        raise MemoryFormatError(
            f"{directory}: saved in memory format version {version} (streamvid "
            f"{manifest.get('streamvid_version', '?')}); this streamvid ({streamvid.__version__}) reads "
            f"version {FORMAT_VERSION}"
        )
    for name, info in files.items():
        _check_name(directory, name)
        if (not isinstance(info, dict) or not isinstance(info.get("bytes"), int) or isinstance(info["bytes"], bool)
                or not isinstance(info.get("sha256"), str) or not _SHA256.fullmatch(info["sha256"])):
            raise MemoryFormatError(f"{directory}: damaged {MANIFEST} (the entry of {name} is malformed)")
    return manifest


def _check_name(directory: Path, name: object) -> None:
    """A manifest path must be relative, plain (letters, digits, ``._-``), without ``..``, and lead to a
    regular file inside ``directory`` through no symbolic link."""
    if not isinstance(name, str) or not name:
        raise MemoryFormatError(f"{directory}: damaged {MANIFEST} (a file name is not text)")
    parts = name.split("/")
    if name == MANIFEST or any(p in (".", "..") or not _SAFE_NAME.fullmatch(p) for p in parts):
        raise MemoryFormatError(f"{directory}: {MANIFEST} lists {name!r}, a path outside the memory folder "
                                "or not one streamvid writes")
    for i in range(1, len(parts) + 1):
        if (directory / "/".join(parts[:i])).is_symlink():
            raise MemoryFormatError(f"{directory}: {'/'.join(parts[:i])} is a symbolic link; a memory folder "
                                    "holds only regular files and folders")


def verify(directory: Path) -> dict[str, Any]:
    """Check a saved folder against its manifest; returns the manifest or raises MemoryFormatError."""
    if not directory.is_dir():
        raise MemoryFormatError(f"{directory}: no saved memory there (not a directory)")
    manifest = read_manifest(directory)
    files = manifest["files"]
    for name in REQUIRED:
        if name not in files:
            raise MemoryFormatError(f"{directory}: damaged ({name} is not listed in {MANIFEST})")
    for name, info in files.items():
        p = directory / name
        if not p.is_file():
            raise MemoryFormatError(f"{directory}: damaged ({name} is missing)")
        if p.stat().st_size != info["bytes"]:
            raise MemoryFormatError(f"{directory}: damaged ({name} has {p.stat().st_size} bytes, "
                                    f"the manifest says {info['bytes']})")
        if sha256_file(p) != info["sha256"]:
            raise MemoryFormatError(f"{directory}: damaged ({name} does not match its checksum)")
    return manifest


def file_matches(path: Path, info: dict[str, Any]) -> bool:
    """Whether ``path`` is a regular file (no symbolic link) with the size and SHA-256 of its manifest entry."""
    return (path.is_file() and not path.is_symlink() and path.stat().st_size == info["bytes"]
            and sha256_file(path) == info["sha256"])


def check_save_target(target: str | os.PathLike) -> None:
    """Raise MemoryFolderError unless ``target`` is absent, empty, or a saved memory holding only its own
    files: what ``save`` checks first, for callers (the CLI) to check before any work starts."""
    target = Path(os.path.abspath(target))
    if target.is_symlink():
        raise MemoryFolderError(f"refusing to save memory at {target}: it is a symbolic link; name a real folder")
    if not target.exists():
        return
    if not target.is_dir():
        raise MemoryFolderError(f"refusing to save memory at {target}: it is a file, not a folder")
    if not any(target.iterdir()):
        return
    try:
        manifest = read_manifest(target)
    except MemoryFormatError as e:
        raise MemoryFolderError(f"refusing to save memory over {target}: it is not empty and not a saved "
                                f"streamvid memory ({e}); choose another folder") from e
    listed = set(manifest["files"]) | {MANIFEST, SAVING_MARK}
    parents = {"archive", "archive/shards"}  # folders a save makes even when they stay empty
    parents |= {str(parent) for n in listed for parent in PurePosixPath(n).parents}
    for p in sorted(target.rglob("*")):
        rel = p.relative_to(target).as_posix()
        if rel in listed and p.is_file() and not p.is_symlink():
            continue
        if rel in parents and p.is_dir() and not p.is_symlink():
            continue
        raise MemoryFolderError(f"refusing to save memory over {target}: it holds {rel}, which streamvid did "
                                "not write; move it away or choose another folder")


def save_bank(bank: MemoryBank, directory: str | os.PathLike) -> None:
    """Write ``bank`` to ``directory`` atomically. The caller holds the bank's lock."""
    target = Path(os.path.abspath(directory))
    check_save_target(target)
    backup = backup_path(target)
    if backup.exists() or backup.is_symlink():
        check_save_target(backup)
    target.parent.mkdir(parents=True, exist_ok=True)
    clean_partial_copies(target)
    tmp = _marked_copy_folder(target)
    try:
        _write_contents(bank, tmp)
        files = sorted(p for p in tmp.rglob("*") if p.is_file() and p.name != SAVING_MARK)
        for p in files:
            _fsync_file(p)
        manifest = {
            "format": FORMAT_NAME,
            "format_version": FORMAT_VERSION,
            "streamvid_version": streamvid.__version__,
            "files": {p.relative_to(tmp).as_posix(): {"bytes": p.stat().st_size, "sha256": sha256_file(p)}
                      for p in files},
        }
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=1))
        _fsync_file(tmp / MANIFEST)
        for d in [tmp / "archive" / "shards", tmp / "archive", tmp]:
            _fsync_dir(d)
        if target.exists():
            if backup.exists():
                _remove_tree(backup, MANIFEST)  # checked above: a saved memory of ours
            os.rename(target, backup)
        os.rename(tmp, target)
        _fsync_dir(target.parent)
        (target / SAVING_MARK).unlink()
        if backup.exists():
            _remove_tree(backup, MANIFEST)
    except BaseException:
        if tmp.exists():
            with contextlib.suppress(OSError):
                _remove_tree(tmp, SAVING_MARK)
        raise


def _write_contents(bank: MemoryBank, out: Path) -> None:
    state = bank.state_dict()
    save_file(state["tensors"], str(out / STATE_FILES["tensors"]))
    (out / STATE_FILES["meta"]).write_text(json.dumps(state["meta"], default=str))
    (out / STATE_FILES["index"]).write_bytes(state["index"])
    bank.archive.copy_to(out / "archive")


def load_bank(cls: type[MemoryBank], directory: str | os.PathLike, *, text_encoder: Any = None,
              image_encoder: Any = None, config: AgentConfig | None = None) -> MemoryBank:
    from streamvid.memory.bank import ARCHIVED, StateError

    path = Path(os.path.abspath(directory))
    clean_partial_copies(path)
    if not path.exists() and backup_path(path).is_dir():
        path = backup_path(path)  # a save crashed between its two renames
    manifest = verify(path)
    state: dict[str, Any] = {}
    for part, name in STATE_FILES.items():
        try:
            if part == "meta":
                state[part] = json.loads((path / name).read_text())
            elif part == "tensors":
                state[part] = load_file(str(path / name))
            else:
                state[part] = (path / name).read_bytes()
        except Exception as e:  # json, OSError, safetensors' own error types
            raise MemoryFormatError(f"{path}: damaged ({name}: {type(e).__name__}: {e})") from e
    try:
        bank = cls.from_state_dict(state, text_encoder=text_encoder, image_encoder=image_encoder, config=config)
    except StateError as e:
        raise MemoryFormatError(f"{path}: damaged ({STATE_FILES[e.part]}: {e})") from e
    try:
        bank.archive.restore_from(path / "archive", token_dim=bank.token_dim, key_dim=bank.key_dim,
                                  readable=lambda name: name in manifest["files"])
        archived = set(np.flatnonzero(state["tensors"]["table.state"].numpy() == ARCHIVED).tolist())
        if set(bank.archive.ids()) != archived:
            raise MemoryFormatError(f"archive/archive.db: its events {sorted(bank.archive.ids())[:5]}… do not match "
                                    f"the archived events of {STATE_FILES['tensors']}")
    except MemoryFormatError as e:
        bank.close()
        raise MemoryFormatError(f"{path}: damaged ({e})") from e
    except BaseException:
        bank.close()
        raise
    return bank
