"""``streamvid bench`` (and ``python -m streamvid_bench``): parse the options, run the sections, write
results.json, results.md and PNG plots."""

from __future__ import annotations

import argparse
import dataclasses
import datetime as _dt
import importlib.util
import json
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from streamvid_bench.report import load_average, machine_info, markdown, plots
from streamvid_bench.sections import SECTIONS, SIZES, run_suite
from streamvid_bench.sources import DEFAULT_CACHE, MODEL_NOTES, vtest_path

from streamvid.errors import ConfigError


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="streamvid bench", description="Benchmark suite: ingest, soak, needle in a "
                                "haystack, answer latency, GPU. Writes JSON, markdown and PNG plots.")
    p.add_argument("--quick", action="store_true", help="smaller sizes (< 3 minutes on 2 CPU cores)")
    p.add_argument("--smoke", action="store_true", help="the smallest sizes (for tests; implies --quick)")
    p.add_argument("--out", default=None, help="output directory (default bench-out/run-<time> here)")
    p.add_argument("--sections", default=",".join(SECTIONS), help=f"comma-separated subset of {','.join(SECTIONS)}")
    p.add_argument("--cache-dir", default=str(DEFAULT_CACHE), help="where generated videos are kept")
    p.add_argument("--vtest", default=None, help="the shared vtest.avi for the ingest section "
                   "(default $STREAMVID_SHARED/media/vtest.avi)")
    p.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    real = ", ".join(k for k in MODEL_NOTES if not k.startswith("tiny:"))
    p.add_argument("--answer-models", default=None,
                   help=f"comma-separated models for the answer section (default: the tiny ones; also {real})")
    p.add_argument("--no-progress", action="store_true")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """``streamvid bench [--quick] [--smoke] [--out DIR] [--sections a,b] [--cache-dir DIR]``; returns 0."""
    args = build_parser().parse_args(argv)
    sections = [s.strip() for s in args.sections.split(",") if s.strip()]
    unknown = sorted(set(sections) - set(SECTIONS))
    if unknown:
        raise ConfigError(f"unknown bench section(s) {', '.join(unknown)}; choose from {', '.join(SECTIONS)}")
    if importlib.util.find_spec("matplotlib") is None:
        raise ConfigError("streamvid bench draws its plots with matplotlib, which is not installed: "
                          "pip install 'streamvid[bench]'")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    if args.threads:
        torch.set_num_threads(args.threads)
    mode = "smoke" if args.smoke else "quick" if args.quick else "full"
    sizes = SIZES[mode]
    if args.answer_models:
        names = tuple(n.strip() for n in args.answer_models.split(",") if n.strip())
        bad = [n for n in names if n not in MODEL_NOTES]
        if bad:
            raise ConfigError(f"unknown answer model(s) {', '.join(bad)}; choose from {', '.join(MODEL_NOTES)}")
        sizes = dataclasses.replace(sizes, answer_models=names)
    started = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    out = Path(args.out) if args.out else Path("bench-out") / f"run-{started}"
    out.mkdir(parents=True, exist_ok=True)
    progress = not args.no_progress and sys.stderr.isatty()
    t0 = time.perf_counter()
    results: dict[str, Any] = {"mode": mode, "started": started,
                               "command": "streamvid bench " + " ".join(argv if argv is not None else sys.argv[1:]),
                               "machine": machine_info()}
    results.update(run_suite(sizes, sections, Path(args.cache_dir), quick=mode != "full",
                             vtest=Path(args.vtest) if args.vtest else vtest_path(), progress=progress))
    results["wall_s"] = round(time.perf_counter() - t0, 1)
    results["machine"]["load_average_end"] = load_average()
    (out / "results.json").write_text(json.dumps(results, indent=1, default=str) + "\n")
    md = markdown(results)
    (out / "results.md").write_text(md)
    results["plots"] = plots(results, out)
    print(md)
    print(f"[bench] wrote {out}/results.json, results.md, {', '.join(results['plots'])}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
