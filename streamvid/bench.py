"""``streamvid bench``: the benchmark suite, and the measurements behind scripts/bench_*.py.

Sections (each returns a plain dict; ``main`` writes them as JSON, a markdown table and PNG plots):

* ingest  — fps and per-stage ms/frame (decode, key, gate, vision, compress, memory) on
  ../shared/media/vtest.avi and a generated 1080p 10-minute video; perception time over the
  bare vision tower's time as a ratio;
* soak    — a 2-hour stream at 1 fps (rendered frames with their times, low resolution,
  tiny-random): RSS and tokens_in_ram every simulated minute; then a live push source fed at
  2× the measured ingest rate: drops, frames waiting, arrival → memory latency;
* needle  — 10/30/60-minute rendered streams with needle frames at known times: recall@1/@3
  of image-query search and of the answer's citations, against tokens stored per minute
  (one point per compression setting);
* answer  — TTFT, decode tok/s and prompt tokens of streamvid's memory prompt against the same
  model fed N uniformly sampled frames with full tokens; asking while ingesting;
* gpu     — a frame_tokens batch-size sweep and the highest camera rate ingestion keeps up
  with; only where CUDA is present (reported as not run otherwise).

Absolute times depend on the machine and its load (the JSON records the load average);
compare figures as ratios within one run. With random weights, the gate/segmenter/retrieval
decisions are not meaningful the way trained weights' are: the figures measure cost and
plumbing, not answer quality.

Generated videos come from streamvid.samples.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime as _dt
import json
import os
import platform
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from streamvid.config import AgentConfig, preset_config
from streamvid.errors import ConfigError
from streamvid.pipeline import StageTimer
from streamvid.samples import ensure_video
from streamvid.sources import FrameSource, open_source
from streamvid.types import Frame

REPO = Path(__file__).resolve().parents[1]
VTEST = REPO.parent / "shared" / "media" / "vtest.avi"
DEFAULT_CACHE = Path(os.path.expanduser("~/.cache/streamvid/bench"))
STAGES = ("decode", "key", "gate", "vision", "compress", "memory")
PERCEPTION = ("key", "gate", "vision", "compress")
QUESTION = "What does the ball do in the video?"
RANDOM_WEIGHTS_NOTE = ("random weights: the gate, segmenter and retrieval decisions are not meaningful the way "
                       "trained weights' are; the figures measure cost and plumbing, not answer quality")


# ---------------------------------------------------------------------------------------------- helpers
def rss_mb() -> float:
    import psutil

    return psutil.Process().memory_info().rss / 2**20


def load_average() -> list[float] | None:
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except OSError:
        return None


def finish_results(results: dict[str, Any], json_path: str | None) -> int:
    """Record and print the load average at the end; write ``results`` as JSON when asked. Returns 0."""
    results["machine"]["load_average_end"] = load_average()
    print(f"load average at end {results['machine']['load_average_end']}")
    if json_path:
        Path(json_path).write_text(json.dumps(results, indent=1, default=str) + "\n")
    return 0


def _git(*args: str) -> str:
    try:
        out = subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True, timeout=10)
        return out.stdout.strip() if out.returncode == 0 else ""
    except (OSError, subprocess.SubprocessError):
        return ""


def machine_info() -> dict[str, Any]:
    """Machine, library versions and git commit, for the run's JSON."""
    import psutil
    import transformers

    import streamvid

    cpu = platform.processor()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    versions = {"python": platform.python_version(), "streamvid": streamvid.__version__, "torch": torch.__version__,
                "transformers": transformers.__version__, "numpy": np.__version__}
    for mod in ("open_clip", "faiss", "av", "cv2"):
        with contextlib.suppress(Exception):
            versions[mod] = str(getattr(__import__(mod), "__version__", "?"))
    return {
        "platform": platform.platform(), "cpu": cpu, "cpus": os.cpu_count(),
        "ram_gb": round(psutil.virtual_memory().total / 2**30, 1), "torch_threads": torch.get_num_threads(),
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "versions": versions, "git_commit": _git("rev-parse", "HEAD") or None,
        "git_dirty": bool(_git("status", "--porcelain", "--untracked-files=no")),
        "load_average_start": load_average(),
    }


def median(values: Sequence[float]) -> float:
    return float(statistics.median(values)) if values else float("nan")


def _ratio(a: float, b: float) -> float | None:
    return round(a / b, 4) if b else None


# ----------------------------------------------------------------------------------------------- sources
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
            self.timer.ms["decode"] += (time.perf_counter() - t0) * 1000.0
            self.timer.frames["decode"] += 1
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
        from streamvid import samples as gen
        rng = np.random.default_rng(self.seed)
        cuts, t = [], 0.0
        while True:
            t += float(rng.uniform(*self.scene_s))
            if t >= self.duration:
                break
            cuts.append(round(t, 1))
        self.scenes = gen.scenes_from_cuts(self.duration, cuts)
        # Varied scene colours: the palette has 8 entries; cycling would make scenes k and k+8 look alike.
        self.scenes = [type(s)(s.t_start, s.t_end, tuple(int(c) for c in rng.integers(20, 236, 3)), s.label, s.shape,
                               s.shape_colour) for s in self.scenes]
        self._gen = gen
        self._needle_at = {round(t, 3): k for k, t in enumerate(self.needles)}

    def needle_rgb(self, k: int) -> np.ndarray:
        return self._gen.needle_image(self.width, self.height, k)

    def __call__(self, t: float) -> np.ndarray:
        k = self._needle_at.get(round(t, 3))
        if k is not None:
            return self.needle_rgb(k)
        return self._gen.render_frame(t, self.width, self.height, self.scenes, ())


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

    return StreamAgent(config, llm=models.llm, encoder=models.encoder)


# ------------------------------------------------------------------------------ compression (issue 3)
def stage_report(timer: StageTimer, frames_in: int, kept: int) -> dict[str, Any]:
    """Per-stage totals, ms per frame through the stage and ms per input frame; perception / vision."""
    total = {k: round(v, 3) for k, v in timer.ms.items()}
    through = {k: round(v, 3) for k, v in timer.ms_per_frame().items()}
    per_input = {k: round(v / max(1, frames_in), 3) for k, v in timer.ms.items()}
    vision = timer.ms.get("vision", 0.0)
    perception = sum(timer.ms.get(k, 0.0) for k in PERCEPTION)
    with_memory = perception + timer.ms.get("memory", 0.0)
    return {
        "stage_ms_total": total, "ms_per_frame_through_stage": through, "ms_per_input_frame": per_input,
        "perception_over_vision": _ratio(perception, vision),
        "perception_and_memory_over_vision": _ratio(with_memory, vision),
        "around_vision_ms_per_kept_frame": round((with_memory - vision) / max(1, kept), 3),
    }


def first_frame(video: Path | str, fps: float | None = None, size: int | None = None) -> np.ndarray:
    """The first frame of a video (as the source decodes it)."""
    with open_source(video, fps=fps, size=size) as src:
        for frame in src:
            return frame.rgb
    raise ConfigError(f"{video} has no frames")


def warm_up(models: Models, rgb: np.ndarray) -> None:
    """One untimed pass of both encoders, so first-call setup is not counted as a stage's time."""
    models.encoder.encode_frames([rgb])
    models.llm.frame_tokens([rgb], times=[0.0])


def identical_frames_check(models: Models, config: AgentConfig, rgb: np.ndarray, n: int = 8) -> dict[str, int]:
    """``n`` copies of one frame through a fresh pipeline: how many are kept, and tokens stored."""
    from streamvid.pipeline import FramePipeline

    pipe = FramePipeline(config, models.encoder, models.llm)
    pipe.process([Frame(i, float(i), rgb) for i in range(n)])
    return {"frames_in": n, "frames_kept": pipe.frames_kept, "tokens_stored": pipe.stored_tokens}


def compress_report(models: Models, video: Path | str, fps: float, config: AgentConfig,
                    progress: bool = False) -> dict[str, Any]:
    """The write path (key → gate → vision → compress) over ``video`` at ``fps``, through FramePipeline.

    Tokens per minute use the video's sampled duration; "raw" is what the vision tower would emit
    for every sampled frame without the gate and merges.
    """
    from streamvid.pipeline import FramePipeline

    warm_up(models, first_frame(video, fps, config.frame_size))
    pipe = FramePipeline(config, models.encoder, models.llm)
    src = TimedSource(open_source(video, fps=fps, size=config.frame_size), pipe.timer)
    last_t, first_rgb = 0.0, None
    batch: list[Frame] = []
    t0 = time.perf_counter()
    with src, tqdm(total=None, desc=f"compress {models.llm_spec}", unit="frame", disable=not progress) as bar:
        for frame in src:
            first_rgb = frame.rgb if first_rgb is None else first_rgb
            batch.append(frame)
            last_t = frame.t
            if len(batch) >= config.batch_frames:
                pipe.process(batch)
                bar.update(len(batch))
                batch = []
        if batch:
            pipe.process(batch)
            bar.update(len(batch))
    wall = time.perf_counter() - t0
    minutes = (last_t + 1.0 / fps) / 60.0
    n_in, kept = pipe.frames_in, pipe.frames_kept
    per_frame = models.llm.tokens_per_frame
    raw_per_min = n_in * per_frame / minutes
    stored_per_min = pipe.stored_tokens / minutes
    out = {
        "model": models.llm_spec, "model_note": models.note, "retrieval_encoder": models.encoder_spec,
        "video": str(video), "fps": fps, "video_minutes": round(minutes, 3), "frames_in": n_in, "frames_kept": kept,
        "frames_kept_pct": round(100.0 * kept / max(1, n_in), 2),
        "tokens_per_kept_frame_before": round(pipe.raw_tokens / max(1, kept), 2),
        "tokens_per_kept_frame_after": round(pipe.stored_tokens / max(1, kept), 2),
        "raw_tokens_per_minute": round(raw_per_min, 1), "stored_tokens_per_minute": round(stored_per_min, 1),
        "stored_over_raw": _ratio(stored_per_min, raw_per_min),
        "settings": {"tau_dup": config.tau_dup, "tau_temporal": config.tau_temporal,
                     "tokens_per_frame": config.tokens_per_frame},
        "wall_s": round(wall, 2), **stage_report(pipe.timer, n_in, kept),
    }
    if first_rgb is not None:
        out["identical_frames"] = identical_frames_check(models, config, first_rgb)
    return out


# ---------------------------------------------------------------------------------------------- ingest
def ingest_report(models: Models, video: Path | str, fps: float, config: AgentConfig, *, label: str,
                  until: float | None = None, progress: bool = False) -> dict[str, Any]:
    """StreamAgent.ingest over a file (decode timed as a stage): fps, × real time, per-stage ms/frame."""
    warm_up(models, first_frame(video, fps, config.frame_size))
    agent = make_agent(config, models)
    timer = agent.backend.pipeline.timer
    try:
        src = TimedSource(open_source(video, fps=fps, size=config.frame_size), timer, until=until)
        t0 = time.perf_counter()
        stats = agent.ingest(src, progress=progress)
        wall = time.perf_counter() - t0
    finally:
        agent.close()
    n_in = stats["frames_seen"]
    video_s = n_in / fps
    return {
        "label": label, "video": str(video), "model": models.llm_spec, "retrieval_encoder": models.encoder_spec,
        "fps_sampled": fps, "frames": n_in, "frames_kept": stats["frames_kept"], "wall_s": round(wall, 2),
        "ingest_fps": round(n_in / wall, 2), "x_real_time": round(video_s / wall, 2),
        "tokens_in_ram": stats["tokens_in_ram"], "events": stats["events"],
        **stage_report(timer, n_in, stats["frames_kept"]),
    }


# ------------------------------------------------------------------------------------------------ soak
def soak_report(models: Models, config: AgentConfig, *, minutes: float, fps: float, size: tuple[int, int],
                progress: bool = False) -> dict[str, Any]:
    """A rendered stream ingested at ``fps`` for ``minutes`` simulated minutes; RSS and memory stats each
    simulated minute. RSS should go flat once tokens_in_ram reaches the budget."""
    scenery = Scenery(minutes * 60.0, size[0], size[1], seed=3)
    agent = make_agent(config, models)
    samples: list[dict[str, Any]] = []
    t_wall0 = time.perf_counter()

    def sample(t: float) -> None:
        s = agent.memory.stats()
        samples.append({"minute": round(t / 60.0, 2), "rss_mb": round(rss_mb(), 1),
                        "tokens_in_ram": s["tokens_in_ram"], "events": s["events"],
                        "archived_events": s["archived_events"], "archive_mb": round(s["archive_bytes"] / 2**20, 2),
                        "wall_s": round(time.perf_counter() - t_wall0, 2)})

    times = np.arange(0.0, minutes * 60.0, 1.0 / fps)
    try:
        stats = agent.ingest(RenderedSource(times, scenery, every=sample), progress=progress)
        wall = time.perf_counter() - t_wall0
        sample(float(times[-1]) + 1.0 / fps)
    finally:
        agent.close()
    budget = config.max_ram_tokens
    full = next((s for s in samples if s["tokens_in_ram"] >= 0.9 * budget), None)
    return {
        "model": models.llm_spec, "minutes": minutes, "fps": fps, "size": list(size), "frames": len(times),
        "frames_kept": stats["frames_kept"], "wall_s": round(wall, 2), "ingest_fps": round(len(times) / wall, 2),
        "max_ram_tokens": budget, "max_tokens_in_ram": max(s["tokens_in_ram"] for s in samples),
        "budget_respected": all(s["tokens_in_ram"] <= budget for s in samples),
        "budget_full_at_minute": full["minute"] if full else None,
        "rss_end_over_rss_when_full": _ratio(samples[-1]["rss_mb"], full["rss_mb"]) if full else None,
        "samples": samples,
    }


def live_report(models: Models, config: AgentConfig, *, push_fps: float, seconds: float,
                size: tuple[int, int]) -> dict[str, Any]:
    """A live push source fed at ``push_fps`` for ``seconds`` of wall time (arrival-time stamps):
    frames dropped (newest wins), frames waiting or in flight, arrival → memory latency."""
    scenery = Scenery(max(120.0, seconds * 4), size[0], size[1], seed=5, scene_s=(3.0, 12.0))
    pool = [scenery(t) for t in np.arange(0.0, scenery.duration, 0.5)]  # pre-rendered, cycled
    agent = make_agent(config, models)
    latencies: list[float] = []
    waiting_max = 0
    stop = threading.Event()
    t_first: list[float] = []

    def watch() -> None:
        last = None
        while not stop.is_set():
            now = agent.memory.snapshot().now
            if now is not None and now != last and t_first:
                latencies.append((time.monotonic() - t_first[0] - now) * 1000.0)
                last = now
            time.sleep(0.005)

    pushed = 0
    try:
        agent.start()
        watcher = threading.Thread(target=watch, daemon=True)
        watcher.start()
        start = time.monotonic()
        while (elapsed := time.monotonic() - start) < seconds:
            delay = start + pushed / push_fps - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            if not t_first:
                t_first.append(time.monotonic())
            agent.push(pool[pushed % len(pool)])
            pushed += 1
            waiting = pushed - agent.dropped_frames - agent.memory.stats()["frames_seen"]
            waiting_max = max(waiting_max, waiting)
        stats = agent.stop()
        stop.set()
        watcher.join()
        dropped = agent.dropped_frames
    finally:
        stop.set()
        agent.close()
    lat = np.array(latencies) if latencies else np.array([np.nan])
    return {
        "push_fps": round(push_fps, 2), "seconds": round(elapsed, 2), "pushed": pushed, "dropped": dropped,
        "dropped_pct": round(100.0 * dropped / max(1, pushed), 1), "ingested": stats["frames_seen"],
        "frames_kept": stats["frames_kept"], "max_waiting_or_in_flight": int(waiting_max),
        "buffer_capacity": 1, "latency_ms_p50": round(float(np.nanpercentile(lat, 50)), 1),
        "latency_ms_p95": round(float(np.nanpercentile(lat, 95)), 1), "latency_ms_max": round(float(np.nanmax(lat)), 1),
        "latency_samples": len(latencies),
    }


# ---------------------------------------------------------------------------------------------- needle
def _covers(t_start: float, t_end: float, t: float, tol: float) -> bool:
    return t_start - tol <= t <= t_end + tol


def needle_times(minutes: float, count: int, seed: int) -> list[float]:
    """``count`` whole-second needle times, spread over the stream (one per equal slice, jittered)."""
    rng = np.random.default_rng(seed)
    dur = minutes * 60.0
    slice_s = dur / count
    return [float(int(i * slice_s + rng.uniform(0.2, 0.8) * slice_s)) for i in range(count)]


def needle_report(models: Models, config: AgentConfig, *, minutes: float, needles: int, fps: float,
                  size: tuple[int, int], progress: bool = False) -> dict[str, Any]:
    """Needles at known times in a rendered stream; recall@1/@3 of image search and of citations.

    image search: ``memory.search(needle image, k=3, neighbours=0)``; a hit when a returned event's span
    holds the needle time (± one sampling interval). citations: the answer to "When did the NEEDLE k
    checkerboard appear?" with search_k = 1 and 3 (citations are known before any token is decoded).
    """
    times = needle_times(minutes, needles, seed=int(minutes))
    scenery = Scenery(minutes * 60.0, size[0], size[1], needles=tuple(times), seed=int(minutes) + 11)
    agent = make_agent(config, models)
    tol = 1.0 / fps
    hits = {"image@1": 0, "image@3": 0, "citations@1": 0, "citations@3": 0}
    try:
        t0 = time.perf_counter()
        stats = agent.ingest(RenderedSource(np.arange(0.0, minutes * 60.0, 1.0 / fps), scenery), progress=progress)
        wall = time.perf_counter() - t0
        stored = agent.backend.pipeline.stored_tokens
        for k, t in enumerate(times):
            found = agent.memory.search(scenery.needle_rgb(k), k=3, neighbours=0)
            spans = [(e.t_start, e.t_end) for e in found]
            hits["image@1"] += any(_covers(a, b, t, tol) for a, b in spans[:1])
            hits["image@3"] += any(_covers(a, b, t, tol) for a, b in spans[:3])
            for kk in (1, 3):
                agent.config.search_k = kk
                cites = agent.ask_stream(f"When did the NEEDLE {k} checkerboard appear?").citations
                hits[f"citations@{kk}"] += any(_covers(c.t_start, c.t_end, t, tol) for c in cites)
    finally:
        agent.close()
    return {
        "minutes": minutes, "needles": times, "frames": stats["frames_seen"], "frames_kept": stats["frames_kept"],
        "events": stats["events"], "settings": {"tokens_per_frame": config.tokens_per_frame,
                                                "event_tokens": config.event_tokens, "tau_dup": config.tau_dup},
        "stored_tokens_per_minute": round(stored / minutes, 1), "tokens_in_ram": stats["tokens_in_ram"],
        "wall_s": round(wall, 2), **{f"recall_{k}": round(v / needles, 3) for k, v in hits.items()},
    }


# ---------------------------------------------------------------------------------------------- answer
def uniform_times(video_s: float, n: int) -> np.ndarray:
    """N frame times spread evenly over [0, video_s): i · video_s / N."""
    return np.arange(n) * (video_s / n)


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


def uniform_blocks(llm: Any, frames: Sequence[Frame], span_s: float) -> list[Any]:
    """One prompt block per frame from its uncompressed frame_tokens (full grid, the frame's time)."""
    from streamvid.prompt import PromptBlock

    visual = llm.frame_tokens([f.rgb for f in frames], times=[f.t for f in frames])
    n = visual.tokens.shape[1]
    return [PromptBlock(f.t, f.t + span_s, visual.tokens[i], np.full(n, f.t), torch.arange(n), visual.grid, -1)
            for i, f in enumerate(frames)]


def measure_generation(llm: Any, blocks: Sequence[Any], reps: int, new_tokens: int,
                       question: str = QUESTION) -> dict[str, float]:
    """build_prompt + generate ``reps`` times: prompt tokens, median TTFT and decode tok/s.

    No warm-up here: the model has answered from memory first (``measure_memory_answers`` warms up).
    """
    inputs = llm.build_prompt(blocks, question)
    ttft, tok_s, new = [], [], []
    for _ in range(reps):
        stream = llm.generate(inputs, max_new_tokens=new_tokens)
        list(stream)
        ttft.append(stream.stats.ttft_ms)
        tok_s.append(stream.stats.decode_tok_s)
        new.append(stream.stats.new_tokens)
    return {"prompt_tokens": inputs.n_prompt_tokens, "ttft_ms": round(median(ttft), 2),
            "decode_tok_s": round(median(tok_s), 2), "new_tokens": median(new)}


def measure_memory_answers(agent: Any, reps: int, new_tokens: int, question: str = QUESTION) -> dict[str, float]:
    """``agent.ask`` ``reps`` times (fresh dialogue each, after a warm-up): median timings."""
    from streamvid.agent import Dialogue

    agent.dialogue = Dialogue()
    agent.ask(question, max_new_tokens=2)
    rows = []
    for _ in range(reps):
        agent.dialogue = Dialogue()
        ans = agent.ask(question, max_new_tokens=new_tokens)
        rows.append(ans.timings)
    return {"prompt_tokens": int(rows[0]["prompt_tokens"]),
            "ttft_ms": round(median([r["ttft_ms"] for r in rows]), 2),
            "retrieval_ms": round(median([r["retrieval_ms"] for r in rows]), 2),
            "decode_tok_s": round(median([r["decode_tok_s"] for r in rows]), 2),
            "new_tokens": median([r["new_tokens"] for r in rows]), "citations": len(ans.citations)}


def answer_report(models: Models, video: Path | str, video_s: float, ns: Sequence[int], *, ingest_fps: float,
                  reps: int = 3, new_tokens: int = 16, config_overrides: dict[str, Any] | None = None,
                  progress: bool = False) -> dict[str, Any]:
    """Memory prompt vs N uniformly sampled frames with full tokens, same model, one run.

    The memory side ingests ``video`` at ``ingest_fps`` and answers with ``agent.ask``; the baseline
    encodes the max(N) uniformly spaced frames once (N = 32 and 8 are subsets of 64: every 2nd / 8th)
    and goes through the same ``build_prompt`` / ``generate``. Baseline ingest cost = N × the vision
    tower's mean ms/frame measured on those frames.
    """
    config = bench_config(models.llm_spec, **(config_overrides or {}))
    agent = make_agent(config, models)
    try:
        t0 = time.perf_counter()
        stats = agent.ingest(video, fps=ingest_fps, progress=progress)
        ingest_s = time.perf_counter() - t0
        timer = agent.backend.pipeline.timer
        perception_ms = sum(timer.ms.get(k, 0.0) for k in (*PERCEPTION, "memory"))
        memory = measure_memory_answers(agent, reps, new_tokens)
    finally:
        agent.close()
    n_max = max(ns)
    frames = read_frames_at(video, uniform_times(video_s, n_max))
    t0 = time.perf_counter()
    blocks_all = uniform_blocks(models.llm, frames, video_s / n_max)
    vision_ms_per_frame = (time.perf_counter() - t0) * 1000.0 / len(frames)
    rows = []
    for n in tqdm(sorted(ns), desc=f"uniform baselines {models.llm_spec}", disable=not progress, leave=False):
        step = n_max // n
        base = measure_generation(models.llm, blocks_all[::step][:n], reps, new_tokens)
        rows.append({
            "n_frames": n, **base, "ingest_ms": round(n * vision_ms_per_frame, 1),
            "ttft_ratio": _ratio(memory["ttft_ms"], base["ttft_ms"]),
            "ttft_with_retrieval_ratio": _ratio(memory["ttft_ms"] + memory["retrieval_ms"], base["ttft_ms"]),
            "prompt_tokens_ratio": _ratio(memory["prompt_tokens"], base["prompt_tokens"]),
            "decode_tok_s_ratio": _ratio(memory["decode_tok_s"], base["decode_tok_s"]),
        })
    return {
        "model": models.llm_spec, "model_note": models.note, "retrieval_encoder": models.encoder_spec,
        "tokens_per_frame_raw": models.llm.tokens_per_frame, "read_tokens": config.read_tokens,
        "memory_ingest_fps": ingest_fps, "memory_frames": stats["frames_seen"],
        "memory_frames_kept": stats["frames_kept"],
        "memory_ingest_s": round(ingest_s, 2), "memory_perception_ms": round(perception_ms, 1),
        "vision_ms_per_frame": round(vision_ms_per_frame, 1), "memory": memory, "uniform": rows,
        "reps": reps, "max_new_tokens": new_tokens,
    }


def ask_while_ingesting_report(models: Models, video: Path | str, *, fps: float, until: float,
                               progress: bool = False) -> dict[str, Any]:
    """Ingest fps alone vs with a thread asking questions in a loop (alone, asking, alone again)."""

    def run(asking: bool) -> tuple[float, int]:
        agent = make_agent(bench_config(models.llm_spec), models)
        timer = agent.backend.pipeline.timer
        done = threading.Event()
        asked = [0]

        def ask_loop() -> None:
            while not done.is_set():
                if agent.memory.snapshot().now is None:
                    time.sleep(0.01)
                    continue
                agent.ask(QUESTION)
                asked[0] += 1

        asker = threading.Thread(target=ask_loop, daemon=True) if asking else None
        try:
            if asker:
                asker.start()
            t0 = time.perf_counter()
            stats = agent.ingest(TimedSource(open_source(video, fps=fps), timer, until=until), progress=progress)
            wall = time.perf_counter() - t0
        finally:
            done.set()
            if asker:
                asker.join()
            agent.close()
        return stats["frames_seen"] / wall, asked[0]

    # One torch thread: with more, the ingest and asker threads oversubscribe a small machine's cores and
    # the spin-waits of torch's thread pool swamp what is measured.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        runs = [run(asking) for asking in (False, True, False, True)]
    finally:
        torch.set_num_threads(threads)
    alone = [r[0] for r in runs[0::2]]
    asking = [r[0] for r in runs[1::2]]
    a, b = float(np.mean(alone)), float(np.mean(asking))
    return {"model": models.llm_spec, "frames_per_run": int(until * fps), "torch_threads": 1,
            "ingest_fps_alone": round(a, 2), "ingest_fps_alone_runs": [round(x, 2) for x in alone],
            "ingest_fps_asking": round(b, 2), "ingest_fps_asking_runs": [round(x, 2) for x in asking],
            "questions_answered_while_ingesting": sum(r[1] for r in runs[1::2]),
            "slowdown_pct": round(100.0 * (1 - b / a), 1)}


# ------------------------------------------------------------------------------------------------- gpu
def batch_sweep(llm: Any, rgb: np.ndarray, batches: Sequence[int], reps: int = 3) -> list[dict[str, float]]:
    """frame_tokens frames/s at each batch size (median of ``reps`` after a warm-up)."""
    sync = torch.cuda.synchronize if llm.device.type == "cuda" else (lambda: None)
    rows = []
    for b in batches:
        frames = [rgb] * b
        llm.frame_tokens(frames)
        sync()
        times = []
        for _ in range(reps):
            t0 = time.perf_counter()
            llm.frame_tokens(frames)
            sync()
            times.append(time.perf_counter() - t0)
        rows.append({"batch": b, "frames_per_s": round(b / median(times), 2)})
    return rows


def max_camera_rate(models: Models, config: AgentConfig, rates: Sequence[float], seconds: float,
                    size: tuple[int, int], max_drop_pct: float = 5.0) -> dict[str, Any]:
    """The highest push rate (frames/s) at which a live agent drops ≤ ``max_drop_pct`` % of frames."""
    rows, best = [], None
    for rate in rates:
        r = live_report(models, config, push_fps=rate, seconds=seconds, size=size)
        rows.append({"push_fps": rate, "dropped_pct": r["dropped_pct"], "latency_ms_p50": r["latency_ms_p50"]})
        if r["dropped_pct"] > max_drop_pct:
            break
        best = rate
    return {"max_rate_kept_up": best, "max_drop_pct": max_drop_pct, "rates": rows}


def gpu_report(quick: bool, progress: bool = False) -> dict[str, Any]:
    if not torch.cuda.is_available():
        return {"run": False, "reason": "no CUDA device (torch.cuda.is_available() is False): the batch-size "
                                        "sweep and the camera-rate search were not run"}
    llm = load_llm("smolvlm-256m", device="cuda")
    rgb = np.zeros((720, 1280, 3), np.uint8)
    rgb[:, :640] = (200, 30, 30)
    sweep = batch_sweep(llm, rgb, [1, 2, 4, 8] if quick else [1, 2, 4, 8, 16, 32])
    models = Models(llm, load_encoder("ViT-B-32", "cuda"), "smolvlm-256m", "ViT-B-32 (random weights)",
                    MODEL_NOTES["smolvlm-256m"])
    config = bench_config("smolvlm-256m", device="cuda", dtype="bfloat16", tokens_per_frame=32, event_tokens=64,
                          max_ram_tokens=16384, read_tokens=1024)
    rates = [5, 10, 20, 40] if quick else [5, 10, 15, 20, 30, 40, 60, 80, 120]
    camera = max_camera_rate(models, config, rates, seconds=5 if quick else 15, size=(640, 360))
    return {"run": True, "device": torch.cuda.get_device_name(0), "model": "smolvlm-256m",
            "batch_sweep": sweep, "camera": camera}


# ----------------------------------------------------------------------------------------------- suite
@dataclass
class SuiteSizes:
    """How big each section runs: full (< 20 min on 2 CPU cores), quick (< 3 min), smoke (tests)."""

    hd_minutes: float
    hd_native_fps: float
    soak_minutes: float
    live_seconds: float
    needle_minutes: tuple[float, ...]
    needle_count: int
    needle_settings: tuple[tuple[int, int, float], ...]  # (tokens_per_frame, event_tokens, tau_dup)
    answer_minutes: float
    answer_ns: tuple[int, ...]
    answer_models: tuple[str, ...]
    answer_reps: int
    real_ingest_fps: float
    concurrency_minutes: float
    vtest: bool = True
    hd_size: tuple[int, int] = (1920, 1080)


SIZES = {
    "full": SuiteSizes(hd_minutes=10, hd_native_fps=4, soak_minutes=120, live_seconds=20,
                       needle_minutes=(10, 30, 60), needle_count=5,
                       needle_settings=((1, 4, 0.95), (4, 16, 0.98), (8, 32, 0.99), (16, 64, 0.995)),
                       answer_minutes=10, answer_ns=(8, 32, 64),
                       answer_models=("tiny:smolvlm", "tiny:qwen2_5_vl", "tiny:llava_onevision"),
                       answer_reps=3, real_ingest_fps=0.05, concurrency_minutes=3),
    "quick": SuiteSizes(hd_minutes=1, hd_native_fps=4, soak_minutes=20, live_seconds=6, needle_minutes=(3, 6),
                        needle_count=3, needle_settings=((1, 4, 0.95), (16, 64, 0.995)), answer_minutes=3,
                        answer_ns=(8, 32, 64), answer_models=("tiny:smolvlm",), answer_reps=2,
                        real_ingest_fps=0.05, concurrency_minutes=1),
    "smoke": SuiteSizes(hd_minutes=0.25, hd_native_fps=2, soak_minutes=3, live_seconds=2, needle_minutes=(1,),
                        needle_count=2, needle_settings=((1, 4, 0.95), (16, 64, 0.995)), answer_minutes=1,
                        answer_ns=(2, 4), answer_models=("tiny:smolvlm",), answer_reps=1, real_ingest_fps=0.05,
                        concurrency_minutes=0.25, vtest=False, hd_size=(640, 360)),
}
SECTIONS = ("soak", "ingest", "needle", "answer", "gpu")


def generated_answer_video(cache: Path, minutes: float) -> Path:
    """The answer benchmark's video: 320×240 at 5 fps, scene cuts every 30 s (ball scenes), two needles."""
    dur = minutes * 60.0
    return ensure_video(cache, "answer", duration=dur, fps=5, width=320, height=240,
                        cuts=[float(c) for c in range(30, int(dur), 30)], needles=[dur / 3, 2 * dur / 3])


def run_suite(sizes: SuiteSizes, sections: Sequence[str], cache: Path, *, quick: bool,
              progress: bool = False) -> dict[str, Any]:
    """Every requested section with shared tiny-random models; returns the run's results dict."""
    tiny = Models(load_llm("tiny:smolvlm"), load_encoder("tiny"), "tiny:smolvlm", "tiny CLIP (random weights)",
                  MODEL_NOTES["tiny:smolvlm"])
    results: dict[str, Any] = {"note": RANDOM_WEIGHTS_NOTE}
    cfg = bench_config("tiny:smolvlm")
    t_section: dict[str, float] = {}
    current: list[str] = []

    def section(name: str) -> bool:
        if current:
            t_section[current[0]] = time.perf_counter() - t_section[current[0]]
            current.clear()
        if name in sections:
            print(f"[bench] {name} …  (load average {load_average()})", file=sys.stderr, flush=True)
            t_section[name] = time.perf_counter()
            current.append(name)
            return True
        return False

    if section("soak"):
        # Keep nearly every frame and a small RAM budget, so the budget fills early and the flat part shows.
        soak_cfg = bench_config("tiny:smolvlm", tau_dup=0.999, max_ram_tokens=1024)
        soak = soak_report(tiny, soak_cfg, minutes=sizes.soak_minutes, fps=1.0, size=(160, 120), progress=progress)
        live = live_report(tiny, soak_cfg, push_fps=2.0 * soak["ingest_fps"], seconds=sizes.live_seconds,
                           size=(160, 120))
        results["soak"] = {**soak, "live": {**live, "rate": "2× the soak's ingest fps"}}
    if section("ingest"):
        rows = []
        if sizes.vtest and VTEST.is_file():
            rows.append(ingest_report(tiny, VTEST, 1.0, cfg, label="vtest.avi 1280x720 @1 fps", progress=progress))
        elif sizes.vtest:
            rows.append({"label": "vtest.avi", "skipped": f"{VTEST} not found"})
        dur = sizes.hd_minutes * 60.0
        (w, h) = sizes.hd_size
        hd = ensure_video(cache, "hd", duration=dur, fps=sizes.hd_native_fps, width=w, height=h,
                          cuts=[dur / 3, 2 * dur / 3])
        rows.append(ingest_report(tiny, hd, 1.0, cfg, label=f"generated {h}p {sizes.hd_minutes:g} min "
                                  f"({sizes.hd_native_fps:g} fps H.264) @1 fps", progress=progress))
        results["ingest"] = rows
    if section("needle"):
        rows = []
        jobs = [(m, s) for m in sizes.needle_minutes for s in sizes.needle_settings]
        for minutes, (tpf, et, tau) in tqdm(jobs, desc="needle runs", disable=not progress):
            c = bench_config("tiny:smolvlm", tokens_per_frame=tpf, event_tokens=et, tau_dup=tau, fps=1.0)
            rows.append(needle_report(tiny, c, minutes=minutes, needles=sizes.needle_count, fps=1.0,
                                      size=(160, 120), progress=False))
        results["needle"] = rows
    if section("answer"):
        video = generated_answer_video(cache, sizes.answer_minutes)
        rows = []
        for name in sizes.answer_models:
            real = not name.startswith("tiny:")
            models = tiny if name == "tiny:smolvlm" else Models(
                load_llm(name), load_encoder("tiny"), name, "tiny CLIP (random weights)", MODEL_NOTES[name])
            rows.append(answer_report(models, video, sizes.answer_minutes * 60.0, sizes.answer_ns,
                                      ingest_fps=sizes.real_ingest_fps if real else 1.0, reps=1 if real else
                                      sizes.answer_reps, config_overrides=real_model_overrides() if real else None,
                                      progress=progress))
        conc = ask_while_ingesting_report(tiny, video, fps=1.0, until=sizes.concurrency_minutes * 60.0,
                                          progress=progress)
        results["answer"] = {"video": str(video), "models": rows, "ask_while_ingesting": conc}
    if section("gpu"):
        results["gpu"] = gpu_report(quick, progress)
    section("")  # closes the last section's timer
    results["section_wall_s"] = {k: round(v, 1) for k, v in t_section.items()}
    return results


def real_model_overrides() -> dict[str, Any]:
    """AgentConfig settings for a real-size model: the smolvlm2-500m preset's token budgets."""
    base = AgentConfig()
    return {"tokens_per_frame": base.tokens_per_frame, "event_tokens": base.event_tokens,
            "max_ram_tokens": base.max_ram_tokens, "read_tokens": base.read_tokens}


# -------------------------------------------------------------------------------------------- outputs
def _fmt(v: Any) -> str:
    if v is None:
        return "–"
    if isinstance(v, float):
        return f"{v:.3g}" if abs(v) < 1000 else f"{v:.0f}"
    return str(v)


def _table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> list[str]:
    return ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers),
            *("| " + " | ".join(_fmt(v) for v in r) + " |" for r in rows), ""]


def markdown(results: dict[str, Any]) -> str:
    m = results.get("machine", {})
    lines = [f"# streamvid bench — {results.get('mode', '')} run {results.get('started', '')}", "",
             f"- machine: {m.get('cpu')} × {m.get('cpus')} CPUs, {m.get('ram_gb')} GB RAM, CUDA: {m.get('cuda')}",
             f"- load average at start / end: {m.get('load_average_start')} / {m.get('load_average_end')}",
             f"- git commit {m.get('git_commit')}{' (dirty tree)' if m.get('git_dirty') else ''}; "
             f"torch {m.get('versions', {}).get('torch')}, transformers {m.get('versions', {}).get('transformers')}",
             f"- command: `{results.get('command', '')}`; wall {results.get('wall_s')} s",
             f"- {results.get('note', '')}", ""]
    if "ingest" in results:
        lines += ["## Ingest (tiny-random; decode timed as a stage; captions off)", ""]
        rows = []
        for r in results["ingest"]:
            if "skipped" in r:
                rows.append([r["label"], "skipped: " + r["skipped"]] + [None] * 10)
                continue
            s = r["ms_per_input_frame"]
            rows.append([r["label"], r["frames"], r["frames_kept"], r["ingest_fps"], r["x_real_time"],
                         *(s.get(k) for k in STAGES), r["perception_over_vision"]])
        lines += _table(["video", "frames", "kept", "fps", "× real time", *(f"{k} ms" for k in STAGES),
                         "perception / vision"], rows)
        lines += ["Stage columns are ms per sampled frame (stage total / frames sampled).", ""]
    if "soak" in results:
        s, lv = results["soak"], results["soak"]["live"]
        lines += [f"## Soak ({s['minutes']:g} simulated minutes at {s['fps']:g} fps, {s['size'][0]}×{s['size'][1]}, "
                  "tiny-random)", ""]
        lines += _table(["frames", "ingest fps", "budget", "max tokens_in_ram", "budget full at min",
                         "RSS when full MB", "RSS end MB", "RSS end / when full"],
                        [[s["frames"], s["ingest_fps"], s["max_ram_tokens"], s["max_tokens_in_ram"],
                          s["budget_full_at_minute"],
                          next((x["rss_mb"] for x in s["samples"] if x["minute"] == s["budget_full_at_minute"]), None),
                          s["samples"][-1]["rss_mb"], s["rss_end_over_rss_when_full"]]])
        lines += ["Live push source fed at 2× the soak's ingest fps:", ""]
        lines += _table(["push fps", "seconds", "pushed", "dropped %", "ingested", "max waiting+in flight",
                         "latency p50 ms", "p95 ms", "max ms"],
                        [[lv["push_fps"], lv["seconds"], lv["pushed"], lv["dropped_pct"], lv["ingested"],
                          lv["max_waiting_or_in_flight"], lv["latency_ms_p50"], lv["latency_ms_p95"],
                          lv["latency_ms_max"]]])
    if "needle" in results:
        lines += ["## Needle in a video haystack (tiny-random, 1 fps, 160×120)", ""]
        lines += _table(["minutes", "tokens/frame", "event tokens", "τ_dup", "kept", "events", "stored tokens/min",
                         "image R@1", "image R@3", "citations R@1", "citations R@3"],
                        [[r["minutes"], r["settings"]["tokens_per_frame"], r["settings"]["event_tokens"],
                          r["settings"]["tau_dup"], r["frames_kept"], r["events"], r["stored_tokens_per_minute"],
                          r["recall_image@1"], r["recall_image@3"], r["recall_citations@1"],
                          r["recall_citations@3"]] for r in results["needle"]])
        lines += ["Image search uses the needle frame itself as the query; citations come from a text question "
                  "through a random text encoder, so their recall is near chance.", ""]
    if "answer" in results:
        a = results["answer"]
        lines += ["## Answer: memory prompt vs N uniform frames with full tokens (ratios = memory / uniform)", ""]
        rows = []
        for r in a["models"]:
            mem = r["memory"]
            rows.append([r["model"], "memory", mem["prompt_tokens"], mem["ttft_ms"], mem["decode_tok_s"],
                         round(r["memory_perception_ms"]), None, None, None])
            for u in r["uniform"]:
                rows.append([r["model"], f"uniform N={u['n_frames']}", u["prompt_tokens"], u["ttft_ms"],
                             u["decode_tok_s"], u["ingest_ms"], u["ttft_ratio"], u["prompt_tokens_ratio"],
                             u["decode_tok_s_ratio"]])
        lines += _table(["model", "prompt", "prompt tokens", "TTFT ms", "decode tok/s", "ingest ms",
                         "TTFT ratio", "prompt-token ratio", "decode ratio"], rows)
        for r in a["models"]:
            lines.append(f"- {r['model']}: {r['model_note']}; retrieval encoder {r['retrieval_encoder']}; memory "
                         f"from {r['memory_frames']} frames at {r['memory_ingest_fps']:g} fps "
                         f"({r['memory_frames_kept']} kept); vision {r['vision_ms_per_frame']} ms/frame")
        c = a["ask_while_ingesting"]
        lines += ["", f"Asking while ingesting ({c['model']}, {c['frames_per_run']} frames): ingest fps alone "
                  f"{c['ingest_fps_alone']} (runs {c['ingest_fps_alone_runs']}), with a thread asking in a loop "
                  f"{c['ingest_fps_asking']} ({c['questions_answered_while_ingesting']} answers) → slowdown "
                  f"{c['slowdown_pct']} %.", ""]
    if "gpu" in results:
        g = results["gpu"]
        lines += ["## GPU", ""]
        if not g.get("run"):
            lines += [f"Not run: {g.get('reason')}", ""]
        else:
            lines += _table(["batch", "frames/s"], [[r["batch"], r["frames_per_s"]] for r in g["batch_sweep"]])
            lines += [f"Highest camera rate kept up with (≤ {g['camera']['max_drop_pct']} % dropped): "
                      f"{g['camera']['max_rate_kept_up']} fps", ""]
    return "\n".join(lines) + "\n"


def plots(results: dict[str, Any], out: Path) -> list[str]:
    """PNG plots (matplotlib, Agg): RSS over time, recall vs tokens/minute, per-stage breakdown."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written = []
    if "soak" in results:
        s = results["soak"]["samples"]
        fig, ax = plt.subplots(figsize=(6.4, 3.6))
        ax.plot([x["minute"] for x in s], [x["rss_mb"] for x in s], color="tab:blue")
        ax.set_xlabel("simulated minute")
        ax.set_ylabel("RSS (MB)", color="tab:blue")
        ax2 = ax.twinx()
        ax2.plot([x["minute"] for x in s], [x["tokens_in_ram"] for x in s], color="tab:orange")
        ax2.axhline(results["soak"]["max_ram_tokens"], color="tab:orange", ls=":", lw=1)
        ax2.set_ylabel("tokens_in_ram", color="tab:orange")
        ax.set_title("Soak: RSS and tokens in RAM (budget dotted)")
        fig.tight_layout()
        fig.savefig(out / "rss.png", dpi=90)
        plt.close(fig)
        written.append("rss.png")
    if "needle" in results:
        fig, axes = plt.subplots(1, 2, figsize=(8.4, 3.4), sharey=True)
        for minutes in sorted({r["minutes"] for r in results["needle"]}):
            rs = sorted((r for r in results["needle"] if r["minutes"] == minutes),
                        key=lambda r: r["stored_tokens_per_minute"])
            x = [r["stored_tokens_per_minute"] for r in rs]
            for ax, key in zip(axes, ("image", "citations"), strict=True):
                ax.plot(x, [r[f"recall_{key}@1"] for r in rs], "o-", label=f"{minutes:g} min @1")
                ax.plot(x, [r[f"recall_{key}@3"] for r in rs], "s--", label=f"{minutes:g} min @3")
        for ax, key in zip(axes, ("image-query search", "answer citations"), strict=True):
            ax.set_xscale("log")
            ax.set_xlabel("tokens stored per minute")
            ax.set_title(key)
        axes[0].set_ylabel("recall")
        axes[1].legend(fontsize=7)
        fig.tight_layout()
        fig.savefig(out / "recall.png", dpi=90)
        plt.close(fig)
        written.append("recall.png")
    if "ingest" in results:
        rows = [r for r in results["ingest"] if "skipped" not in r]
        if rows:
            fig, ax = plt.subplots(figsize=(6.4, 0.9 + 0.6 * len(rows)))
            left = np.zeros(len(rows))
            for k in STAGES:
                v = np.array([r["ms_per_input_frame"].get(k, 0.0) for r in rows])
                ax.barh(range(len(rows)), v, left=left, label=k)
                left += v
            ax.set_yticks(range(len(rows)), [r["label"].split(" @")[0] for r in rows], fontsize=7)
            ax.set_xlabel("ms per sampled frame")
            ax.legend(fontsize=7, ncol=3)
            ax.set_title("Ingest: per-stage time")
            fig.tight_layout()
            fig.savefig(out / "stages.png", dpi=90)
            plt.close(fig)
            written.append("stages.png")
    return written


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="streamvid bench", description="Benchmark suite: ingest, soak, needle in a "
                                "haystack, answer latency, GPU. Writes JSON, markdown and PNG plots.")
    p.add_argument("--quick", action="store_true", help="smaller sizes (< 3 minutes on 2 CPU cores)")
    p.add_argument("--smoke", action="store_true", help="the smallest sizes (for tests; implies --quick)")
    p.add_argument("--out", default=None, help="output directory (default bench-out/run-<time>)")
    p.add_argument("--sections", default=",".join(SECTIONS), help=f"comma-separated subset of {','.join(SECTIONS)}")
    p.add_argument("--cache-dir", default=str(DEFAULT_CACHE), help="where generated videos are kept")
    p.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    real = ", ".join(k for k in MODEL_NOTES if not k.startswith("tiny:"))
    p.add_argument("--answer-models", default=None,
                   help=f"comma-separated models for the answer section (default: the tiny ones; also {real})")
    p.add_argument("--no-progress", action="store_true")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """``streamvid bench [--quick] [--smoke] [--out DIR] [--sections a,b] [--cache-dir DIR]``; returns 0."""
    args = build_parser().parse_args(argv)
    sections = [s.strip() for s in args.sections.split(",") if s.strip()]
    unknown = sorted(set(sections) - set(SECTIONS))
    if unknown:
        raise ConfigError(f"unknown bench section(s) {', '.join(unknown)}; choose from {', '.join(SECTIONS)}")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    if args.threads:
        torch.set_num_threads(args.threads)
    mode = "smoke" if args.smoke else "quick" if args.quick else "full"
    sizes = SIZES[mode]
    if args.answer_models:
        names = tuple(n.strip() for n in args.answer_models.split(",") if n.strip())
        bad = [n for n in names if n not in MODEL_NOTES]
        if bad:
            raise ConfigError(f"unknown answer model(s) {', '.join(bad)}; choose from {', '.join(MODEL_NOTES)}")
        sizes = dataclasses.replace(sizes, answer_models=names)
    started = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    out = Path(args.out) if args.out else REPO / "bench-out" / f"run-{started}"
    out.mkdir(parents=True, exist_ok=True)
    progress = not args.no_progress and sys.stderr.isatty()
    t0 = time.perf_counter()
    results: dict[str, Any] = {"mode": mode, "started": started,
                               "command": "streamvid bench " + " ".join(argv if argv is not None else sys.argv[1:]),
                               "machine": machine_info()}
    results.update(run_suite(sizes, sections, Path(args.cache_dir), quick=mode != "full", progress=progress))
    results["wall_s"] = round(time.perf_counter() - t0, 1)
    results["machine"]["load_average_end"] = load_average()
    (out / "results.json").write_text(json.dumps(results, indent=1, default=str) + "\n")
    md = markdown(results)
    (out / "results.md").write_text(md)
    results["plots"] = plots(results, out)
    print(md)
    print(f"[bench] wrote {out}/results.json, results.md, {', '.join(results['plots'])}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
