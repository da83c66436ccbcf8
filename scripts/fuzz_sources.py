"""Decode a seeded corpus of mutated videos with every installed file backend and count the outcomes.

    python scripts/fuzz_sources.py --files 700 --seed 0 [--workers 2] [--keep DIR] [--json]

Every run must end in frames or a SourceError; anything else (a raw exception, a hang past
--timeout seconds, a crashed decoder) is listed with its file. Exit status 1 when there is any.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

from streamvid_bench.fuzz import installed_backends, make_corpus, run_corpus


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--files", type=int, default=700, help="mutated files to make (default 700)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--timeout", type=float, default=20.0, help="seconds one decode may take (default 20)")
    parser.add_argument("--backends", nargs="+", choices=["decord", "pyav", "opencv", "auto"],
                        help="default: all installed; auto = no backend forced (the default path, with fallbacks)")
    parser.add_argument("--keep", help="write the corpus here and keep it (default: a temporary folder)")
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="streamvid-fuzz-") as tmp:
        folder = Path(args.keep or tmp)
        t0 = time.perf_counter()
        files = make_corpus(folder, args.files, args.seed)
        made_s = time.perf_counter() - t0
        backends = args.backends or installed_backends()
        t0 = time.perf_counter()
        report = run_corpus(files, backends, workers=args.workers, timeout_s=args.timeout)
        run_s = time.perf_counter() - t0
    summary = {"files": len(files), "seed": args.seed, "backends": backends, "runs": report.runs,
               "outcomes": dict(report.counts), "by_backend": {b: dict(c) for b, c in report.by_backend.items()},
               "slowest_run_s": round(report.slowest_s, 2), "corpus_s": round(made_s, 1), "decode_s": round(run_s, 1),
               "bad": [dict(zip(("file", "backend", "outcome", "detail"), row, strict=True)) for row in report.bad]}
    if args.json:
        print(json.dumps(summary, indent=1))
    else:
        print(f"{len(files)} files × {len(backends)} backends ({', '.join(backends)}) = {report.runs} runs "
              f"in {run_s:.0f} s (corpus made in {made_s:.0f} s, seed {args.seed})")
        for name, counts in summary["by_backend"].items():
            print(f"  {name:7s} " + ", ".join(f"{k} {v}" for k, v in sorted(counts.items())))
        print("  total   " + ", ".join(f"{k} {v}" for k, v in sorted(report.counts.items())) +
              f"; slowest run {report.slowest_s:.2f} s")
        for row in report.bad:
            print("  BAD " + " | ".join(row))
    return 1 if report.bad else 0


if __name__ == "__main__":
    sys.exit(main())
