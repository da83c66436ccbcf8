"""The library store behind the memory's index and archive interfaces.

- ``StoreKeyIndex``: the methods ``MemoryBank`` uses of a FAISS ``KeyIndex`` (``add``, ``search``,
  ``remove_range``, ``vectors``, ``ntotal``, ``nbytes``, ``kind``), answered by the Milvus store,
  scoped to one video (ids are the bank's ``event_id << SLOT_BITS | slot``) or to the whole library
  (ids also carry the video's place in ``video_ids``: ``video << VIDEO_SHIFT | event_id << SLOT_BITS | slot``).
- ``SavedEvents``: the methods a bank uses of an ``EventArchive`` (``get``, ``ids``, ``add_recall``,
  ``total_bytes``, ``close``), answered from one video's saved memory folder in place: an event's
  tokens, keys and thumbnail are read (and checked) when asked for, by event id; nothing else of the
  video is loaded. Read-only.
- ``video_bank(store, video_id, ...)``: a ``MemoryBank.over`` the two, so retrieval
  (``streamvid.retrieve.gather``) runs on a library video exactly as on a memory loaded whole.

FAISS stays the embedded default: a bank that ingests writes its own ``KeyIndex``; the store gets
its keys from the driver (``MilvusStore.write_video``), the only writer a Milvus Lite file admits.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import load_file

from streamvid.config import AgentConfig
from streamvid.errors import MemoryFormatError, StoreError
from streamvid.library.cache import CopyLease
from streamvid.library.store import KIND_CAPTION, KIND_EVENT, KIND_FRAME, MilvusStore
from streamvid.memory.archive import DB_NAME, SHARD_DIR, check_event_tensors, event_from_tensors
from streamvid.memory.bank import ARCHIVED, IN_RAM, SLOT_BITS, TEXT_SLOT0, MemoryBank, saved_config
from streamvid.memory.persist import STATE_FILES, file_matches, read_manifest
from streamvid.tensorops import l2_normalise
from streamvid.types import Event

VIDEO_SHIFT = 40  # library-wide ids: the video's place above the bank's (event id, slot)
_SLOT_MASK = (1 << SLOT_BITS) - 1

Spans = Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]


def _kind(slot: np.ndarray) -> np.ndarray:
    return np.where(slot == 0, KIND_EVENT, np.where(slot >= TEXT_SLOT0, KIND_CAPTION, KIND_FRAME))


class StoreKeyIndex:
    """A ``KeyIndex`` answered by a ``MilvusStore``: one video's keys (``video_id``) or the library's.

    spans: event ids [n] → (t_start [n], t_end [n]); needed only to ``add`` keys (a store row carries its
    event's time span). Without it the index is read-only apart from ``remove_range``.
    """

    kind = "milvus"
    nprobe = 0
    nbytes = 0  # the keys live in Milvus, not in this process
    exact_max = 0

    def __init__(self, store: MilvusStore, video_id: str | None = None, *, spans: Spans | None = None) -> None:
        if store.dim is None:
            raise StoreError(f"{store.uri} holds no keys yet")
        self.store = store
        self.video_id = video_id
        self.spans = spans
        self.dim = store.dim
        # library-wide ids: the video's place in this list
        self.video_ids = [v.video_id for v in store.videos()] if video_id is None else [video_id]
        self._place = {v: i for i, v in enumerate(self.video_ids)}

    @property
    def ntotal(self) -> int:
        return self.store.count_keys(self.video_id)

    def _pack(self, video_id: Any, event_id: Any, slot: Any) -> int:
        packed = (int(event_id) << SLOT_BITS) | int(slot)
        return packed if self.video_id is not None else (self._place.get(video_id, -1) << VIDEO_SHIFT) | packed

    def unpack(self, key_id: int) -> tuple[str, int, int]:
        """A search id → (video id, event id, slot)."""
        video = self.video_ids[key_id >> VIDEO_SHIFT] if self.video_id is None else self.video_id
        return video, (key_id & ((1 << VIDEO_SHIFT) - 1)) >> SLOT_BITS, key_id & _SLOT_MASK

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """queries [q, d] → (scores [q, k] float32, ids [q, k] int64), best first; missing results are id -1."""
        queries = l2_normalise(np.atleast_2d(np.asarray(queries, dtype=np.float32)))
        k = max(1, int(k))
        scores = np.zeros((len(queries), k), np.float32)
        ids = np.full((len(queries), k), -1, np.int64)
        for qi, hits in enumerate(self.store.search(queries, k=min(k, 16_384), video_id=self.video_id)):
            hits = [h for h in hits if self.video_id is not None or h.video_id in self._place]
            for j, h in enumerate(hits[:k]):
                scores[qi, j] = h.score
                ids[qi, j] = self._pack(h.video_id, h.event_id, h.slot)
        return scores, ids

    def vectors(self) -> tuple[np.ndarray, np.ndarray]:
        """Every stored (keys [n, d], ids [n]), sorted by id."""
        rows = self.store.video_keys(self.video_id)
        ids = np.asarray([self._pack(v, e, s) for v, e, s in zip(rows["video_id"], rows["event_id"], rows["slot"],
                                                                  strict=True)], dtype=np.int64)
        keep = ids >= 0
        order = np.argsort(ids[keep], kind="stable")
        return rows["vector"][keep][order], ids[keep][order]

    def add(self, keys: np.ndarray, ids: np.ndarray) -> None:
        """Add keys [n, d] (normalised here) under the bank's ids [n] of this index's video."""
        if self.video_id is None or self.spans is None:
            raise StoreError("only an index of one video given its events' spans can add keys")
        keys = l2_normalise(np.atleast_2d(np.asarray(keys, dtype=np.float32)))
        ids = np.atleast_1d(np.asarray(ids, dtype=np.int64))
        if keys.shape[1] != self.dim or len(ids) != len(keys):
            raise ValueError(f"{len(keys)} keys of {keys.shape[1]} dims and {len(ids)} ids; the index is "
                             f"{self.dim}-d")
        event_id, slot = ids >> SLOT_BITS, ids & _SLOT_MASK
        t_start, t_end = self.spans(event_id)
        self.store.insert_keys({"video_id": [self.video_id] * len(ids), "vector": keys, "event_id": event_id,
                             "slot": slot, "kind": _kind(slot), "t_start": t_start, "t_end": t_end})

    def remove_range(self, lo: int, hi: int) -> int:
        """Remove this video's keys with ids in [lo, hi); returns how many were removed."""
        if self.video_id is None:
            raise StoreError("remove keys through an index of one video")
        if hi <= lo:
            return 0
        rows = self.store.video_keys(self.video_id, event_range=(lo >> SLOT_BITS, ((hi - 1) >> SLOT_BITS) + 1),
                                     vectors=False)
        packed = (rows["event_id"] << SLOT_BITS) | rows["slot"]
        return self.store.delete_keys(rows["id"][(packed >= lo) & (packed < hi)])

    def to_bytes(self) -> bytes:
        raise StoreError("a bank over the library store is not saved as a memory folder; its keys are in "
                         f"{self.store.uri}")


class SavedEvents:
    """One video's saved memory folder (``MemoryBank.save`` format) read in place, event by event.

    Every file read is first checked against the folder's manifest (size and SHA-256), and every
    event's arrays are checked (names, dtypes, shapes) before an ``Event`` is built from them;
    damage raises ``MemoryFormatError`` naming the file.
    """

    def __init__(self, directory: str | Path | CopyLease) -> None:
        # a lease (``MilvusStore.checkout``) keeps a cached copy from eviction until close()
        self._lease = directory if isinstance(directory, CopyLease) else None
        self.root = directory.path if isinstance(directory, CopyLease) else Path(directory)
        try:
            if not self.root.is_dir():
                raise MemoryFormatError(f"{self.root}: no saved memory there (not a directory)")
            self._files = read_manifest(self.root)["files"]
            self._checked: set[str] = set()
            try:
                self.meta: dict[str, Any] = json.loads(self._path(STATE_FILES["meta"]).read_text())
                self.key_dim, self.token_dim = int(self.meta["key_dim"]), int(self.meta["token_dim"])
                self._ram = {int(m["id"]): m for m in self.meta["events"]}
            except (ValueError, KeyError, TypeError) as e:
                raise MemoryFormatError(f"{self.root}: damaged ({STATE_FILES['meta']}: {type(e).__name__}: {e})"
                                        ) from e
        except BaseException:
            if self._lease is not None:
                self._lease.close()
            raise
        self._tensors: Any = None
        self._db: sqlite3.Connection | None = None
        self._state: np.ndarray | None = None
        self.recalls: dict[int, int] = {}  # counted while reading; a saved folder is not written

    def _path(self, name: str) -> Path:
        """The path of a listed file, checked against the manifest once."""
        if name not in self._files:
            raise MemoryFormatError(f"{self.root}: damaged ({name} is not listed in the manifest)")
        p = self.root / name
        if name not in self._checked:
            if self._lease is not None and self._lease.fetch is not None:
                self._lease.fetch(name)  # a lazily checked-out copy: brought here unless already present
            if not file_matches(p, self._files[name]):
                raise MemoryFormatError(f"{self.root}: damaged ({name} is missing or does not match the manifest)")
            self._checked.add(name)
        return p

    def config(self) -> AgentConfig:
        """The settings the video was indexed with."""
        try:
            return saved_config(self.meta.get("config"))
        except Exception as e:
            raise MemoryFormatError(f"{self.root}: damaged (its saved config: {type(e).__name__}: {e})") from e

    @property
    def extra_state(self) -> dict[str, Any]:
        """What the indexing backend saved beyond tokens and keys (``Backend.state()``)."""
        extra = self.meta.get("extra", {})
        return extra if isinstance(extra, dict) else {}

    def _tensor(self, name: str) -> torch.Tensor:
        if self._tensors is None:
            self._tensors = safe_open(str(self._path(STATE_FILES["tensors"])), framework="pt")
        try:
            return self._tensors.get_tensor(name)
        except Exception as e:  # safetensors raises its own errors for a missing name
            raise MemoryFormatError(f"{self.root}: damaged ({STATE_FILES['tensors']}: no array {name})") from e

    def spans(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(t_start [n], t_end [n], stored [n] bool) of event ids 0..n-1."""
        t0 = self._tensor("table.t0").numpy()
        t1 = self._tensor("table.t1").numpy()
        self._state = self._tensor("table.state").numpy()
        if not (len(t0) == len(t1) == len(self._state)) or not (np.isfinite(t0).all() and np.isfinite(t1).all()):
            raise MemoryFormatError(f"{self.root}: damaged ({STATE_FILES['tensors']}: a malformed event table)")
        return t0, t1, np.isin(self._state, (IN_RAM, ARCHIVED))

    def ids(self) -> list[int]:
        if self._state is None:
            self.spans()
        return np.flatnonzero(np.isin(self._state, (IN_RAM, ARCHIVED))).tolist()

    def __len__(self) -> int:
        return len(self.ids())

    @property
    def total_bytes(self) -> int:
        return sum(int(i["bytes"]) for n, i in self._files.items() if n.startswith("archive/"))

    def get(self, event_id: int) -> Event | None:
        """The saved event with its tokens and thumbnail, or None when the video holds no such event."""
        event_id = int(event_id)
        if event_id in self._ram:
            meta = self._ram[event_id]
            prefix = f"e{event_id}."
            names = [k for k in self._keys() if k.startswith(prefix)]
            tensors = {k[len(prefix):]: self._tensor(k) for k in names}
            where = STATE_FILES["tensors"]
        else:
            row = self._row(event_id)
            if row is None:
                return None
            meta = dict(id=row[0], t_start=row[1], t_end=row[2], grid=(row[3], row[4]), caption=row[5],
                        recalls=row[6])
            where = f"archive/{SHARD_DIR}/{event_id:012d}.safetensors"
            try:
                tensors = load_file(str(self._path(where)))
            except MemoryFormatError:
                raise
            except Exception as e:
                raise MemoryFormatError(f"{self.root}: damaged ({where}: {type(e).__name__}: {e})") from e
        try:
            check_event_tensors(tensors, token_dim=self.token_dim, key_dim=self.key_dim)
            event = event_from_tensors(meta, tensors)
        except (KeyError, TypeError, ValueError) as e:
            raise MemoryFormatError(f"{self.root}: damaged ({where}, event {event_id}: {e})") from e
        event.recalls += self.recalls.get(event_id, 0)
        return event

    def _keys(self) -> list[str]:
        self._tensor("table.t0")  # opens the file
        return list(self._tensors.keys())

    def _row(self, event_id: int) -> tuple | None:
        if self._db is None:
            path = self._path(f"archive/{DB_NAME}")
            self._db = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True, check_same_thread=False)
        return self._db.execute("SELECT id, t_start, t_end, grid_h, grid_w, caption, recalls FROM events "
                                "WHERE id = ?", (event_id,)).fetchone()

    def add_recall(self, event_id: int) -> None:
        self.recalls[int(event_id)] = self.recalls.get(int(event_id), 0) + 1

    def put(self, event: Event) -> list[int]:
        raise StoreError(f"{self.root} is a saved memory read in place; it takes no new events")

    def set_caption(self, event_id: int, caption: str) -> None:
        raise StoreError(f"{self.root} is a saved memory read in place; its captions are not changed")

    def copy_to(self, directory: Path) -> None:
        raise StoreError(f"{self.root} is already saved; copy the folder itself")

    def close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None
        self._tensors = None
        if self._lease is not None:
            self._lease.close()


def video_bank(store: MilvusStore, video_id: str, *, text_encoder: Any = None, image_encoder: Any = None,
               directory: str | Path | None = None) -> MemoryBank:
    """A read-only ``MemoryBank`` of one library video: keys searched in ``store``, events read from the
    video's saved memory folder (``directory``, default: the store's, held until the bank is closed)
    when a read returns them."""
    events = SavedEvents(store.checkout(video_id, lazy=True) if directory is None else directory)
    try:
        if events.key_dim != store.dim:
            raise StoreError(f"video {video_id}: its memory holds {events.key_dim}-d keys, the store {store.dim}-d")
        return MemoryBank.over(events.config(), key_dim=events.key_dim, token_dim=events.token_dim,
                               index=StoreKeyIndex(store, video_id), archive=events, text_encoder=text_encoder,
                               image_encoder=image_encoder)
    except BaseException:
        events.close()
        raise
