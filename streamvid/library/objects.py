"""Where a library keeps each video's saved memory: a local folder or an object-store URL.

Either way a video's memory is the folder ``MemoryBank.save`` writes (``manifest.json``,
``state.json``, ``tensors.safetensors``, ``index.faiss``, ``archive/…``), at ``<root>/<video id>/``.

- A local folder (``/data/lib.store``): ``MemoryBank.save`` itself writes it (a hidden copy
  renamed into place; a folder holding files streamvid did not write is refused).
- An object store (``s3://bucket/prefix``, ``gs://…``, ``az://…``, ``file://…``, any fsspec URL;
  endpoint and credentials come the filesystem's own way: ``AWS_*`` variables, ``~/.aws``,
  ``gcloud`` login, or fsspec's ``FSSPEC_<PROTOCOL>_<OPTION>`` variables). A worker saves the
  memory into a local temporary folder, then uploads it: streamvid's mark object first, then
  it removes the earlier manifest (from here on the video reads as absent), uploads every file
  the manifest lists, the manifest last, then removes the files only the earlier manifest listed,
  and the mark. A memory without its manifest is absent — an upload that stopped midway is
  never read, and the video is indexed again. Nothing outside the names a streamvid memory holds
  is written or removed, and a video prefix holding objects but neither a manifest nor the
  mark (not streamvid's) is refused.
  A reader downloads the files its manifest lists into a local cache folder named by the video
  id and the manifest's hash (a re-indexed video gets a new folder), checks each against the
  manifest's size and SHA-256 before renaming it into place, and loads it with the ordinary loader,
  which checks again. A library reads a video lazily: the manifest first, then each file when it is
  first read (the event table and in-RAM events, the archive's database, one archived event's shard).
  The cache is ``$STREAMVID_CACHE_DIR/objects`` (default ``~/.cache/streamvid/objects``), bounded by
  ``$STREAMVID_CACHE_MAX_BYTES`` (default 20G): after each download the least recently used copies
  that no reader holds are removed until it fits (``streamvid.library.cache``). A library reads
  events from a copy in place, so a reader holds it (``checkout``) for as long as it reads it, in
  any process on the machine; a copy is never removed under a reader.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import re
import shutil
import socket
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from streamvid.errors import ObjectStoreError, StoreError, StreamvidError
from streamvid.library.cache import CopyLease, MemoryCache
from streamvid.memory.persist import FORMAT_NAME, MANIFEST, file_matches, read_manifest

log = logging.getLogger("streamvid.library")

UPLOAD_MARK = ".streamvid-uploading"
_URL = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://")
_VIDEO_ID = re.compile(r"[0-9a-f]{8,64}")
_PLAIN_NAME = re.compile(r"(?!\.\.?(/|$))[A-Za-z0-9._-]+(/(?!\.\.?(/|$))[A-Za-z0-9._-]+)*")  # no "." or ".." part


def is_url(location: str | os.PathLike) -> bool:
    """Whether a store dir names an object store (``scheme://…``) rather than a local folder."""
    return isinstance(location, str) and bool(_URL.match(location))


def memories_at(location: str | os.PathLike,
                storage_options: dict[str, Any] | None = None) -> LocalMemories | ObjectMemories:
    """The per-video memories of a store dir: a local folder, or an object-store URL."""
    if is_url(location):
        return ObjectMemories(str(location), storage_options=storage_options)
    return LocalMemories(Path(location))


def _check_id(video_id: str) -> str:
    if not isinstance(video_id, str) or not _VIDEO_ID.fullmatch(video_id):
        raise StoreError(f"{video_id!r} is not a video id (hex content hash)")
    return video_id


class LocalMemories:
    """Memories in a local (or mounted) folder: ``<root>/<video id>/``."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.location = str(self.root)

    def prepare(self) -> None:
        """Make the folder (the driver does this before workers start)."""
        self.root.mkdir(parents=True, exist_ok=True)

    def has(self, video_id: str) -> bool:
        """Whether a complete memory of ``video_id`` is there (its manifest is written last)."""
        return (self.root / _check_id(video_id) / MANIFEST).is_file()

    def save(self, bank: Any, video_id: str) -> None:
        """Save ``bank`` as ``video_id``'s memory, replacing an earlier save of it."""
        bank.save(str(self.root / _check_id(video_id)))

    def local_dir(self, video_id: str) -> Path:
        """The folder to load ``video_id``'s memory from."""
        return self.root / _check_id(video_id)

    def checkout(self, video_id: str, *, lazy: bool = False) -> CopyLease:
        """``video_id``'s memory folder to read in place (a local folder is whole and not a cache copy:
        no lock, nothing to fetch, ``lazy`` changes nothing)."""
        return CopyLease(self.local_dir(video_id))


def _default_cache() -> Path:
    return Path(os.environ.get("STREAMVID_CACHE_DIR") or Path.home() / ".cache" / "streamvid") / "objects"


class ObjectMemories:
    """Memories under an fsspec URL: ``<url>/<video id>/<file>`` objects, fetched into a local cache.

    ``storage_options`` go to the filesystem (e.g. ``{"client_kwargs": {"endpoint_url": …}}`` for s3);
    ``cache_dir`` defaults to ``$STREAMVID_CACHE_DIR/objects``; ``cache_max_bytes`` (the bound of that
    whole cache, every store's copies together) to ``$STREAMVID_CACHE_MAX_BYTES`` or 20 GiB.
    """

    def __init__(self, url: str, *, storage_options: dict[str, Any] | None = None,
                 cache_dir: str | os.PathLike | None = None, cache_max_bytes: int | None = None) -> None:
        self.location = url.rstrip("/")
        self.storage_options = dict(storage_options or {})
        self.cache_root = Path(cache_dir) if cache_dir else _default_cache()
        self.copies = MemoryCache(self.cache_root, cache_max_bytes)
        # one cache folder per store URL: the same video may be indexed into two stores with two presets
        self.cache = self.cache_root / hashlib.sha256(self.location.encode()).hexdigest()[:12]
        with self._io(self.location, "cannot open the object store"):
            import fsspec

            self.fs, self.root = fsspec.core.url_to_fs(self.location, **self.storage_options)
        self.root = self.root.rstrip("/")
        self._prepared = False

    # ---- helpers -------------------------------------------------------------------------
    @contextlib.contextmanager
    def _io(self, url: str, what: str) -> Iterator[None]:
        """Any filesystem failure (unreachable endpoint, credentials, missing bucket or object) → ObjectStoreError."""
        try:
            yield
        except StreamvidError:
            raise
        except ImportError as exc:
            raise ObjectStoreError(url, f"{what}: {exc} (install the filesystem package for this URL: "
                                        "s3fs for s3://, gcsfs for gs://, adlfs for az://)") from exc
        except Exception as exc:  # each filesystem raises its own types (botocore, aiohttp, OSError, …)
            cause = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
            raise ObjectStoreError(url, f"{what} ({type(exc).__name__}{': ' + cause if cause else ''})") from exc

    def _path(self, video_id: str, name: str = "") -> str:
        return f"{self.root}/{_check_id(video_id)}" + (f"/{name}" if name else "")

    def url(self, video_id: str, name: str = "") -> str:
        """The URL of ``video_id``'s memory (or one file of it), for messages."""
        return f"{self.location}/{_check_id(video_id)}" + (f"/{name}" if name else "")

    def _read_remote_manifest(self, video_id: str) -> bytes | None:
        """The manifest's bytes, or None when the video has none (never indexed, or an upload that did not finish)."""
        path = self._path(video_id, MANIFEST)
        with self._io(self.url(video_id, MANIFEST), "cannot read"):
            self.fs.invalidate_cache(self._path(video_id))
            try:
                return self.fs.cat_file(path)
            except FileNotFoundError:
                pass
        self.prepare(create=False)  # no manifest: a missing bucket or prefix is an error, not an absent video
        return None

    # ---- the driver ----------------------------------------------------------------------
    def prepare(self, create: bool = True) -> None:
        """Check the store is reachable with these credentials (the bucket must exist; nothing is created
        but, with ``create``, the folder of a ``file://`` URL)."""
        if self._prepared:
            return
        with self._io(self.location, "cannot reach the object store"):
            if create and self._local_fs():
                self.fs.makedirs(self.root, exist_ok=True)
            # one request or two, whatever the library's size; an unreachable endpoint or no credentials fail here
            if not self.fs.exists(self.root):  # an empty prefix is fine; its bucket must exist
                top = self.root if self._local_fs() else self.root.split("/")[0]
                if not self.fs.exists(top):
                    raise ObjectStoreError(self.location, f"cannot reach the object store ({top} does not exist: "
                                                          "create the bucket first)")
        self._prepared = True

    def has(self, video_id: str) -> bool:
        """Whether a complete memory of ``video_id`` is there (its manifest is uploaded last)."""
        with self._io(self.url(video_id, MANIFEST), "cannot check"):
            self.fs.invalidate_cache(self._path(video_id))
            return bool(self.fs.exists(self._path(video_id, MANIFEST)))

    # ---- a worker ------------------------------------------------------------------------
    def save(self, bank: Any, video_id: str) -> None:
        """Save ``bank`` into a local temporary folder, then upload it as ``video_id``'s memory (manifest last)."""
        self.prepare()
        with tempfile.TemporaryDirectory(prefix="streamvid-upload-") as tmp:
            folder = Path(tmp) / _check_id(video_id)
            bank.save(str(folder))
            self.upload(folder, video_id)

    def upload(self, folder: Path, video_id: str) -> None:
        """Upload a saved memory ``folder`` as ``video_id``'s, so that no reader sees it half written."""
        manifest = read_manifest(folder)
        names = sorted(manifest["files"])
        prefix = self._path(video_id)
        with self._io(self.url(video_id), "cannot upload the memory"):
            self.fs.invalidate_cache(prefix)
            present = {p[len(prefix) + 1:] for p in self.fs.find(prefix)}
            ours, old = self._ours(prefix, present)
            if present and not ours:
                raise ObjectStoreError(self.url(video_id), "refusing to write there: it holds "
                                       f"{sorted(present)[0]}, which streamvid did not write (no streamvid "
                                       f"{MANIFEST}); move it away or use another --store-dir")
            if self._local_fs():  # object stores have no folders; a file:// URL's are made here
                for parent in sorted({prefix} | {f"{prefix}/{n}".rsplit("/", 1)[0] for n in names}):
                    self.fs.makedirs(parent, exist_ok=True)
            mark = json.dumps({"format": FORMAT_NAME, "host": socket.gethostname(), "pid": os.getpid()}).encode()
            self.fs.pipe_file(f"{prefix}/{UPLOAD_MARK}", mark)
            if MANIFEST in present:
                self.fs.rm_file(f"{prefix}/{MANIFEST}")  # the video is absent until the new manifest lands
            for name in names:
                self.fs.put_file(str(folder / name), f"{prefix}/{name}")
            self.fs.put_file(str(folder / MANIFEST), f"{prefix}/{MANIFEST}")
            for name in sorted(old - set(names)):
                with contextlib.suppress(FileNotFoundError):
                    self.fs.rm_file(f"{prefix}/{name}")
            self.fs.rm_file(f"{prefix}/{UPLOAD_MARK}")
            self.fs.invalidate_cache(prefix)
        log.debug("uploaded %d files of %s", len(names) + 1, self.url(video_id))

    def _ours(self, prefix: str, present: set[str]) -> tuple[bool, set[str]]:
        """Whether a video prefix is streamvid's (its manifest or upload mark names streamvid's format), and
        the files its manifest lists (plain relative names only: those are all an upload may remove)."""
        ours, listed = False, set()
        for name in (MANIFEST, UPLOAD_MARK):
            if name not in present:
                continue
            try:
                doc = json.loads(self.fs.cat_file(f"{prefix}/{name}"))
            except ValueError:
                continue
            if not isinstance(doc, dict) or doc.get("format") != FORMAT_NAME:
                continue
            ours = True
            if name == MANIFEST and isinstance(doc.get("files"), dict):
                listed = {n for n in doc["files"] if isinstance(n, str) and _PLAIN_NAME.fullmatch(n)
                          and n not in (MANIFEST, UPLOAD_MARK)}
        return ours, listed

    def _local_fs(self) -> bool:
        protocol = self.fs.protocol if isinstance(self.fs.protocol, tuple) else (self.fs.protocol,)
        return bool({"file", "local"} & set(protocol))

    # ---- a reader ------------------------------------------------------------------------
    def checkout(self, video_id: str, *, lazy: bool = False) -> CopyLease:
        """``video_id``'s memory in the local cache, held for reading: no process evicts it until the lease
        is closed. The copy's manifest is fetched first; then every file it lists that is not there yet
        (``lazy``: none — ``lease.fetch(name)`` brings one when it is first read, as ``SavedEvents`` does,
        so a question downloads only the events it reads). Each file lands whole (a checked download
        renamed into place), so a file present in a copy is a verified one. Other unused copies may be
        evicted to keep the cache within its bound."""
        raw = self._read_remote_manifest(video_id)
        if raw is None:
            raise ObjectStoreError(self.url(video_id), f"no saved memory there ({MANIFEST} is missing: the video "
                                   "was never indexed into this store, or its upload did not finish); index it again")
        final = self.cache / f"{video_id}-{hashlib.sha256(raw).hexdigest()[:16]}"
        lease = self.copies.lease(final)
        try:
            placed = not (final / MANIFEST).is_file() and self._place_manifest(video_id, raw, final)
            files = read_manifest(final)["files"]
            missing = [] if lazy else [n for n in sorted(files) if not (final / n).is_file()]
            for name in missing:
                self._fetch_file(video_id, final, name, files[name])
            if placed or missing:
                self.copies.evict(keep=final)
        except BaseException:
            lease.close()
            raise
        lease.fetch = lambda name: self._fetch_file(video_id, final, name, files[name])
        return lease

    def local_dir(self, video_id: str) -> Path:
        """A local folder holding ``video_id``'s whole memory, downloaded into the cache unless already there.
        Not held: another download may evict it once the cache is full; ``checkout`` to read it in place."""
        with self.checkout(video_id) as lease:
            return lease.path

    def _place_manifest(self, video_id: str, raw: bytes, final: Path) -> bool:
        """Put the copy's folder in place holding only its (checked) manifest; False if another reader did."""
        self.cache.mkdir(parents=True, exist_ok=True)
        tmp = self.cache / f".{final.name}.partial-{uuid.uuid4().hex[:8]}"
        tmp.mkdir()
        try:
            (tmp / MANIFEST).write_bytes(raw)
            try:
                read_manifest(tmp)  # format, version and every name checked before any is used as a path
            except StreamvidError as exc:
                raise ObjectStoreError(self.url(video_id, MANIFEST), f"not a streamvid memory manifest ({exc})"
                                       ) from exc
            try:
                os.rename(tmp, final)
            except OSError:
                if not (final / MANIFEST).is_file():  # another reader placed it first, or a real failure
                    raise
                return False
            return True
        finally:
            shutil.rmtree(tmp, ignore_errors=True)

    def _fetch_file(self, video_id: str, final: Path, name: str, info: dict[str, Any]) -> Path:
        """Download one listed file into the copy: checked against the manifest, then renamed into place."""
        dest = final / name
        if dest.is_file():
            return dest
        url = self.url(video_id, name)
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = dest.with_name(f".{dest.name}.partial-{uuid.uuid4().hex[:8]}")
        try:
            with self._io(url, "cannot download"):
                try:
                    self.fs.get_file(self._path(video_id, name), str(tmp))
                except FileNotFoundError:
                    raise ObjectStoreError(url, f"missing (listed in {MANIFEST}); index the video again") from None
            if not file_matches(tmp, info):
                raise ObjectStoreError(url, f"damaged: {tmp.stat().st_size} bytes, not matching the size "
                                       f"({info['bytes']}) and checksum in {MANIFEST} (changed after indexing?); "
                                       "index the video again")
            os.replace(tmp, dest)
        finally:
            tmp.unlink(missing_ok=True)
        log.debug("fetched %s", url)
        return dest
