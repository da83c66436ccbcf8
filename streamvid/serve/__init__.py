"""``streamvid serve``: an OpenAI-compatible HTTP API over live video sessions, with standing watches.

``create_app(settings)`` builds the FastAPI app; ``ServeSettings`` holds its limits. The watch logic
(``streamvid.serve.watches``) needs no web framework: ``streamvid watch`` uses it too. See
docs/API.md for the endpoints.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from streamvid.serve.settings import ServeSettings

if TYPE_CHECKING:
    from fastapi import FastAPI


def create_app(settings: ServeSettings | None = None, **kwargs: Any) -> FastAPI:
    """The API app (FastAPI). Models load on the first session of each preset, or with ``preload``."""
    from streamvid.serve.app import create_app as _create

    return _create(settings, **kwargs)


__all__ = ["ServeSettings", "create_app"]
