"""The benchmark inputs: timed and rendered frame sources, the generated videos, the models.

``TimedSource`` times decoding as a stage; ``RenderedSource`` + ``Scenery`` render long streams on
demand (no file); ``generated_answer_video`` and the ingest section's HD clip come from
``streamvid_bench.samples`` (cached in ``--cache-dir``); ``vtest_path`` is the shared sample
footage, found through $STREAMVID_SHARED or ``--vtest``.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from streamvid_bench import samples
from streamvid_bench.samples import ensure_video

from streamvid.config import AgentConfig, preset_config
from streamvid.errors import ConfigError
from streamvid.pipeline import StageTimer
from streamvid.sources import FrameSource, open_source
from streamvid.types import Frame

DEFAULT_CACHE = Path(os.path.expanduser("~/.cache/streamvid/bench"))


def vtest_path() -> Path | None:
    """$STREAMVID_SHARED/media/vtest.avi (the shared 1280×720 street footage), or None when the variable is unset."""
    shared = os.environ.get("STREAMVID_SHARED")
    return Path(shared) / "media" / "vtest.avi" if shared else None


class TimedSource(FrameSource):
    """Wraps a source: the time spent producing each frame goes to ``timer`` as stage "decode";
    iteration stops after ``until`` seconds of source time when given."""

    def __init__(self, inner: FrameSource, timer: StageTimer, until: float | None = None) -> None:
        super().__init__(inner.spec)
        self.inner, self.timer, self.until = inner, timer, until
        self.backend = inner.backend
        self.is_live = inner.is_live
        self.native_fps = inner.native_fps
        self.duration = inner.duration if until is None or inner.duration is None else min(until, inner.duration)

    def __iter__(self) -> Iterator[Frame]:
        it = iter(self.inner)
        while True:
            t0 = time.perf_counter()
            frame = next(it, None)
            if frame is None or (self.until is not None and frame.t >= self.until):
                return
            self.timer.add("decode", (time.perf_counter() - t0) * 1000.0, 1)
            yield frame

    def close(self) -> None:
        self.inner.close()
        super().close()


class RenderedSource(FrameSource):
    """Frames rendered on demand at given times (no file): ``render(t) → H×W×3 uint8``.

    ``every(t)`` is called before the frame at time ``t`` is yielded whenever ``t`` has passed the
    next multiple of ``every_s`` seconds (for sampling memory stats on the simulated clock).
    """

    backend = "rendered"

    def __init__(self, times: Sequence[float], render: Callable[[float], np.ndarray], *,
                 every: Callable[[float], None] | None = None, every_s: float = 60.0) -> None:
        super().__init__("rendered")
        self.times = [float(t) for t in times]
        self.render = render
        self.every, self.every_s = every, every_s
        self.duration = self.times[-1] + (self.times[1] - self.times[0] if len(self.times) > 1 else 1.0)

    def __iter__(self) -> Iterator[Frame]:
        next_tick = self.every_s
        for i, t in enumerate(self.times):
            if self._closed:
                return
            if self.every is not None and t >= next_tick:
                self.every(t)
                next_tick += self.every_s
            yield Frame(i, t, self.render(t))


@dataclass
class Scenery:
    """A rendered stream: scenes with a moving ball (random lengths), optional needles at known times."""

    duration: float
    width: int
    height: int
    needles: tuple[float, ...] = ()
    seed: int = 0
    scene_s: tuple[float, float] = (20.0, 90.0)

    def __post_init__(self) -> None:
        rng = np.random.default_rng(self.seed)
        cuts, t = [], 0.0
        while True:
            t += float(rng.uniform(*self.scene_s))
            if t >= self.duration:
                break
            cuts.append(round(t, 1))
        self.scenes = samples.scenes_from_cuts(self.duration, cuts)
        # Varied scene colours: the palette has 8 entries; cycling would make scenes k and k+8 look alike.
        self.scenes = [type(s)(s.t_start, s.t_end, tuple(int(c) for c in rng.integers(20, 236, 3)), s.label, s.shape,
                               s.shape_colour) for s in self.scenes]
        self._needle_at = {round(t, 3): k for k, t in enumerate(self.needles)}

    def needle_rgb(self, k: int) -> np.ndarray:
        return samples.needle_image(self.width, self.height, k)

    def __call__(self, t: float) -> np.ndarray:
        k = self._needle_at.get(round(t, 3))
        if k is not None:
            return self.needle_rgb(k)
        return samples.render_frame(t, self.width, self.height, self.scenes, ())


# ------------------------------------------------------------------------------------------------ models
@dataclass
class Models:
    """Loaded models shared between benchmark agents (one load per run)."""

    llm: Any
    encoder: Any
    llm_spec: str
    encoder_spec: str
    note: str = ""


REAL_SMOLVLM = "HuggingFaceTB__SmolVLM-256M-Instruct"
REAL_QWEN = "Qwen__Qwen2.5-VL-3B-Instruct"
# Qwen2.5-VL-3B is 36 LM layers and 32 vision blocks; on a small CPU both are cut (the widths,
# vocabulary, frame size and token grid stay real).
QWEN_CPU_CUT = {"text_config.num_hidden_layers": 2, "vision_config.depth": 2,
                "vision_config.fullatt_block_indexes": [1]}
MODEL_NOTES = {
    "tiny:smolvlm": "tiny SmolVLM architecture, random weights", "tiny:qwen2_5_vl": "tiny Qwen2.5-VL, random weights",
    "tiny:llava_onevision": "tiny LLaVA-OneVision, random weights",
    "smolvlm-256m": "SmolVLM-256M-Instruct at real size (config from ../shared/models), random weights",
    "qwen2.5-vl-3b": "Qwen2.5-VL-3B-Instruct at real size, random weights",
    "qwen2.5-vl-3b-cut": ("Qwen2.5-VL-3B-Instruct real widths/vocab/frame size, random weights, LM layers cut "
                          "36→2, vision blocks 32→2 (full-attention block index [1])"),
}


def load_llm(name: str, device: str = "cpu") -> Any:
    """A Video-LLM by benchmark name: ``tiny:<family>``, ``smolvlm-256m``, ``qwen2.5-vl-3b`` or
    ``qwen2.5-vl-3b-cut`` (the real-size ones with random weights from ../shared/models)."""
    from streamvid.models import load_video_llm, shared_models_root

    dtype = "float32" if device == "cpu" else "bfloat16"
    if name.startswith("tiny:"):
        return load_video_llm(name, device=device)
    if name == "smolvlm-256m":
        return load_video_llm(str(shared_models_root() / REAL_SMOLVLM), device=device, dtype=dtype, random_weights=True)
    if name in ("qwen2.5-vl-3b", "qwen2.5-vl-3b-cut"):
        cut = QWEN_CPU_CUT if name.endswith("-cut") else None
        return load_video_llm(str(shared_models_root() / REAL_QWEN), device=device, dtype=dtype, random_weights=True,
                              config_overrides=cut)
    raise ConfigError(f"unknown benchmark model {name!r}; choose one of {', '.join(MODEL_NOTES)}")


def load_encoder(name: str, device: str = "cpu") -> Any:
    """The retrieval encoder: "tiny" (random tiny CLIP) or an open_clip architecture with random weights."""
    from streamvid.encoders import RetrievalEncoder

    return RetrievalEncoder(name, "", device=device)


def bench_config(llm_name: str, **overrides: Any) -> AgentConfig:
    """The tiny-random preset's settings with the model named and captions off (benchmarks time ingestion
    and answering; captions run on their own thread and would compete for the same cores)."""
    base = dict(model=llm_name, captions=False)
    base.update(overrides)
    return preset_config("tiny-random", **base)


def make_agent(config: AgentConfig, models: Models) -> Any:
    from streamvid.agent import StreamAgent
    from streamvid.backends.vlm import VLMBackend

    return StreamAgent(config, backend=VLMBackend(config, llm=models.llm, encoder=models.encoder))


def first_frame(video: Path | str, fps: float | None = None, size: int | None = None) -> np.ndarray:
    """The first frame of a video (as the source decodes it)."""
    with open_source(video, fps=fps, size=size) as src:
        for frame in src:
            return frame.rgb
    raise ConfigError(f"{video} has no frames")


def read_frames_at(video: Path | str, times: Sequence[float]) -> list[Frame]:
    """The first decoded frame at or after each time (one pass over the file)."""
    want = sorted(times)
    out: list[Frame] = []
    with open_source(video) as src:
        for frame in src:
            if len(out) < len(want) and frame.t >= want[len(out)] - 1e-6:
                out.append(frame)
            if len(out) == len(want):
                break
    return out


def generated_answer_video(cache: Path, minutes: float) -> Path:
    """The answer benchmark's video: 320×240 at 5 fps, scene cuts every 30 s (ball scenes), two needles."""
    dur = minutes * 60.0
    return ensure_video(cache, "answer", duration=dur, fps=5, width=320, height=240,
                        cuts=[float(c) for c in range(30, int(dur), 30)], needles=[dur / 3, 2 * dur / 3])
