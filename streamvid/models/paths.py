"""Where the shared real model files (configs and tokenizers, no weights) live."""

from __future__ import annotations

import os
from pathlib import Path

from streamvid.errors import ModelError


def shared_models_root() -> Path:
    """$STREAMVID_SHARED_MODELS, else $STREAMVID_SHARED/models; ModelError when neither is set."""
    env = os.environ.get("STREAMVID_SHARED_MODELS")
    if env:
        return Path(env)
    shared = os.environ.get("STREAMVID_SHARED")
    if shared:
        return Path(shared) / "models"
    raise ModelError("the tiny and random-weight models need the shared model files: set STREAMVID_SHARED to the "
                     "folder holding models/ (e.g. STREAMVID_SHARED=../shared), or STREAMVID_SHARED_MODELS")


def shared_model_dir(name: str) -> str:
    """The folder ``name`` inside the shared models root; ModelError naming it when missing."""
    d = shared_models_root() / name
    if not (d / "config.json").is_file():
        raise ModelError(
            f"model files {d} not found: the tiny and random-weight models need the real config and "
            f"tokenizer files there (set STREAMVID_SHARED to the folder holding models/{name}/)"
        )
    return str(d)
