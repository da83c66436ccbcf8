"""The local cache of object-store memories: copies held under a shared lock while read, evicted
least-recently-used first once the cache is over its byte bound.

Layout under the cache root (``$STREAMVID_CACHE_DIR/objects``): ``<store hash>/<video id>-<manifest
hash>/`` is one video's memory as downloaded; ``.locks/<store hash>-<copy name>.lock`` is its lock
file (``flock``: shared while a reader holds the copy or a download fills it, exclusive to evict it;
its modification time is the copy's last use). Lock files stay (a lock file removed while another
process opens it would let two processes believe they hold it). Only folders with these names and a
manifest inside, and ``.partial-`` downloads of them, are ever removed; anything else under the root
is left alone.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import re
import shutil
import uuid
from collections.abc import Callable
from pathlib import Path

from streamvid.errors import ConfigError
from streamvid.memory.persist import MANIFEST

log = logging.getLogger("streamvid.library")

LOCKS = ".locks"
DEFAULT_MAX_BYTES = 20 * 2**30
_STORE = re.compile(r"[0-9a-f]{12}")
_COPY = re.compile(r"[0-9a-f]{8,64}-[0-9a-f]{16}")
_PARTIAL = re.compile(r"\.([0-9a-f]{8,64}-[0-9a-f]{16})\.partial-[0-9a-f]{8}")
_SIZE = re.compile(r"\s*(\d+(?:\.\d+)?)\s*([kmgt]?)i?b?\s*", re.IGNORECASE)


def parse_bytes(text: str) -> int:
    """``"20G"``, ``"512M"``, ``"1.5GiB"``, ``"1000000"`` → bytes (binary multiples). ConfigError otherwise."""
    m = _SIZE.fullmatch(str(text))
    if not m:
        raise ConfigError(f"{text!r} is not a size (e.g. 20G, 512M or a number of bytes)")
    return int(float(m.group(1)) * 1024 ** " kmgt".index(m.group(2).lower() or " "))


def max_bytes_from_env() -> int:
    """The cache bound: ``$STREAMVID_CACHE_MAX_BYTES`` (e.g. ``20G``), by default 20 GiB."""
    text = os.environ.get("STREAMVID_CACHE_MAX_BYTES", "").strip()
    return parse_bytes(text) if text else DEFAULT_MAX_BYTES


def _tree_bytes(path: Path) -> int:
    total = 0
    for folder, _, names in os.walk(path):
        for name in names:
            with contextlib.suppress(OSError):  # removed while we walk
                total += os.lstat(os.path.join(folder, name)).st_size
    return total


class CopyLease:
    """One video's memory folder held for reading: not evicted until ``close()`` (a context manager).

    ``path``: the folder. A lease over a local store folder (not a cache copy) holds no lock.
    ``fetch``: for a copy checked out lazily, ``fetch(name)`` brings one file the manifest lists into the
    folder (None: every file is there already).
    """

    def __init__(self, path: Path, fd: int | None = None) -> None:
        self.path = Path(path)
        self._fd = fd
        self.fetch: Callable[[str], Path] | None = None

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # releases the shared lock
            self._fd = None

    def __enter__(self) -> CopyLease:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        self.close()


class MemoryCache:
    """Copies under ``root`` (every store's), bounded to ``max_bytes`` by evicting unused copies."""

    def __init__(self, root: str | os.PathLike, max_bytes: int | None = None) -> None:
        self.root = Path(root)
        self.max_bytes = max_bytes_from_env() if max_bytes is None else int(max_bytes)
        if self.max_bytes < 0:
            raise ConfigError(f"the cache bound must be >= 0 bytes, got {self.max_bytes}")

    def _lock_path(self, copy: Path) -> Path:
        return self.root / LOCKS / f"{copy.parent.name}-{copy.name}.lock"

    def _open_lock(self, copy: Path) -> int:
        lock = self._lock_path(copy)
        lock.parent.mkdir(parents=True, exist_ok=True)
        return os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)

    def lease(self, copy: Path) -> CopyLease:
        """Hold ``copy`` (``<root>/<store hash>/<copy name>``, present or about to be downloaded) under a
        shared lock, and mark it used now."""
        fd = self._open_lock(copy)
        try:
            fcntl.flock(fd, fcntl.LOCK_SH)  # waits while an eviction of this copy finishes
            os.utime(fd)
        except BaseException:
            os.close(fd)
            raise
        return CopyLease(copy, fd)

    def _stores(self) -> list[Path]:
        """The per-store folders under the root (``<store hash>/``); nothing else there is the cache's."""
        if not self.root.is_dir():
            return []
        return [d for d in self.root.iterdir() if _STORE.fullmatch(d.name) and d.is_dir()]

    def copies(self) -> list[tuple[Path, int, float]]:
        """Every complete copy under the root: (folder, bytes, last use), least recently used first."""
        out = []
        for store in self._stores():
            for copy in store.iterdir():
                if _COPY.fullmatch(copy.name) and (copy / MANIFEST).is_file():
                    lock = self._lock_path(copy)
                    used = (lock if lock.exists() else copy / MANIFEST).stat().st_mtime
                    out.append((copy, _tree_bytes(copy), used))
        return sorted(out, key=lambda c: c[2])

    def _remove_unless_held(self, copy: Path, target: Path) -> bool:
        """Remove ``target`` (the copy or a partial download of it) if nobody holds ``copy``'s lock."""
        fd = self._open_lock(copy)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return False  # read or being downloaded right now
            if not target.exists():
                return False
            doomed = target.with_name(f".{copy.name}.evicted-{uuid.uuid4().hex[:8]}")
            os.rename(target, doomed)  # readers see the copy whole or absent, never half removed
            shutil.rmtree(doomed, ignore_errors=True)
            return True
        finally:
            os.close(fd)

    def evict(self, keep: Path | None = None) -> list[Path]:
        """Remove stale partial downloads, then unused copies (least recently used first, never ``keep``)
        until the cache is within its bound. Copies held by a reader stay, even over the bound.
        Returns the copies removed."""
        for store in self._stores():
            for p in store.iterdir():
                m = _PARTIAL.fullmatch(p.name)
                if m:  # a download that was killed: its copy's lock is free once nobody fetches it
                    self._remove_unless_held(store / m.group(1), p)
        copies = self.copies()
        total = sum(c[1] for c in copies)
        removed = []
        for copy, size, _ in copies:
            if total <= self.max_bytes:
                break
            if copy != keep and self._remove_unless_held(copy, copy):
                total -= size
                removed.append(copy)
        if removed:
            log.info("cache %s: evicted %d cop%s, %d bytes kept", self.root, len(removed),
                     "y" if len(removed) == 1 else "ies", total)
        return removed
