"""The server's settings: where it listens, the key it requires, and its limits."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from streamvid.errors import ConfigError


@dataclass
class ServeSettings:
    """Settings for ``create_app`` and ``streamvid serve``.

    api_key:          when set, every /v1 request needs ``Authorization: Bearer <api_key>``
    preset:           the preset of sessions that name none
    overrides:        AgentConfig overrides for every session (e.g. ``device``)
    max_sessions:     sessions open at once; one more is refused with HTTP 429
    max_upload_bytes: largest frame body accepted (HTTP 413 above)
    max_frame_pixels: largest decoded frame, width × height (HTTP 413 above)
    session_ram_tokens: each session's memory budget (``max_ram_tokens``); a session may ask for less
    session_archive_bytes: each session's on-disk archive limit
    files_root:       when set, file sources and memory folders must lie inside it; None: any path
    max_new_tokens:   most tokens an answer may ask for (``max_tokens``)
    """

    host: str = "127.0.0.1"
    port: int = 8000
    preset: str = "auto"
    api_key: str | None = None
    overrides: dict[str, Any] = field(default_factory=dict)
    max_sessions: int = 32
    max_upload_bytes: int = 8 * 1024 * 1024
    max_frame_pixels: int = 4096 * 4096
    session_ram_tokens: int = 16384
    session_archive_bytes: int = 512 * 1024 * 1024
    files_root: str | None = None
    max_new_tokens: int = 1024
    max_fps: float = 30.0

    def __post_init__(self) -> None:
        for name in ("max_sessions", "max_upload_bytes", "max_frame_pixels", "session_ram_tokens",
                     "session_archive_bytes", "max_new_tokens"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"serve setting {name} must be an int >= 1, got {value!r}")
        if not 0 < self.port < 65536:
            raise ConfigError(f"--port must be between 1 and 65535, got {self.port}")
        if self.api_key is not None and not self.api_key.strip():
            raise ConfigError("the API key is empty; give a non-empty --api-key or unset STREAMVID_API_KEY")
