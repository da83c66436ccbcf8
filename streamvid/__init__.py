"""streamvid: a streaming video understanding agent.

Frames stream in, a vision encoder turns them into tokens, the tokens are merged and pruned
into a bounded short/long-term memory, and a Video-LLM answers questions from that memory.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

from streamvid.errors import (
    CompressionError,
    ConfigError,
    MemoryFormatError,
    MemoryInputError,
    ModelError,
    QuestionError,
    SourceError,
    StoreError,
    StreamvidError,
    WorkerStartError,
)
from streamvid.types import Answer, Caption, Citation, Event, Frame, FrameTokens

__version__ = "0.1.0"

# Heavy parts load on first use so `import streamvid` stays quick.
_LAZY = {
    "open_source": "streamvid.sources",
    "FrameSource": "streamvid.sources",
    "PushSource": "streamvid.sources",
    "TruncatedVideoWarning": "streamvid.sources",
    "AgentConfig": "streamvid.config",
    "MemoryBank": "streamvid.memory",
    "StreamAgent": "streamvid.agent",
    "load_video_llm": "streamvid.models",
    "Library": "streamvid.library",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'streamvid' has no attribute {name!r}")


__all__ = [
    "Answer", "Caption", "Citation", "CompressionError", "ConfigError", "Event", "Frame", "FrameTokens",
    "MemoryFormatError", "MemoryInputError", "ModelError", "QuestionError", "SourceError", "StoreError",
    "StreamvidError", "WorkerStartError",
    "__version__", *_LAZY,
]
