"""Benchmark the memory: a simulated multi-hour stream, write cost, RSS, search, save/load.

    .venv/bin/python scripts/bench_memory.py            # 3 hours at 1 fps, index at 10k/100k/1M keys
    .venv/bin/python scripts/bench_memory.py --quick    # 20 minutes, index at 10k/100k keys

1. Stream: synthetic frames at real sizes (tokens_per_frame tokens of width d = 960 and 896,
   512-d retrieval keys drifting inside scenes of 10–90 s) written through MemoryBank with the
   default AgentConfig budget. Prints RSS every simulated 10 minutes (it must go flat once the
   budget is full: hour-3 / hour-1 ratio), write µs/frame (excluding the synthetic generation),
   search ms on the whole memory, save and load seconds.
2. Index: KeyIndex search ms/query at N archived frame keys, exact flat versus IVF (nprobe tuned
   at build), with recall@10 of IVF against exact search.

Figures are for comparing within one run; absolute times depend on the machine and its load.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import tempfile
import time

import numpy as np
import psutil
import torch
from tqdm import tqdm

from streamvid.config import AgentConfig
from streamvid.memory import KeyIndex, MemoryBank
from streamvid.memory.index import build_ivf, exact_search, normalise_rows, recall_at_k
from streamvid.types import FrameTokens

KEY_DIM = 512


def rss_mb() -> float:
    return psutil.Process().memory_info().rss / 2**20


class SyntheticStream:
    """Keys that drift inside scenes of random length and jump between scenes; random tokens."""

    def __init__(self, token_dim: int, tokens_per_frame: int, grid: tuple[int, int], seed: int = 0) -> None:
        self.rng = np.random.default_rng(seed)
        self.gen = torch.Generator().manual_seed(seed)
        self.token_dim = token_dim
        self.n = tokens_per_frame
        self.grid = grid
        self.scene_left = 0
        self.centre = np.zeros(KEY_DIM)

    def next(self, t: float) -> tuple[FrameTokens, np.ndarray]:
        if self.scene_left <= 0:
            self.centre = self.rng.normal(size=KEY_DIM)
            self.scene_left = int(self.rng.integers(10, 90))
        self.scene_left -= 1
        self.centre += 0.05 * self.rng.normal(size=KEY_DIM)
        key = self.centre / np.linalg.norm(self.centre) + 0.02 * self.rng.normal(size=KEY_DIM) / np.sqrt(KEY_DIM)
        cells = self.grid[0] * self.grid[1]
        positions = torch.randperm(cells, generator=self.gen)[: self.n].sort().values
        tokens = torch.randn(self.n, self.token_dim, generator=self.gen)
        return FrameTokens(tokens, positions, torch.full((self.n,), cells / self.n), self.grid, t), key


def bench_stream(token_dim: int, seconds: int, fps: float, config: AgentConfig) -> dict:
    stream = SyntheticStream(token_dim, config.tokens_per_frame, (27, 27))
    bank = MemoryBank(config, key_dim=KEY_DIM, token_dim=token_dim)
    n_frames = int(seconds * fps)
    every = int(600 * fps)  # one RSS sample per simulated 10 minutes
    write_s = np.zeros(n_frames)
    samples = []
    keys_seen = []
    gc.collect()
    for i in tqdm(range(n_frames), desc=f"stream d={token_dim}", unit="frame", mininterval=2.0):
        t = i / fps
        frame, key = stream.next(t)
        if i % 97 == 0:
            keys_seen.append(key)
        start = time.perf_counter()
        bank.write(frame, key)
        write_s[i] = time.perf_counter() - start
        if (i + 1) % every == 0:
            stats = bank.stats()
            samples.append(dict(minute=round((i + 1) / fps / 60), rss_mb=round(rss_mb(), 1),
                                tokens_in_ram=stats["tokens_in_ram"],
                                bytes_in_ram_mb=round(stats["bytes_in_ram"] / 2**20, 2),
                                ram_events=stats["ram_events"], archived=stats["archived_events"],
                                archive_mb=round(stats["archive_bytes"] / 2**20, 1)))
    bank.flush()
    queries = normalise_rows(np.stack(keys_seen) + 0.5 * np.random.default_rng(1).normal(
        size=(len(keys_seen), KEY_DIM)) / np.sqrt(KEY_DIM))
    start = time.perf_counter()
    for q in queries:
        bank.search(q, k=5)
    search_ms = (time.perf_counter() - start) / len(queries) * 1e3
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "mem")
        start = time.perf_counter()
        bank.save(path)
        save_s = time.perf_counter() - start
        saved_mb = sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(path) for f in fs) / 2**20
        start = time.perf_counter()
        loaded = MemoryBank.load(path)
        load_s = time.perf_counter() - start
        same = all([e.id for e in loaded.search(q, k=5)] == [e.id for e in bank.search(q, k=5)] for q in queries[:20])
        loaded.close()
    stats = bank.stats()
    bank.close()
    by_hour = {s["minute"]: s["rss_mb"] for s in samples}
    hour1, last = by_hour.get(60), samples[-1]["rss_mb"] if samples else None
    return dict(
        token_dim=token_dim, frames=n_frames, samples=samples,
        write_us_mean=round(write_s.mean() * 1e6, 1), write_us_p50=round(np.percentile(write_s, 50) * 1e6, 1),
        write_us_p99=round(np.percentile(write_s, 99) * 1e6, 1),
        rss_last_over_hour1=None if hour1 is None else round(last / hour1, 4),
        rss_last_over_first_full=round(last / samples[min(1, len(samples) - 1)]["rss_mb"], 4) if samples else None,
        search_ms=round(search_ms, 3), save_s=round(save_s, 3), load_s=round(load_s, 3), saved_mb=round(saved_mb, 1),
        load_gives_same_results=same, final_stats=stats,
    )


def clustered_keys(n: int, seed: int, scene_len: int = 30, kind: str = "isotropic") -> np.ndarray:
    """n frame keys (float32, unit norm) in scenes of scene_len frames around a scene centre.

    isotropic:   scene centres are independent random directions of the 512-d space (a hard case
                 for IVF: 33k unrelated clusters at 1M keys, no structure between them)
    anisotropic: CLIP-like, every key shares a common direction (unrelated keys have cosine ~0.3)
                 and scene centres lie in a 64-d subspace (low intrinsic dimension)
    """
    rng = np.random.default_rng(seed)
    n_scenes = -(-n // scene_len)
    if kind == "isotropic":
        centres = rng.normal(size=(n_scenes, KEY_DIM)).astype(np.float32)
        noise = 0.3
    else:
        basis = np.linalg.qr(rng.normal(size=(KEY_DIM, 64)))[0].T.astype(np.float32)  # [64, 512] orthonormal
        common = normalise_rows(rng.normal(size=(1, KEY_DIM)))[0]
        sub = normalise_rows(rng.normal(size=(n_scenes, 64)).astype(np.float32) @ basis)
        centres = (0.55 * common + 0.8 * sub) * np.sqrt(KEY_DIM)
        noise = 0.25
    out = np.empty((n, KEY_DIM), np.float32)
    for a in range(0, n, 65_536):
        b = min(n, a + 65_536)
        x = centres[np.arange(a, b) // scene_len] + noise * rng.normal(size=(b - a, KEY_DIM)).astype(np.float32)
        out[a:b] = x / np.linalg.norm(x, axis=1, keepdims=True)
    return out


def bench_index(n: int, kind: str, n_queries: int = 200, seed: int = 0) -> dict:
    keys = clustered_keys(n, seed, kind=kind)
    ids = np.arange(n, dtype=np.int64)
    rng = np.random.default_rng(seed + 7)
    # Queries near the data, not on it: a stored key plus noise of norm ~1 (cosine ~0.7).
    picks = keys[rng.choice(n, size=n_queries, replace=False)]
    queries = normalise_rows(picks + rng.normal(size=picks.shape).astype(np.float32) / np.sqrt(KEY_DIM))
    flat = KeyIndex(KEY_DIM, exact_max=n + 1)
    flat.add(keys, ids)
    start = time.perf_counter()
    for q in queries:
        flat.search(q[None], 10)
    flat_ms = (time.perf_counter() - start) / n_queries * 1e3
    del flat
    gc.collect()
    _, truth = exact_search(keys, ids, queries, 10)
    start = time.perf_counter()
    ivf = build_ivf(keys, ids, seed=seed)
    build_s = time.perf_counter() - start
    del keys
    gc.collect()
    found = np.empty_like(truth)
    start = time.perf_counter()
    for i, q in enumerate(queries):
        found[i] = ivf.search(q[None], 10)[1][0]
    ivf_ms = (time.perf_counter() - start) / n_queries * 1e3
    return dict(keys=n, kind=kind, flat_ms=round(flat_ms, 3), ivf_ms=round(ivf_ms, 3), ivf_nlist=int(ivf.nlist),
                ivf_nprobe=int(ivf.nprobe), ivf_build_s=round(build_s, 2),
                ivf_recall_at_10=round(recall_at_k(found, truth), 4),
                speedup=round(flat_ms / ivf_ms, 2))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="20 simulated minutes, index at 10k and 100k keys")
    ap.add_argument("--hours", type=float, default=3.0)
    ap.add_argument("--fps", type=float, default=1.0)
    ap.add_argument("--token-dims", type=int, nargs="+", default=[960, 896])
    ap.add_argument("--index-sizes", type=int, nargs="+", default=None)
    ap.add_argument("--max-ram-tokens", type=int, default=4096,
                    help="RAM token budget (small enough that it fills within the first simulated hour)")
    ap.add_argument("--threads", type=int, default=1,
                    help="torch intra-op threads (1: tiny merges stall with more threads on a loaded small machine)")
    ap.add_argument("--parts", nargs="+", choices=["stream", "index"], default=["stream", "index"])
    ap.add_argument("--key-kinds", nargs="+", choices=["isotropic", "anisotropic"],
                    default=["anisotropic", "isotropic"], help="synthetic key distributions for the index part")
    ap.add_argument("--json", help="also write the results to this file")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    seconds = int((1 / 3 if args.quick else args.hours) * 3600)
    sizes = args.index_sizes or ([10_000, 100_000] if args.quick else [10_000, 100_000, 1_000_000])
    config = AgentConfig(max_ram_tokens=args.max_ram_tokens)  # otherwise defaults: 32 tokens/frame, 64/event
    print(f"config: tokens_per_frame={config.tokens_per_frame} event_tokens={config.event_tokens} "
          f"max_ram_tokens={config.max_ram_tokens} short_term_frames={config.short_term_frames} "
          f"torch threads={torch.get_num_threads()} cpus={os.cpu_count()}")
    results: dict = {"streams": [], "index": []}
    for d in args.token_dims if "stream" in args.parts else []:
        r = bench_stream(d, seconds, args.fps, config)
        results["streams"].append(r)
        print(f"\n== stream d={d}: {r['frames']} frames ({seconds / 3600:.2f} h at {args.fps} fps)")
        print(f"{'minute':>7} {'rss MB':>9} {'tokens':>7} {'bank MB':>8} {'ram ev':>7} {'archived':>9} "
              f"{'archive MB':>11}")
        for s in r["samples"]:
            print(f"{s['minute']:>7} {s['rss_mb']:>9.1f} {s['tokens_in_ram']:>7} {s['bytes_in_ram_mb']:>8.2f} "
                  f"{s['ram_events']:>7} {s['archived']:>9} {s['archive_mb']:>11.1f}")
        print(f"write µs/frame: mean {r['write_us_mean']}  p50 {r['write_us_p50']}  p99 {r['write_us_p99']}")
        print(f"RSS last/hour-1: {r['rss_last_over_hour1']}   RSS last/10-min: {r['rss_last_over_first_full']}")
        print(f"search ms/query (k=5, whole memory): {r['search_ms']}")
        print(f"save {r['save_s']} s ({r['saved_mb']} MB), load {r['load_s']} s, same results after load: "
              f"{r['load_gives_same_results']}")
    print(f"\n== index search (key dim {KEY_DIM}, k=10, single queries)")
    print(f"{'keys':>9} {'kind':>12} {'flat ms':>8} {'ivf ms':>7} {'speedup':>8} {'nlist':>6} {'nprobe':>7} "
          f"{'build s':>8} {'recall@10':>10}")
    runs = [(n, kind) for kind in args.key_kinds for n in sizes] if "index" in args.parts else []
    for n, kind in tqdm(runs, desc="index sizes", leave=False):
        r = bench_index(n, kind)
        results["index"].append(r)
        tqdm.write(f"{r['keys']:>9} {kind:>12} {r['flat_ms']:>8.3f} {r['ivf_ms']:>7.3f} {r['speedup']:>8.2f} "
                   f"{r['ivf_nlist']:>6} {r['ivf_nprobe']:>7} {r['ivf_build_s']:>8.2f} {r['ivf_recall_at_10']:>10.4f}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1, default=str)


if __name__ == "__main__":
    main()
