"""Video-LLM adapters behind one protocol, and the loader that picks the family.

``load_video_llm(model)`` accepts

* ``"tiny:smolvlm" | "tiny:qwen2_5_vl" | "tiny:llava_onevision"`` — the real architecture classes
  at tiny sizes with seeded random weights, built in-process from the JSON configs in
  ``model_configs/`` (see streamvid.models.tiny);
* a local directory holding a Hugging Face model (``config.json`` names the architecture);
  with ``random_weights=True`` only its config/tokenizer files are needed and the model is
  built at real size with seeded random weights (``config_overrides`` can cut layer counts);
* a hub id (``owner/name``) found in the Hugging Face cache, or downloaded when the hub is
  reachable and ``HF_HUB_OFFLINE`` is not set. Otherwise ModelError says how to get it.

The family (adapter, processor, config recognition) comes from streamvid.models.registry, where
each adapter file registers itself. Nothing is imported from transformers or downloaded until a
model is loaded.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from huggingface_hub import constants

from streamvid.device import resolve_dtype
from streamvid.errors import ConfigError, ModelError
from streamvid.generation import GenerationStats, TextStream
from streamvid.hub import hub_reachable
from streamvid.models.base import BaseVideoLLM, VideoLLM, VisualTokens
from streamvid.models.paths import shared_model_dir, shared_models_root
from streamvid.models.registry import ModelFamily, families, family_for_config
from streamvid.models.tiny import build_tiny, tiny_files_present

# Scaled-dot-product attention (PyTorch's fused kernels: flash / memory-efficient on CUDA) in every tower and LM.
ATTENTION = "sdpa"

__all__ = [
    "BaseVideoLLM", "GenerationStats", "ModelFamily", "TextStream", "VideoLLM", "VisualTokens", "detect_family",
    "families", "load_video_llm", "model_available", "resolve_model_dir", "shared_model_dir", "shared_models_root",
]


def detect_family(config: dict[str, Any], where: str = "") -> str:
    """Adapter family name from a config.json dict (``architectures``, then ``model_type``)."""
    return family_for_config(config, where).name


def _how_to_get(model: str) -> str:
    return (f"download it with `huggingface-cli download {model}` on a machine with network access "
            f"(or `hf download {model}`), or pass a local directory with --model PATH")


# What a download fetches: configs, tokenizer/processor files and safetensors weights (no duplicate
# .bin/.onnx/.gguf exports).
WEIGHT_FILES = ["*.json", "*.safetensors", "*.txt", "*.model", "*.jinja", "*.tiktoken"]


def model_available(model: str, timeout: float = 3.0) -> bool:
    """Whether ``load_video_llm(model)`` can get its weights now: a tiny model whose shared files are
    present, a local model directory, a hub id in the cache, or a hub id while the hub is reachable
    and HF_HUB_OFFLINE is unset. Quick (one bounded TCP connect at most); never downloads."""
    if model.startswith("tiny:"):
        return tiny_files_present(model[5:])
    if (Path(model).expanduser() / "config.json").is_file():
        return True
    if len(model.split("/")) != 2:
        return False
    from huggingface_hub import snapshot_download

    try:
        snapshot_download(model, local_files_only=True)
        return True
    except Exception:
        return not constants.HF_HUB_OFFLINE and hub_reachable(timeout)


def resolve_model_dir(model: str) -> Path:
    """A local directory for ``model``: the path itself, else the hub id's cached snapshot, else a
    download when the hub is reachable. ModelError (naming the model and how to get it) otherwise."""
    p = Path(model).expanduser()
    if p.is_dir():
        if not (p / "config.json").is_file():
            raise ModelError(f"{p} is a directory without config.json; it is not a Hugging Face model folder")
        return p
    parts = model.split("/")
    if len(parts) != 2 or not all(parts):
        raise ModelError(f"{model!r} is neither a model directory nor a hub id like 'owner/name'")
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(model, local_files_only=True))
    except Exception as cached_err:  # not in the cache (any flavour of hub error)
        if constants.HF_HUB_OFFLINE:
            raise ModelError(f"model {model} is not in the Hugging Face cache and HF_HUB_OFFLINE is set; "
                             f"{_how_to_get(model)}") from cached_err
    if not hub_reachable():
        raise ModelError(f"model {model} is not in the Hugging Face cache and the hub is unreachable; "
                         f"{_how_to_get(model)}")
    try:
        return Path(snapshot_download(model, allow_patterns=WEIGHT_FILES))
    except Exception as err:
        raise ModelError(f"could not download model {model}: {err}; {_how_to_get(model)}") from err


def _set_dotted(config: Any, key: str, value: Any) -> None:
    obj = config
    *path, leaf = key.split(".")
    for part in path:
        if not hasattr(obj, part):
            raise ConfigError(f"config override {key!r}: the config has no {part!r}")
        obj = getattr(obj, part)
    if not hasattr(obj, leaf):
        raise ConfigError(f"config override {key!r}: the config has no {leaf!r}")
    setattr(obj, leaf, value)
    # Per-layer lists must match a changed layer count.
    if leaf == "num_hidden_layers" and isinstance(getattr(obj, "layer_types", None), list):
        obj.layer_types = obj.layer_types[:value] + obj.layer_types[-1:] * max(0, value - len(obj.layer_types))


def _from_config(config: Any, seed: int, dtype: torch.dtype) -> Any:
    from transformers import AutoModelForImageTextToText
    from transformers.initialization import no_init_weights

    # Seeded on a private RNG state so that building a model never disturbs the caller's. Modules
    # are built without their own init, then the model's init runs once: 3× quicker at real size.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        with no_init_weights():
            net = AutoModelForImageTextToText.from_config(config, dtype=dtype, attn_implementation=ATTENTION)
        net.init_weights()
    return net


def load_video_llm(
    model: str,
    device: str = "cpu",
    dtype: str | torch.dtype = "float32",
    seed: int = 0,
    *,
    random_weights: bool = False,
    config_overrides: dict[str, Any] | None = None,
    frame_hw: tuple[int, int] | None = None,
    batch_size: int | None = None,
) -> BaseVideoLLM:
    """Load a Video-LLM adapter (see the module docstring for what ``model`` may be).

    random_weights:   build from the folder's config with seeded random weights (no weight files needed)
    config_overrides: {"text_config.num_hidden_layers": 2, "vision_config.depth": 1, ...}, set on the
                      loaded config before building (random_weights only)
    frame_hw:         Qwen2.5-VL's fixed frame size (multiples of 28); default 336×448, tiny 112×112
    dtype:            a name, a torch.dtype, or "auto" (streamvid.device.resolve_dtype: bf16 on CUDA and on
                      CPUs with native bf16, else fp32)
    batch_size:       frames per vision-tower call in frame_tokens; None: streamvid.device.default_batch_size
    """
    torch_dtype = resolve_dtype(dtype, device)
    if not isinstance(model, str) or not model:
        raise ModelError(f"model must be a hub id, a directory or 'tiny:<family>', got {model!r}")
    if config_overrides and not random_weights and not model.startswith("tiny:"):
        raise ConfigError("config_overrides only apply with random_weights=True or a tiny: model")

    if model.startswith("tiny:"):
        family, config, processor, options = build_tiny(model.split(":", 1)[1])
        for key, value in (config_overrides or {}).items():
            _set_dotted(config, key, value)
        net = _from_config(config, seed, torch_dtype)
    else:
        model_dir = resolve_model_dir(model)
        with open(model_dir / "config.json", encoding="utf-8") as f:
            family = family_for_config(json.load(f), str(model_dir))
        from transformers import AutoConfig, AutoModelForImageTextToText

        options = {}
        try:
            processor = family.load_processor(model_dir)
            if random_weights:
                config = AutoConfig.from_pretrained(model_dir)
                for key, value in (config_overrides or {}).items():
                    _set_dotted(config, key, value)
                net = _from_config(config, seed, torch_dtype)
            else:
                net = AutoModelForImageTextToText.from_pretrained(model_dir, dtype=torch_dtype,
                                                                  attn_implementation=ATTENTION)
        except (OSError, ValueError, KeyError) as err:
            hint = "" if random_weights else " (only config/tokenizer files? pass random_weights=True)"
            raise ModelError(f"cannot load model {model} from {model_dir}: {err}{hint}") from err
    if frame_hw is not None and "frame_hw" in family.adapter_options:
        options["frame_hw"] = frame_hw
    return family.adapter(net.to(device=device, dtype=torch_dtype), processor, name=model, device=device,
                          dtype=torch_dtype, batch_size=batch_size, **options)
