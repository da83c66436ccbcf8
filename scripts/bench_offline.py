"""Benchmark the offline preset: perception per kept frame, text embedding, the text LLM, and the whole
agent (ingest, then answer latency).

    .venv/bin/python scripts/bench_offline.py [--video PATH] [--fps 1] [--threads N]

--video defaults to $STREAMVID_SHARED/media/vtest.avi.

Prints a table and a JSON line. Figures vary between machines; compare them within one run.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import cv2  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from tqdm import tqdm  # noqa: E402

from streamvid.encoders import TextEmbedder  # noqa: E402
from streamvid.perceive import STAGES, Perceiver, caption_event  # noqa: E402
from streamvid.sources import open_source  # noqa: E402

SHARED = os.environ.get("STREAMVID_SHARED")
DEFAULT_VIDEO = Path(SHARED) / "media" / "vtest.avi" if SHARED else None


def sample_frames(path: Path, fps: float) -> list[tuple[float, np.ndarray]]:
    """(t, rgb) at ``fps`` from a video file, by container timestamps."""
    return [(f.t, f.rgb) for f in open_source(path, fps=fps)]


def bench_perception(frames: list[tuple[float, np.ndarray]]) -> tuple[dict, list]:
    start = time.perf_counter()
    perceiver = Perceiver()
    load_ms = (time.perf_counter() - start) * 1e3
    perceiver.perceive(frames[0][1])  # warm-up (ONNX sessions allocate on first run)
    per_stage: dict[str, list[float]] = {s: [] for s in STAGES}
    totals, perceptions, prev = [], [], None
    for t, rgb in tqdm(frames, desc="perceive", unit="frame"):
        t0 = time.perf_counter()
        p = perceiver.perceive(rgb, prev, t)
        totals.append((time.perf_counter() - t0) * 1e3)
        for stage, ms in p.timings.items():
            per_stage[stage].append(ms)
        perceptions.append(p)
        prev = rgb
    stats = {f"{s}_ms_per_frame": statistics.mean(v) for s, v in per_stage.items() if v}
    stats.update(perception_load_ms=load_ms, perception_ms_per_frame=statistics.mean(totals),
                 perception_ms_per_frame_max=max(totals), frames=len(frames))
    return stats, perceptions


def bench_text_embedding(captions: list[str]) -> dict:
    start = time.perf_counter()
    embedder = TextEmbedder()
    load_ms = (time.perf_counter() - start) * 1e3
    embedder.encode_text(captions[:1])
    reps = 5
    t0 = time.perf_counter()
    for _ in range(reps):
        embedder.encode_text(captions)
    batch_ms = (time.perf_counter() - t0) * 1e3 / reps
    t0 = time.perf_counter()
    for _ in range(reps):
        embedder.encode_text(["who walked through the hall?"])
    query_ms = (time.perf_counter() - t0) * 1e3 / reps
    return dict(text_embed_load_ms=load_ms, text_embed_ms_per_caption=batch_ms / len(captions),
                text_embed_query_ms=query_ms)


def bench_llm(captions: list[str], max_new_tokens: int) -> dict:
    from streamvid.perceive import TextLLM

    t0 = time.perf_counter()
    llm = TextLLM()
    load_ms = (time.perf_counter() - t0) * 1e3
    lines, i = [], 0
    # A ~300-token prompt of timestamped captions, as the offline answerer builds.
    while llm.count_tokens("\n".join(lines)) < 280:
        lines.append(f"[00:00:{i:02d}–00:00:{i + 1:02d}] {captions[i % len(captions)]}")
        i += 1
    messages = [
        {"role": "system", "content": "You answer questions about a video from its timestamped captions."},
        {"role": "user", "content": "\n".join(lines) + "\n\nQuestion: What happens in the video? Answer briefly."},
    ]
    stream = llm.generate(messages, max_new_tokens=max_new_tokens)
    answer = stream.read()
    t = stream.timings
    return dict(llm_load_ms=load_ms, llm_load_s=llm.load_s, llm_prompt_tokens=t["prompt_tokens"],
                llm_prefill_ms=t["prefill_ms"], llm_ttft_ms=t["ttft_ms"], llm_new_tokens=t["new_tokens"],
                llm_decode_tok_s=t["decode_tok_s"], llm_total_ms=t["total_ms"], llm_answer=answer)


def bench_agent(video: Path, questions: list[str]) -> dict:
    """The whole offline preset as a user runs it: build, ingest, then answer each question."""
    from streamvid import StreamAgent

    t0 = time.perf_counter()
    agent = StreamAgent.from_preset("offline")
    build_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    stats = agent.ingest(str(video), progress=False)
    ingest_s = time.perf_counter() - t0
    out: dict = dict(agent_build_s=build_s, agent_ingest_s=ingest_s, agent_frames_seen=stats["frames_seen"],
                     agent_frames_kept=stats["frames_kept"], agent_events=stats["events"])
    out.update({f"agent_{k}_ms_per_frame": v for k, v in agent.stage_ms_per_frame().items()})
    answers = []
    for q in questions:
        t0 = time.perf_counter()
        ans = agent.ask(q)
        answers.append(dict(question=q, answer=ans.text, seconds=time.perf_counter() - t0,
                            ttft_ms=ans.timings.get("ttft_ms"), retrieval_ms=ans.timings.get("retrieval_ms"),
                            citations=[(c.t_start, c.t_end) for c in ans.citations]))
    agent.close()
    out["agent_answer_s_mean"] = statistics.mean(a["seconds"] for a in answers)
    out["agent_answer_s_max"] = max(a["seconds"] for a in answers)
    out["answers"] = answers
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--video", type=Path, default=DEFAULT_VIDEO, required=DEFAULT_VIDEO is None,
                    help="a video (default $STREAMVID_SHARED/media/vtest.avi)")
    ap.add_argument("--fps", type=float, default=1.0)
    ap.add_argument("--threads", type=int, default=0, help="torch intra-op threads (0 = torch's default)")
    ap.add_argument("--max-new-tokens", type=int, default=48)
    ap.add_argument("--no-llm", action="store_true")
    ap.add_argument("--question", action="append", dest="questions",
                    help="asked of the whole offline agent after it ingests the video (repeatable)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    frames = sample_frames(args.video, args.fps)
    results: dict = dict(video=str(args.video), fps=args.fps, torch_threads=torch.get_num_threads(),
                         cpu_count=os.cpu_count(), opencv=cv2.__version__)
    stats, perceptions = bench_perception(frames)
    results.update(stats)
    # One caption per 3 perceived frames stands in for events here.
    captions = [caption_event(perceptions[i : i + 3]) for i in range(0, len(perceptions), 3)]
    results["captions"] = captions
    results.update(bench_text_embedding(captions))
    if not args.no_llm:
        results.update(bench_llm(captions, args.max_new_tokens))
        results.update(bench_agent(args.video, args.questions or ["How many people are walking?",
                                                                  "What happens at the start?"]))
    results["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

    print(f"\n{'figure':34s} value")
    for k, v in results.items():
        if isinstance(v, float):
            print(f"{k:34s} {v:10.1f}")
    for c in captions:
        print("caption:", c)
    if "llm_answer" in results:
        print("answer:", results["llm_answer"])
    for a in results.get("answers", []):
        print(f"agent: {a['question']!r} -> {a['answer']!r} in {a['seconds']:.2f} s, cites {a['citations']}")
    print(json.dumps(results))


if __name__ == "__main__":
    main()
