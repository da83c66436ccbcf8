"""Host cost of the ingest stages around the towers, at 720p and one batch: what the staged pipeline
spends per frame outside the encoders (issue 13), as ``FramePipeline`` calls it.

- ``pixel``: the pre-gate stage per frame (``reduced_copy``, the shared 64×64 copy, shot detector, pre-gate);
- ``thumbnails``: the memory thumbnails of the batch (from the reduced copies);
- ``compress``: ``compress_frames`` on SmolVLM-256M-shaped tokens [B, 64, 576], and how many torch
  operators it dispatches per batch (each a kernel launch on a GPU).

Best of ``--repeat`` passes, one CPU thread each for torch and OpenCV; no model weights needed.

    python scripts/bench_ingest_stages.py [--batch 32] [--repeat 5] [--device cpu|cuda]
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable

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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    torch.set_num_threads(1)
    cv2.setNumThreads(1)
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
    compress_frames(tokens, prev, 0.9, 32)
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        compress_frames(tokens, prev, 0.9, 32)
    ops = sum(e.count for e in prof.key_averages() if e.key.startswith("aten::"))
    out = {"batch": args.batch, "device": str(device),
           "pixel_ms": best_ms_per_frame(pixel, args.batch, args.repeat, sync),
           "thumbnails_ms": best_ms_per_frame(lambda: [thumbnail(r) for r in reduced], args.batch, args.repeat, sync),
           "compress_ms": best_ms_per_frame(lambda: compress_frames(tokens, prev, 0.9, 32), args.batch, args.repeat,
                                            sync),
           "compress_torch_ops_per_batch": ops}
    print(json.dumps(out))


if __name__ == "__main__":
    main()
