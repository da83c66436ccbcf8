"""Benchmark the video library: Milvus Lite search at N keys, and files/hour at 1 and 2 Ray workers.

    .venv/bin/python scripts/bench_library.py                    # search at 1M keys + workers 1 vs 2
    .venv/bin/python scripts/bench_library.py --keys 200000 --skip-workers
    .venv/bin/python scripts/bench_library.py --skip-search --files 6

1. Search: N synthetic 512-d retrieval keys (a mixture of 2000 scene centres with per-frame
   drift, L2-normalised, like the frame keys of many videos) go into a Milvus Lite file through
   ``MilvusStore.add_keys``; 200 queries (stored keys plus noise, cosine ~0.7 to their key) are
   searched one at a time, k=10: p50/p95 ms and recall@10 against exact search (faiss brute force).
2. Workers: ``--files`` generated clips indexed with tiny-random by ``index_library`` on a local
   Ray cluster of 2 CPUs, once with 1 worker and once with 2 (a fresh store each): wall seconds,
   files/hour and their ratio, worker start (model load) seconds and the per-file overhead
   (driver wall per file minus the worker's own ingest+save time).

Prints one JSON object. Times depend on the machine and its load; compare within one run.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def synthetic_keys(n: int, dim: int, seed: int = 0, centres: int = 2000) -> np.ndarray:
    """[n, dim] float32 unit rows: scene centres plus per-frame drift."""
    rng = np.random.default_rng(seed)
    c = rng.normal(size=(centres, dim)).astype(np.float32)
    out = np.empty((n, dim), np.float32)
    step = 100_000
    for lo in range(0, n, step):
        hi = min(n, lo + step)
        x = c[rng.integers(0, centres, hi - lo)] + 0.6 * rng.normal(size=(hi - lo, dim)).astype(np.float32)
        out[lo:hi] = x / np.linalg.norm(x, axis=1, keepdims=True)
    return out


def bench_search(n: int, dim: int, queries: int, index_type: str, params: dict, search_params: dict) -> dict:
    from streamvid.library import MilvusStore
    from streamvid.memory.index import exact_search, recall_at_k
    from streamvid.tensorops import l2_normalise

    keys = synthetic_keys(n, dim)
    rng = np.random.default_rng(1)
    picks = keys[rng.choice(n, size=queries, replace=False)]
    q = l2_normalise(picks + rng.normal(scale=1.0 / np.sqrt(dim), size=picks.shape).astype(np.float32))
    ids = np.arange(n, dtype=np.int64)
    with tempfile.TemporaryDirectory(prefix="bench_library_") as tmp:
        store = MilvusStore(f"milvus://{tmp}/lib.db", index_type=index_type, index_params=params)
        t0 = time.perf_counter()
        chunk = 50_000
        for lo in range(0, n, chunk):
            hi = min(n, lo + chunk)
            store.add_keys({"vector": keys[lo:hi], "video_id": [f"{(i // 1000):032x}" for i in range(lo, hi)],
                            "event_id": ids[lo:hi] % 1000, "kind": ["frame"] * (hi - lo),
                            "t_start": np.zeros(hi - lo), "t_end": np.ones(hi - lo)})
            print(f"inserted {hi}/{n} keys", file=sys.stderr, flush=True)
        insert_s = time.perf_counter() - t0
        store.search(q[:1], k=10)  # the first search builds/loads the index
        build_s = time.perf_counter() - t0 - insert_s
        times, found = [], []
        for row in q:
            t = time.perf_counter()
            hits = store.search(row[None], k=10, search_params=search_params)[0]
            times.append((time.perf_counter() - t) * 1000)
            found.append([int(h.video_id, 16) * 1000 + h.event_id for h in hits] + [-1] * (10 - len(hits)))
        store.close()
    # the synthetic (video, event) id of key i is (i // 1000, i % 1000): the same packing as above
    _, truth = exact_search(keys, ids, q, 10)
    return {"keys": n, "dim": dim, "index_type": index_type, "index_params": params, "search_params": search_params,
            "insert_s": round(insert_s, 1), "first_search_s": round(build_s, 2),
            "p50_ms": round(float(np.percentile(times, 50)), 2), "p95_ms": round(float(np.percentile(times, 95)), 2),
            "recall_at_10": round(recall_at_k(np.array(found), truth), 4)}


def bench_workers(files: int, duration: float, fps: float) -> dict:
    import ray
    from streamvid_bench.samples import PALETTE, Scene, write_video

    from streamvid.library import index_library
    from streamvid.library.workers import IndexWorker

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    out: dict = {"files": files, "clip_seconds": duration, "sample_fps": fps}
    with tempfile.TemporaryDirectory(prefix="bench_library_") as tmp:
        d = Path(tmp) / "clips"
        d.mkdir()
        for i in range(files):
            write_video(d / f"clip{i}.mp4", duration=duration, fps=10, width=160, height=120,
                        scenes=[Scene(0.0, duration, PALETTE[i % len(PALETTE)], shape=["door", "car", "ball"][i % 3])])
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
        try:
            t = time.perf_counter()
            actor = ray.remote(num_cpus=1)(IndexWorker).remote("tiny-random", {}, str(Path(tmp) / "warm"))
            ray.get(actor.pid.remote())
            out["worker_start_s"] = round(time.perf_counter() - t, 2)
            ray.kill(actor)
            for n in (1, 2):
                report = index_library([d], f"milvus://{tmp}/lib{n}.db", preset="tiny-random", workers=n,
                                       overrides={"fps": fps})
                assert len(report.indexed) == files and not report.failed, report.as_dict()
                r = report.as_dict()
                steady = r["seconds"] - out["worker_start_s"]  # the actors start side by side
                out[f"workers_{n}"] = {"seconds": r["seconds"], "files_per_hour": r["files_per_hour"],
                                       "frames": r["frames"], "per_file_s": round(r["seconds"] / files, 2),
                                       "files_per_hour_after_start": round(3600 * files / steady, 1)}
        finally:
            ray.shutdown()
    for key in ("files_per_hour", "files_per_hour_after_start"):
        out[f"speedup_2_over_1_{key}"] = round(out["workers_2"][key] / out["workers_1"][key], 2)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--keys", type=int, default=1_000_000)
    ap.add_argument("--dim", type=int, default=512)
    ap.add_argument("--queries", type=int, default=200)
    ap.add_argument("--index", default="AUTOINDEX", help="Milvus index type (AUTOINDEX, IVF_FLAT, HNSW, FLAT)")
    ap.add_argument("--index-params", default="{}", help='JSON, e.g. {"nlist": 2048}')
    ap.add_argument("--search-params", default="{}", help='JSON, e.g. {"nprobe": 32}')
    ap.add_argument("--files", type=int, default=6)
    ap.add_argument("--clip-seconds", type=float, default=16.0)
    ap.add_argument("--fps", type=float, default=10.0, help="frames per second the workers sample")
    ap.add_argument("--skip-search", action="store_true")
    ap.add_argument("--skip-workers", action="store_true")
    args = ap.parse_args(argv)
    result: dict = {}
    if not args.skip_search:
        result["search"] = bench_search(args.keys, args.dim, args.queries, args.index, json.loads(args.index_params),
                                        json.loads(args.search_params))
        print(json.dumps(result["search"]), file=sys.stderr, flush=True)
    if not args.skip_workers:
        result["workers"] = bench_workers(args.files, args.clip_seconds, args.fps)
    print(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
