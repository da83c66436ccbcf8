"""Where the shared real model files (configs and tokenizers, no weights) live."""

from __future__ import annotations

import os
from pathlib import Path

from streamvid.errors import ModelError


def shared_models_root() -> Path:
    """$STREAMVID_SHARED_MODELS, else <repo>/../shared/models."""
    env = os.environ.get("STREAMVID_SHARED_MODELS")
    if env:
        return Path(env)
    return Path(__file__).resolve().parents[2].parent / "shared" / "models"


def shared_model_dir(name: str) -> str:
    """The folder ``name`` inside the shared models root; ModelError naming it when missing."""
    d = shared_models_root() / name
    if not (d / "config.json").is_file():
        raise ModelError(
            f"model files {d} not found: the tiny and random-weight models need the real config and "
            f"tokenizer files there (set STREAMVID_SHARED_MODELS to the folder holding {name}/)"
        )
    return str(d)
