"""AgentConfig: every knob of the pipeline in one dataclass, plus the named presets."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from streamvid.errors import ConfigError


@dataclass
class AgentConfig:
    """Settings for one StreamAgent. Presets fill these in; keyword overrides replace them."""

    preset: str = "tiny-random"
    # Video-LLM: adapter family + hub id or local directory ("tiny:<family>" builds a tiny one).
    model: str = "tiny:smolvlm"
    # Retrieval encoder: open_clip model name + pretrained tag (or checkpoint path; "" = random init).
    clip_model: str = "ViT-B-32"
    clip_pretrained: str = "laion2b_s34b_b79k"
    device: str = "cpu"
    dtype: str = "float32"
    seed: int = 0

    # Sampling.
    fps: float = 2.0
    frame_size: int | None = None  # short side to resize to on decode; None keeps the source size

    # Compression.
    tau_dup: float = 0.98  # drop a frame whose key has cosine >= tau_dup with the last kept one
    tau_temporal: float = 0.9  # drop a token whose cosine with the same grid cell in the last kept frame >= this
    tokens_per_frame: int = 32  # spatial-merge budget per kept frame

    # Memory.
    short_term_frames: int = 16
    event_tokens: int = 64  # m: tokens an event is consolidated to
    max_ram_tokens: int = 16384
    archive_dir: str | None = None  # None: a temporary directory owned by the memory
    archive_max_bytes: int = 2 * 1024**3
    segment_min_frames: int = 2
    segment_max_frames: int = 64
    segment_z: float = 2.0
    segment_window: int = 32

    # Answering.
    read_tokens: int = 1024  # token budget of the assembled prompt
    search_k: int = 5
    max_new_tokens: int = 128

    extra: dict[str, Any] = field(default_factory=dict)

    def replace(self, **overrides: Any) -> AgentConfig:
        """A copy with the named fields replaced; an unknown name raises ConfigError."""
        names = {f.name for f in dataclasses.fields(self)}
        unknown = sorted(set(overrides) - names)
        if unknown:
            raise ConfigError(f"unknown setting(s) {', '.join(unknown)}; known: {', '.join(sorted(names))}")
        return dataclasses.replace(self, **overrides)


PRESETS: dict[str, dict[str, Any]] = {
    "tiny-random": dict(model="tiny:smolvlm", clip_model="tiny", clip_pretrained="", tokens_per_frame=16,
                        event_tokens=32, max_ram_tokens=4096, read_tokens=512, max_new_tokens=16),
    "smolvlm2-500m": dict(model="HuggingFaceTB/SmolVLM2-500M-Video-Instruct", clip_model="ViT-B-32",
                          clip_pretrained="laion2b_s34b_b79k"),
    "qwen2.5-vl-3b": dict(model="Qwen/Qwen2.5-VL-3B-Instruct", clip_model="ViT-B-16",
                          clip_pretrained="laion2b_s34b_b88k", dtype="bfloat16"),
    "qwen2.5-vl-7b": dict(model="Qwen/Qwen2.5-VL-7B-Instruct", clip_model="ViT-B-16",
                          clip_pretrained="laion2b_s34b_b88k", dtype="bfloat16"),
    "llava-ov-7b": dict(model="llava-hf/llava-onevision-qwen2-7b-ov-hf", clip_model="ViT-B-16",
                        clip_pretrained="laion2b_s34b_b88k", dtype="bfloat16"),
}


def preset_config(name: str, **overrides: Any) -> AgentConfig:
    """The named preset's AgentConfig with ``overrides`` applied."""
    if name not in PRESETS:
        raise ConfigError(f"unknown preset {name!r}; choose one of: {', '.join(PRESETS)}")
    return AgentConfig(preset=name, **PRESETS[name]).replace(**overrides)
