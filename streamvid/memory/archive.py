"""On-disk store for events evicted from RAM.

Each archived event's arrays live in one safetensors shard; its scalar metadata (times,
grid, caption, recalls, shard size) in SQLite. The archive is bounded by ``max_bytes``:
when a new event would push it over, the oldest events are deleted first. The caller
(the memory bank) keeps the events' keys in its FAISS index and drops them when the archive
reports a deletion.
"""

from __future__ import annotations

import shutil
import sqlite3
import tempfile
import threading
import weakref
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from streamvid.errors import ConfigError
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
    """The arrays of an event as a flat name → tensor dict (safetensors needs contiguous tensors)."""
    out = {
        "token_times": torch.from_numpy(np.ascontiguousarray(event.token_times, dtype=np.float64)),
        "token_positions": torch.from_numpy(np.ascontiguousarray(event.token_positions, dtype=np.int64)),
        "key": torch.from_numpy(np.ascontiguousarray(event.key, dtype=np.float32)),
        "frame_keys": torch.from_numpy(np.ascontiguousarray(event.frame_keys, dtype=np.float32)),
        "frame_times": torch.from_numpy(np.ascontiguousarray(event.frame_times, dtype=np.float64)),
    }
    if event.tokens is not None:
        out["tokens"] = event.tokens.detach().to("cpu").contiguous()
    if event.thumbnail is not None:
        out["thumbnail"] = torch.from_numpy(np.ascontiguousarray(event.thumbnail, dtype=np.uint8))
    return out


def event_from_tensors(meta: dict, tensors: dict[str, torch.Tensor]) -> Event:
    """Inverse of ``event_tensors`` given the scalar metadata (id, t_start, t_end, grid, caption, recalls)."""
    thumb = tensors.get("thumbnail")
    return Event(
        id=int(meta["id"]), t_start=float(meta["t_start"]), t_end=float(meta["t_end"]),
        tokens=tensors.get("tokens"),
        token_times=tensors["token_times"].numpy(),
        token_positions=tensors["token_positions"].numpy(),
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

    def restore_from(self, directory: Path) -> None:
        """Replace this (empty) archive's contents with a copy made by ``copy_to``."""
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
