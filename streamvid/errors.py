"""Exceptions raised by streamvid. Every one derives from StreamvidError."""

from __future__ import annotations


class StreamvidError(Exception):
    """Base class of every error streamvid raises on purpose."""


class SourceError(StreamvidError):
    """A frame source cannot be opened or read. The message names the source and the cause."""

    def __init__(self, source: object, cause: str) -> None:
        self.source = str(source)
        self.cause = cause
        super().__init__(f"{self.source}: {cause}")


class ModelError(StreamvidError):
    """A model cannot be built or loaded (missing weights, unknown architecture)."""


class MemoryFormatError(StreamvidError):
    """A saved memory directory is damaged or was written by an incompatible version."""


class MemoryFolderError(MemoryFormatError):
    """A folder cannot take a saved memory: it holds files streamvid did not write (nothing is deleted)."""


class MemoryInputError(StreamvidError):
    """A frame, key or event id handed to the memory is malformed (wrong shape, time going back, unknown id)."""


class CompressionError(StreamvidError, ValueError):
    """A compression function got tensors of the wrong shape, dtype or device, or a bad budget/threshold."""


class ConfigError(StreamvidError):
    """An unknown preset or a bad configuration value."""


class QuestionError(StreamvidError):
    """A question that cannot be answered as asked (empty, too long, not text)."""


class StoreError(StreamvidError):
    """A library store cannot be opened, written or read (bad URI, missing pymilvus, wrong key width)."""


class WorkerStartError(StreamvidError):
    """A library worker could not start (its models or its store folder failed to load): every worker would
    fail the same way, so the run stops; files indexed before it stay in the store. Names the cause."""


class ObjectStoreError(StoreError):
    """An object-store path of a library (``s3://…``, any fsspec URL) cannot be reached, written or read:
    unreachable endpoint, missing credentials or bucket, a missing or damaged object. Names the URL and the cause."""

    def __init__(self, url: str, cause: str) -> None:
        self.url = url
        self.cause = cause
        super().__init__(f"{url}: {cause}")
