"""Host cost of the ingest stages around the towers, at 720p and one batch: what the staged pipeline
spends per frame outside the encoders (issue 13), as ``FramePipeline`` calls it.

- ``pixel``: the pre-gate stage per frame (``reduced_copy``, the shared 64×64 copy, shot detector, pre-gate);
- ``thumbnails``: the memory thumbnails of the batch (from the reduced copies);
- ``compress``: ``compress_frames(..., packed=True)`` (as the pipeline calls it) on SmolVLM-256M-shaped
  tokens [B, 64, 576], and how many torch operators it dispatches per batch (each a kernel launch on a GPU).

Best of ``--repeat`` passes, one CPU thread each for torch and OpenCV; no model weights needed.

``--pipeline``: instead, the whole host path end to end — ``StreamAgent.ingest`` of the tiny-random preset
(tiny towers, so the host work around them dominates, as on an H100) over a generated 1280×720 H.264
clip, every frame kept (pre-gate off, τ_dup 1), staged then serial, in one process: frames/s and
per-stage ms/frame (decode, pregate, upload, key, gate, vision, compress, memory). ``--profile FILE``
adds a cProfile of the serial run (every stage on one thread), its top functions printed.

    python scripts/bench_ingest_stages.py [--batch 32] [--repeat 5] [--device cpu|cuda]
    python scripts/bench_ingest_stages.py --pipeline [--frames 384] [--batch 32] [--profile FILE]
"""

from __future__ import annotations

import argparse
import cProfile
import json
import pstats
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
import torch

from streamvid.compress.merge import compress_frames
from streamvid.compress.pregate import PreGate, small_copy
from streamvid.imageops import reduced_copy
from streamvid.pipeline import thumbnail
from streamvid.segment import SHOT_SIDE, ShotDetector


def best_ms_per_frame(fn: Callable[[], object], frames: int, repeat: int, sync: Callable[[], None]) -> float:
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        sync()
        best = min(best, time.perf_counter() - t0)
    return round(best * 1000.0 / frames, 3)


def ingest_once(video: Path, frames: int, batch: int, device: str, staged: bool,
                profile: cProfile.Profile | None = None) -> dict:
    """One tiny-random ``StreamAgent.ingest`` of the first ``frames`` frames, every frame kept."""
    from streamvid_bench.gpu import Limited

    from streamvid.agent import StreamAgent
    from streamvid.sources import open_source

    agent = StreamAgent.from_preset("tiny-random", device=device, batch_frames=batch, pregate=False, tau_dup=1.0,
                                    captions=False, staged_ingest=staged)
    try:
        src = Limited(open_source(str(video)), frames, 600.0)
        t0 = time.perf_counter()
        if profile is not None:
            profile.enable()
        stats = agent.ingest(src, progress=False)
        if profile is not None:
            profile.disable()
        wall = time.perf_counter() - t0
        seen = stats["frames_seen"]
        return {"frames": seen, "kept": stats["frames_kept"], "fps": round(seen / wall, 1),
                "stage_ms": {k: round(v, 3) for k, v in agent.stage_ms_per_frame().items()}}
    finally:
        agent.close()


def pipeline(args: argparse.Namespace) -> None:
    from streamvid_bench.gpu import every_frame_video

    video = every_frame_video(Path(args.cache_dir or Path(tempfile.gettempdir()) / "streamvid-bench-cache"),
                              args.frames)
    ingest_once(video, 2 * args.batch, args.batch, args.device, True)  # warm-up: allocator, kernels, threads
    out = {"video": f"{video.name} (1280×720 H.264)", "batch": args.batch, "device": args.device,
           "torch_threads": torch.get_num_threads()}
    for name, staged in (("staged", True), ("serial", False)):
        out[name] = ingest_once(video, args.frames, args.batch, args.device, staged)
    print(json.dumps(out))
    if args.profile:
        prof = cProfile.Profile()
        ingest_once(video, args.frames, args.batch, args.device, False, prof)
        prof.dump_stats(args.profile)
        pstats.Stats(prof).sort_stats("tottime").print_stats(25)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--pipeline", action="store_true", help="end-to-end ingest, staged and serial")
    parser.add_argument("--frames", type=int, default=384, help="--pipeline: frames per timed ingest")
    parser.add_argument("--cache-dir", default=None, help="--pipeline: where the generated clip is kept")
    parser.add_argument("--profile", default=None, help="--pipeline: cProfile the serial run into this file")
    parser.add_argument("--threads", type=int, default=1, help="torch and OpenCV threads (default 1: on a shared "
                        "2-core machine a 2-thread pool stalls on every small op)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    cv2.setNumThreads(args.threads)
    if args.pipeline:
        pipeline(args)
        return
    device = torch.device(args.device)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    rng = np.random.default_rng(0)
    base = cv2.resize(rng.integers(0, 255, (45, 80, 3), dtype=np.uint8), (1280, 720), interpolation=cv2.INTER_LINEAR)
    frames = [np.roll(base, 4 * i, axis=1).copy() for i in range(args.batch)]

    def pixel() -> None:
        shots, gate = ShotDetector(), PreGate(side=SHOT_SIDE)
        for rgb in frames:
            small = small_copy(reduced_copy(rgb), SHOT_SIDE)
            shots.update(small)
            gate.check_thumbnail(small.astype(np.float32))

    reduced = [reduced_copy(f) for f in frames]
    tokens = torch.randn(args.batch, 64, 576, device=device).bfloat16()
    prev = torch.randn(64, 576, device=device).bfloat16()
    compress_frames(tokens, prev, 0.9, 32, packed=True)
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        compress_frames(tokens, prev, 0.9, 32, packed=True)
    ops = sum(e.count for e in prof.key_averages() if e.key.startswith("aten::"))
    out = {"batch": args.batch, "device": str(device),
           "pixel_ms": best_ms_per_frame(pixel, args.batch, args.repeat, sync),
           "thumbnails_ms": best_ms_per_frame(lambda: [thumbnail(r) for r in reduced], args.batch, args.repeat, sync),
           "compress_ms": best_ms_per_frame(lambda: compress_frames(tokens, prev, 0.9, 32, packed=True), args.batch,
                                            args.repeat, sync),
           "compress_torch_ops_per_batch": ops}
    print(json.dumps(out))


if __name__ == "__main__":
    main()
