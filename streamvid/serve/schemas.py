"""Request bodies of the API (pydantic), and the OpenAI-shaped payloads it returns."""

from __future__ import annotations

import time
import uuid
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from streamvid.types import Answer, Citation, format_span


class WatchCreate(BaseModel):
    """A standing query. threshold: key cosine to pass (None: the preset's default); verify: also ask the
    answering model yes/no; backfill: also score the events already in memory; stream: answer with the
    match stream itself (server-sent events) instead of the watch's JSON, and remove the watch when it ends."""

    model_config = ConfigDict(extra="forbid")
    query: str = Field(min_length=1, max_length=500)
    threshold: float | None = Field(default=None, ge=-1.0, le=1.0)
    verify: bool = True
    backfill: bool = False
    stream: bool = False


class SessionCreate(BaseModel):
    """source: a file path, an http(s)/rtsp URL, or "push" (frames come by POST …/frames)."""

    model_config = ConfigDict(extra="forbid")
    source: str = Field(default="push", min_length=1)
    fps: float | None = Field(default=None, gt=0)
    preset: str | None = None
    memory: str | None = Field(default=None, description="start from a memory folder saved earlier")
    max_ram_tokens: int | None = Field(default=None, ge=1)
    watches: list[WatchCreate] = Field(default_factory=list, max_length=32)


class MemorySave(BaseModel):
    model_config = ConfigDict(extra="forbid")
    path: str = Field(min_length=1)


class TextPart(BaseModel):
    model_config = ConfigDict(extra="allow")
    type: str
    text: str | None = None


class ChatMessage(BaseModel):
    """An OpenAI chat message. ``citations`` on an assistant message (as this server returns them) tell
    the next answer which moments the conversation was about."""

    model_config = ConfigDict(extra="allow")
    role: Literal["system", "developer", "user", "assistant", "tool", "function"]
    content: str | list[TextPart] | None = None
    citations: list[dict[str, Any]] | None = None


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="allow")
    include_usage: bool = False


class ChatRequest(BaseModel):
    """The OpenAI chat-completions request; parameters this server cannot honour are refused by name."""

    model_config = ConfigDict(extra="allow")
    model: str
    messages: list[ChatMessage] = Field(min_length=1)
    stream: bool = False
    stream_options: StreamOptions | None = None
    max_tokens: int | None = Field(default=None, ge=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)
    temperature: float | None = Field(default=None, ge=0.0, le=2.0)
    top_p: float | None = Field(default=None, gt=0.0, le=1.0)
    n: int | None = Field(default=None, ge=1)
    stop: str | list[str] | None = None
    tools: list[Any] | None = None


def citation_dict(c: Citation) -> dict[str, Any]:
    return {"event_id": c.event_id, "t_start": c.t_start, "t_end": c.t_end, "label": format_span(c.t_start, c.t_end)}


def completion_id() -> str:
    return "chatcmpl-" + uuid.uuid4().hex[:24]


def usage(answer: Answer) -> dict[str, int]:
    prompt = int(answer.timings.get("prompt_tokens", 0))
    completion = int(answer.timings.get("new_tokens", 0))
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


def finish_reason(answer: Answer, max_new_tokens: int) -> str:
    return "length" if answer.timings.get("new_tokens", 0) >= max_new_tokens else "stop"


def completion(cid: str, model: str, answer: Answer, max_new_tokens: int) -> dict[str, Any]:
    citations = [citation_dict(c) for c in answer.citations]
    return {
        "id": cid, "object": "chat.completion", "created": int(time.time()), "model": model,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": answer.text, "citations": citations},
                     "finish_reason": finish_reason(answer, max_new_tokens), "logprobs": None}],
        "usage": usage(answer), "citations": citations, "timings": answer.timings,
    }


def chunk(cid: str, model: str, created: int, delta: dict[str, Any], finish: str | None = None,
          **extra: Any) -> dict[str, Any]:
    return {"id": cid, "object": "chat.completion.chunk", "created": created, "model": model,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}], **extra}
