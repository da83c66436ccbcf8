"""AgentConfig: every knob of the pipeline in one dataclass, plus the named presets.

``AgentConfig.__post_init__`` is the one place settings are checked and normalised (dtype
aliases, device names, numbers); a bad value raises ConfigError naming the field. The small
``check_*`` helpers below are the same checks for the APIs that take a setting on its own
(``open_source(fps=…)``, ``ask(max_new_tokens=…)``).
"""

from __future__ import annotations

import dataclasses
import logging
import math
import numbers
import os
import re
from dataclasses import dataclass
from typing import Any

from streamvid.errors import ConfigError

log = logging.getLogger(__name__)

# The one dtype map: accepted names → the canonical torch dtype name (``getattr(torch, name)``); "auto" is
# resolved per device by streamvid.device.resolve_dtype.
DTYPES = {"float32": "float32", "fp32": "float32", "float": "float32",
          "bfloat16": "bfloat16", "bf16": "bfloat16",
          "float16": "float16", "fp16": "float16", "half": "float16", "auto": "auto"}
_DEVICE = re.compile(r"^(cpu|mps|meta|(cuda|xpu)(:\d+)?)$")
MAX_FRAME_SIDE = 8192  # default bound on each side of a delivered frame; STREAMVID_MAX_FRAME_SIDE overrides it
MAX_NEW_TOKENS = 4096  # the most tokens one answer or caption may generate
MAX_TEMPERATURE = 10.0
# The memory numbers an event's frames in 15-bit slots below its text-key slots (memory/bank.py).
MAX_SEGMENT_FRAMES = (1 << 15) - 2


def _int(name: str, value: Any, lo: int | None = None, hi: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise ConfigError(f"{name} must be a whole number, got {value!r}")
    value = int(value)
    if (lo is not None and value < lo) or (hi is not None and value > hi):
        bounds = f">= {lo}" if hi is None else f"between {lo} and {hi}" if lo is not None else f"<= {hi}"
        raise ConfigError(f"{name} must be {bounds}, got {value}")
    return value


def _number(name: str, value: Any, lo: float | None = None, hi: float | None = None,
            positive: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(float(value)):
        raise ConfigError(f"{name} must be a finite number, got {value!r}")
    value = float(value)
    if positive and value <= 0:
        raise ConfigError(f"{name} must be > 0, got {value:g}")
    if (lo is not None and value < lo) or (hi is not None and value > hi):
        bounds = f">= {lo:g}" if hi is None else f"between {lo:g} and {hi:g}" if lo is not None else f"<= {hi:g}"
        raise ConfigError(f"{name} must be {bounds}, got {value:g}")
    return value


def _text(name: str, value: Any, empty_ok: bool = True) -> str:
    if not isinstance(value, str) or (not empty_ok and not value.strip()):
        raise ConfigError(f"{name} must be {'text' if empty_ok else 'non-empty text'}, got {value!r}")
    return value


def check_fps(fps: Any, name: str = "fps") -> float | None:
    """A sampling rate: a finite number > 0, or None (every frame)."""
    return None if fps is None else _number(name, fps, positive=True)


def max_frame_side() -> int:
    """The largest side, in pixels, of a frame streamvid decodes or accepts: $STREAMVID_MAX_FRAME_SIDE,
    else MAX_FRAME_SIDE. It keeps a typo such as size=100000 from allocating tens of gigabytes."""
    value = os.environ.get("STREAMVID_MAX_FRAME_SIDE")
    if not value:
        return MAX_FRAME_SIDE
    try:
        return _int("STREAMVID_MAX_FRAME_SIDE", int(value), 2)
    except ValueError:
        raise ConfigError(f"STREAMVID_MAX_FRAME_SIDE must be a whole number of pixels, got {value!r}") from None


def check_size(size: Any, name: str = "size") -> int | None:
    """A short side in pixels: 2 … max_frame_side(), or None (keep the source's size)."""
    return None if size is None else _int(f"{name} (the short side in pixels)", size, 2, max_frame_side())


def normalise_dtype(dtype: Any) -> str:
    """'bf16' → 'bfloat16' and so on; a torch.dtype gives its name. ConfigError for anything else."""
    name = str(dtype).removeprefix("torch.").strip().lower() if dtype is not None else ""
    if name not in DTYPES:
        raise ConfigError(f"unknown dtype {dtype!r}; choose one of {', '.join(DTYPES)}")
    return DTYPES[name]


def normalise_device(device: Any) -> str:
    """'CUDA' → 'cuda', 'cuda:1' stays; anything that is not a torch device name is a ConfigError."""
    name = str(device).strip().lower() if isinstance(device, str) or type(device).__name__ == "device" else ""
    if not _DEVICE.match(name):
        raise ConfigError(f"unknown device {device!r}; use cpu, cuda, cuda:N or mps")
    return name


def check_device_available(device: str) -> None:
    """ConfigError when the device named exists as a kind but not on this machine (e.g. cuda with no GPU).
    Cheap: asks torch, loads no model."""
    import torch

    kind, _, number = normalise_device(device).partition(":")
    if kind == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise ConfigError(f"device {device!r} was asked for, but CUDA is not available on this machine "
                              "(no NVIDIA GPU or driver, or a CPU-only torch); use --device cpu")
        if number and int(number) >= count:
            raise ConfigError(f"device {device!r} does not exist: this machine has {count} CUDA device(s)")
    elif kind == "mps" and not torch.backends.mps.is_available():
        raise ConfigError(f"device {device!r} was asked for, but MPS is not available here; use --device cpu")
    elif kind == "xpu" and not (hasattr(torch, "xpu") and torch.xpu.is_available()):
        raise ConfigError(f"device {device!r} was asked for, but no XPU is available here; use --device cpu")


def check_generation(max_new_tokens: Any = None, temperature: Any = None, top_p: Any = None) -> None:
    """Generation settings handed to ``ask``: ConfigError for a value out of range (None: not given)."""
    if max_new_tokens is not None:
        _int("max_new_tokens", max_new_tokens, 1, MAX_NEW_TOKENS)
    if temperature is not None:
        _number("temperature", temperature, 0.0, MAX_TEMPERATURE)
    if top_p is not None:
        _number("top_p", top_p, 0.0, 1.0, positive=True)


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
    # Frames per batch through the encoders when ingesting; None: what the device wants
    # (streamvid.device.default_batch_size: large on a GPU, small on a CPU). See ``frames_per_batch``.
    batch_frames: int | None = None
    frame_size: int | None = None  # short side to resize to on decode; None keeps the source size
    # Ingestion runs as stages on their own threads (decode, pre-gate, device, compress; memory writes
    # on the ingesting thread) joined by queues of at most queue_batches batches; False: one thread;
    # None: what the device wants (see ``ingest_staged``).
    staged_ingest: bool | None = None
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
    # "I did not see that." without generating when the question has searchable content and no retrieved
    # event scores at least this (semantic × temporal relevance); None: always generate.
    abstain_below: float | None = None
    # Greedy decoding of small models loops ("the door, the door, …"): transformers' repetition penalty and
    # no-repeat-n-gram logits processors, on every answer (streamvid.generation.GenerationOptions).
    repetition_penalty: float = 1.1
    no_repeat_ngram_size: int = 4

    # Captions (one per closed event, from its stored tokens).
    captions: bool = True
    caption_tokens: int = 32
    caption_similar: float = 0.95  # stay silent when the event's key has cosine >= this with the last caption's
    caption_min_gap_s: float = 0.0  # source seconds between captions at least (rate limit)

    def __post_init__(self) -> None:
        """Check every field and normalise names; ConfigError names the first bad one."""
        for name in ("preset", "clip_model", "clip_pretrained"):
            _text(name, getattr(self, name))
        self.model = _text("model", self.model, empty_ok=False)
        self.device = normalise_device(self.device)
        self.dtype = normalise_dtype(self.dtype)
        self.seed = _int("seed", self.seed, 0)
        self.fps = check_fps(self.fps)
        if self.fps is None:
            raise ConfigError("fps must be a finite number > 0, got None")
        if self.batch_frames is not None:
            self.batch_frames = _int("batch_frames", self.batch_frames, 1)
        self.frame_size = check_size(self.frame_size, "frame_size")
        # Cosine thresholds: 1 keeps all but exact repeats, -1 drops everything.
        self.tau_dup = _number("tau_dup", self.tau_dup, -1.0, 1.0)
        self.tau_temporal = _number("tau_temporal", self.tau_temporal, -1.0, 1.0)
        self.caption_similar = _number("caption_similar", self.caption_similar, -1.0, 1.0)
        self.tokens_per_frame = _int("tokens_per_frame", self.tokens_per_frame, 1)
        self.short_term_frames = _int("short_term_frames", self.short_term_frames, 1)
        self.event_tokens = _int("event_tokens", self.event_tokens, 1)
        self.max_ram_tokens = _int("max_ram_tokens", self.max_ram_tokens, 1)
        if self.max_ram_tokens < 4 * self.event_tokens:
            raise ConfigError(f"max_ram_tokens ({self.max_ram_tokens}) must be at least 4 × event_tokens "
                              f"({self.event_tokens}): room for the short-term frames, the open event and "
                              "at least one long-term event")
        if self.archive_dir is not None:
            if not isinstance(self.archive_dir, (str, os.PathLike)):
                raise ConfigError(f"archive_dir must be a path or None, got {self.archive_dir!r}")
            self.archive_dir = os.fspath(self.archive_dir)
        self.archive_max_bytes = _int("archive_max_bytes", self.archive_max_bytes, 0)
        self.segment_min_frames = _int("segment_min_frames", self.segment_min_frames, 1, MAX_SEGMENT_FRAMES)
        self.segment_max_frames = _int("segment_max_frames", self.segment_max_frames, self.segment_min_frames,
                                       MAX_SEGMENT_FRAMES)
        self.segment_z = _number("segment_z", self.segment_z)
        self.segment_window = _int("segment_window", self.segment_window, 2)
        if self.segment_hard_surprise is not None:
            self.segment_hard_surprise = _number("segment_hard_surprise", self.segment_hard_surprise, 0.0, 2.0)
        self.read_tokens = _int("read_tokens", self.read_tokens, 1)
        self.search_k = _int("search_k", self.search_k, 1)
        self.max_new_tokens = _int("max_new_tokens", self.max_new_tokens, 1, MAX_NEW_TOKENS)
        if self.abstain_below is not None:
            self.abstain_below = _number("abstain_below", self.abstain_below)
        self.repetition_penalty = _number("repetition_penalty", self.repetition_penalty, 1e-6)
        self.no_repeat_ngram_size = _int("no_repeat_ngram_size", self.no_repeat_ngram_size, 0)
        if not isinstance(self.captions, bool):
            raise ConfigError(f"captions must be True or False, got {self.captions!r}")
        self.caption_tokens = _int("caption_tokens", self.caption_tokens, 1, MAX_NEW_TOKENS)
        self.caption_min_gap_s = _number("caption_min_gap_s", self.caption_min_gap_s, 0.0)

    @property
    def frames_per_batch(self) -> int:
        """``batch_frames``, or when it is None the device's ``streamvid.device.default_batch_size``."""
        if self.batch_frames is not None:
            return self.batch_frames
        from streamvid.device import default_batch_size

        return default_batch_size(self.device)

    @property
    def ingest_staged(self) -> bool:
        """``staged_ingest``, or when it is None: staged on a GPU, where the host stages overlap the device's
        work; one thread on a CPU, where the towers already take every core and stage threads only
        contend with them (measured: docs/BENCHMARKS.md, section 4)."""
        if self.staged_ingest is not None:
            return self.staged_ingest
        import torch

        return torch.device(self.device).type != "cpu"

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
    # dtype auto: bf16 on a GPU and on CPUs with native bf16 (AVX512-BF16/AMX: 2.3× the tower's speed), else fp32
    "smolvlm2-500m": dict(model="HuggingFaceTB/SmolVLM2-500M-Video-Instruct", clip_model="ViT-B-32",
                          clip_pretrained="laion2b_s34b_b79k", dtype="auto", abstain_below=0.2),
    "qwen2.5-vl-3b": dict(model="Qwen/Qwen2.5-VL-3B-Instruct", clip_model="ViT-B-16",
                          clip_pretrained="laion2b_s34b_b88k", dtype="bfloat16", abstain_below=0.2),
    "qwen2.5-vl-7b": dict(model="Qwen/Qwen2.5-VL-7B-Instruct", clip_model="ViT-B-16",
                          clip_pretrained="laion2b_s34b_b88k", dtype="bfloat16", abstain_below=0.2),
    "llava-ov-7b": dict(model="llava-hf/llava-onevision-qwen2-7b-ov-hf", clip_model="ViT-B-16",
                        clip_pretrained="laion2b_s34b_b88k", dtype="bfloat16", abstain_below=0.2),
}


AUTO_CHOICE = "smolvlm2-500m"


def resolve_auto(model: str | None = None) -> str:
    """The preset ``auto`` stands for: the VLM preset when its weights are cached or reachable, else
    ``offline``. Quick: one bounded connection attempt at most, none under HF_HUB_OFFLINE."""
    from streamvid.models import model_available

    if model_available(model or PRESETS[AUTO_CHOICE]["model"]):
        return AUTO_CHOICE
    log.warning("%s is not cached and the hub is unreachable; using the offline preset.",
                PRESETS[AUTO_CHOICE]["model"])
    return "offline"


def preset_config(name: str, **overrides: Any) -> AgentConfig:
    """The named preset's AgentConfig with ``overrides`` applied (``auto`` resolves first)."""
    if name == "auto":
        name = resolve_auto(overrides.get("model"))
    if name not in PRESETS:
        raise ConfigError(f"unknown preset {name!r}; choose one of: auto, {', '.join(PRESETS)}")
    return AgentConfig(preset=name, **PRESETS[name]).replace(**overrides)
