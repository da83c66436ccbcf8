"""API errors in OpenAI's JSON shape: ``{"error": {"message", "type", "param", "code"}}``."""

from __future__ import annotations

from typing import Any

from streamvid.errors import (
    ConfigError,
    MemoryFolderError,
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
    """The HTTP error for an engine error: bad input is the client's (400), a folder that cannot take a
    memory a conflict (409), a model that cannot load ours (500)."""
    if isinstance(exc, ModelError):
        return APIError(500, str(exc), type="server_error", code="model_unavailable", param=param)
    if isinstance(exc, MemoryFolderError):
        return APIError(409, str(exc), code="memory_folder_refused", param=param)
    codes = ((SourceError, "invalid_source"), (QuestionError, "invalid_question"), (ConfigError, "invalid_setting"),
             (MemoryFormatError, "invalid_memory"), (MemoryInputError, "invalid_input"))
    code = next((c for cls, c in codes if isinstance(exc, cls)), "invalid_request")
    return APIError(400, str(exc), code=code, param=param)
