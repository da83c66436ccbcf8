"""Tiny, randomly initialised builds of the real architecture classes (the ``tiny:<name>`` models).

Each is a JSON file ``model_configs/tiny-<name>.json`` shipped inside the package (as open_clip's
model_configs/):

    family     the registered family (streamvid.models.registry) whose adapter wraps it
    processor  {"from": a folder of the shared model files (real tokenizer and processor),
                "kwargs": for the family's load_processor, "image_processor": attributes to set}
    adapter    extra adapter options (e.g. Qwen2.5-VL's "frame_hw")
    config     the Hugging Face config (``model_type`` and its fields), built with seeded random weights

Built in-process, seeded, in a second or two; their text output is meaningless: they serve
plumbing and tests. Adding a tiny model is adding one JSON file.
"""

from __future__ import annotations

import json
from importlib import resources
from typing import Any

from streamvid.errors import ModelError
from streamvid.models.paths import shared_model_dir, shared_models_root
from streamvid.models.registry import ModelFamily, get_family

_PREFIX = "tiny-"


def _configs() -> Any:
    return resources.files("streamvid.models") / "model_configs"


def tiny_names() -> list[str]:
    """The tiny models shipped: ["llava_onevision", "qwen2_5_vl", "smolvlm"] (load as ``tiny:<name>``)."""
    return sorted(p.name[len(_PREFIX):-len(".json")] for p in _configs().iterdir()
                  if p.name.startswith(_PREFIX) and p.name.endswith(".json"))


def tiny_spec(name: str) -> dict[str, Any]:
    """The parsed ``tiny-<name>.json``; ModelError naming the tiny models there are otherwise."""
    path = _configs() / f"{_PREFIX}{name}.json"
    if not name or "/" in name or not path.is_file():
        raise ModelError(f"unknown tiny model 'tiny:{name}'; choose one of "
                         f"{', '.join('tiny:' + n for n in tiny_names())}")
    return json.loads(path.read_text(encoding="utf-8"))


def tiny_files_present(name: str) -> bool:
    """Whether ``tiny:<name>`` exists and the shared model files it needs are here (cheap; loads nothing)."""
    try:
        folder = tiny_spec(name)["processor"]["from"]
        return (shared_models_root() / folder / "config.json").is_file()
    except ModelError:  # no such tiny model, or STREAMVID_SHARED is not set
        return False


def build_tiny(name: str) -> tuple[ModelFamily, Any, Any, dict[str, Any]]:
    """``tiny:<name>`` → (family, Hugging Face config, processor, adapter options)."""
    from transformers import AutoConfig

    spec = tiny_spec(name)
    family = get_family(spec["family"])
    proc_spec = spec["processor"]
    processor = family.load_processor(shared_model_dir(proc_spec["from"]), **proc_spec.get("kwargs", {}))
    for key, value in proc_spec.get("image_processor", {}).items():
        setattr(processor.image_processor, key, value)
    fields = dict(spec["config"])
    config = AutoConfig.for_model(fields.pop("model_type"), **fields)
    options = {k: tuple(v) if isinstance(v, list) else v for k, v in spec.get("adapter", {}).items()}
    return family, config, processor, options
