"""Benchmark the video library: Milvus Lite search at N keys, and files/hour at 1 and 2 Ray workers.

    svpy scripts/bench_library.py --skip-workers --keys 10000,30000,100000     # search scaling curve
    svpy scripts/bench_library.py --skip-search                                # workers 1 vs 2 (defaults)
    svpy scripts/bench_library.py                                              # both, 1M keys
    svpy scripts/bench_library.py --skip-workers --store milvus://host:19530   # 1M keys on a Milvus server

1. Search: for each N, N synthetic retrieval keys of ``--dim`` (512 = the CLIP ViT-B key of the
   real presets; a mixture of 2000 scene centres with per-frame drift, L2-normalised, like the
   frame keys of many videos) go into a fresh Milvus Lite file through ``MilvusStore.add_keys`` in
   chunks of ``--chunk`` rows (each: insert, flush, every segment's index built); ``--queries``
   queries (stored keys plus noise) are searched one per request, k=10: p50/p95 ms, and recall@10 against exact search
   (faiss brute force) on the same keys.
2. Workers: ``--files`` generated clips indexed with tiny-random by ``index_library`` on a local
   Ray cluster of 2 CPUs, with 1 and with 2 workers (``--repeats`` rounds, the two interleaved,
   a fresh store each): wall seconds, files/hour from the command's start and from the moment the
   last worker had its models loaded, and the 2-over-1 ratios. First, the machine's ceiling: one
   clip indexed by 1, then by 2 plain processes at once (no Ray): on a shared machine a second
   worker cannot gain more than a second process does.

Prints one table per part and the ratios, the load average around each run, and writes every
figure to ``--json``. Times depend on the machine and its load: compare within one run.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
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


def load() -> float:
    return round(os.getloadavg()[0], 2)


def bench_search(n: int, dim: int, queries: int, index_type: str, params: dict, search_params: dict,
                 chunk: int, server: str | None = None) -> dict:
    """``server``: a Milvus server URI (``milvus://host:19530``) to measure instead of a fresh Milvus Lite
    file; it must hold no library (the bench writes its keys there and drops its two collections after)."""
    from streamvid.library import MilvusStore
    from streamvid.library.store import KEYS, VIDEOS
    from streamvid.memory.index import exact_search, recall_at_k
    from streamvid.tensorops import l2_normalise

    load_before = load()
    keys = synthetic_keys(n, dim)
    rng = np.random.default_rng(1)
    picks = keys[rng.choice(n, size=queries, replace=False)]
    q = l2_normalise(picks + rng.normal(scale=1.0 / np.sqrt(dim), size=picks.shape).astype(np.float32))
    ids = np.arange(n, dtype=np.int64)
    with tempfile.TemporaryDirectory(prefix="bench_library_") as tmp:
        store = MilvusStore(server or f"milvus://{tmp}/lib.db", store_dir=tmp, index_type=index_type,
                            index_params=params)
        if store.dim is not None or store.client.has_collection(VIDEOS):
            store.close()
            raise SystemExit(f"{server} already holds a library; the bench needs a server without one")
        t0 = time.perf_counter()
        for lo in range(0, n, chunk):
            hi = min(n, lo + chunk)
            store.add_keys({"vector": keys[lo:hi], "video_id": [f"{(i // 1000):032x}" for i in range(lo, hi)],
                            "event_id": ids[lo:hi] % 1000, "kind": ["frame"] * (hi - lo),
                            "t_start": np.zeros(hi - lo), "t_end": np.ones(hi - lo)})
            print(f"  inserted {hi}/{n} keys ({time.perf_counter() - t0:.0f} s)", file=sys.stderr, flush=True)
        insert_s = time.perf_counter() - t0
        store.search(q[:1], k=10)  # warm-up
        times, found = [], []
        for row in q:
            t = time.perf_counter()
            hits = store.search(row[None], k=10, search_params=search_params)[0]
            times.append((time.perf_counter() - t) * 1000)
            found.append([int(h.video_id, 16) * 1000 + h.event_id for h in hits] + [-1] * (10 - len(hits)))
        if server:  # the collections this run made (the server held none before)
            for name in (KEYS, VIDEOS):
                store.client.drop_collection(name)
        store.close()
    # the synthetic (video, event) id of key i is (i // 1000, i % 1000): the same packing as above
    _, truth = exact_search(keys, ids, q, 10)
    return {"keys": n, "dim": dim, "store": server or "milvus-lite", "index_type": index_type, "index_params": params,
            "search_params": search_params,
            "insert_and_index_s": round(insert_s, 1), "rows_per_s": round(n / insert_s),
            "p50_ms": round(float(np.percentile(times, 50)), 2), "p95_ms": round(float(np.percentile(times, 95)), 2),
            "recall_at_10": round(recall_at_k(np.array(found), truth), 4), "load_before": load_before,
            "load_after": load()}


def _plain_worker(clip: str, store_dir: str, fps: float, barrier, results) -> None:
    from streamvid.library.workers import IndexWorker

    worker = IndexWorker("tiny-random", {"fps": fps}, store_dir, threads=1)
    barrier.wait()  # both processes index at the same time, their models already loaded
    t = time.perf_counter()
    out = worker.index(clip, f"{os.getpid():032x}")
    results.put(out["frames"] / (time.perf_counter() - t))


def machine_ceiling(clip: Path, store_dir: Path, fps: float) -> dict:
    """frames/s of one file indexed by 1, then 2 plain processes at once (no Ray, no driver): what a
    second worker can add on this machine at this moment, whatever the scheduling."""
    import multiprocessing as mp

    ctx = mp.get_context("spawn")
    out: dict = {}
    for n in (1, 2):
        barrier, results = ctx.Barrier(n), ctx.Queue()
        procs = [ctx.Process(target=_plain_worker, args=(str(clip), str(store_dir / f"plain{n}_{i}"), fps, barrier,
                                                         results)) for i in range(n)]
        for p in procs:
            p.start()
        rates = [results.get(timeout=600) for _ in procs]
        for p in procs:
            p.join()
        out[f"fps_{n}_processes"] = round(sum(rates), 1)
    out["ratio_2_over_1"] = round(out["fps_2_processes"] / out["fps_1_processes"], 2)
    out["load"] = load()
    return out


def bench_workers(files: int, duration: float, fps: float, repeats: int) -> dict:
    import ray
    from streamvid_bench.samples import PALETTE, Scene, write_video

    from streamvid.library import index_library

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    out: dict = {"files": files, "clip_seconds": duration, "sample_fps": fps, "frames_per_file": int(duration * fps),
                 "runs": []}
    with tempfile.TemporaryDirectory(prefix="bench_library_") as tmp:
        d = Path(tmp) / "clips"
        d.mkdir()
        for i in range(files):
            write_video(d / f"clip{i}.mp4", duration=duration, fps=max(10, fps), width=160, height=120,
                        scenes=[Scene(0.0, duration, PALETTE[i % len(PALETTE)], shape=["door", "car", "ball"][i % 3])])
        out["machine_ceiling"] = machine_ceiling(d / "clip0.mp4", Path(tmp), fps)
        print(f"  plain processes: {json.dumps(out['machine_ceiling'])}", file=sys.stderr, flush=True)
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
        try:
            for r in range(repeats):
                for n in ((1, 2) if r % 2 == 0 else (2, 1)):
                    load_before = load()
                    report = index_library([d], f"milvus://{tmp}/lib{n}_{r}.db", preset="tiny-random", workers=n,
                                           overrides={"fps": fps})
                    assert len(report.indexed) == files and not report.failed, report.as_dict()
                    x = report.as_dict()
                    run = {"workers": n, "round": r, "seconds": x["seconds"], "frames": x["frames"],
                           "workers_ready_s": x["workers_ready_s"], "files_per_hour": x["files_per_hour"],
                           "files_per_hour_after_ready": x["files_per_hour_after_ready"],
                           "load_before": load_before, "load_after": load()}
                    out["runs"].append(run)
                    print(f"  {n} worker(s), round {r}: {json.dumps(run)}", file=sys.stderr, flush=True)
        finally:
            ray.shutdown()
    for key in ("files_per_hour", "files_per_hour_after_ready"):
        means = {n: float(np.mean([x[key] for x in out["runs"] if x["workers"] == n])) for n in (1, 2)}
        out[f"ratio_2_over_1_{key}"] = round(means[2] / means[1], 2)
    return out


def machine() -> dict:
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                                cwd=Path(__file__).parent, check=False).stdout.strip()
    except OSError:
        commit = ""
    return {"cpus": os.cpu_count(), "machine": platform.machine(), "python": platform.python_version(),
            "commit": commit, "date_utc": time.strftime("%Y-%m-%d %H:%M", time.gmtime())}


def print_tables(result: dict) -> None:
    m = result["machine"]
    print(f"# {m['cpus']} CPUs, commit {m['commit']}, {m['date_utc']} UTC")
    if "search" in result:
        print("\n| N keys | dim | store | index, search params | insert+index rows/s | p50 ms | p95 ms | recall@10 "
              "| load avg |")
        print("|---|---|---|---|---|---|---|---|---|")
        for s in result["search"]:
            print(f"| {s['keys']:,} | {s['dim']} | {s['store']} | {s['index_type']} {json.dumps(s['index_params'])} "
                  f"{json.dumps(s['search_params'])} | {s['rows_per_s']} | {s['p50_ms']} "
                  f"| {s['p95_ms']} | {s['recall_at_10']} | {s['load_before']}–{s['load_after']} |")
    if "workers" in result:
        w = result["workers"]
        print(f"\n{w['files']} files × {w['frames_per_file']} frames (tiny-random, {w['clip_seconds']} s clips "
              f"sampled at {w['sample_fps']} fps), local Ray cluster of 2 CPUs")
        print("\n| workers | round | wall s | workers ready s | files/h | files/h after ready | load avg |")
        print("|---|---|---|---|---|---|---|")
        for r in w["runs"]:
            print(f"| {r['workers']} | {r['round']} | {r['seconds']:.1f} | {r['workers_ready_s']} "
                  f"| {r['files_per_hour']} | {r['files_per_hour_after_ready']} "
                  f"| {r['load_before']}–{r['load_after']} |")
        print(f"\n2 / 1 workers, files/hour from the start: {w['ratio_2_over_1_files_per_hour']}×; "
              f"after the workers are ready: {w['ratio_2_over_1_files_per_hour_after_ready']}×")
        c = w["machine_ceiling"]
        print(f"Machine ceiling now (one file in 1 vs 2 plain processes, no Ray): {c['ratio_2_over_1']}× "
              f"({c['fps_1_processes']} → {c['fps_2_processes']} frames/s, load {c['load']})")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--keys", default="1000000", help="key counts, comma-separated (a scaling curve)")
    ap.add_argument("--dim", type=int, default=512)
    ap.add_argument("--queries", type=int, default=200)
    ap.add_argument("--index", default="HNSW", help="Milvus index type (HNSW, IVF_FLAT, AUTOINDEX, FLAT)")
    ap.add_argument("--index-params", default='{"M": 16, "efConstruction": 100}', help="JSON")
    ap.add_argument("--search-params", default='{"ef": 64}', help='JSON, e.g. {"nprobe": 32} for IVF_FLAT')
    ap.add_argument("--chunk", type=int, default=100_000, help="rows per add_keys call")
    ap.add_argument("--store", default=None, help="search part: a Milvus server URI (milvus://host:19530) holding "
                    "no library, instead of a fresh Milvus Lite file per N")
    ap.add_argument("--files", type=int, default=8)
    ap.add_argument("--clip-seconds", type=float, default=1200.0,
                    help="clip length; at --fps 10 a file is ~10 s of tiny-random work here")
    ap.add_argument("--fps", type=float, default=10.0, help="frames per second the workers sample")
    ap.add_argument("--repeats", type=int, default=1, help="rounds of (1 worker, 2 workers), order alternating")
    ap.add_argument("--skip-search", action="store_true")
    ap.add_argument("--skip-workers", action="store_true")
    ap.add_argument("--json", default="bench_library.json", help="where to write every figure")
    args = ap.parse_args(argv)
    result: dict = {"machine": machine(), "command": " ".join(sys.argv)}
    if not args.skip_search:
        result["search"] = []
        for n in (int(x) for x in args.keys.split(",")):
            result["search"].append(bench_search(n, args.dim, args.queries, args.index, json.loads(args.index_params),
                                                 json.loads(args.search_params), args.chunk, args.store))
            print(json.dumps(result["search"][-1]), file=sys.stderr, flush=True)
    if not args.skip_workers:
        result["workers"] = bench_workers(args.files, args.clip_seconds, args.fps, args.repeats)
    Path(args.json).write_text(json.dumps(result, indent=1) + "\n")
    print_tables(result)
    print(f"\n(all figures in {args.json})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
