"""TTFT, decode tok/s and prompt tokens: streamvid's memory prompt vs N uniformly sampled frames with full
tokens (same model, same build_prompt/generate, one run), and ingest fps with vs without a thread asking.

    .venv/bin/python scripts/bench_answer.py                       # all models below, N = 8, 32, 64
    .venv/bin/python scripts/bench_answer.py --models tiny:smolvlm --minutes 2 --ns 8,32

Models: tiny:smolvlm, tiny:qwen2_5_vl, tiny:llava_onevision (tiny, random weights, memory from the video
at 1 fps); smolvlm-256m (real size, random weights) and qwen2.5-vl-3b-cut (real widths/vocab/frame size,
LM layers 36→2, vision blocks 32→2), whose memory is ingested at --real-ingest-fps because their
vision tower takes seconds per frame on a small CPU. The retrieval encoder is the tiny random CLIP for
all (it only affects which events are retrieved, not the prompt size). Ratios are memory / uniform;
the baseline's ingest cost is N × the vision tower's ms/frame measured on its frames.
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

DEFAULT_MODELS = "tiny:smolvlm,tiny:qwen2_5_vl,tiny:llava_onevision,smolvlm-256m,qwen2.5-vl-3b-cut"


def print_model(r: dict) -> None:
    m = r["memory"]
    print(f"\n== {r['model']}: {r['model_note']}; tokens/frame {r['tokens_per_frame_raw']}, read budget "
          f"{r['read_tokens']}; memory from {r['memory_frames']} frames at {r['memory_ingest_fps']:g} fps "
          f"({r['memory_frames_kept']} kept, perception {r['memory_perception_ms']:.0f} ms); vision "
          f"{r['vision_ms_per_frame']:.1f} ms/frame")
    print(f"memory prompt : {m['prompt_tokens']:6d} prompt tokens  TTFT {m['ttft_ms']:9.1f} ms  decode "
          f"{m['decode_tok_s']:6.1f} tok/s  (+ retrieval {m['retrieval_ms']:.1f} ms)")
    for u in r["uniform"]:
        print(f"uniform N={u['n_frames']:<3d}: {u['prompt_tokens']:6d} prompt tokens  TTFT {u['ttft_ms']:9.1f} ms  "
              f"decode {u['decode_tok_s']:6.1f} tok/s  ingest {u['ingest_ms']:9.0f} ms | memory/uniform: TTFT "
              f"{u['ttft_ratio']}  (with retrieval {u['ttft_with_retrieval_ratio']})  prompt tokens "
              f"{u['prompt_tokens_ratio']}  decode {u['decode_tok_s_ratio']}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--models", default=DEFAULT_MODELS)
    p.add_argument("--ns", default="8,32,64", help="uniform baseline frame counts")
    p.add_argument("--minutes", type=float, default=10.0, help="length of the generated video")
    p.add_argument("--real-ingest-fps", type=float, default=0.05, help="memory sampling rate for real-size models")
    p.add_argument("--reps", type=int, default=3, help="timed generations per prompt (tiny models)")
    p.add_argument("--real-reps", type=int, default=1, help="timed generations per prompt (real-size models)")
    p.add_argument("--new-tokens", type=int, default=16)
    p.add_argument("--concurrency-minutes", type=float, default=3.0,
                   help="video minutes per ingest run of the asking-while-ingesting check (0: skip)")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--cache-dir", default=str(sources.DEFAULT_CACHE))
    p.add_argument("--json", help="write the results to this file")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    ns = [int(n) for n in args.ns.split(",")]
    video = sources.generated_answer_video(Path(args.cache_dir), args.minutes)
    machine = report.machine_info()
    print(f"video {video} ({args.minutes:g} min); {machine['cpus']} CPUs, load average "
          f"{machine['load_average_start']}, torch threads {torch.get_num_threads()}")
    print(report.RANDOM_WEIGHTS_NOTE)
    tiny_clip = sources.load_encoder("tiny")
    results: dict = {"machine": machine, "video": str(video), "models": []}
    for name in args.models.split(","):
        real = not name.startswith("tiny:")
        models = sources.Models(sources.load_llm(name), tiny_clip, name, "tiny CLIP (random weights)",
                              sources.MODEL_NOTES[name])
        r = sections.answer_report(models, video, args.minutes * 60.0, ns,
                                ingest_fps=args.real_ingest_fps if real else 1.0,
                                reps=args.real_reps if real else args.reps, new_tokens=args.new_tokens,
                                config_overrides=sections.real_model_overrides() if real else None,
                                progress=sys.stderr.isatty())
        results["models"].append(r)
        print_model(r)
        del models
    if args.concurrency_minutes > 0:
        tiny = sources.Models(sources.load_llm("tiny:smolvlm"), tiny_clip, "tiny:smolvlm", "tiny CLIP", "")
        c = sections.ask_while_ingesting_report(tiny, video, fps=1.0, until=args.concurrency_minutes * 60.0)
        results["ask_while_ingesting"] = c
        print(f"\nasking while ingesting (tiny:smolvlm, {c['frames_per_run']} frames at 1 fps): ingest fps alone "
              f"{c['ingest_fps_alone']} (runs {c['ingest_fps_alone_runs']}), with a thread asking in a loop "
              f"{c['ingest_fps_asking']} ({c['questions_answered_while_ingesting']} answers): slowdown "
              f"{c['slowdown_pct']} %")
    return report.finish_results(results, args.json)


if __name__ == "__main__":
    sys.exit(main())
