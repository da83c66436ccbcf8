"""The benchmark sections. Each returns a plain dict; ``run_suite`` runs the requested ones.

* ingest  — fps and per-stage ms/frame (decode, key, gate, vision, compress, memory) on the shared
  vtest.avi ($STREAMVID_SHARED or ``--vtest``) and a generated 1080p 10-minute video; perception
  time over the bare vision tower's time as a ratio;
* soak    — a 2-hour stream at 1 fps (rendered frames with their times, low resolution,
  tiny-random): RSS and tokens_in_ram every simulated minute; then a live push source fed at
  2× the measured ingest rate: drops, frames waiting, arrival → memory latency;
* needle  — 10/30/60-minute rendered streams with needle frames at known times: recall@1/@3
  of image-query search and of the answer's citations, against tokens stored per minute
  (one point per compression setting);
* answer  — TTFT, decode tok/s and prompt tokens of streamvid's memory prompt against the same
  model fed N uniformly sampled frames with full tokens; asking while ingesting;
* serve   — ``streamvid serve`` (streamvid_bench.serve): API overhead per ask over the in-process ask;
  20 push sessions at 2 fps for 60 s with asks in between (errors, drops, memory); event close →
  watch notification latency;
* gpu     — a frame_tokens batch-size sweep and the highest camera rate ingestion keeps up
  with; only where CUDA is present (reported as not run otherwise).

Absolute times depend on the machine and its load (the JSON records the load average);
compare figures as ratios within one run. With random weights, the gate/segmenter/retrieval
decisions are not meaningful the way trained weights' are: the figures measure cost and
plumbing, not answer quality.
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from streamvid_bench.report import PERCEPTION, RANDOM_WEIGHTS_NOTE, load_average, median, ratio, rss_mb
from streamvid_bench.samples import ensure_video
from streamvid_bench.sources import (
    MODEL_NOTES,
    Models,
    RenderedSource,
    Scenery,
    TimedSource,
    bench_config,
    first_frame,
    generated_answer_video,
    load_encoder,
    load_llm,
    make_agent,
    read_frames_at,
)
from tqdm import tqdm

from streamvid.config import AgentConfig
from streamvid.pipeline import StageTimer
from streamvid.sources import open_source
from streamvid.types import Frame

QUESTION = "What does the ball do in the video?"


# ----------------------------------------------------------------------------------------- compression
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
        "perception_over_vision": ratio(perception, vision),
        "perception_and_memory_over_vision": ratio(with_memory, vision),
        "around_vision_ms_per_kept_frame": round((with_memory - vision) / max(1, kept), 3),
    }


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
            if len(batch) >= config.frames_per_batch:
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
        "stored_over_raw": ratio(stored_per_min, raw_per_min),
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
    timer = agent.backend.timer
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
        "rss_end_over_rss_when_full": ratio(samples[-1]["rss_mb"], full["rss_mb"]) if full else None,
        "samples": samples,
    }


def live_report(models: Models, config: AgentConfig, *, push_fps: float, seconds: float,
                size: tuple[int, int]) -> dict[str, Any]:
    from streamvid.agent import LIVE_IN_FLIGHT

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
        "buffer_capacity": 1, "max_in_flight": LIVE_IN_FLIGHT * config.frames_per_batch,
        "latency_ms_p50": round(float(np.nanpercentile(lat, 50)), 1),
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
        timer = agent.backend.timer
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
            "ttft_ratio": ratio(memory["ttft_ms"], base["ttft_ms"]),
            "ttft_with_retrieval_ratio": ratio(memory["ttft_ms"] + memory["retrieval_ms"], base["ttft_ms"]),
            "prompt_tokens_ratio": ratio(memory["prompt_tokens"], base["prompt_tokens"]),
            "decode_tok_s_ratio": ratio(memory["decode_tok_s"], base["decode_tok_s"]),
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
        timer = agent.backend.timer
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
    serve_sessions: int = 20  # the serve section: push sessions at 2 fps for serve_seconds, asks in between
    serve_seconds: float = 60.0
    serve_reps: int = 20


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
                        real_ingest_fps=0.05, concurrency_minutes=1, serve_seconds=15.0, serve_reps=10),
    "smoke": SuiteSizes(hd_minutes=0.25, hd_native_fps=2, soak_minutes=3, live_seconds=2, needle_minutes=(1,),
                        needle_count=2, needle_settings=((1, 4, 0.95), (16, 64, 0.995)), answer_minutes=1,
                        answer_ns=(2, 4), answer_models=("tiny:smolvlm",), answer_reps=1, real_ingest_fps=0.05,
                        concurrency_minutes=0.25, vtest=False, hd_size=(640, 360), serve_sessions=2,
                        serve_seconds=3.0, serve_reps=3),
}
SECTIONS = ("soak", "ingest", "needle", "answer", "serve", "gpu")


def run_suite(sizes: SuiteSizes, sections: Sequence[str], cache: Path, *, quick: bool, vtest: Path | None = None,
              progress: bool = False) -> dict[str, Any]:
    """Every requested section with shared tiny-random models; returns the run's results dict.

    ``vtest``: the shared street footage for the ingest section (skipped, with the reason, when None or missing).
    """
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
        if sizes.vtest and vtest is not None and vtest.is_file():
            rows.append(ingest_report(tiny, vtest, 1.0, cfg, label="vtest.avi 1280x720 @1 fps", progress=progress))
        elif sizes.vtest:
            reason = f"{vtest} not found" if vtest else "no --vtest given and STREAMVID_SHARED is not set"
            rows.append({"label": "vtest.avi", "skipped": reason})
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
    if section("serve"):
        from streamvid_bench.serve import serve_report

        results["serve"] = serve_report(sizes.serve_seconds, sizes.serve_sessions, sizes.serve_reps)
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
