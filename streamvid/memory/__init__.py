"""Hierarchical memory: short-term frames, long-term events, an on-disk archive, a FAISS key index."""

from streamvid.memory.archive import EventArchive
from streamvid.memory.bank import MemoryBank, MemoryInputError, MemorySnapshot
from streamvid.memory.index import KeyIndex, measure_recall
from streamvid.memory.short_term import ShortTermFrame, ShortTermMemory

__all__ = [
    "EventArchive", "KeyIndex", "MemoryBank", "MemoryInputError", "MemorySnapshot", "ShortTermFrame",
    "ShortTermMemory", "measure_recall",
]
