"""The library's shared store: retrieval keys in Milvus, each video's memory in a folder beside it.

Milvus holds two collections:

- ``keys``: one row per retrieval key of every indexed video — the event key, the kept frame
  keys and the caption (text) keys — with (video id, event id, slot, kind, t_start, t_end); the
  slot is the key's place in its event as the memory bank numbers it (0 the event key, 1.. the
  frame keys, from ``TEXT_SLOT0`` on the caption keys), so (event id, slot) is the bank's key id.
- ``videos``: one row per fully indexed video (its content-hash id, path, counts, duration, and
  ``memory``: the store dir its memory was written to, "" for the default folder beside a Lite file),
  with the video's mean event key as its vector (Milvus wants one vector field per collection).

A video's event tokens, thumbnails and captions stay in its memory folder, the format
``streamvid index`` writes (``MemoryBank.save``), under ``<store dir>/<video id>/``. For a
local Milvus Lite file ``milvus:///path/lib.db`` the store dir is ``/path/lib.store/``; for a
server ``milvus://host:19530`` it must be given (a folder every worker and reader can see, or
an object-store URL such as ``s3://bucket/prefix``: see ``streamvid.library.objects``).

A video is written by deleting every key row of its id, inserting the new rows, then its
``videos`` row — so a retried file never leaves duplicates, and a video without a ``videos``
row (a crash between the two) counts as not indexed.
"""

from __future__ import annotations

import logging
import os
import re
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from streamvid.errors import StoreError
from streamvid.library.cache import CopyLease
from streamvid.library.objects import is_url, memories_at
from streamvid.tensorops import l2_normalise

log = logging.getLogger("streamvid.library")

KEYS, VIDEOS = "keys", "videos"
KIND_EVENT, KIND_FRAME, KIND_CAPTION = "event", "frame", "caption"
_VIDEO_ID = re.compile(r"[0-9a-f]{8,64}")
_INSERT_BATCH = 10_000


@dataclass(frozen=True)
class VideoRecord:
    """One indexed video: its content-hash id, the path it was indexed from, and what it holds."""

    video_id: str
    path: str
    frames: int
    events: int
    keys: int
    duration: float
    preset: str
    memory: str = ""  # where its saved memory's store dir is, as recorded ("" = beside the Lite file)


@dataclass(frozen=True)
class KeyHit:
    """One search result: a stored key's video, event, kind, time span and inner-product score (slot: the
    key's place in its event, see the module docstring)."""

    video_id: str
    event_id: int
    kind: str
    t_start: float
    t_end: float
    score: float
    slot: int = 0


def parse_uri(uri: str, store_dir: str | Path | None = None) -> tuple[str, Path | str | None]:
    """``milvus:///path/lib.db`` → (local file, ``store_dir`` or ``/path/lib.store``); ``milvus://host:port`` →
    (``http://host:port``, ``store_dir`` or None: then each video's recorded location is used). The store dir
    is where per-video memories live: a local folder (a Path) or an object-store URL (``s3://bucket/prefix``,
    kept as text)."""
    if store_dir is not None and not is_url(store_dir):
        store_dir = Path(store_dir)
    if not isinstance(uri, str) or not uri.startswith("milvus://"):
        raise StoreError(f"store URI {uri!r} must be milvus:///path/lib.db (a local file) or milvus://host:19530")
    rest = uri[len("milvus://"):]
    if rest.startswith("/"):
        db = Path(rest)
        if db.suffix != ".db":
            raise StoreError(f"store URI {uri!r}: a local Milvus Lite store is a file ending in .db")
        return str(db), store_dir if store_dir else db.with_suffix(".store")
    if not rest or "/" in rest.rstrip("/"):
        raise StoreError(f"store URI {uri!r}: expected milvus://host:port")
    return "http://" + rest.rstrip("/"), store_dir


_LITE_OPEN: dict[str, int] = {}  # Milvus Lite file → stores of this process that have it open
_LITE_LOCK = threading.Lock()


def _client(target: str) -> Any:
    try:
        from pymilvus import MilvusClient
    except ImportError as exc:
        raise StoreError("the library store needs pymilvus and milvus-lite: pip install 'streamvid[scale]'") from exc
    local = not target.startswith("http")
    if local:
        Path(target).parent.mkdir(parents=True, exist_ok=True)
        # Milvus Lite's in-process server logs each RPC it does not implement (pymilvus asks for
        # timestamps it can do without) as an error; those are not the store's errors
        logging.getLogger("grpc._server").setLevel(logging.CRITICAL)
        # nor is its query iterator's note that Lite keeps no server-side session timestamp
        logging.getLogger("pymilvus.client.iterator.query_iterator").setLevel(logging.ERROR)
    try:
        client = MilvusClient(target)
    except Exception as exc:
        if local:
            raise StoreError(f"cannot open {target}: Milvus Lite lets one process at a time open a store file "
                             "(is another streamvid using it?); a Milvus server serves many") from exc
        raise StoreError(f"cannot reach the Milvus server at {target}: {exc}") from exc
    if local:
        with _LITE_LOCK:
            _LITE_OPEN[os.path.abspath(target)] = _LITE_OPEN.get(os.path.abspath(target), 0) + 1
    return client


def _release(target: str) -> None:
    """Stop this process's Milvus Lite server for ``target`` once no store here has it open, so that
    another process can open the file."""
    path = os.path.abspath(target)
    with _LITE_LOCK:
        left = _LITE_OPEN.get(path, 0) - 1
        if left > 0:
            _LITE_OPEN[path] = left
            return
        _LITE_OPEN.pop(path, None)
    from milvus_lite.server_manager import server_manager_instance

    server_manager_instance.release_server(path)


def _filter_eq(field: str, value: str) -> str:
    if not _VIDEO_ID.fullmatch(value):
        raise StoreError(f"{value!r} is not a video id (hex content hash)")
    return f'{field} == "{value}"'


class MilvusStore:
    """Retrieval keys of many videos in one Milvus collection; their memories in ``store_dir`` (a folder or
    an object-store URL).

    Keys are L2-normalised and searched by inner product (cosine). ``index_type`` picks the
    Milvus index for the keys collection (``AUTOINDEX`` unless the deployment wants another).
    """

    def __init__(self, uri: str, *, store_dir: str | Path | None = None, index_type: str = "AUTOINDEX",
                 index_params: dict[str, Any] | None = None) -> None:
        self.uri = uri
        target, self.store_dir = parse_uri(uri, store_dir)
        # Where this store writes memories (None: a server store opened without --store-dir, read-only
        # through each video's recorded location). Given explicitly, it is recorded with each video.
        self.memories = memories_at(self.store_dir) if self.store_dir is not None else None
        self._recorded_dir = "" if store_dir is None else (
            self.memories.location if is_url(self.memories.location) else os.path.abspath(self.memories.location))
        self._read_from: dict[str, Any] = {}  # recorded location → its memories, for readers
        self._target = target
        self._closed = False
        self.client = _client(target)
        self.index_type = index_type
        self.index_params = index_params or {}
        self._dim: int | None = None
        if self.client.has_collection(KEYS):
            fields = self.client.describe_collection(KEYS)["fields"]
            self._dim = next(int(f["params"]["dim"]) for f in fields if f["name"] == "vector")
            vfields = self.client.describe_collection(VIDEOS)["fields"]
            if not any(f["name"] == "slot" for f in fields) or not any(f["name"] == "memory" for f in vfields):
                self.close()
                raise StoreError(f"{uri} was written by an older streamvid (no key slots or memory locations); "
                                 "index the library again into a new store")
            for name in (KEYS, VIDEOS):  # a reopened file starts with its collections released
                self.client.load_collection(name)

    @property
    def dim(self) -> int | None:
        """The key width the store holds (None while empty)."""
        return self._dim

    def writable_memories(self) -> Any:
        """Where this store writes each video's memory; a server store needs it given (``store_dir``)."""
        if self.memories is None:
            raise StoreError(f"store {self.uri} is a Milvus server opened without --store-dir, and this video has "
                             "no recorded memory location: give --store-dir")
        return self.memories

    def memories_of(self, video_id: str) -> Any:
        """Where one video's memory is read from: the store dir given to this store, else the location
        recorded with the video when it was indexed, else (a Lite file) the folder beside it."""
        flt = _filter_eq("video_id", video_id)
        if self._recorded_dir:  # given explicitly: it wins (a cluster may mount the memories elsewhere)
            return self.memories
        rows = self.client.query(VIDEOS, filter=flt, output_fields=["memory"]) if self._dim is not None else []
        recorded = rows[0]["memory"] if rows else ""
        if not recorded:
            return self.writable_memories()
        if recorded not in self._read_from:
            self._read_from[recorded] = memories_at(recorded)
        return self._read_from[recorded]

    def video_dir(self, video_id: str) -> Path:
        """A local folder holding one video's saved memory (from an object store: its copy in the local
        cache, downloaded if not there yet; not held, see ``checkout``)."""
        return self.memories_of(video_id).local_dir(video_id)

    def checkout(self, video_id: str, *, lazy: bool = False) -> CopyLease:
        """One video's saved memory folder held for reading in place (``.path``; ``close()`` when done): a
        cached object-store copy is not evicted while held; ``lazy``: its files are fetched when first read
        through ``SavedEvents`` (``ObjectMemories.checkout``)."""
        return self.memories_of(video_id).checkout(video_id, lazy=lazy)

    # ---- schema --------------------------------------------------------------------------
    def _ensure(self, dim: int) -> None:
        if self._dim is not None:
            if dim != self._dim:
                raise StoreError(f"{self.uri} holds {self._dim}-d keys; these are {dim}-d "
                                 "(index the whole library with one preset)")
            return
        from pymilvus import DataType, MilvusClient

        schema = MilvusClient.create_schema(auto_id=True)
        schema.add_field("id", DataType.INT64, is_primary=True)
        schema.add_field("video_id", DataType.VARCHAR, max_length=64)
        schema.add_field("event_id", DataType.INT64)
        schema.add_field("slot", DataType.INT64)
        schema.add_field("kind", DataType.VARCHAR, max_length=16)
        schema.add_field("t_start", DataType.DOUBLE)
        schema.add_field("t_end", DataType.DOUBLE)
        schema.add_field("vector", DataType.FLOAT_VECTOR, dim=dim)
        params = self.client.prepare_index_params()
        params.add_index("vector", index_type=self.index_type, metric_type="IP", params=self.index_params)
        params.add_index("video_id", index_type="INVERTED")
        self.client.create_collection(KEYS, schema=schema, index_params=params)

        vschema = MilvusClient.create_schema(auto_id=False)
        vschema.add_field("video_id", DataType.VARCHAR, max_length=64, is_primary=True)
        vschema.add_field("path", DataType.VARCHAR, max_length=4096)
        vschema.add_field("frames", DataType.INT64)
        vschema.add_field("events", DataType.INT64)
        vschema.add_field("keys", DataType.INT64)
        vschema.add_field("duration", DataType.DOUBLE)
        vschema.add_field("preset", DataType.VARCHAR, max_length=64)
        vschema.add_field("memory", DataType.VARCHAR, max_length=4096)
        vschema.add_field("vector", DataType.FLOAT_VECTOR, dim=dim)
        vparams = self.client.prepare_index_params()
        vparams.add_index("vector", index_type="FLAT", metric_type="IP")
        self.client.create_collection(VIDEOS, schema=vschema, index_params=vparams)
        self._dim = dim

    # ---- writes --------------------------------------------------------------------------
    def write_video(self, record: VideoRecord, rows: dict[str, np.ndarray]) -> None:
        """Replace every key of ``record.video_id`` with ``rows`` and mark the video indexed.

        rows: ``vector`` [n, d] float32, ``event_id`` [n] int, ``kind`` [n] str, ``t_start``/``t_end`` [n],
        optionally ``slot`` [n] int (else 0 for event keys, 1 for frame keys, ``TEXT_SLOT0`` for captions).
        """
        vectors = np.ascontiguousarray(rows["vector"], dtype=np.float32)
        if vectors.ndim != 2 or len(vectors) == 0:
            raise StoreError(f"video {record.video_id}: no keys to store")
        self._ensure(vectors.shape[1])
        slots = _slots(rows)
        flt = _filter_eq("video_id", record.video_id)
        self.client.delete(VIDEOS, filter=flt)
        self.client.delete(KEYS, filter=flt)
        n = len(vectors)
        self._insert_keys(np.full(n, record.video_id, dtype=object), rows, vectors, slots)
        mean = vectors[np.asarray(rows["kind"]) == KIND_EVENT].mean(axis=0) if (
            np.asarray(rows["kind"]) == KIND_EVENT).any() else vectors.mean(axis=0)
        mean = l2_normalise(mean)
        self.client.insert(VIDEOS, [{
            "video_id": record.video_id, "path": record.path, "frames": record.frames, "events": record.events,
            "keys": n, "duration": record.duration, "preset": record.preset, "memory": self._recorded_dir,
            "vector": mean.tolist()}])
        self.client.flush(KEYS)
        self.client.flush(VIDEOS)

    def add_keys(self, rows: dict[str, Any]) -> None:
        """Bulk-insert raw key rows (``video_id`` [n] plus the ``write_video`` fields) without a videos
        row (benchmarks fill a store this way).

        The keys collection is released while the rows go in and loaded again after: Milvus Lite
        builds a flushed segment's index on a background thread only while the collection is loaded,
        so a bulk insert into a loaded collection races that thread (and until a segment's index is
        built, the segment is searched by brute force). Loading builds every segment's index once,
        before this returns. Searches in this process fail while it runs."""
        vectors = np.ascontiguousarray(rows["vector"], dtype=np.float32)
        self._ensure(vectors.shape[1])
        self.client.release_collection(KEYS)
        try:
            self._insert_keys(np.asarray(rows["video_id"], dtype=object), rows, vectors, _slots(rows))
            self.client.flush(KEYS)
        finally:
            self.client.load_collection(KEYS)

    def insert_keys(self, rows: dict[str, Any]) -> None:
        """Insert a few key rows (``add_keys``' fields; e.g. one event of a bank writing through
        ``StoreKeyIndex``) into the loaded collection; searchable when this returns."""
        vectors = np.ascontiguousarray(rows["vector"], dtype=np.float32)
        self._ensure(vectors.shape[1])
        self._insert_keys(np.asarray(rows["video_id"], dtype=object), rows, vectors, _slots(rows))
        self.client.flush(KEYS)

    def _insert_keys(self, video_ids: np.ndarray, rows: dict[str, Any], vectors: np.ndarray,
                     slots: list[int]) -> None:
        """Insert key rows in batches of ``_INSERT_BATCH``. Scalar columns are turned into Python values
        once per column and each vector goes in as its float32 row (pymilvus packs it without a
        per-row ``tolist``): the client-side cost of an insert is about a third lower than row dicts
        of lists."""
        cols = {"video_id": [str(v) for v in video_ids], "event_id": np.asarray(rows["event_id"], np.int64).tolist(),
                "slot": slots, "kind": [str(k) for k in rows["kind"]],
                "t_start": np.asarray(rows["t_start"], np.float64).tolist(),
                "t_end": np.asarray(rows["t_end"], np.float64).tolist()}
        names = list(cols)
        for lo in range(0, len(vectors), _INSERT_BATCH):
            hi = min(len(vectors), lo + _INSERT_BATCH)
            batch = [{**dict(zip(names, values, strict=True)), "vector": vec}
                     for *values, vec in zip(*(cols[c][lo:hi] for c in names), vectors[lo:hi], strict=True)]
            self.client.insert(KEYS, batch)

    # ---- reads ---------------------------------------------------------------------------
    def videos(self) -> list[VideoRecord]:
        """Every fully indexed video, by path."""
        if self._dim is None:
            return []
        rows = self.client.query(VIDEOS, filter='video_id != ""',
                                 output_fields=["video_id", "path", "frames", "events", "keys", "duration", "preset",
                                                "memory"])
        return sorted((VideoRecord(video_id=r["video_id"], path=r["path"], frames=int(r["frames"]),
                                   events=int(r["events"]), keys=int(r["keys"]), duration=float(r["duration"]),
                                   preset=r["preset"], memory=r["memory"]) for r in rows),
                      key=lambda v: (v.path, v.video_id))

    def has_video(self, video_id: str) -> bool:
        if self._dim is None:
            return False
        return bool(self.client.query(VIDEOS, filter=_filter_eq("video_id", video_id), output_fields=["video_id"]))

    def count_keys(self, video_id: str | None = None) -> int:
        """Stored key rows, of one video or all."""
        if self._dim is None:
            return 0
        flt = _filter_eq("video_id", video_id) if video_id else 'video_id != ""'
        res = self.client.query(KEYS, filter=flt, output_fields=["count(*)"])
        return int(res[0]["count(*)"])

    def search(self, queries: np.ndarray, k: int = 10, video_id: str | None = None,
               search_params: dict[str, Any] | None = None) -> list[list[KeyHit]]:
        """queries [q, d] (L2-normalised here) → for each, the top ``k`` stored keys, best first."""
        queries = np.atleast_2d(np.asarray(queries, dtype=np.float32))
        if self._dim is None:
            return [[] for _ in queries]
        if queries.shape[1] != self._dim:
            raise StoreError(f"a query key is {queries.shape[1]}-d; {self.uri} holds {self._dim}-d keys")
        queries = l2_normalise(queries)
        res = self.client.search(
            KEYS, data=queries.tolist(), limit=int(k), filter=_filter_eq("video_id", video_id) if video_id else "",
            output_fields=["video_id", "event_id", "slot", "kind", "t_start", "t_end"],
            search_params={"metric_type": "IP", "params": search_params or {}})
        return [[KeyHit(video_id=h["entity"]["video_id"], event_id=int(h["entity"]["event_id"]),
                        kind=h["entity"]["kind"], t_start=float(h["entity"]["t_start"]),
                        t_end=float(h["entity"]["t_end"]), score=float(h["distance"]),
                        slot=int(h["entity"]["slot"])) for h in hits]
                for hits in res]

    def video_keys(self, video_id: str | None = None, *, event_range: tuple[int, int] | None = None,
                   vectors: bool = True) -> dict[str, np.ndarray]:
        """The stored key rows of one video (or all), optionally only events in [lo, hi), ordered by
        (video id, event id, slot): ``id`` (the row's primary key), ``video_id``, ``event_id``, ``slot``,
        ``kind``, ``t_start``, ``t_end`` [n] and, with ``vectors``, ``vector`` [n, d]."""
        names = ["id", "video_id", "event_id", "slot", "kind", "t_start", "t_end"] + (["vector"] if vectors else [])
        if self._dim is None:
            return _columns([], names, 0)
        flt = _filter_eq("video_id", video_id) if video_id else 'video_id != ""'
        if event_range is not None:
            flt += f" and event_id >= {int(event_range[0])} and event_id < {int(event_range[1])}"
        it = self.client.query_iterator(KEYS, batch_size=_INSERT_BATCH, filter=flt, output_fields=names)
        rows: list[dict[str, Any]] = []
        try:
            while batch := it.next():
                rows.extend(batch)
        finally:
            it.close()
        rows.sort(key=lambda r: (r["video_id"], r["event_id"], r["slot"]))
        return _columns(rows, names, self._dim)

    def delete_keys(self, row_ids: np.ndarray) -> int:
        """Delete key rows by primary key (``video_keys()["id"]``); returns how many were asked for."""
        row_ids = [int(i) for i in np.atleast_1d(row_ids)]
        if row_ids and self._dim is not None:
            self.client.delete(KEYS, ids=row_ids)
            self.client.flush(KEYS)
        return len(row_ids)

    def close(self) -> None:
        """Close the connection; a Milvus Lite file is released for other processes once this process
        no longer has it open."""
        if self._closed:
            return
        self._closed = True
        self.client.close()
        if not self._target.startswith("http"):
            _release(self._target)

    def __enter__(self) -> MilvusStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _slots(rows: dict[str, Any]) -> list[int]:
    """Each row's slot: given, or the first slot of its kind."""
    from streamvid.memory.bank import TEXT_SLOT0

    if "slot" in rows:
        return [int(x) for x in rows["slot"]]
    first = {KIND_EVENT: 0, KIND_FRAME: 1, KIND_CAPTION: TEXT_SLOT0}
    return [first[str(k)] for k in rows["kind"]]


def _columns(rows: list[dict[str, Any]], names: list[str], dim: int) -> dict[str, np.ndarray]:
    out: dict[str, np.ndarray] = {}
    for name in names:
        if name == "vector":
            out[name] = np.asarray([r[name] for r in rows], dtype=np.float32).reshape(len(rows), dim)
        elif name in ("video_id", "kind"):
            out[name] = np.asarray([r[name] for r in rows], dtype=object)
        elif name in ("t_start", "t_end"):
            out[name] = np.asarray([r[name] for r in rows], dtype=np.float64)
        else:
            out[name] = np.asarray([r[name] for r in rows], dtype=np.int64)
    return out


def key_rows(bank: Any) -> dict[str, np.ndarray]:
    """Every retrieval key of a memory bank with its event and time span.

    The bank's index packs ids as ``event_id << SLOT_BITS | slot`` (slot 0 the event key, 1.. the
    frame keys, from ``TEXT_SLOT0`` on the caption keys); the span is the event's.
    Returns ``vector`` [n, d], ``event_id`` [n], ``slot`` [n], ``kind`` [n], ``t_start`` [n], ``t_end`` [n].
    """
    from streamvid.memory.bank import SLOT_BITS, TEXT_SLOT0

    keys, ids = bank.index.vectors()
    snap = bank.snapshot()
    event_id = ids >> SLOT_BITS
    slot = ids & ((1 << SLOT_BITS) - 1)
    kind = np.where(slot == 0, KIND_EVENT, np.where(slot >= TEXT_SLOT0, KIND_CAPTION, KIND_FRAME))
    return {"vector": keys, "event_id": event_id, "slot": slot, "kind": kind,
            "t_start": snap._t0[event_id], "t_end": snap._t1[event_id]}
