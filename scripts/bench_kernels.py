"""Time streamvid_kernels against their torch references, and the per-frame compression path.

    .venv/bin/python scripts/bench_kernels.py            # CUDA when available, else CPU
    .venv/bin/python scripts/bench_kernels.py --device cpu --json bench.json

Kernels: cosine_argmax on the bipartite split of [B, N, d] frames (A = even rows, B = odd rows)
and temporal_similarity on two [B, N, d] frames, at Video-LLM sizes (d = 576 SmolVLM-256M,
960 SmolVLM2-500M, 2048 Qwen2.5-VL-3B). The Triton path needs a CUDA GPU; on CPU only the
torch reference is timed. Figures are medians; compare ratios within one run.

Per frame: compress_frame (temporal drop vs the previous kept frame + ToMe merge to a budget),
merge_to_budget alone, merge_adjacent_frames for a 16-frame event and prune_tokens, as ms/frame.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable
from functools import partial

import torch
from streamvid_kernels import HAS_TRITON, cosine_argmax, temporal_similarity
from tqdm import tqdm

from streamvid.compress import compress_frame, merge_adjacent_frames, merge_to_budget, prune_tokens


def timeit(fn: Callable[[], object], device: torch.device, min_runs: int = 5,
           min_seconds: float = 0.3) -> float:
    """Median milliseconds of ``fn`` over at least ``min_runs`` runs / ``min_seconds`` (after a warm-up)."""
    fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    times: list[float] = []
    start = time.perf_counter()
    while len(times) < min_runs or time.perf_counter() - start < min_seconds:
        t0 = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append((time.perf_counter() - t0) * 1e3)
        if len(times) >= 200:
            break
    return statistics.median(times)


def bench_kernels(device: torch.device, dtype: torch.dtype, batches: list[int], tokens: list[int],
                  dims: list[int]) -> list[dict]:
    use_triton = HAS_TRITON and device.type == "cuda"
    rows = []
    grid = [(b, n, d) for b in batches for n in tokens for d in dims]
    gen = torch.Generator(device=device).manual_seed(0)
    for b, n, d in tqdm(grid, desc="kernels", leave=False):
        x = torch.randn(b, n, d, device=device, dtype=dtype, generator=gen)
        prev = x + 0.3 * torch.randn(b, n, d, device=device, dtype=dtype, generator=gen)
        a_set, b_set = x[:, ::2], x[:, 1::2]
        for name, run in (
            ("cosine_argmax", lambda impl: cosine_argmax(a_set, b_set, impl=impl)),  # noqa: B023
            ("temporal_similarity", lambda impl: temporal_similarity(x, prev, 0.9, impl=impl)),  # noqa: B023
        ):
            row = dict(kernel=name, B=b, N=n, d=d, dtype=str(dtype).removeprefix("torch."),
                       torch_ms=timeit(lambda: run("torch"), device))  # noqa: B023
            if use_triton:
                row["triton_ms"] = timeit(lambda: run("triton"), device)  # noqa: B023
                row["speedup"] = row["torch_ms"] / row["triton_ms"]
            rows.append(row)
    return rows


def bench_per_frame(device: torch.device, dtype: torch.dtype) -> list[dict]:
    """ms/frame of the write and read paths at two real sizes."""
    rows = []
    gen = torch.Generator(device=device).manual_seed(1)
    sizes = [("SmolVLM-256M", 64, 576, 16, 64), ("Qwen2.5-VL-3B-like", 1024, 2048, 64, 256)]
    for model, n, d, budget, event_m in tqdm(sizes, desc="per-frame", leave=False):
        def randn(*shape: int) -> torch.Tensor:
            return torch.randn(*shape, device=device, dtype=dtype, generator=gen)

        prev = randn(n, d)
        changed = torch.rand(n, device=device, generator=gen) < 0.3  # 30% of cells changed
        curr = torch.where(changed[:, None], randn(n, d), prev)
        out = compress_frame(curr, prev, 0.9, budget)
        event = [compress_frame(randn(n, d), None, 0.9, budget) for _ in range(16)]
        frame_tokens = [f.tokens for f in event]
        frame_sizes = [f.sizes for f in event]
        flat = torch.cat(frame_tokens)
        groups = torch.arange(16, device=device).repeat_interleave(budget)
        query = randn(d)
        cases = {
            "compress_frame (first frame: merge only)": partial(compress_frame, curr, None, 0.9, budget),
            "compress_frame (30% changed: drop + merge)": partial(compress_frame, curr, prev, 0.9, budget),
            "merge_to_budget (all N tokens)": partial(merge_to_budget, curr[None], budget),
            "merge_adjacent_frames (16-frame event), per frame":
                partial(merge_adjacent_frames, frame_tokens, event_m, frame_sizes),
            "prune_tokens (16-frame event), per frame": partial(prune_tokens, flat, groups, query, event_m),
        }
        for label, fn in cases.items():
            ms = timeit(fn, device)
            if "per frame" in label:
                ms /= 16
            rows.append(dict(model=model, N=n, d=d, budget=budget, case=label, ms_per_frame=ms,
                             tokens_out=int(out.tokens.shape[0]) if "30%" in label else None))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dtype", default=None, help="float32 | bfloat16 | float16 (default: bf16 on CUDA)")
    parser.add_argument("--batches", type=int, nargs="+", default=None, help="frames per call (B)")
    parser.add_argument("--tokens", type=int, nargs="+", default=[64, 256, 1024], help="tokens per frame (N)")
    parser.add_argument("--dims", type=int, nargs="+", default=[576, 960, 2048], help="token width (d)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--json", default=None, help="also write the figures to this file")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    dtype = getattr(torch, args.dtype or ("bfloat16" if device.type == "cuda" else "float32"))
    batches = args.batches or ([8, 64] if device.type == "cuda" else [8])

    cpu_name = f"CPU, {torch.get_num_threads()} threads"
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else cpu_name
    print(f"device: {name}; dtype: {str(dtype).removeprefix('torch.')}; triton installed: {HAS_TRITON}")
    if device.type != "cuda":
        print("No CUDA device: only the torch references are timed; the Triton kernels need a GPU.")
    kernel_rows = bench_kernels(device, dtype, batches, args.tokens, args.dims)
    print(f"\n{'kernel':<20} {'B':>3} {'N':>5} {'d':>5} {'torch ms':>10} {'triton ms':>10} {'speedup':>8}")
    for r in kernel_rows:
        triton_ms = f"{r['triton_ms']:10.3f}" if "triton_ms" in r else f"{'-':>10}"
        speedup = f"{r['speedup']:7.2f}x" if "speedup" in r else f"{'-':>8}"
        shape = f"{r['B']:>3} {r['N']:>5} {r['d']:>5}"
        print(f"{r['kernel']:<20} {shape} {r['torch_ms']:10.3f} {triton_ms} {speedup}")

    frame_rows = bench_per_frame(device, dtype)
    print(f"\n{'model size':<20} {'N':>5} {'d':>5} {'budget':>6}  {'ms/frame':>9}  case")
    for r in frame_rows:
        extra = f" -> {r['tokens_out']} tokens" if r["tokens_out"] is not None else ""
        shape = f"{r['N']:>5} {r['d']:>5} {r['budget']:>6}"
        print(f"{r['model']:<20} {shape}  {r['ms_per_frame']:9.3f}  {r['case']}{extra}")
    if args.json:
        with open(args.json, "w") as f:
            report = dict(device=name, dtype=str(dtype), kernels=kernel_rows, per_frame=frame_rows)
            json.dump(report, f, indent=1)


if __name__ == "__main__":
    main()
