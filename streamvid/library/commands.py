"""The library's CLI commands (``streamvid index-library``, ``streamvid ask --store``); cli.py parses."""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any

from streamvid.types import format_span


def index_library_command(args: argparse.Namespace, overrides: dict[str, Any]) -> int:
    """Index PATHS into --store over Ray workers; one line per finished, failed or retried file."""
    os.environ.setdefault("GRPC_VERBOSITY", "ERROR")  # gRPC (Ray, Milvus) info lines are not for the user
    from streamvid.library.workers import index_library

    def show(progress) -> None:
        if not args.json and not progress.message.endswith("frames so far."):
            print(progress.message, file=sys.stderr, flush=True)

    report = index_library(args.paths, args.store, store_dir=args.store_dir, preset=args.preset,
                           overrides=overrides, workers=args.workers, ray_address=args.ray_address,
                           gpus_per_worker=args.gpus_per_worker, on_progress=show)
    if args.json:
        print(json.dumps(report.as_dict()))
    else:
        rate = f" ({report.frames / report.seconds:.1f} frames/s)" if report.seconds and report.frames else ""
        print(f"Indexed {len(report.indexed)} file(s), {report.frames} frames in {report.seconds:.1f} s{rate}; "
              f"skipped {len(report.skipped)} already indexed; {len(report.failed)} failed. Store: {args.store}.")
        for path, cause in report.failed.items():
            print(f"Failed: {path}: {cause}")
    return 1 if report.failed else 0


def ask_store_command(args: argparse.Namespace, question: str, overrides: dict[str, Any]) -> int:
    """Answer QUESTION across the videos of --store (or one, --video), citing (video, time)."""
    from streamvid.library.library import Library

    with Library(args.store, store_dir=args.store_dir, **overrides) as lib:
        answer = lib.ask(question, video=args.video)
    if args.json:
        print(json.dumps({"answer": answer.text, "video_id": answer.video_id, "videos": answer.videos,
                          "timings": answer.timings, "citations": [c.__dict__ for c in answer.citations]}))
        return 0
    print(answer.text or "(no answer)")
    for c in answer.citations:
        print(f"  {c.path} (video {c.video_id[:12]}) {format_span(c.t_start, c.t_end)}")
    return 0
