"""Decode speed and memory of the file sources, per backend.

For each video × backend × rate (every frame, and fps=2) a fresh subprocess opens the file with
``streamvid.open_source``, reads every frame it yields, and reports wall time, frames, "× real
time" (seconds of video per second of wall time) and its own peak RSS, so the peaks are separate.

Videos: ../shared/media/vtest.avi (when present) and a generated 1080p30 H.264 clip (cached).
Bounded memory: a long low-resolution file against a short one of the same kind, read at fps=2;
the peak RSS should not grow with length.

    .venv/bin/python scripts/bench_decode.py                  # table
    .venv/bin/python scripts/bench_decode.py --json out.json  # table + JSON file ("-" for stdout)
    .venv/bin/python scripts/bench_decode.py --hd-seconds 20 --long-minutes 5   # quicker
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from streamvid_bench.samples import ensure_video
from streamvid_bench.sources import vtest_path


def _peak_rss_mb() -> float:
    # VmHWM belongs to this process image; ru_maxrss would carry over the parent's peak across exec.
    status = Path("/proc/self/status")
    if status.exists():
        for line in status.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    try:
        import resource

        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return peak / 1024 if sys.platform != "darwin" else peak / 2**20
    except ImportError:  # Windows
        import psutil

        return psutil.Process().memory_info().peak_wset / 2**20


def worker(path: str, backend: str, fps: float | None) -> dict:
    """Runs in the child: decode, time, report."""
    import psutil

    import streamvid

    rss_before = psutil.Process().memory_info().rss / 2**20
    start = time.perf_counter()
    frames, last_t, checksum = 0, 0.0, 0
    with streamvid.open_source(path, fps=fps, backend=backend) as src:
        used = src.backend
        for frame in src:
            frames += 1
            last_t = frame.t
            checksum += int(frame.rgb[0, 0, 0])  # touch the pixels
    seconds = time.perf_counter() - start
    video_seconds = last_t + (1 / fps if fps else 1 / (src.native_fps or 30))
    return {"backend": used, "fps": fps, "frames": frames, "seconds": round(seconds, 3),
            "frames_per_s": round(frames / seconds, 1), "x_real_time": round(video_seconds / seconds, 2),
            "video_seconds": round(video_seconds, 2), "rss_before_mb": round(rss_before, 1),
            "peak_rss_mb": round(_peak_rss_mb(), 1)}


def run_worker(path: Path, backend: str, fps: float | None) -> dict:
    cmd = [sys.executable, __file__, "--worker", str(path), "--backend", backend]
    if fps:
        cmd += ["--fps", str(fps)]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=3600)
    if out.returncode != 0:
        return {"backend": backend, "fps": fps, "error": out.stderr.strip().splitlines()[-1:]}
    return json.loads(out.stdout.strip().splitlines()[-1])


def table(rows: list[dict], title: str) -> str:
    lines = [title, f"{'video':<28}{'backend':<9}{'rate':>7}{'frames':>8}{'wall s':>9}{'frames/s':>10}"
                    f"{'× real':>9}{'RSS at start':>13}{'peak RSS':>10}{'decode +MB':>11}"]
    for r in rows:
        if "error" in r:
            lines.append(f"{r['video']:<28}{r['backend']:<9}{'':>7}  failed: {r['error']}")
            continue
        rate = "native" if not r["fps"] else f"{r['fps']:g}/s"
        lines.append(f"{r['video']:<28}{r['backend']:<9}{rate:>7}{r['frames']:>8}{r['seconds']:>9.2f}"
                     f"{r['frames_per_s']:>10.1f}{r['x_real_time']:>9.2f}{r['rss_before_mb']:>13.1f}"
                     f"{r['peak_rss_mb']:>10.1f}{r['peak_rss_mb'] - r['rss_before_mb']:>11.1f}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Decode fps, × real time and peak RSS per backend.")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--backend", default=None)
    parser.add_argument("--fps", type=float, default=None)
    parser.add_argument("--backends", default="decord,pyav,opencv")
    parser.add_argument("--cache-dir", default=os.path.expanduser("~/.cache/streamvid/bench"))
    parser.add_argument("--hd-seconds", type=float, default=60.0, help="length of the 1080p30 clip")
    parser.add_argument("--long-minutes", type=float, default=20.0, help="length of the bounded-memory file")
    parser.add_argument("--skip-memory", action="store_true")
    parser.add_argument("--json", help="write the results as JSON to this file ('-': stdout)")
    args = parser.parse_args(argv)

    if args.worker:
        print(json.dumps(worker(args.worker, args.backend, args.fps)))
        return 0

    from tqdm import tqdm

    from streamvid.sources.decoders import backend_available

    backends = [b for b in args.backends.split(",") if backend_available(b)]
    cache = Path(args.cache_dir)
    cache.mkdir(parents=True, exist_ok=True)
    videos = {}
    vtest = vtest_path()
    if vtest is not None and vtest.exists():
        videos["vtest.avi 1280x720"] = vtest
    else:
        print(f"note: {vtest or 'vtest.avi (STREAMVID_SHARED is not set)'} not found; skipping it", file=sys.stderr)
    videos["1080p30 H.264"] = ensure_video(cache, "hd", duration=args.hd_seconds, fps=30, width=1920,
                                           height=1080, cuts=[args.hd_seconds / 3, 2 * args.hd_seconds / 3])
    jobs = [(name, path, b, fps) for name, path in videos.items() for b in backends for fps in (None, 2.0)]
    speed = []
    for name, path, backend, fps in tqdm(jobs, desc="decode runs", file=sys.stderr):
        speed.append({"video": name, **run_worker(path, backend, fps)})
    report = {"machine": {"cpus": os.cpu_count(), "python": sys.version.split()[0]}, "speed": speed}
    print(table(speed, "Decode speed (each run in a fresh process)"))

    if not args.skip_memory:
        minutes = args.long_minutes
        short = ensure_video(cache, "lowres", duration=60.0, fps=30, width=320, height=180,
                             cuts=list(range(10, 60, 10)))
        long = ensure_video(cache, "lowres", duration=minutes * 60, fps=30, width=320, height=180,
                            cuts=list(range(60, int(minutes * 60), 60)))
        memory = []
        mem_jobs = [(label, path, b) for label, path in (("1 min 320x180", short),
                                                        (f"{minutes:g} min 320x180", long)) for b in backends]
        for label, path, backend in tqdm(mem_jobs, desc="memory runs", file=sys.stderr):
            memory.append({"video": label, **run_worker(path, backend, 2.0)})
        report["memory"] = memory
        print()
        print(table(memory, "Bounded memory: short vs long file at fps=2"))

    if args.json:
        text = json.dumps(report, indent=1)
        if args.json == "-":
            print(text)
        else:
            Path(args.json).write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
