"""The model-family registry: each adapter file registers its family when imported.

A family says how to recognise its ``config.json`` (architectures, model_type), which adapter
class wraps it, how to load its processor, and which adapter options it takes. Adding a family
is one new file in this package that calls ``register_family`` (as vLLM's loader registries do);
``families()`` imports every module of the package once, so nothing else needs to list it.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from streamvid.errors import ModelError

# Modules of streamvid.models that are infrastructure, not families.
_NOT_FAMILIES = {"base", "registry", "paths", "tiny"}


def auto_processor(model_dir: str | Path, **kwargs: Any) -> Any:
    """The folder's own processor (transformers.AutoProcessor)."""
    from transformers import AutoProcessor

    return AutoProcessor.from_pretrained(model_dir, **kwargs)


@dataclass(frozen=True)
class ModelFamily:
    """One Video-LLM family.

    name:            the family's name ("smolvlm"); a tiny config names its family by it
    adapter:         the BaseVideoLLM subclass wrapping the Hugging Face model
    architectures:   config.json ``architectures`` entries that select this family
    model_types:     config.json ``model_type`` values that select it (when no architecture matched)
    load_processor:  (model_dir, **kwargs) → processor; kwargs come from a tiny config's "processor"
    adapter_options: keyword options the adapter takes beyond the common ones (e.g. "frame_hw")
    """

    name: str
    adapter: type
    architectures: tuple[str, ...]
    model_types: tuple[str, ...]
    load_processor: Callable[..., Any] = auto_processor
    adapter_options: tuple[str, ...] = ()


_FAMILIES: dict[str, ModelFamily] = {}
_discovered = False


def register_family(family: ModelFamily) -> ModelFamily:
    """Add ``family`` (called at import by its adapter file). A second family of the same name is an error."""
    known = _FAMILIES.get(family.name)
    if known is not None and known != family:
        raise ModelError(f"model family {family.name!r} is registered twice")
    _FAMILIES[family.name] = family
    return family


def families() -> dict[str, ModelFamily]:
    """Every registered family by name (importing each module of streamvid.models once)."""
    global _discovered
    if not _discovered:
        package = importlib.import_module("streamvid.models")
        for info in pkgutil.iter_modules(package.__path__):
            if info.name not in _NOT_FAMILIES and not info.name.startswith("_"):
                importlib.import_module(f"streamvid.models.{info.name}")
        _discovered = True
    return dict(_FAMILIES)


def get_family(name: str) -> ModelFamily:
    """The family called ``name``; ModelError listing the known ones otherwise."""
    found = families().get(name)
    if found is None:
        raise ModelError(f"unknown model family {name!r}; known: {', '.join(sorted(families()))}")
    return found


def family_for_config(config: dict[str, Any], where: str = "") -> ModelFamily:
    """The family of a config.json dict: its ``architectures`` first, then its ``model_type``."""
    known = families().values()
    for arch in config.get("architectures") or []:
        for fam in known:
            if arch in fam.architectures:
                return fam
    for fam in known:
        if config.get("model_type") in fam.model_types:
            return fam
    found = ", ".join(config.get("architectures") or []) or config.get("model_type") or "nothing"
    supported = ", ".join(a for fam in known for a in fam.architectures)
    raise ModelError(f"unsupported architecture {found}{' in ' + where if where else ''}; "
                     f"streamvid supports {supported}")
