"""The write path on a real clip: frames kept, tokens per kept frame before/after compression, tokens
stored per minute against the raw vision tokens, ms/frame per stage, perception time over the vision tower's.

    .venv/bin/python scripts/bench_compress.py                      # vtest.avi at 1 fps, tiny + SmolVLM-256M
    .venv/bin/python scripts/bench_compress.py --models tiny:smolvlm --fps 2 --json out.json

Models: tiny:smolvlm (tiny-random preset: tiny random CLIP keys, 16 tokens/frame budget = its whole 4×4
grid, so only the temporal drop removes tokens) and smolvlm-256m (real size, random weights; keys from a
randomly initialised open_clip ViT-B-32 — no pretrained weights offline — and the smolvlm2-500m preset's
budget of 32 tokens per frame out of 64). "Identical frames" pushes 8 copies of the first frame through a
fresh pipeline: all but one should be dropped by the gate.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402
from streamvid_bench import (
    report,  # noqa: E402
    sections,  # noqa: E402
    sources,  # noqa: E402
)

from streamvid.config import AgentConfig  # noqa: E402


def print_report(r: dict) -> None:
    print(f"\n== {r['model']}: {r['model_note']}; retrieval encoder {r['retrieval_encoder']}; settings {r['settings']}")
    print(f"video {Path(r['video']).name} at {r['fps']:g} fps: {r['frames_in']} frames sampled "
          f"({r['video_minutes']:.3f} min), {r['frames_kept']} kept = {r['frames_kept_pct']:.1f} %")
    print(f"tokens per kept frame: {r['tokens_per_kept_frame_before']:.1f} before → "
          f"{r['tokens_per_kept_frame_after']:.1f} after compression")
    print(f"tokens per minute of video: stored {r['stored_tokens_per_minute']:.0f} vs raw "
          f"{r['raw_tokens_per_minute']:.0f} → stored/raw = {r['stored_over_raw']}")
    through = r["ms_per_frame_through_stage"]
    print("ms/frame per stage (frames through the stage): "
          + ", ".join(f"{k} {through[k]:.2f}" for k in ("decode", *report.PERCEPTION) if k in through))
    print(f"perception (key+gate+vision+compress) / vision tower = {r['perception_over_vision']}; around the "
          f"vision tower: {r['around_vision_ms_per_kept_frame']:.2f} ms per kept frame")
    same = r.get("identical_frames")
    if same:
        print(f"identical frames: {same['frames_in']} in → {same['frames_kept']} kept, {same['tokens_stored']} tokens")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--video", default=sources.vtest_path(), type=Path, required=sources.vtest_path() is None,
                   help="a video (default $STREAMVID_SHARED/media/vtest.avi)")
    p.add_argument("--fps", type=float, default=1.0)
    p.add_argument("--models", default="tiny:smolvlm,smolvlm-256m")
    p.add_argument("--real-encoder", default="ViT-B-32", help="open_clip architecture (random weights) or 'tiny'")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--json", help="write the results to this file")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    machine = report.machine_info()
    print(f"{machine['cpus']} CPUs, load average {machine['load_average_start']}, torch threads "
          f"{torch.get_num_threads()}")
    print(report.RANDOM_WEIGHTS_NOTE)
    results: dict = {"machine": machine, "runs": []}
    for name in args.models.split(","):
        real = not name.startswith("tiny:")
        enc = args.real_encoder if real else "tiny"
        models = sources.Models(sources.load_llm(name), sources.load_encoder(enc), name,
                              f"{enc} open_clip, random weights" if enc != "tiny" else "tiny CLIP, random weights",
                              sources.MODEL_NOTES[name])
        overrides = sections.real_model_overrides() if real else {}
        config = sources.bench_config(name, **overrides)
        if real:
            config = config.replace(tau_dup=AgentConfig().tau_dup, tau_temporal=AgentConfig().tau_temporal)
        r = sections.compress_report(models, args.video, args.fps, config, progress=sys.stderr.isatty())
        results["runs"].append(r)
        print_report(r)
    return report.finish_results(results, args.json)


if __name__ == "__main__":
    sys.exit(main())
