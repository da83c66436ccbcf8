"""A video library across workers and machines: Ray actors index files, Milvus holds the keys.

Needs the ``scale`` extra: ``pip install 'streamvid[scale]'`` (ray, pymilvus, milvus-lite).
"""

from streamvid.errors import ObjectStoreError, StoreError
from streamvid.library.library import Library, LibraryAnswer, VideoCitation
from streamvid.library.store import KeyHit, MilvusStore, VideoRecord
from streamvid.library.workers import IndexReport, Progress, content_id, expand_paths, index_library

__all__ = [
    "IndexReport", "KeyHit", "Library", "LibraryAnswer", "MilvusStore", "ObjectStoreError", "Progress", "StoreError",
    "VideoCitation", "VideoRecord", "content_id", "expand_paths", "index_library",
]
