"""``streamvid eval``: question answering over generated videos, scored OVO-Bench style, with baselines.

Clips come from ``streamvid_bench.clips`` (seeded): textured scenes joined by cuts, cross-fades and
fades through black, camera pans, lighting drift, on-screen text, counted discs, greyscale footage.
Each clip carries questions whose answers follow from its specification:

  text       on-screen text at a time                      exact text, the clip's other texts absent
  order      first / last / after X; first scene's colour   exact (multiple choice over the clip's texts)
  when       "when did X appear?"                           the first clock time in the answer, ±2 s
  count      scene changes, discs                           the first number in the answer
  colour     at the start / end / when X appeared           the colour, no other scene colour;
                                                            greyscale clips: no colour word at all
  changed    "what changed at T?" (a cut or a text)         the new colour or text named
  realtime   asked at time t of a live (pushed) stream      from the frames up to t only
  unanswerable  about things never shown                   abstaining ("I did not see that") is right

Every question is answered three ways, by the same preset: with streamvid's memory over the whole
stream (up to t for real-time questions), with only the last 4 sampled frames (SimpleStream), and
with N uniformly sampled frames. Reported per method: accuracy per category, abstention precision,
hallucination rate, time to first token; and event-boundary precision/recall (±1 s) of the memory's
events against the clips' true cuts, with false cuts per minute of panning. Writes results.json,
results.md and accuracy.png.
"""

from __future__ import annotations

import json
import logging
import re
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from streamvid_bench.clips import COLOURS, Clip, Overlay, Scene, frames, write_clip

log = logging.getLogger("streamvid_bench.evaluate")

CATEGORIES = ("text", "order", "when", "count", "colour", "changed", "realtime", "unanswerable")
METHODS = ("memory", "last4", "uniform")
ABSTAIN = re.compile(r"\b(did not see|didn't see|not seen|cannot tell|can't tell|no colour|don't know|do not know)\b",
                     re.IGNORECASE)
WORDS = ("HELLO", "EXIT", "OPEN", "STOP", "PARK", "GATE 4", "RED CAR", "BLUE DOOR", "TAXI", "HOTEL", "SALE",
         "MENU", "BUS 12", "CAFE", "NORTH", "PLATFORM 3", "BANK", "LIBRARY", "ZONE B", "TICKETS")
UNSEEN = ("What did the dog do?", "What colour was the car?", "What did the man in the hat say?",
          "When did the cat jump?", "How many birds flew past?", "What was the name of the restaurant?")
NUMBER_WORDS = {w: i for i, w in enumerate(("zero", "one", "two", "three", "four", "five", "six", "seven", "eight",
                                            "nine", "ten"))}
NUMBER_WORDS["no"] = 0


@dataclass
class Question:
    category: str
    text: str
    kind: str  # how it is scored: text | choice | time | number | colour | nocolour | abstain
    expected: Any = None
    distractors: tuple = ()
    at: float | None = None  # real-time questions: asked when the stream reaches this time
    depth_s: float = 0.0  # how far back (seconds before the asking time) the answer lies


@dataclass
class EvalClip:
    clip: Clip
    questions: list[Question] = field(default_factory=list)


def _clock(t: float) -> str:
    t = int(round(t))
    return f"{t // 3600:02d}:{t % 3600 // 60:02d}:{t % 60:02d}"


def make_suite(seed: int = 0, n_clips: int = 6, scene_s: float = 10.0, scenes: int = 4) -> list[EvalClip]:
    """Seeded clips and their questions. Clip k's style cycles through cuts, fades, pans, drift, grey."""
    rng = np.random.default_rng(seed)
    styles = ("cuts", "fades", "pans", "drift", "grey", "cuts")
    out = []
    for k in range(n_clips):
        style = styles[k % len(styles)]
        colours = [str(c) for c in rng.choice(list(COLOURS), size=scenes, replace=False)]
        words = [str(w) for w in rng.choice(WORDS, size=scenes, replace=False)]
        sc = []
        for i, colour in enumerate(colours):
            enter = "cut"
            if style == "fades" and i:
                enter = ("fade", "black")[i % 2]
            motion = {"pans": "pan", "drift": "drift"}.get(style, "static")
            sc.append(Scene(i * scene_s, (i + 1) * scene_s, colour, motion=motion, enter=enter, fade_s=2.0,
                            seed=int(rng.integers(1 << 16))))
        # Text in scenes 0, 1 and 3; discs in scene 2. Texts stay off the fades.
        overlays = []
        text_scenes = (0, 1, 3)
        for j, i in enumerate(text_scenes):
            t0 = i * scene_s + round((0.3 + 0.1 * float(rng.integers(0, 2))) * scene_s)
            overlays.append(Overlay(t0, t0 + round(0.4 * scene_s), text=words[j]))
        n_discs = int(rng.integers(2, 6))
        overlays.append(Overlay(2 * scene_s + round(0.3 * scene_s), 2 * scene_s + round(0.8 * scene_s),
                                count=n_discs, colour="white"))
        clip = Clip(f"clip{k}-{style}", tuple(sc), tuple(overlays), grey=style == "grey")
        out.append(EvalClip(clip, _questions(clip, rng, words[:3], n_discs)))
    return out


def _questions(clip: Clip, rng: np.random.Generator, texts: list[str], n_discs: int) -> list[Question]:
    end = clip.duration
    ov = [o for o in clip.overlays if o.text]
    sc = clip.scenes
    qs: list[Question] = []
    k = int(rng.integers(0, len(ov)))
    o = ov[k]
    others = tuple(t for t in texts if t != o.text)
    mid = 0.5 * (o.t_start + o.t_end)
    qs.append(Question("text", f"What text was on screen at {_clock(mid)}?", "choice", o.text, others,
                       depth_s=end - mid))
    qs.append(Question("order", "What text appeared first?", "choice", ov[0].text, tuple(texts[1:]),
                       depth_s=end - ov[0].t_start))
    qs.append(Question("order", "What text appeared last?", "choice", ov[-1].text, tuple(texts[:-1]),
                       depth_s=end - ov[-1].t_start))
    qs.append(Question("order", f"What text appeared after {ov[0].text}?", "choice", ov[1].text,
                       (ov[0].text, ov[2].text), depth_s=end - ov[1].t_start))
    j = int(rng.integers(0, len(ov)))
    qs.append(Question("when", f"When did the text {ov[j].text} appear?", "time", ov[j].t_start,
                       depth_s=end - ov[j].t_start))
    qs.append(Question("count", "How many scene changes were there?", "number", len(sc) - 1, depth_s=end))
    discs = next(o for o in clip.overlays if o.count)
    qs.append(Question("count", "How many circles were on screen?", "number", discs.count,
                       depth_s=end - discs.t_start))
    colours = tuple(s.colour for s in sc)
    if clip.grey:
        qs.append(Question("colour", "What colour was the background at the start?", "nocolour", None,
                           depth_s=end))
        qs.append(Question("colour", f"What colour was the scene when {ov[1].text} appeared?", "nocolour", None,
                           depth_s=end - ov[1].t_start))
    else:
        qs.append(Question("colour", "What colour was the background at the start?", "colour", sc[0].colour,
                           tuple(c for c in colours if c != sc[0].colour), depth_s=end))
        qs.append(Question("colour", "What colour was the background at the end?", "colour", sc[-1].colour,
                           tuple(c for c in colours if c != sc[-1].colour), depth_s=0.0))
        qs.append(Question("colour", f"What colour was the scene when {ov[1].text} appeared?", "colour",
                           sc[1].colour, tuple(c for c in colours if c != sc[1].colour), depth_s=end - ov[1].t_start))
    cut = sc[int(rng.integers(1, len(sc)))]
    if not clip.grey:
        qs.append(Question("changed", f"What changed at {_clock(cut.t_start)}?", "colour", cut.colour,
                           depth_s=end - cut.t_start))
    qs.append(Question("changed", f"What changed at {_clock(ov[2].t_start)}?", "text", ov[2].text,
                       depth_s=end - ov[2].t_start))
    # Real time: asked while the stream runs, about now and about the past so far.
    o1 = ov[1]
    t_ask = o1.t_start + min(2.0, 0.5 * (o1.t_end - o1.t_start))
    qs.append(Question("realtime", "What text is on screen right now?", "choice", o1.text,
                       (ov[0].text, ov[2].text), at=t_ask))
    qs.append(Question("realtime", "What text appeared last?", "choice", o1.text, (ov[0].text, ov[2].text),
                       at=t_ask))
    if not clip.grey:
        qs.append(Question("realtime", "What colour is the scene right now?", "colour", sc[1].colour,
                           tuple(c for c in colours if c != sc[1].colour), at=t_ask))
    for text in rng.choice(UNSEEN, size=2, replace=False):
        qs.append(Question("unanswerable", str(text), "abstain"))
    unseen_word = next(w for w in WORDS if w not in texts and w not in [x.text for x in ov])
    qs.append(Question("unanswerable", f"When did the text {unseen_word} appear?", "abstain"))
    return qs


# ---- scoring ---------------------------------------------------------------------------------------
def _norm(s: str) -> str:
    return " ".join(re.findall(r"[a-z0-9]+", s.casefold()))


def abstained(answer: str) -> bool:
    return bool(ABSTAIN.search(answer))


def first_time(answer: str) -> float | None:
    m = re.search(r"(\d{1,2}):(\d{2})(?::(\d{2}))?", answer)
    if not m:
        return None
    a, b, c = m.group(1), m.group(2), m.group(3)
    return int(a) * 3600 + int(b) * 60 + int(c) if c is not None else int(a) * 60 + int(b)


def first_number(answer: str) -> int | None:
    for tok in re.findall(r"[a-z]+|\d+", answer.casefold()):
        if tok.isdigit():
            return int(tok)
        if tok in NUMBER_WORDS:
            return NUMBER_WORDS[tok]
    return None


def _has(answer: str, phrase: str) -> bool:
    """The phrase is named in the answer, as whole words; spacing inside it may differ ("PLATFORM3")."""
    words = _norm(phrase).split()
    pattern = r"\s*".join(re.escape(w) for w in words)
    return bool(words) and re.search(rf"(?<![a-z0-9]){pattern}(?![a-z0-9])", _norm(answer)) is not None


def score(q: Question, answer: str) -> bool:
    """OVO-Bench style: exact match (a contained phrase, number or time) or multiple-choice match (the
    right option named, no other option named)."""
    if q.kind == "abstain":
        return abstained(answer)
    if abstained(answer) and q.kind != "nocolour":
        return False
    if q.kind in ("text", "choice", "colour"):
        return _has(answer, q.expected) and not any(_has(answer, d) for d in q.distractors)
    if q.kind == "time":
        t = first_time(answer)
        return t is not None and abs(t - q.expected) <= 2.0
    if q.kind == "number":
        return first_number(answer) == q.expected
    if q.kind == "nocolour":
        return not any(_has(answer, c) for c in (*COLOURS, "grey", "gray", "brown"))
    raise ValueError(f"unknown question kind {q.kind!r}")


def hallucinated(q: Question, answer: str, shown: Sequence[str]) -> bool:
    """The answer asserts unseen content: it answers an unanswerable question, or quotes text the clip
    never showed."""
    if abstained(answer):
        return False
    if q.kind == "abstain":
        return True
    quoted = re.findall(r"'([^']+)'", answer)
    squash = {_norm(s).replace(" ", "") for s in shown}
    return any(_norm(x).replace(" ", "") not in squash for x in quoted)


# ---- running ---------------------------------------------------------------------------------------
def _push_all(agent, items: Sequence[tuple[float, np.ndarray]], timeout: float = 120.0) -> None:
    """Push frames one at a time into a running push-source agent, waiting for each to be ingested."""
    for t, rgb in items:
        seen = agent.memory.stats()["frames_seen"]
        agent.push(rgb, t)
        deadline = time.monotonic() + timeout
        while agent.memory.stats()["frames_seen"] <= seen:
            if time.monotonic() > deadline:
                raise TimeoutError("the agent did not ingest a pushed frame in time")
            time.sleep(0.002)


def _ask(agent, q: Question) -> dict[str, Any]:
    t0 = time.perf_counter()
    ans = agent.ask(q.text)
    wall = (time.perf_counter() - t0) * 1e3
    return {"answer": ans.text, "ttft_ms": float(ans.timings.get("ttft_ms", wall)) +
            float(ans.timings.get("retrieval_ms", 0.0)), "citations": [[c.t_start, c.t_end] for c in ans.citations]}


def boundary_scores(found: Sequence[float], truth: Sequence[float], tol: float = 1.0) -> tuple[int, int, int]:
    """(true positives, false positives, false negatives), each true cut matched at most once."""
    left = sorted(truth)
    tp = 0
    for f in sorted(found):
        hit = next((t for t in left if abs(t - f) <= tol), None)
        if hit is not None:
            left.remove(hit)
            tp += 1
    return tp, len(found) - tp, len(left)


def run_clip(ec: EvalClip, make_agent: Callable[[], Any], fps: float, workdir: Path, uniform_n: int) -> dict:
    """Answer every question of one clip by the three methods; event boundaries of the memory."""
    clip = ec.clip
    path = write_clip(clip, workdir / f"{clip.name}.mp4")
    sampled = frames(clip, fps)
    shown = [o.text for o in clip.overlays if o.text]
    rows: list[dict] = []
    file_qs = [q for q in ec.questions if q.at is None]
    live_qs = sorted((q for q in ec.questions if q.at is not None), key=lambda q: q.at)

    with make_agent() as agent:  # memory: the whole file
        agent.ingest(str(path), progress=False)
        starts = [e.t_start for e in agent.memory.snapshot().events][1:]
        for q in file_qs:
            rows.append({"method": "memory", **asdict(q), **_ask(agent, q)})
    with make_agent() as agent:  # memory: live, asked as the stream reaches each question's time
        agent.start()
        done = 0
        for q in live_qs:
            upto = [f for f in sampled if f[0] <= q.at]
            _push_all(agent, upto[done:])
            done = len(upto)
            rows.append({"method": "memory", **asdict(q), **_ask(agent, q)})
        agent.stop()

    def subset(items, method):
        if method == "last4":
            return items[-4:]
        idx = np.unique(np.linspace(0, len(items) - 1, num=min(uniform_n, len(items))).round().astype(int))
        return [items[i] for i in idx]

    for method in ("last4", "uniform"):
        groups: dict[float, list[Question]] = defaultdict(list)
        for q in ec.questions:
            groups[clip.duration if q.at is None else q.at].append(q)
        for t_ask, qs in sorted(groups.items()):
            with make_agent() as agent:
                agent.start()
                _push_all(agent, subset([f for f in sampled if f[0] <= t_ask], method))
                for q in qs:
                    rows.append({"method": method, **asdict(q), **_ask(agent, q)})
                agent.stop()
    for r in rows:
        q = Question(**{k: r[k] for k in Question.__dataclass_fields__})
        r["correct"] = score(q, r["answer"])
        r["abstained"] = abstained(r["answer"])
        r["hallucinated"] = hallucinated(q, r["answer"], shown)
        r["clip"] = clip.name
    truth = clip.cuts()
    pan_s = sum(s.t_end - s.t_start for s in clip.scenes if s.motion == "pan")
    tp, fp, fn = boundary_scores(starts, truth)
    pan_fp = sum(1 for f in starts if any(s.motion == "pan" and s.t_start + 1.0 < f < s.t_end - 1.0
                                          for s in clip.scenes) and all(abs(f - t) > 1.0 for t in truth))
    return {"rows": rows, "boundaries": {"clip": clip.name, "found": starts, "truth": truth, "tp": tp, "fp": fp,
                                         "fn": fn, "pan_s": pan_s, "pan_false": pan_fp}}


def summarise(rows: list[dict], boundaries: list[dict]) -> dict[str, Any]:
    out: dict[str, Any] = {"methods": {}}
    for method in METHODS:
        mine = [r for r in rows if r["method"] == method]
        if not mine:
            continue
        acc = {}
        for cat in CATEGORIES:
            rs = [r for r in mine if r["category"] == cat]
            if rs:
                acc[cat] = sum(r["correct"] for r in rs) / len(rs)
        answerable = [r for r in mine if r["category"] != "unanswerable"]
        abst = [r for r in mine if r["abstained"]]
        ttft = sorted(r["ttft_ms"] for r in mine)
        out["methods"][method] = {
            "accuracy": acc,
            "accuracy_answerable": sum(r["correct"] for r in answerable) / max(1, len(answerable)),
            "accuracy_all": sum(r["correct"] for r in mine) / len(mine),
            "abstention_precision": (sum(r["category"] == "unanswerable" for r in abst) / len(abst)) if abst else None,
            "abstention_recall": (sum(r["abstained"] for r in mine if r["category"] == "unanswerable") /
                                  max(1, sum(r["category"] == "unanswerable" for r in mine))),
            "hallucination_rate": sum(r["hallucinated"] for r in mine) / len(mine),
            "ttft_ms_median": ttft[len(ttft) // 2],
            "ttft_ms_p90": ttft[min(len(ttft) - 1, int(0.9 * len(ttft)))],
            "questions": len(mine),
        }
        # Beyond the last 4 frames: questions whose answer lies further back than 4 sampled frames.
        deep = [r for r in mine if r["category"] not in ("unanswerable", "realtime") and r["depth_s"] > 4.0]
        out["methods"][method]["accuracy_deep"] = sum(r["correct"] for r in deep) / max(1, len(deep))
    tp = sum(b["tp"] for b in boundaries)
    fp = sum(b["fp"] for b in boundaries)
    fn = sum(b["fn"] for b in boundaries)
    p = tp / (tp + fp) if tp + fp else 1.0
    r = tp / (tp + fn) if tp + fn else 1.0
    pan_min = sum(b["pan_s"] for b in boundaries) / 60.0
    out["boundaries"] = {"precision": p, "recall": r, "f1": 2 * p * r / (p + r) if p + r else 0.0,
                         "false_cuts_per_pan_minute": (sum(b["pan_false"] for b in boundaries) / pan_min)
                         if pan_min else None, "per_clip": boundaries}
    return out


def markdown(results: dict[str, Any]) -> str:
    s = results["summary"]
    m = results.get("machine", {})
    lines = [f"# streamvid eval — preset {results['preset']}", "",
             f"- command: `{results['command']}`; seed {results['seed']}; {results['clips']} clips, "
             f"{results['questions']} questions per method; wall {results['wall_s']:.0f} s",
             f"- machine: {m.get('cpu')} × {m.get('cpus')} CPUs; git {m.get('git_commit')}"
             f"{' (dirty)' if m.get('git_dirty') else ''}",
             f"- memory = streamvid memory over the stream; last4 = only the last 4 sampled frames (SimpleStream); "
             f"uniform = {results['uniform_n']} uniformly sampled frames; all three by the same preset", "",
             "| method | " + " | ".join(CATEGORIES) + " | answerable | deep (>4 frames back) | abstention precision |"
             " hallucination | TTFT median ms |",
             "|---" * (len(CATEGORIES) + 6) + "|"]
    for method, v in s["methods"].items():
        cells = [f"{v['accuracy'][c]:.2f}" if c in v["accuracy"] else "–" for c in CATEGORIES]
        ap = "–" if v["abstention_precision"] is None else f"{v['abstention_precision']:.2f}"
        lines.append(f"| {method} | " + " | ".join(cells) + f" | {v['accuracy_answerable']:.2f} | "
                     f"{v['accuracy_deep']:.2f} | {ap} | {v['hallucination_rate']:.2f} | {v['ttft_ms_median']:.1f} |")
    b = s["boundaries"]
    fc = "–" if b["false_cuts_per_pan_minute"] is None else f"{b['false_cuts_per_pan_minute']:.2f}"
    lines += ["", f"Event boundaries (±1 s, cuts, cross-fades, fades through black, pans, drift): precision "
              f"{b['precision']:.2f}, recall {b['recall']:.2f}, F1 {b['f1']:.2f}; false cuts per minute of panning "
              f"{fc}.", ""]
    return "\n".join(lines)


def plot(results: dict[str, Any], out: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    s = results["summary"]["methods"]
    fig, ax = plt.subplots(figsize=(8, 3.6))
    width = 0.8 / max(1, len(s))
    for i, (method, v) in enumerate(s.items()):
        xs = [k + i * width for k in range(len(CATEGORIES))]
        ax.bar(xs, [v["accuracy"].get(c, 0.0) for c in CATEGORIES], width, label=method)
    ax.set_xticks([k + 0.4 - width / 2 for k in range(len(CATEGORIES))], CATEGORIES, rotation=20)
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("accuracy")
    ax.set_title(f"streamvid eval — {results['preset']}")
    ax.legend(fontsize=8)
    fig.tight_layout()
    path = out / "accuracy.png"
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def run_eval(preset: str = "offline", *, seed: int = 0, clips: int = 6, scene_s: float = 10.0, uniform_n: int = 8,
             out: str | Path,
             command: str = "", progress: Callable[[str], None] | None = None, **overrides: Any) -> dict[str, Any]:
    """Run the suite for one preset; writes results.json, results.md and accuracy.png under ``out``."""
    from streamvid_bench.report import machine_info

    import streamvid
    from streamvid.config import preset_config

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    suite = make_suite(seed, clips, scene_s=scene_s)
    fps = preset_config(preset, **overrides).fps

    start = time.perf_counter()
    base = streamvid.StreamAgent.from_preset(preset, **overrides)  # loads the models once; agents share them

    def make_agent():
        return base.sharing_models()

    rows: list[dict] = []
    bounds: list[dict] = []
    try:
        for i, ec in enumerate(suite):
            if progress:
                progress(f"clip {i + 1}/{len(suite)}: {ec.clip.name} ({len(ec.questions)} questions)")
            res = run_clip(ec, make_agent, fps, out / "clips", uniform_n)
            rows += res["rows"]
            bounds.append(res["boundaries"])
    finally:
        base.close()
    results = {"preset": preset, "seed": seed, "clips": len(suite), "uniform_n": uniform_n, "command": command,
               "questions": sum(1 for r in rows if r["method"] == "memory"),
               "machine": machine_info(), "summary": summarise(rows, bounds), "rows": rows,
               "wall_s": time.perf_counter() - start}
    (out / "results.json").write_text(json.dumps(results, indent=1, default=float))
    (out / "results.md").write_text(markdown(results))
    plot(results, out)
    return results


def main(argv: Sequence[str] | None = None) -> int:
    import argparse
    import os
    import sys

    p = argparse.ArgumentParser(prog="streamvid eval", description="Question answering over generated videos, "
                                "scored OVO-Bench style, against last-4-frames and uniform-sampling baselines.")
    p.add_argument("--preset", default="offline")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--clips", type=int, default=6, help="number of generated clips (default 6)")
    p.add_argument("--scene-seconds", type=float, default=10.0, help="length of each generated scene")
    p.add_argument("--uniform", type=int, default=8, help="frames for the uniform-sampling baseline")
    p.add_argument("--out", default=None, help="output folder (default eval-out/<preset>-<time>)")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    args = p.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    out = args.out or f"eval-out/{args.preset}-{time.strftime('%Y%m%d-%H%M%S')}"
    command = "streamvid eval " + " ".join(argv if argv is not None else sys.argv[1:])
    results = run_eval(args.preset, seed=args.seed, clips=args.clips, scene_s=args.scene_seconds,
                       uniform_n=args.uniform, out=out,
                       command=command.strip(), progress=None if args.json else (lambda s: print(s, flush=True)))
    if args.json:
        print(json.dumps(results["summary"], default=float))
    else:
        print(markdown(results))
        print(f"Wrote {out}/results.json, results.md and accuracy.png.")
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
