"""Vision-tower cost per frame: the bare tower on ready pixels vs ``frame_tokens`` from uint8 frames.

Real-size models with random weights, built from the shared config files ($STREAMVID_SHARED or
$STREAMVID_SHARED_MODELS). For each dtype: ms/frame of the tower alone (pixels already
preprocessed, on the device) and of ``frame_tokens`` (upload + device-side preprocessing + tower)
on 720p uint8 frames, and their ratio. ``--qwen-video`` also compares Qwen2.5-VL fed one frame per
image with two frames per temporal patch (the video path), at the same number of frames.

    STREAMVID_SHARED=../shared python scripts/bench_towers.py --dtypes float32,auto --frames 4
    STREAMVID_SHARED=../shared python scripts/bench_towers.py --qwen-video --dtypes auto --frames 4 --vision-depth 4
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch

from streamvid.device import cpu_has_native_bf16, default_batch_size
from streamvid.imageops import interpolation, resize_normalize
from streamvid.models import load_video_llm, shared_model_dir

DIRS = {"smolvlm": "HuggingFaceTB__SmolVLM-256M-Instruct", "qwen2_5_vl": "Qwen__Qwen2.5-VL-3B-Instruct"}


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn, device: torch.device, reps: int) -> float:
    """Median seconds of ``fn()`` over ``reps`` runs after one warm-up."""
    fn()
    sync(device)
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - t0)
    return float(np.median(times))


def frames_720p(n: int) -> torch.Tensor:
    """n distinct uint8 [720, 1280, 3] frames (smooth gradients + noise), as a CPU tensor [n, 720, 1280, 3]."""
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:720, 0:1280]
    out = []
    for i in range(n):
        base = np.stack([(xx + 40 * i) % 256, (yy + 20 * i) % 256, (xx + yy) % 256], -1)
        out.append(np.clip(base + rng.normal(0, 12, base.shape), 0, 255).astype(np.uint8))
    return torch.from_numpy(np.stack(out))


def bench_family(family: str, dtype: str, device: str, n: int, batch: int, reps: int) -> dict:
    llm = load_video_llm(shared_model_dir(DIRS[family]), device=device, dtype=dtype, random_weights=True,
                         batch_size=batch)
    dev = llm.device
    frames = frames_720p(n)
    with torch.inference_mode():
        ready = [llm.pixels(frames[i:i + batch].to(dev).permute(0, 3, 1, 2)) for i in range(0, n, batch)]

        def tower():
            for px in ready:
                llm.tower(px)

        bare = timed(tower, dev, reps) / n
    full = timed(lambda: llm.frame_tokens(frames), dev, reps) / n
    return {"family": family, "dtype": str(llm.dtype).removeprefix("torch."), "requested": dtype, "batch": batch,
            "tower_ms_per_frame": bare * 1000, "frame_tokens_ms_per_frame": full * 1000,
            "frame_tokens_fps": 1 / full, "ratio_to_tower": full / bare}


def bench_qwen_video(dtype: str, device: str, n: int, reps: int, depth: int | None,
                     frame_hw: tuple[int, int] | None) -> dict:
    """Qwen2.5-VL: n frames as n images (each frame fills both temporal slots) vs n/2 temporal pairs.

    depth: keep only this many vision blocks (the last one full attention) to make a CPU run short; the
    widths stay real. The language model is cut to one layer (unused here)."""
    cut: dict = {"text_config.num_hidden_layers": 1}
    if depth:
        cut.update({"vision_config.depth": depth, "vision_config.fullatt_block_indexes": [depth - 1]})
    llm = load_video_llm(shared_model_dir(DIRS["qwen2_5_vl"]), device=device, dtype=dtype, random_weights=True,
                         config_overrides=cut, frame_hw=frame_hw)
    dev, ip = llm.device, llm.processor.image_processor
    x = frames_720p(n).to(dev).permute(0, 3, 1, 2)
    with torch.inference_mode():
        images = llm.pixels(x)
        px = resize_normalize(x, llm.frame_hw, ip.image_mean, ip.image_std, interpolation(ip.resample, dev))
        # the video processor's layout: consecutive frames share a temporal patch
        pairs = px.reshape(n // 2, 2, *px.shape[1:])
        gh, gw = llm.frame_hw[0] // ip.patch_size, llm.frame_hw[1] // ip.patch_size
        m, p = ip.merge_size, ip.patch_size
        v = pairs.reshape(n // 2, 1, 2, 3, gh // m, m, p, gw // m, m, p).permute(0, 1, 4, 7, 5, 8, 3, 2, 6, 9)
        video = {"pixel_values": v.reshape(-1, 3 * 2 * p * p).to(llm.dtype),
                 "image_grid_thw": torch.tensor([[1, gh, gw]] * (n // 2), device=dev)}
        as_images = timed(lambda: llm.tower(images), dev, reps)
        as_video = timed(lambda: llm.tower(video), dev, reps)
        out_images, out_video = llm.tower(images), llm.tower(video)
    return {"family": "qwen2_5_vl", "dtype": str(llm.dtype).removeprefix("torch."), "frames": n,
            "vision_depth": len(llm.model.model.visual.blocks),
            "frame_hw": list(llm.frame_hw), "images_ms_per_frame": as_images / n * 1000,
            "video_pairs_ms_per_frame": as_video / n * 1000, "video_over_images": as_video / as_images,
            "token_grids_images": int(out_images.shape[0]), "token_grids_video": int(out_video.shape[0])}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--family", default="smolvlm", choices=sorted(DIRS))
    ap.add_argument("--dtypes", default="float32,auto", help="comma-separated: float32, bfloat16, auto, …")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--frames", type=int, default=4)
    ap.add_argument("--batch", type=int, default=None, help="frames per tower call (default: the device's)")
    ap.add_argument("--reps", type=int, default=2)
    ap.add_argument("--qwen-video", action="store_true", help="Qwen2.5-VL: images vs temporal pairs")
    ap.add_argument("--vision-depth", type=int, help="--qwen-video: keep this many vision blocks (default all 32)")
    ap.add_argument("--frame-hw", help="--qwen-video: frame size HxW, multiples of 28 (default 336x448)")
    ap.add_argument("--json", help="write the results here")
    args = ap.parse_args()
    torch.manual_seed(0)
    print(f"device {args.device}, torch threads {torch.get_num_threads()}, "
          f"CPU capability {torch.backends.cpu.get_cpu_capability()}, native bf16 {cpu_has_native_bf16()}")
    rows = []
    if args.qwen_video:
        for dtype in args.dtypes.split(","):
            hw = tuple(int(v) for v in args.frame_hw.split("x")) if args.frame_hw else None
            rows.append(bench_qwen_video(dtype, args.device, max(2, args.frames - args.frames % 2), args.reps,
                                         args.vision_depth, hw))
            print(json.dumps(rows[-1]))
    else:
        batch = args.batch or default_batch_size(args.device)
        for dtype in args.dtypes.split(","):
            rows.append(bench_family(args.family, dtype, args.device, args.frames, batch, args.reps))
            print(json.dumps(rows[-1]))
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(rows, f, indent=1)
    for r in rows:
        print(" | ".join(f"{k} {v:.3g}" if isinstance(v, float) else f"{k} {v}" for k, v in r.items()))


if __name__ == "__main__":
    main()
