"""AgentConfig: every knob of the pipeline in one dataclass, plus the named presets."""

from __future__ import annotations

import dataclasses
import sys
from dataclasses import dataclass
from typing import Any

from streamvid.errors import ConfigError


@dataclass
class AgentConfig:
    """Settings for one StreamAgent. Presets fill these in; keyword overrides replace them."""

    preset: str = "tiny-random"
    # What turns frames into memory and answers: a name registered in streamvid.backends.registry
    # ("vlm": a Video-LLM over stored vision tokens; "offline": perception captions + a text LLM).
    backend: str = "vlm"
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
    batch_frames: int = 8  # frames per batch through the encoders when ingesting a file
    frame_size: int | None = None  # short side to resize to on decode; None keeps the source size
    # Ingestion runs as stages on their own threads (decode, pre-gate, device, compress; memory writes
    # on the ingesting thread) joined by queues of at most queue_batches batches; False: one thread.
    staged_ingest: bool = True
    queue_batches: int = 2

    # Compression.
    pregate: bool = True  # drop frames with no block-wise pixel change before any encoder (compress/pregate.py)
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
    # Always start a new event when a kept frame's surprise (1 − cos to the open event's mean key) is above
    # this, once the open event has segment_min_frames frames; None: the adaptive threshold alone decides.
    segment_hard_surprise: float | None = None

    # Answering.
    read_tokens: int = 1024  # token budget of the assembled prompt
    search_k: int = 5
    max_new_tokens: int = 128

    # Captions (one per closed event, from its stored tokens).
    captions: bool = True
    caption_tokens: int = 32
    caption_similar: float = 0.95  # stay silent when the event's key has cosine >= this with the last caption's
    caption_min_gap_s: float = 0.0  # source seconds between captions at least (rate limit)

    def replace(self, **overrides: Any) -> AgentConfig:
        """A copy with the named fields replaced; an unknown name raises ConfigError."""
        names = {f.name for f in dataclasses.fields(self)}
        unknown = sorted(set(overrides) - names)
        if unknown:
            raise ConfigError(f"unknown setting(s) {', '.join(unknown)}; known: {', '.join(sorted(names))}")
        return dataclasses.replace(self, **overrides)


PRESETS: dict[str, dict[str, Any]] = {
    # The untrained tiny encoder scores frames of one scene ~0.995 alike: gate only near-exact repeats.
    "tiny-random": dict(model="tiny:smolvlm", clip_model="tiny", clip_pretrained="", tau_dup=0.999, tokens_per_frame=16,
                        event_tokens=32, max_ram_tokens=4096, read_tokens=512, max_new_tokens=16),
    "offline": dict(backend="offline", model="offline", clip_model="", clip_pretrained="", fps=1.0, tau_dup=0.97,
                    tokens_per_frame=1, event_tokens=16, segment_min_frames=1, segment_hard_surprise=0.3,
                    max_ram_tokens=4096,
                    read_tokens=64, search_k=5, max_new_tokens=64),
    "smolvlm2-500m": dict(model="HuggingFaceTB/SmolVLM2-500M-Video-Instruct", clip_model="ViT-B-32",
                          clip_pretrained="laion2b_s34b_b79k"),
    "qwen2.5-vl-3b": dict(model="Qwen/Qwen2.5-VL-3B-Instruct", clip_model="ViT-B-16",
                          clip_pretrained="laion2b_s34b_b88k", dtype="bfloat16"),
    "qwen2.5-vl-7b": dict(model="Qwen/Qwen2.5-VL-7B-Instruct", clip_model="ViT-B-16",
                          clip_pretrained="laion2b_s34b_b88k", dtype="bfloat16"),
    "llava-ov-7b": dict(model="llava-hf/llava-onevision-qwen2-7b-ov-hf", clip_model="ViT-B-16",
                        clip_pretrained="laion2b_s34b_b88k", dtype="bfloat16"),
}


AUTO_CHOICE = "smolvlm2-500m"


def resolve_auto(model: str | None = None) -> str:
    """The preset ``auto`` stands for: the VLM preset when its weights are cached or reachable, else
    ``offline``. Quick: one bounded connection attempt at most, none under HF_HUB_OFFLINE."""
    from streamvid.models import model_available

    if model_available(model or PRESETS[AUTO_CHOICE]["model"]):
        return AUTO_CHOICE
    print(f"streamvid: {PRESETS[AUTO_CHOICE]['model']} is not cached and the hub is unreachable; "
          "using the offline preset.", file=sys.stderr)
    return "offline"


def preset_config(name: str, **overrides: Any) -> AgentConfig:
    """The named preset's AgentConfig with ``overrides`` applied (``auto`` resolves first)."""
    if name == "auto":
        name = resolve_auto(overrides.get("model"))
    if name not in PRESETS:
        raise ConfigError(f"unknown preset {name!r}; choose one of: auto, {', '.join(PRESETS)}")
    return AgentConfig(preset=name, **PRESETS[name]).replace(**overrides)
