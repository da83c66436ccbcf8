"""On-disk store for events evicted from RAM.

Each archived event's arrays live in one safetensors shard; its scalar metadata (times,
grid, caption, recalls, shard size) in SQLite. The archive is bounded by ``max_bytes``:
when a new event would push it over, the oldest events are deleted first. The caller
(the memory bank) keeps the events' keys in its FAISS index and drops them when the archive
reports a deletion.
"""

from __future__ import annotations

import math
import shutil
import sqlite3
import tempfile
import threading
import weakref
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from streamvid.errors import ConfigError, MemoryFormatError
from streamvid.types import Event

DB_NAME = "archive.db"
SHARD_DIR = "shards"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS events (
    id INTEGER PRIMARY KEY,
    t_start REAL NOT NULL,
    t_end REAL NOT NULL,
    grid_h INTEGER NOT NULL,
    grid_w INTEGER NOT NULL,
    caption TEXT NOT NULL,
    recalls INTEGER NOT NULL,
    n_tokens INTEGER NOT NULL,
    nbytes INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS events_time ON events (t_start, t_end);
"""


def event_tensors(event: Event) -> dict[str, torch.Tensor]:
    """The arrays of an event as a flat name → CPU tensor dict (safetensors needs contiguous tensors)."""
    out = {
        "token_times": event.token_times,
        "token_positions": event.token_positions,
        "token_sizes": event.token_sizes,
        "key": torch.from_numpy(np.ascontiguousarray(event.key, dtype=np.float32)),
        "frame_keys": torch.from_numpy(np.ascontiguousarray(event.frame_keys, dtype=np.float32)),
        "frame_times": torch.from_numpy(np.ascontiguousarray(event.frame_times, dtype=np.float64)),
    }
    if event.tokens is not None:
        out["tokens"] = event.tokens
    if event.thumbnail is not None:
        out["thumbnail"] = torch.from_numpy(np.ascontiguousarray(event.thumbnail, dtype=np.uint8))
    return {k: v.detach().to("cpu").contiguous() for k, v in out.items()}


# name → (dtype, number of dimensions); "tokens" also gets its width checked against the memory's
EVENT_ARRAYS = {
    "tokens": (None, 2), "token_times": (torch.float64, 1), "token_positions": (torch.int64, 1),
    "token_sizes": (torch.float32, 1), "key": (torch.float32, 1), "frame_keys": (torch.float32, 2),
    "frame_times": (torch.float64, 1), "thumbnail": (torch.uint8, 3),
}
OPTIONAL_ARRAYS = ("tokens", "thumbnail", "token_sizes")


def check_event_tensors(tensors: dict[str, torch.Tensor], *, token_dim: int, key_dim: int) -> None:
    """Raise ValueError unless ``tensors`` are a well-formed event (names, dtypes, shapes, finite times)."""
    for name, (dtype, ndim) in EVENT_ARRAYS.items():
        if name not in tensors:
            if name in OPTIONAL_ARRAYS:
                continue
            raise ValueError(f"array {name!r} is missing")
        t = tensors[name]
        if t.ndim != ndim or (dtype is not None and t.dtype != dtype):
            raise ValueError(f"array {name!r} is {t.dtype} {list(t.shape)}, expected {ndim} dimensions"
                             + (f" of {dtype}" if dtype is not None else ""))
    unknown = set(tensors) - set(EVENT_ARRAYS)
    if unknown:
        raise ValueError(f"unknown arrays {sorted(unknown)}")
    m = len(tensors["token_times"])
    if len(tensors["token_positions"]) != m or ("token_sizes" in tensors and len(tensors["token_sizes"]) != m):
        raise ValueError("token times, positions and sizes differ in length")
    tokens = tensors.get("tokens")
    if tokens is not None and (tokens.shape[0] != m or tokens.shape[1] != token_dim or not tokens.is_floating_point()):
        raise ValueError(f"tokens are {tokens.dtype} {list(tokens.shape)}, expected [{m}, {token_dim}] floats")
    if tensors["key"].shape != (key_dim,) or tensors["frame_keys"].shape[1:] != (key_dim,):
        raise ValueError(f"keys are not {key_dim}-d")
    if len(tensors["frame_keys"]) != len(tensors["frame_times"]) or len(tensors["frame_times"]) == 0:
        raise ValueError("frame keys and frame times differ in length (or are empty)")
    for name in ("tokens", "token_times", "token_sizes", "key", "frame_keys", "frame_times"):
        if name in tensors and not bool(torch.isfinite(tensors[name]).all()):
            raise ValueError(f"array {name!r} holds values that are not finite")


def event_from_tensors(meta: dict, tensors: dict[str, torch.Tensor]) -> Event:
    """Inverse of ``event_tensors`` given the scalar metadata (id, t_start, t_end, grid, caption, recalls)."""
    thumb = tensors.get("thumbnail")
    return Event(
        id=int(meta["id"]), t_start=float(meta["t_start"]), t_end=float(meta["t_end"]),
        tokens=tensors.get("tokens"),
        token_times=tensors["token_times"],
        token_positions=tensors["token_positions"],
        token_sizes=tensors.get("token_sizes"),
        grid=(int(meta["grid"][0]), int(meta["grid"][1])),
        key=tensors["key"].numpy(),
        frame_keys=tensors["frame_keys"].numpy(),
        frame_times=tensors["frame_times"].numpy(),
        caption=str(meta.get("caption", "")),
        thumbnail=None if thumb is None else thumb.numpy(),
        recalls=int(meta.get("recalls", 0)),
    )


class EventArchive:
    """Events on disk, oldest-first deletion past ``max_bytes``. Thread-safe.

    directory None → a temporary directory this archive owns and removes in ``close()`` (or
    when garbage-collected). A given directory must be empty or absent: an archive that is
    already there belongs to a saved memory, which ``MemoryBank.load`` restores.
    """

    def __init__(self, directory: str | Path | None, max_bytes: int) -> None:
        if max_bytes < 0:
            raise ConfigError(f"archive_max_bytes must be >= 0, got {max_bytes}")
        self.max_bytes = int(max_bytes)
        if directory is None:
            self.root = Path(tempfile.mkdtemp(prefix="streamvid-archive-"))
            self._cleanup = weakref.finalize(self, shutil.rmtree, str(self.root), True)
        else:
            self.root = Path(directory)
            if self.root.exists() and any(self.root.iterdir()):
                raise ConfigError(f"archive_dir {self.root} is not empty; use an empty directory "
                                  "(a saved memory is restored with MemoryBank.load)")
            self.root.mkdir(parents=True, exist_ok=True)
            self._cleanup = None
        (self.root / SHARD_DIR).mkdir(exist_ok=True)
        self._lock = threading.RLock()
        self._db = sqlite3.connect(str(self.root / DB_NAME), check_same_thread=False, isolation_level=None)
        # The live archive is a working store (a saved memory is fsynced by save()): no fsync per write.
        self._db.execute("PRAGMA synchronous = OFF")
        self._db.executescript(_SCHEMA)
        self._bytes = int(self._db.execute("SELECT COALESCE(SUM(nbytes), 0) FROM events").fetchone()[0])

    def _shard(self, event_id: int) -> Path:
        return self.root / SHARD_DIR / f"{event_id:012d}.safetensors"

    @property
    def total_bytes(self) -> int:
        """Bytes of all shards."""
        return self._bytes

    def __len__(self) -> int:
        with self._lock:
            return int(self._db.execute("SELECT COUNT(*) FROM events").fetchone()[0])

    def ids(self) -> list[int]:
        with self._lock:
            return [r[0] for r in self._db.execute("SELECT id FROM events ORDER BY id")]

    def put(self, event: Event) -> list[int]:
        """Store an event (with tokens); returns the ids of older events deleted to stay within max_bytes.

        An event larger than max_bytes on its own is not kept (its id is returned as deleted).
        """
        path = self._shard(event.id)
        with self._lock:
            save_file(event_tensors(event), str(path))
            nbytes = path.stat().st_size
            self._db.execute(
                "INSERT OR REPLACE INTO events VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (event.id, event.t_start, event.t_end, event.grid[0], event.grid[1], event.caption,
                 event.recalls, event.n_tokens, nbytes),
            )
            self._bytes += nbytes
            deleted = []
            while self._bytes > self.max_bytes:
                row = self._db.execute("SELECT id FROM events ORDER BY id LIMIT 1").fetchone()
                if row is None:
                    break
                self._delete(row[0])
                deleted.append(int(row[0]))
            return deleted

    def _delete(self, event_id: int) -> None:
        row = self._db.execute("SELECT nbytes FROM events WHERE id = ?", (event_id,)).fetchone()
        if row is None:
            return
        self._db.execute("DELETE FROM events WHERE id = ?", (event_id,))
        self._shard(event_id).unlink(missing_ok=True)
        self._bytes -= int(row[0])

    def get(self, event_id: int) -> Event | None:
        """The archived event with its tokens loaded, or None if it is not (or no longer) archived."""
        with self._lock:
            row = self._db.execute(
                "SELECT id, t_start, t_end, grid_h, grid_w, caption, recalls FROM events WHERE id = ?",
                (int(event_id),),
            ).fetchone()
            if row is None:
                return None
            tensors = load_file(str(self._shard(event_id)))
        meta = dict(id=row[0], t_start=row[1], t_end=row[2], grid=(row[3], row[4]), caption=row[5], recalls=row[6])
        return event_from_tensors(meta, tensors)

    def add_recall(self, event_id: int) -> None:
        with self._lock:
            self._db.execute("UPDATE events SET recalls = recalls + 1 WHERE id = ?", (int(event_id),))

    def set_caption(self, event_id: int, caption: str) -> None:
        with self._lock:
            self._db.execute("UPDATE events SET caption = ? WHERE id = ?", (caption, int(event_id)))

    def copy_to(self, directory: Path) -> None:
        """A consistent copy of the archive (SQLite backup + shards) into an empty ``directory``."""
        directory.mkdir(parents=True, exist_ok=True)
        (directory / SHARD_DIR).mkdir(exist_ok=True)
        with self._lock:
            dest = sqlite3.connect(str(directory / DB_NAME))
            try:
                self._db.backup(dest)
            finally:
                dest.close()
            for event_id in self.ids():
                shutil.copyfile(self._shard(event_id), directory / SHARD_DIR / self._shard(event_id).name)

    def restore_from(self, directory: Path, *, token_dim: int, key_dim: int,
                     readable: Callable[[str], bool] = lambda name: True) -> None:
        """Replace this (empty) archive's contents with a copy made by ``copy_to``, after checking it.

        Every database row must be well typed and have its shard; every shard must hold a
        well-formed event (dtypes, shapes, token width ``token_dim``, key width ``key_dim``).
        ``readable(name)`` says whether a file, named relative to ``directory``'s parent (e.g.
        "archive/shards/000000000003.safetensors"), may be read at all (the caller's list of
        verified files). Raises MemoryFormatError naming the file at fault; nothing is copied then.
        """
        db_name = f"{directory.name}/{DB_NAME}"
        rows = _read_rows(directory / DB_NAME, db_name)
        for row in rows:
            event_id, grid_h, grid_w, n_tokens, nbytes = row[0], row[3], row[4], row[7], row[8]
            name = f"{directory.name}/{SHARD_DIR}/{event_id:012d}.safetensors"
            shard = directory / SHARD_DIR / f"{event_id:012d}.safetensors"
            if not readable(name) or not shard.is_file():
                raise MemoryFormatError(f"{name} is missing (listed in {db_name})")
            try:
                tensors = load_file(str(shard))
                check_event_tensors(tensors, token_dim=token_dim, key_dim=key_dim)
                if "tokens" not in tensors or len(tensors["tokens"]) != n_tokens:
                    raise ValueError(f"it holds {len(tensors.get('tokens', ()))} tokens, {db_name} says {n_tokens}")
                positions = tensors["token_positions"]
                if len(positions) and (int(positions.min()) < 0 or int(positions.max()) >= grid_h * grid_w):
                    raise ValueError(f"token positions outside the {grid_h}x{grid_w} grid")
                if shard.stat().st_size != nbytes:
                    raise ValueError(f"it has {shard.stat().st_size} bytes, {db_name} says {nbytes}")
            except Exception as e:  # safetensors raises its own error types for a damaged file
                raise MemoryFormatError(f"{name} is damaged ({type(e).__name__}: {e})") from e
        with self._lock:
            src = sqlite3.connect(str(directory / DB_NAME))
            try:
                src.backup(self._db)
            finally:
                src.close()
            for event_id in self.ids():
                shutil.copyfile(directory / SHARD_DIR / self._shard(event_id).name, self._shard(event_id))
            self._bytes = int(self._db.execute("SELECT COALESCE(SUM(nbytes), 0) FROM events").fetchone()[0])

    def close(self) -> None:
        """Close the database; an owned temporary directory is deleted."""
        with self._lock:
            self._db.close()
            if self._cleanup is not None:
                self._cleanup()


_ROW_TYPES = (int, float, float, int, int, str, int, int, int)


def _read_rows(path: Path, name: str) -> list[tuple]:
    """Every row of a saved archive database, type-checked; MemoryFormatError naming ``name`` otherwise."""
    try:
        db = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
        try:
            rows = db.execute("SELECT id, t_start, t_end, grid_h, grid_w, caption, recalls, n_tokens, nbytes "
                              "FROM events ORDER BY id").fetchall()
        finally:
            db.close()
    except (sqlite3.Error, ValueError) as e:  # ValueError: text that is not UTF-8
        raise MemoryFormatError(f"{name} is damaged ({type(e).__name__}: {e})") from e
    for row in rows:
        ok = all(isinstance(v, t) or (t is float and isinstance(v, int)) for v, t in zip(row, _ROW_TYPES, strict=True))
        if not ok or not (math.isfinite(row[1]) and math.isfinite(row[2])) or min(row[0], row[3], row[4], row[6],
                                                                                  row[7], row[8]) < 0:
            raise MemoryFormatError(f"{name} is damaged (a malformed row for event {row[0]!r})")
    return rows
