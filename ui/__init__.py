"""streamvid's browser app (gradio): a live webcam assistant and video-file QA.

``streamvid ui`` and ``python -m streamvid_ui`` call ``streamvid_ui.app.launch``.
"""

from __future__ import annotations

from typing import Any

__all__ = ["StreamvidApp", "build_app", "launch"]


def __getattr__(name: str) -> Any:
    # gradio is heavy; import it only when the app is actually wanted.
    if name in __all__:
        from streamvid_ui import app

        return getattr(app, name)
    raise AttributeError(f"module 'streamvid_ui' has no attribute {name!r}")
