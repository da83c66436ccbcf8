"""Saving and loading a MemoryBank.

Layout of a saved directory::

    manifest.json        format name + version, streamvid version, every file's size and sha256
    state.json           config, counters, segmenter state, event metadata
    tensors.safetensors  RAM events, short-term frames, the open event, the event table
    index.faiss          the key index
    archive/             archive.db (SQLite) + shards/*.safetensors

Saving is atomic: everything is written to a hidden temporary directory beside the target,
fsynced, then renamed into place. An earlier save at the target is first renamed to a hidden
``.<name>.previous`` sibling and deleted only after the new one is in place; if a crash comes
between the two renames, ``load`` finds the previous save there.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import os
import shutil
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file

import streamvid
from streamvid.config import AgentConfig
from streamvid.errors import MemoryFormatError, StreamvidError
from streamvid.memory.archive import event_from_tensors, event_tensors
from streamvid.memory.long_term import EventBuilder
from streamvid.memory.short_term import ShortTermFrame
from streamvid.types import FrameTokens

if TYPE_CHECKING:
    from streamvid.memory.bank import MemoryBank

FORMAT_NAME = "streamvid-memory"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"
REQUIRED = ("state.json", "tensors.safetensors", "index.faiss", "archive/archive.db")


def _sha256(path: Path) -> str:
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


def _cpu(t: torch.Tensor) -> torch.Tensor:
    return t.detach().to("cpu").contiguous().clone()


def save_bank(bank: MemoryBank, directory: str | os.PathLike) -> None:
    """Write ``bank`` to ``directory`` atomically. The caller holds the bank's lock."""
    target = Path(directory).resolve()
    if target.exists() and not (target / MANIFEST).exists() and any(target.iterdir()):
        raise StreamvidError(f"refusing to save memory over {target}: it exists and is not a saved memory")
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.parent / f".{target.name}.saving-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    try:
        _write_contents(bank, tmp)
        files = sorted(p for p in tmp.rglob("*") if p.is_file())
        for p in files:
            _fsync_file(p)
        manifest = {
            "format": FORMAT_NAME,
            "format_version": FORMAT_VERSION,
            "streamvid_version": streamvid.__version__,
            "files": {p.relative_to(tmp).as_posix(): {"bytes": p.stat().st_size, "sha256": _sha256(p)} for p in files},
        }
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=1))
        _fsync_file(tmp / MANIFEST)
        for d in [tmp / "archive" / "shards", tmp / "archive", tmp]:
            _fsync_dir(d)
        backup = backup_path(target)
        if target.exists():
            if backup.exists():
                shutil.rmtree(backup)
            os.rename(target, backup)
        os.rename(tmp, target)
        _fsync_dir(target.parent)
        if backup.exists():
            shutil.rmtree(backup)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _write_contents(bank: MemoryBank, out: Path) -> None:
    tensors: dict[str, torch.Tensor] = {}
    t0, t1, state = bank._table.views()
    tensors["table.t0"] = torch.from_numpy(t0.copy())
    tensors["table.t1"] = torch.from_numpy(t1.copy())
    tensors["table.state"] = torch.from_numpy(state.copy())
    events_meta = []
    for e in bank._events:
        events_meta.append(dict(id=e.id, t_start=e.t_start, t_end=e.t_end, grid=list(e.grid), caption=e.caption,
                                recalls=e.recalls))
        for name, t in event_tensors(e).items():
            tensors[f"e{e.id}.{name}"] = _cpu(t)
    short_meta = []
    for i, f in enumerate(bank.short.frames()):
        short_meta.append(dict(t=f.frame.t, grid=list(f.frame.grid)))
        tensors[f"s{i}.tokens"] = _cpu(f.frame.tokens)
        tensors[f"s{i}.positions"] = _cpu(f.frame.positions)
        tensors[f"s{i}.sizes"] = _cpu(f.frame.sizes)
        tensors[f"s{i}.key"] = torch.from_numpy(np.array(f.key, dtype=np.float32))
        if f.thumbnail is not None:
            tensors[f"s{i}.thumbnail"] = torch.from_numpy(np.array(f.thumbnail, dtype=np.uint8))
    tensors.update({k: _cpu(v) for k, v in bank._builder.tensors("open.").items()})
    save_file(tensors, str(out / "tensors.safetensors"))
    config = dataclasses.asdict(bank.config)
    state_doc: dict[str, Any] = {
        "config": config,
        "key_dim": bank.key_dim,
        "token_dim": bank.token_dim,
        "recall_bonus": bank.recall_bonus,
        "index_exact_max": bank.index.exact_max,
        "frames_seen": bank._frames_seen,
        "frames_kept": bank._frames_kept,
        "last_t": bank._last_t,
        "segmenter": bank._segmenter.state(),
        "events": events_meta,
        "short_term": short_meta,
        "open_grid": None if bank._builder.grid is None else list(bank._builder.grid),
        "text_keys": {str(k): v for k, v in bank._text_keys.items()},
    }
    (out / "state.json").write_text(json.dumps(state_doc, default=str))
    (out / "index.faiss").write_bytes(bank.index.to_bytes())
    bank.archive.copy_to(out / "archive")


def verify(directory: Path) -> dict[str, Any]:
    """Check a saved directory against its manifest; returns the manifest or raises MemoryFormatError."""
    mpath = directory / MANIFEST
    if not directory.is_dir():
        raise MemoryFormatError(f"{directory}: no saved memory there (not a directory)")
    if not mpath.is_file():
        raise MemoryFormatError(f"{directory}: not a saved memory or damaged ({MANIFEST} is missing)")
    try:
        manifest = json.loads(mpath.read_text())
        files = manifest["files"]
        fmt, version = manifest["format"], manifest["format_version"]
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise MemoryFormatError(f"{directory}: damaged {MANIFEST} ({e})") from e
    if fmt != FORMAT_NAME:
        raise MemoryFormatError(f"{directory}: {MANIFEST} names format {fmt!r}, not {FORMAT_NAME!r}")
    if version != FORMAT_VERSION:
        raise MemoryFormatError(
            f"{directory}: saved in memory format version {version} (streamvid "
            f"{manifest.get('streamvid_version', '?')}); this streamvid ({streamvid.__version__}) reads "
            f"version {FORMAT_VERSION}"
        )
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
        if _sha256(p) != info["sha256"]:
            raise MemoryFormatError(f"{directory}: damaged ({name} does not match its checksum)")
    return manifest


def load_bank(cls: type[MemoryBank], directory: str | os.PathLike, *, text_encoder: Any = None,
              image_encoder: Any = None, config: AgentConfig | None = None) -> MemoryBank:
    path = Path(directory).resolve()
    if not path.exists() and backup_path(path).is_dir():
        path = backup_path(path)  # a save crashed between its two renames
    verify(path)
    try:
        doc = json.loads((path / "state.json").read_text())
        tensors = load_file(str(path / "tensors.safetensors"))
        if config is None:
            names = {f.name for f in dataclasses.fields(AgentConfig)}
            saved = {k: v for k, v in doc["config"].items() if k in names}
            config = AgentConfig(**{**saved, "archive_dir": None})
        bank = cls(config, key_dim=int(doc["key_dim"]), token_dim=int(doc["token_dim"]), text_encoder=text_encoder,
                   image_encoder=image_encoder, recall_bonus=int(doc["recall_bonus"]),
                   index_exact_max=int(doc["index_exact_max"]))
    except MemoryFormatError:
        raise
    except (StreamvidError, OSError, ValueError, KeyError, TypeError) as e:
        raise MemoryFormatError(f"{path}: damaged state ({type(e).__name__}: {e})") from e
    try:
        _restore(bank, path, doc, tensors)
    except Exception as e:
        bank.close()
        raise MemoryFormatError(f"{path}: damaged state ({type(e).__name__}: {e})") from e
    return bank


def _restore(bank: MemoryBank, path: Path, doc: dict[str, Any], tensors: dict[str, torch.Tensor]) -> None:
    bank._frames_seen = int(doc["frames_seen"])
    bank._frames_kept = int(doc["frames_kept"])
    bank._last_t = None if doc["last_t"] is None else float(doc["last_t"])
    bank._segmenter.load_state(doc["segmenter"])
    t0, t1, state = tensors["table.t0"].numpy(), tensors["table.t1"].numpy(), tensors["table.state"].numpy()
    for i in range(len(t0)):
        bank._table.add(i, float(t0[i]), float(t1[i]), int(state[i]))
    for meta in doc["events"]:
        prefix = f"e{meta['id']}."
        ev = event_from_tensors(meta, {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)})
        bank._events.append(ev)
        bank._long_tokens += ev.n_tokens
    for i, meta in enumerate(doc["short_term"]):
        frame = FrameTokens(tokens=tensors[f"s{i}.tokens"], positions=tensors[f"s{i}.positions"],
                            sizes=tensors[f"s{i}.sizes"], grid=(int(meta["grid"][0]), int(meta["grid"][1])),
                            t=float(meta["t"]))
        thumb = tensors.get(f"s{i}.thumbnail")
        bank.short.push(ShortTermFrame(frame, tensors[f"s{i}.key"].numpy(), None if thumb is None else thumb.numpy()))
    grid = doc["open_grid"]
    bank._builder = EventBuilder.from_tensors(tensors, "open.", None if grid is None else (int(grid[0]), int(grid[1])))
    bank._text_keys = {int(k): int(v) for k, v in doc["text_keys"].items()}
    bank.index.load_bytes((path / "index.faiss").read_bytes())
    bank.archive.restore_from(path / "archive")
