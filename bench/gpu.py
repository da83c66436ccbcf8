"""Issue 13's targets in one run: ``python scripts/bench_gpu.py`` (see ``--help``).

Sections (``--sections``, default all; each one's failure is recorded in the JSON and the rest go on):

* ``every`` — SmolVLM-256M at real size (random weights, real config), a generated 720p H.264 file,
  every frame kept (pre-gate off, τ_dup > 1): end-to-end frames/s through ``StreamAgent.ingest``
  (staged), beside the bare vision tower (+ connector) at the same batch size over as many frames,
  pixels already on the device; the ratio of the two times. Also the serial path, and per-stage ms
  measured with a device synchronisation after every stage (a separate, slower run). On a CPU
  (shared, noisy) staged, tower and serial run in three interleaved rounds and each one's fastest
  round is used; every round's fps is in the JSON.
* ``gate``  — the same model, the default gate (pre-gate on, default τ_dup), on real footage: the
  shared vtest.avi (1280×720) looped and re-encoded as H.264 → frames/s.
* ``live``  — 720p frames pushed at increasing rates: the highest rate with ≤ 5 % dropped, and the
  arrival → memory-write latency (p50/p95) at each rate.
* ``qwen``  — Qwen2.5-VL-3B at real size (on a CPU: its widths with 2 LM layers and 2 vision blocks),
  every frame kept → frames/s, beside its bare tower.

Each timed pass stops at its frame count or its time limit, whichever comes first, and reports the
frames it did. On a CPU (``--device cpu``) the frame counts and rates are small (``--quick`` smaller
still); the CPU target of issue 13 is the ``every`` section's there. The table's "goal" column holds
the issue's targets for the device the run used.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import subprocess
import sys
import threading
import time
import traceback
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from streamvid.sources import FrameSource, open_source
from streamvid.types import Frame

SECTIONS = ("every", "gate", "live", "qwen")
SMOLVLM_DIR = "HuggingFaceTB__SmolVLM-256M-Instruct"
QWEN_DIR = "Qwen__Qwen2.5-VL-3B-Instruct"
QWEN_CPU_CUT = {"text_config.num_hidden_layers": 2, "vision_config.depth": 2,
                "vision_config.fullatt_block_indexes": [1]}
MAX_DROP_PCT = 5.0


@dataclass
class Plan:
    """Sizes of one run (frames, seconds, rates) for the device and mode."""

    batch: int
    every_frames: int
    gate_frames: int
    qwen_frames: int
    seconds: float  # time limit of each timed pass
    live_rates: tuple[float, ...]
    live_seconds: float
    stage_frames: int  # frames of the synchronised per-stage run
    every_rounds: int = 1  # `every`: rounds of (staged, tower, serial), interleaved; each one's best is kept


def plan_for(device: str, quick: bool) -> Plan:
    from streamvid.device import default_batch_size  # what the agent itself uses when batch_frames is None

    batch = default_batch_size(device)
    if device == "cuda":
        if quick:
            return Plan(batch, 320, 400, 96, 10.0, (30, 60, 120), 3.0, 128)
        return Plan(batch, 1280, 1364, 480, 12.0, (30, 60, 90, 120, 180), 3.0, 320)
    if quick:
        return Plan(batch, 4, 8, 2, 60.0, (0.5, 1.0), 4.0, 0)
    # a CPU shared with other work slows whichever run it lands on: three interleaved rounds, best of each
    return Plan(batch, 16, 24, 4, 120.0, (0.25, 0.5, 1.0, 2.0), 8.0, 4, every_rounds=3)


# ------------------------------------------------------------------------------------------ helpers
def sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def cpu_dtype() -> str:
    """bf16 on a CPU that computes it natively (AVX512-BF16 / AMX), else fp32 (issue 13 item 7)."""
    try:
        from streamvid.device import resolve_dtype

        return "bfloat16" if resolve_dtype("auto", "cpu") == torch.bfloat16 else "float32"
    except ImportError:  # before streamvid.device exists
        flags = Path("/proc/cpuinfo").read_text(errors="replace") if Path("/proc/cpuinfo").exists() else ""
        return "bfloat16" if ("avx512_bf16" in flags or "amx_bf16" in flags) else "float32"


def models_root(flag: str | None) -> Path:
    if flag:
        return Path(flag)
    if os.environ.get("STREAMVID_SHARED_MODELS"):
        return Path(os.environ["STREAMVID_SHARED_MODELS"])
    if os.environ.get("STREAMVID_SHARED"):
        return Path(os.environ["STREAMVID_SHARED"]) / "models"
    return Path("/work/shared/models")


def media_root(flag: str | None) -> Path:
    if flag:
        return Path(flag)
    if os.environ.get("STREAMVID_SHARED"):
        return Path(os.environ["STREAMVID_SHARED"]) / "media"
    return Path("/work/shared/media")


def machine() -> dict[str, Any]:
    info: dict[str, Any] = {"platform": platform.platform(), "cpus": os.cpu_count(), "torch": torch.__version__,
                            "torch_threads": torch.get_num_threads(),
                            "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None}
    with contextlib.suppress(Exception):
        import transformers

        info["transformers"] = transformers.__version__
    with contextlib.suppress(Exception):
        root = Path(__file__).resolve().parents[1]
        info["git_commit"] = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True,
                                            text=True, timeout=5).stdout.strip() or None
    return info


def load_llm(root: Path, name: str, device: str, dtype: str, cut: dict | None = None) -> Any:
    from streamvid.models import load_video_llm

    return load_video_llm(str(root / name), device=device, dtype=dtype, random_weights=True, config_overrides=cut)


def load_encoder(device: str, dtype: str) -> Any:
    from streamvid.encoders import RetrievalEncoder

    return RetrievalEncoder("ViT-B-32", "", device=device, dtype=dtype)


# --------------------------------------------------------------------------------------------- media
def write_h264(path: Path, frames: Iterator[np.ndarray], fps: int, width: int, height: int) -> int:
    """Encode RGB frames as H.264 (yuv420p, all encoder threads) at ``path``; returns the frame count."""
    import av

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".part.mp4")
    n = 0
    with av.open(str(tmp), "w") as out:
        stream = out.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.options = {"preset": "veryfast", "crf": "23"}
        stream.codec_context.thread_count = 0
        for rgb in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(rgb, format="rgb24")):
                out.mux(packet)
            n += 1
        for packet in stream.encode():
            out.mux(packet)
    tmp.replace(path)
    return n


def moving_frames(n: int, width: int = 1280, height: int = 720, seed: int = 0) -> Iterator[np.ndarray]:
    """Frames whose every one differs: a drifting colour field, a moving disc and a frame counter."""
    import cv2

    rng = np.random.default_rng(seed)
    base = cv2.resize(rng.integers(0, 255, (9, 16, 3), dtype=np.uint8), (width, height),
                      interpolation=cv2.INTER_CUBIC)
    for i in range(n):
        img = np.roll(base, 4 * i, axis=1)
        x = int((0.1 + 0.8 * ((i * 7) % 300) / 300) * width)
        cv2.circle(img, (x, height // 2), height // 10, (240, 240, 30), -1)
        cv2.putText(img, f"frame {i}", (40, height - 40), cv2.FONT_HERSHEY_SIMPLEX, 2.0, (255, 255, 255), 4)
        yield img


def every_frame_video(cache: Path, n: int) -> Path:
    path = cache / f"every_720p_{n}.mp4"
    if not path.exists():
        write_h264(path, moving_frames(n), 30, 1280, 720)
    return path


def real_720p_video(cache: Path, media: Path, n: int) -> Path:
    """vtest.avi (1280×720 street footage) looped to ``n`` frames, re-encoded as H.264 at 25 fps."""
    src = media / "vtest.avi"
    if not src.exists():
        raise FileNotFoundError(f"{src} not found: pass --media DIR or set STREAMVID_SHARED")
    path = cache / f"vtest_720p_{n}.mp4"
    if path.exists():
        return path

    def frames() -> Iterator[np.ndarray]:
        import cv2

        made = 0
        while made < n:
            with open_source(str(src)) as s:
                for f in s:
                    rgb = f.rgb if f.rgb.shape[:2] == (720, 1280) else cv2.resize(f.rgb, (1280, 720))
                    yield rgb
                    made += 1
                    if made >= n:
                        return

    write_h264(path, frames(), 25, 1280, 720)
    return path


class Limited(FrameSource):
    """A source that stops after ``frames`` frames or ``seconds`` of wall time from its first frame."""

    def __init__(self, inner: FrameSource, frames: int, seconds: float) -> None:
        super().__init__(inner.spec)
        self.inner, self.limit, self.seconds = inner, frames, seconds
        self.backend, self.is_live = inner.backend, inner.is_live
        self.duration = None
        self.given = 0

    def __iter__(self) -> Iterator[Frame]:
        deadline = None
        for frame in self.inner:
            deadline = deadline or time.monotonic() + self.seconds
            yield frame
            self.given += 1
            if self.given >= self.limit or time.monotonic() > deadline:
                return

    def close(self) -> None:
        self.inner.close()
        super().close()


# ------------------------------------------------------------------------------------ bare tower
def tower_fn(llm: Any, frames: list[np.ndarray]) -> tuple[Callable[[], Any], int]:
    """(a call running the vision tower + connector once on ``frames`` already preprocessed and on the
    device, batch size). Uses the adapter's device-side ``pixels``/``tower`` when it has them, else its
    processor's ``pixel_inputs`` and the family's ``get_image_features`` call."""
    if hasattr(llm, "pixels") and hasattr(llm, "tower"):
        x = torch.from_numpy(np.stack(frames)).to(llm.device).permute(0, 3, 1, 2)
        with torch.inference_mode():
            inputs = llm.pixels(x)
        return (lambda: llm.tower(inputs)), len(frames)
    px = llm.pixel_inputs(frames)
    pv = px["pixel_values"].to(llm.dtype)
    if llm.family == "qwen2_5_vl":
        return (lambda: llm.model.get_image_features(pixel_values=pv, image_grid_thw=px["image_grid_thw"])), len(frames)
    return (lambda: llm.model.get_image_features(pixel_values=pv,
                                                 pixel_attention_mask=px.get("pixel_attention_mask"))), len(frames)


def bare_tower(llm: Any, frames: list[np.ndarray], total: int, device: str) -> dict[str, Any]:
    """The tower alone over ``total`` frames, ``len(frames)`` at a time (one warm-up call first)."""
    call, batch = tower_fn(llm, frames)
    calls = max(1, -(-total // batch))
    with torch.inference_mode():
        call()
        sync(device)
        t0 = time.perf_counter()
        for _ in range(calls):
            call()
        sync(device)
    wall = time.perf_counter() - t0
    return {"batch": batch, "frames": calls * batch, "wall_s": round(wall, 3),
            "fps": round(calls * batch / wall, 2), "ms_per_frame": round(1000 * wall / (calls * batch), 3)}


def first_frames(video: Path, n: int) -> list[np.ndarray]:
    out = []
    with open_source(str(video)) as src:
        for f in src:
            out.append(f.rgb)
            if len(out) >= n:
                break
    while len(out) < n:
        out.append(out[len(out) % max(1, len(out))])
    return out


# ------------------------------------------------------------------------------------------ agents
def bench_config(device: str, dtype: str, batch: int, *, keep_all: bool, staged: bool | None = None) -> Any:
    """The default AgentConfig for the device, with captions off; ``keep_all``: every frame kept;
    ``staged``: the ingest threading (None: the device's default, ``AgentConfig.ingest_staged``)."""
    from streamvid.config import AgentConfig

    fields = dict(device=device, dtype=dtype, batch_frames=batch, captions=False, staged_ingest=staged,
                  queue_batches=2, max_ram_tokens=16384)
    if keep_all:
        fields.update(pregate=False, tau_dup=1.0)  # the largest AgentConfig accepts
    return AgentConfig(**fields)


def ingest_run(llm: Any, encoder: Any, config: Any, video: Path, frames: int, seconds: float,
               exact: bool = False) -> dict[str, Any]:
    """One StreamAgent.ingest over ``video`` (every decoded frame, up to the limits): fps and stage ms."""
    from streamvid.agent import StreamAgent
    from streamvid.backends.vlm import VLMBackend

    agent = StreamAgent(config, backend=VLMBackend(config, llm=llm, encoder=encoder))
    try:
        pipe = getattr(agent.backend, "pipeline", None)
        if exact and pipe is not None and hasattr(pipe, "exact_timings"):
            pipe.exact_timings(True)
        src = Limited(open_source(str(video)), frames, seconds)
        t0 = time.perf_counter()
        stats = agent.ingest(src, progress=False)
        sync(config.device)
        wall = time.perf_counter() - t0
        seen = int(stats["frames_seen"])
        return {"frames": seen, "frames_kept": int(stats["frames_kept"]), "wall_s": round(wall, 3),
                "fps": round(seen / wall, 2), "kept_fps": round(int(stats["frames_kept"]) / wall, 2),
                "stage_ms_per_frame": {k: round(v, 3) for k, v in agent.stage_ms_per_frame().items()},
                "events": int(stats["events"])}
    finally:
        agent.close()


def warm(llm: Any, encoder: Any, config: Any, video: Path) -> None:
    """One short untimed ingest: kernels, allocator and threads are set up before timing."""
    ingest_run(llm, encoder, config, video, frames=2 * config.frames_per_batch, seconds=60.0)


# ---------------------------------------------------------------------------------------- sections
def section_every(ctx: dict[str, Any]) -> dict[str, Any]:
    plan, device, dtype = ctx["plan"], ctx["device"], ctx["dtype"]
    video = every_frame_video(ctx["cache"], plan.every_frames)
    llm, encoder = ctx["smolvlm"](), ctx["encoder"]()
    config = bench_config(device, dtype, plan.batch, keep_all=True)
    warm(llm, encoder, config, video)
    rounds: dict[str, list[dict[str, Any]]] = {"staged": [], "bare_tower": [], "serial": []}
    for _ in range(plan.every_rounds):  # interleaved, so a slow moment of the machine hits each kind alike
        rounds["staged"].append(ingest_run(llm, encoder, bench_config(device, dtype, plan.batch, keep_all=True,
                                                                      staged=True),
                                           video, plan.every_frames, plan.seconds))
        rounds["bare_tower"].append(bare_tower(llm, first_frames(video, plan.batch), rounds["staged"][-1]["frames"],
                                               device))
        rounds["serial"].append(ingest_run(llm, encoder, bench_config(device, dtype, plan.batch, keep_all=True,
                                                                      staged=False),
                                           video, plan.every_frames, plan.seconds / 2))
    staged, tower, serial = (max(rounds[k], key=lambda r: r["fps"]) for k in ("staged", "bare_tower", "serial"))
    default = "staged" if config.ingest_staged else "serial"  # the path the device uses unless told otherwise
    pipeline = staged if config.ingest_staged else serial

    def over(run: dict[str, Any]) -> float | None:
        return round(tower["fps"] / run["fps"], 3) if run["fps"] else None

    out = {"video": f"generated 1280×720 H.264, {plan.every_frames} frames", "model": "SmolVLM-256M real size",
           "dtype": dtype, "batch": plan.batch, "staged": staged, "serial": serial, "bare_tower": tower,
           "default_path": default, "fps": pipeline["fps"], "over_bare_tower": over(pipeline),
           "staged_over_bare_tower": over(staged), "serial_over_bare_tower": over(serial),
           "rounds": plan.every_rounds, "fps_each_round": {k: [r["fps"] for r in v] for k, v in rounds.items()}}
    if plan.stage_frames:
        exact = ingest_run(llm, encoder, config, video, plan.stage_frames, plan.seconds / 2, exact=True)
        out["stage_ms_synchronised"] = exact["stage_ms_per_frame"]
    return out


def section_gate(ctx: dict[str, Any]) -> dict[str, Any]:
    plan, device, dtype = ctx["plan"], ctx["device"], ctx["dtype"]
    video = real_720p_video(ctx["cache"], ctx["media"], plan.gate_frames)
    llm, encoder = ctx["smolvlm"](), ctx["encoder"]()
    config = bench_config(device, dtype, plan.batch, keep_all=False)
    warm(llm, encoder, config, video)
    run = ingest_run(llm, encoder, config, video, plan.gate_frames, plan.seconds)
    return {"video": f"vtest.avi looped to {plan.gate_frames} frames, 1280×720 H.264", "model": "SmolVLM-256M",
            "gate": {"pregate": config.pregate, "tau_dup": config.tau_dup}, **run,
            "kept_pct": round(100.0 * run["frames_kept"] / max(1, run["frames"]), 1)}


def live_once(llm: Any, encoder: Any, config: Any, pool: Sequence[np.ndarray], rate: float,
              seconds: float) -> dict[str, Any]:
    """Push ``pool`` frames (cycled) at ``rate`` for ``seconds``; every frame's arrival time is its t, so
    at its memory write (or drop by the gate) the latency is now − t."""
    from streamvid.agent import StreamAgent
    from streamvid.backends.vlm import VLMBackend

    agent = StreamAgent(config, backend=VLMBackend(config, llm=llm, encoder=encoder))
    latencies: list[float] = []
    lock = threading.Lock()
    t0 = time.monotonic()
    write = agent._write_batch

    def timed_write(batch: Any) -> None:
        write(batch)
        now = time.monotonic() - t0
        with lock:
            for t in [*batch.times.tolist(), *(t for _, _, t in batch.dropped)]:
                latencies.append((now - t) * 1000.0)

    agent._write_batch = timed_write
    pushed = 0
    try:
        agent.start()
        start = time.monotonic()
        while time.monotonic() - start < seconds:
            delay = start + pushed / rate - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            agent.push(pool[pushed % len(pool)], t=time.monotonic() - t0)
            pushed += 1
        stats = agent.stop()
        dropped = agent.dropped_frames
    finally:
        agent.close()
    lat = np.array(latencies) if latencies else np.array([np.nan])
    return {"rate": rate, "pushed": pushed, "dropped": dropped,
            "dropped_pct": round(100.0 * dropped / max(1, pushed), 1),
            "ingested": int(stats["frames_seen"]), "kept": int(stats["frames_kept"]),
            "latency_ms_p50": round(float(np.nanpercentile(lat, 50)), 1),
            "latency_ms_p95": round(float(np.nanpercentile(lat, 95)), 1), "latency_samples": len(latencies)}


def section_live(ctx: dict[str, Any]) -> dict[str, Any]:
    plan, device, dtype = ctx["plan"], ctx["device"], ctx["dtype"]
    llm, encoder = ctx["smolvlm"](), ctx["encoder"]()
    pool = list(moving_frames(60, seed=1))
    config = bench_config(device, dtype, plan.batch, keep_all=False)
    live_once(llm, encoder, config, pool, plan.live_rates[0], min(2.0, plan.live_seconds))  # warm-up
    rows, best = [], None
    for rate in plan.live_rates:
        r = live_once(llm, encoder, config, pool, rate, plan.live_seconds)
        rows.append(r)
        if r["dropped_pct"] > MAX_DROP_PCT:
            break
        best = r
    return {"frame": "1280×720, every pushed frame differs", "model": "SmolVLM-256M", "max_drop_pct": MAX_DROP_PCT,
            "max_rate_kept_up": best["rate"] if best else None,
            "latency_ms_p95_at_max_rate": best["latency_ms_p95"] if best else None, "rates": rows}


def section_qwen(ctx: dict[str, Any]) -> dict[str, Any]:
    plan, device, dtype = ctx["plan"], ctx["device"], ctx["dtype"]
    cut = QWEN_CPU_CUT if device == "cpu" else None
    llm = load_llm(ctx["models"], QWEN_DIR, device, dtype, cut)
    encoder = ctx["encoder"]()
    video = every_frame_video(ctx["cache"], plan.every_frames)
    config = bench_config(device, dtype, plan.batch, keep_all=True)
    warm(llm, encoder, config, video)
    run = ingest_run(llm, encoder, config, video, plan.qwen_frames, plan.seconds)
    tower = bare_tower(llm, first_frames(video, plan.batch), run["frames"], device)
    return {"model": "Qwen2.5-VL-3B real size" + (" (CPU: 2 LM layers, 2 vision blocks)" if cut else ""),
            "dtype": dtype, "batch": plan.batch, **run, "bare_tower": tower,
            "over_bare_tower": round(tower["fps"] / run["fps"], 3) if run["fps"] else None}


RUNNERS: dict[str, Callable[[dict[str, Any]], dict[str, Any]]] = {
    "every": section_every, "gate": section_gate, "live": section_live, "qwen": section_qwen,
}


# ------------------------------------------------------------------------------------------ report
def targets(results: dict[str, Any], device: str) -> list[tuple[str, Any, str, bool | None]]:
    """(target, measured, goal, met) rows for the issue's targets on this device."""
    s = results["sections"]

    def get(section: str, *keys: str) -> Any:
        v: Any = s.get(section, {})
        for k in keys:
            v = v.get(k) if isinstance(v, dict) else None
        return v

    def row(name: str, value: Any, goal: str, ok: Callable[[Any], bool]) -> tuple[str, Any, str, bool | None]:
        return (name, value, goal, None if value is None else bool(ok(value)))

    if device != "cuda":
        return [
            row("CPU SmolVLM every frame: ingest fps", get("every", "fps"), "≥ 1.0", lambda v: v >= 1.0),
            row("CPU SmolVLM: pipeline / bare tower time", get("every", "over_bare_tower"), "≤ 1.15",
                lambda v: v <= 1.15),
            row("CPU default gate on vtest: fps", get("gate", "fps"), "(no target)", lambda v: True),
            row("CPU live: highest rate ≤ 5 % dropped", get("live", "max_rate_kept_up"), "(no target)", lambda v: True),
            row("CPU Qwen2.5-VL (cut) every frame: fps", get("qwen", "fps"), "(no target)", lambda v: True),
        ]
    return [
        row("SmolVLM every frame 720p: fps", get("every", "fps"), "≥ 600", lambda v: v >= 600),
        row("SmolVLM: pipeline / bare tower time", get("every", "over_bare_tower"), "≤ 1.5", lambda v: v <= 1.5),
        row("default gate, real 720p: fps", get("gate", "fps"), "≥ 1000", lambda v: v >= 1000),
        row("live 720p: highest rate ≤ 5 % dropped", get("live", "max_rate_kept_up"), "≥ 60", lambda v: v >= 60),
        row("live: arrival→memory p95 ms at that rate", get("live", "latency_ms_p95_at_max_rate"), "≤ 100",
            lambda v: v <= 100),
        row("Qwen2.5-VL-3B every frame: fps", get("qwen", "fps"), "≥ 120", lambda v: v >= 120),
    ]


def table(results: dict[str, Any], device: str) -> str:
    rows = [("target", "measured", "goal", "met")]
    for name, value, goal, ok in targets(results, device):
        rows.append((name, "–" if value is None else str(value), goal, "–" if ok is None else ("yes" if ok else "NO")))
    s = results["sections"]
    for name, r in s.items():
        if "error" in r:
            rows.append((f"[{name}] failed", r["error"].splitlines()[-1][:70], "", ""))
    if "every" in s and "bare_tower" in s["every"]:
        e = s["every"]
        rows.append((f"  bare tower fps (batch {e['bare_tower']['batch']})", str(e["bare_tower"]["fps"]), "", ""))
        rows.append((f"  staged / serial fps (default: {e['default_path']})",
                     f"{e['staged']['fps']} / {e['serial']['fps']}", "", ""))
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    lines = [" | ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in rows]
    lines.insert(1, "-+-".join("-" * w for w in widths))
    return "\n".join(lines)


def write_json(path: Path, results: dict[str, Any], device: str) -> None:
    results["targets"] = [dict(zip(("target", "measured", "goal", "met"), t, strict=True))
                          for t in targets(results, device)]
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".part")
    tmp.write_text(json.dumps(results, indent=2, default=str))
    tmp.replace(path)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="bench_gpu.py", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", choices=("cuda", "cpu"), default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--quick", action="store_true", help="smaller frame counts and fewer rates")
    p.add_argument("--sections", default=",".join(SECTIONS), help=f"comma-separated subset of {','.join(SECTIONS)}")
    p.add_argument("--out", default="bench-out/gpu.json", help="JSON results file")
    p.add_argument("--cache-dir", default=None, help="generated videos (default: <out's folder>/cache)")
    p.add_argument("--models", default=None, help="folder with the real model configs (default "
                   "$STREAMVID_SHARED_MODELS, $STREAMVID_SHARED/models, /work/shared/models)")
    p.add_argument("--media", default=None, help="folder with vtest.avi (default $STREAMVID_SHARED/media)")
    p.add_argument("--dtype", default=None, help="model dtype (default bf16 on CUDA; bf16 on a CPU with native "
                   "bf16, else float32)")
    p.add_argument("--batch", type=int, default=None, help="frames per batch (default 32 on CUDA, 2 on a CPU)")
    p.add_argument("--seconds", type=float, default=None, help="time limit of each timed pass")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    if args.device == "cuda" and not torch.cuda.is_available():
        print("bench_gpu: --device cuda but torch sees no CUDA device; use --device cpu", file=sys.stderr)
        return 2
    sections = [s.strip() for s in args.sections.split(",") if s.strip()]
    unknown = sorted(set(sections) - set(SECTIONS))
    if unknown:
        print(f"bench_gpu: unknown section(s) {', '.join(unknown)}; choose from {', '.join(SECTIONS)}", file=sys.stderr)
        return 2
    plan = plan_for(args.device, args.quick)
    if args.batch:
        plan.batch = args.batch
    if args.seconds:
        plan.seconds = args.seconds
    dtype = args.dtype or ("bfloat16" if args.device == "cuda" else cpu_dtype())
    out = Path(args.out)
    cache = Path(args.cache_dir) if args.cache_dir else out.parent / "cache"
    root = models_root(args.models)
    loaded: dict[str, Any] = {}

    def once(name: str, make: Callable[[], Any]) -> Callable[[], Any]:
        def get() -> Any:
            if name not in loaded:
                loaded[name] = make()
            return loaded[name]
        return get

    ctx = {"plan": plan, "device": args.device, "dtype": dtype, "cache": cache, "media": media_root(args.media),
           "models": root,
           "smolvlm": once("smolvlm", lambda: load_llm(root, SMOLVLM_DIR, args.device, dtype)),
           "encoder": once("encoder", lambda: load_encoder(args.device, dtype))}
    results: dict[str, Any] = {"command": " ".join([Path(sys.argv[0]).name, *(argv or sys.argv[1:])]),
                               "device": args.device, "dtype": dtype, "quick": args.quick, "plan": plan.__dict__,
                               "machine": machine(), "models": str(root), "sections": {}}
    t_all = time.perf_counter()
    for name in sections:
        t0 = time.perf_counter()
        print(f"bench_gpu: {name} …", file=sys.stderr, flush=True)
        try:
            r = RUNNERS[name](ctx)
        except Exception as exc:  # one section's failure must not lose the others
            r = {"error": "".join(traceback.format_exception_only(type(exc), exc)).strip(),
                 "traceback": traceback.format_exc()}
        r["section_s"] = round(time.perf_counter() - t0, 1)
        results["sections"][name] = r
        if args.device == "cuda":
            torch.cuda.empty_cache()
        results["wall_s"] = round(time.perf_counter() - t_all, 1)
        write_json(out, results, args.device)  # after every section: a run cut short keeps what it measured
    print(f"\nstreamvid bench_gpu — {args.device} ({results['machine']['cuda'] or platform.processor() or 'cpu'}), "
          f"{dtype}, batch {plan.batch}, {results['wall_s']} s; JSON: {out}")
    print(table(results, args.device))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
