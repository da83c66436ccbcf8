"""API errors in OpenAI's JSON shape: ``{"error": {"message", "type", "param", "code"}}``."""

from __future__ import annotations

from typing import Any

from streamvid.errors import (
    ConfigError,
    MemoryFormatError,
    MemoryInputError,
    ModelError,
    QuestionError,
    SourceError,
    StreamvidError,
)


class APIError(Exception):
    """An error answered with ``status`` and OpenAI's error body."""

    def __init__(self, status: int, message: str, *, type: str = "invalid_request_error", code: str | None = None,
                 param: str | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.type, self.code, self.param = status, message, type, code, param

    def body(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}


def not_found(what: str, ident: str, param: str | None = None, code: str | None = None) -> APIError:
    return APIError(404, f"no {what} {ident!r}", code=code or f"{what.replace(' ', '_')}_not_found", param=param)


def from_streamvid(exc: StreamvidError, param: str | None = None) -> APIError:
    """The HTTP error for an engine error: bad input is the client's (400), a model that cannot load is ours."""
    if isinstance(exc, ModelError):
        return APIError(500, str(exc), type="server_error", code="model_unavailable", param=param)
    code = {SourceError: "invalid_source", QuestionError: "invalid_question", ConfigError: "invalid_setting",
            MemoryFormatError: "invalid_memory", MemoryInputError: "invalid_input"}.get(type(exc), "invalid_request")
    return APIError(400, str(exc), code=code, param=param)
