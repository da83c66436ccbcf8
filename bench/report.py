"""What a benchmark run reports: the machine it ran on, figures as ratios, a markdown table, PNG plots.

``markdown(results)`` and ``plots(results, out)`` read the results dict that
``streamvid_bench.sections.run_suite`` returns; plots need matplotlib (the ``[bench]`` extra).
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import statistics
import subprocess
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

STAGES = ("decode", "key", "gate", "vision", "compress", "memory")
PERCEPTION = ("key", "gate", "vision", "compress")
RANDOM_WEIGHTS_NOTE = ("random weights: the gate, segmenter and retrieval decisions are not meaningful the way "
                       "trained weights' are; the figures measure cost and plumbing, not answer quality")


def rss_mb() -> float:
    import psutil

    return psutil.Process().memory_info().rss / 2**20


def load_average() -> list[float] | None:
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except OSError:
        return None


def finish_results(results: dict[str, Any], json_path: str | None) -> int:
    """Record and print the load average at the end; write ``results`` as JSON when asked. Returns 0."""
    results["machine"]["load_average_end"] = load_average()
    print(f"load average at end {results['machine']['load_average_end']}")
    if json_path:
        Path(json_path).write_text(json.dumps(results, indent=1, default=str) + "\n")
    return 0


def _git(*args: str) -> str:
    """``git ARGS`` in the checkout the measured streamvid package was imported from ("" outside git)."""
    import streamvid

    try:
        out = subprocess.run(["git", *args], cwd=Path(streamvid.__file__).parent, capture_output=True, text=True,
                             timeout=10)
        return out.stdout.strip() if out.returncode == 0 else ""
    except (OSError, subprocess.SubprocessError):
        return ""


def machine_info() -> dict[str, Any]:
    """Machine, library versions and git commit, for the run's JSON."""
    import psutil
    import transformers

    import streamvid

    cpu = platform.processor()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    versions = {"python": platform.python_version(), "streamvid": streamvid.__version__, "torch": torch.__version__,
                "transformers": transformers.__version__, "numpy": np.__version__}
    for mod in ("open_clip", "faiss", "av", "cv2"):
        with contextlib.suppress(Exception):
            versions[mod] = str(getattr(__import__(mod), "__version__", "?"))
    return {
        "platform": platform.platform(), "cpu": cpu, "cpus": os.cpu_count(),
        "ram_gb": round(psutil.virtual_memory().total / 2**30, 1), "torch_threads": torch.get_num_threads(),
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "versions": versions, "git_commit": _git("rev-parse", "HEAD") or None,
        "git_dirty": bool(_git("status", "--porcelain", "--untracked-files=no")),
        "load_average_start": load_average(),
    }


def median(values: Sequence[float]) -> float:
    """The median; NaN for no values."""
    return float(statistics.median(values)) if values else float("nan")


def ratio(a: float, b: float) -> float | None:
    """a / b to 4 decimals; None when b is 0."""
    return round(a / b, 4) if b else None


def _fmt(v: Any) -> str:
    if v is None:
        return "–"
    if isinstance(v, float):
        return f"{v:.3g}" if abs(v) < 1000 else f"{v:.0f}"
    return str(v)


def _table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> list[str]:
    return ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers),
            *("| " + " | ".join(_fmt(v) for v in r) + " |" for r in rows), ""]


def markdown(results: dict[str, Any]) -> str:
    m = results.get("machine", {})
    lines = [f"# streamvid bench — {results.get('mode', '')} run {results.get('started', '')}", "",
             f"- machine: {m.get('cpu')} × {m.get('cpus')} CPUs, {m.get('ram_gb')} GB RAM, CUDA: {m.get('cuda')}",
             f"- load average at start / end: {m.get('load_average_start')} / {m.get('load_average_end')}",
             f"- git commit {m.get('git_commit')}{' (dirty tree)' if m.get('git_dirty') else ''}; "
             f"torch {m.get('versions', {}).get('torch')}, transformers {m.get('versions', {}).get('transformers')}",
             f"- command: `{results.get('command', '')}`; wall {results.get('wall_s')} s",
             f"- {results.get('note', '')}", ""]
    if "ingest" in results:
        lines += ["## Ingest (tiny-random; decode timed as a stage; captions off)", ""]
        rows = []
        for r in results["ingest"]:
            if "skipped" in r:
                rows.append([r["label"], "skipped: " + r["skipped"]] + [None] * 10)
                continue
            s = r["ms_per_input_frame"]
            rows.append([r["label"], r["frames"], r["frames_kept"], r["ingest_fps"], r["x_real_time"],
                         *(s.get(k) for k in STAGES), r["perception_over_vision"]])
        lines += _table(["video", "frames", "kept", "fps", "× real time", *(f"{k} ms" for k in STAGES),
                         "perception / vision"], rows)
        lines += ["Stage columns are ms per sampled frame (stage total / frames sampled).", ""]
    if "soak" in results:
        s, lv = results["soak"], results["soak"]["live"]
        lines += [f"## Soak ({s['minutes']:g} simulated minutes at {s['fps']:g} fps, {s['size'][0]}×{s['size'][1]}, "
                  "tiny-random)", ""]
        lines += _table(["frames", "ingest fps", "budget", "max tokens_in_ram", "budget full at min",
                         "RSS when full MB", "RSS end MB", "RSS end / when full"],
                        [[s["frames"], s["ingest_fps"], s["max_ram_tokens"], s["max_tokens_in_ram"],
                          s["budget_full_at_minute"],
                          next((x["rss_mb"] for x in s["samples"] if x["minute"] == s["budget_full_at_minute"]), None),
                          s["samples"][-1]["rss_mb"], s["rss_end_over_rss_when_full"]]])
        lines += ["Live push source fed at 2× the soak's ingest fps:", ""]
        lines += _table(["push fps", "seconds", "pushed", "dropped %", "ingested", "max waiting+in flight",
                         "latency p50 ms", "p95 ms", "max ms"],
                        [[lv["push_fps"], lv["seconds"], lv["pushed"], lv["dropped_pct"], lv["ingested"],
                          lv["max_waiting_or_in_flight"], lv["latency_ms_p50"], lv["latency_ms_p95"],
                          lv["latency_ms_max"]]])
    if "serve" in results:
        from streamvid_bench.serve import serve_markdown

        lines += serve_markdown(results["serve"])
    if "needle" in results:
        lines += ["## Needle in a video haystack (tiny-random, 1 fps, 160×120)", ""]
        lines += _table(["minutes", "tokens/frame", "event tokens", "τ_dup", "kept", "events", "stored tokens/min",
                         "image R@1", "image R@3", "citations R@1", "citations R@3"],
                        [[r["minutes"], r["settings"]["tokens_per_frame"], r["settings"]["event_tokens"],
                          r["settings"]["tau_dup"], r["frames_kept"], r["events"], r["stored_tokens_per_minute"],
                          r["recall_image@1"], r["recall_image@3"], r["recall_citations@1"],
                          r["recall_citations@3"]] for r in results["needle"]])
        lines += ["Image search uses the needle frame itself as the query; citations come from a text question "
                  "through a random text encoder, so their recall is near chance.", ""]
    if "answer" in results:
        a = results["answer"]
        lines += ["## Answer: memory prompt vs N uniform frames with full tokens (ratios = memory / uniform)", ""]
        rows = []
        for r in a["models"]:
            mem = r["memory"]
            rows.append([r["model"], "memory", mem["prompt_tokens"], mem["ttft_ms"], mem["decode_tok_s"],
                         round(r["memory_perception_ms"]), None, None, None])
            for u in r["uniform"]:
                rows.append([r["model"], f"uniform N={u['n_frames']}", u["prompt_tokens"], u["ttft_ms"],
                             u["decode_tok_s"], u["ingest_ms"], u["ttft_ratio"], u["prompt_tokens_ratio"],
                             u["decode_tok_s_ratio"]])
        lines += _table(["model", "prompt", "prompt tokens", "TTFT ms", "decode tok/s", "ingest ms",
                         "TTFT ratio", "prompt-token ratio", "decode ratio"], rows)
        for r in a["models"]:
            lines.append(f"- {r['model']}: {r['model_note']}; retrieval encoder {r['retrieval_encoder']}; memory "
                         f"from {r['memory_frames']} frames at {r['memory_ingest_fps']:g} fps "
                         f"({r['memory_frames_kept']} kept); vision {r['vision_ms_per_frame']} ms/frame")
        c = a["ask_while_ingesting"]
        lines += ["", f"Asking while ingesting ({c['model']}, {c['frames_per_run']} frames): ingest fps alone "
                  f"{c['ingest_fps_alone']} (runs {c['ingest_fps_alone_runs']}), with a thread asking in a loop "
                  f"{c['ingest_fps_asking']} ({c['questions_answered_while_ingesting']} answers) → slowdown "
                  f"{c['slowdown_pct']} %.", ""]
    if "gpu" in results:
        g = results["gpu"]
        lines += ["## GPU", ""]
        if not g.get("run"):
            lines += [f"Not run: {g.get('reason')}", ""]
        else:
            lines += _table(["batch", "frames/s"], [[r["batch"], r["frames_per_s"]] for r in g["batch_sweep"]])
            lines += [f"Highest camera rate kept up with (≤ {g['camera']['max_drop_pct']} % dropped): "
                      f"{g['camera']['max_rate_kept_up']} fps", ""]
    return "\n".join(lines) + "\n"


def plots(results: dict[str, Any], out: Path) -> list[str]:
    """PNG plots (matplotlib, Agg): RSS over time, recall vs tokens/minute, per-stage breakdown."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written = []
    if "soak" in results:
        s = results["soak"]["samples"]
        fig, ax = plt.subplots(figsize=(6.4, 3.6))
        ax.plot([x["minute"] for x in s], [x["rss_mb"] for x in s], color="tab:blue")
        ax.set_xlabel("simulated minute")
        ax.set_ylabel("RSS (MB)", color="tab:blue")
        ax2 = ax.twinx()
        ax2.plot([x["minute"] for x in s], [x["tokens_in_ram"] for x in s], color="tab:orange")
        ax2.axhline(results["soak"]["max_ram_tokens"], color="tab:orange", ls=":", lw=1)
        ax2.set_ylabel("tokens_in_ram", color="tab:orange")
        ax.set_title("Soak: RSS and tokens in RAM (budget dotted)")
        fig.tight_layout()
        fig.savefig(out / "rss.png", dpi=90)
        plt.close(fig)
        written.append("rss.png")
    if "needle" in results:
        fig, axes = plt.subplots(1, 2, figsize=(8.4, 3.4), sharey=True)
        for minutes in sorted({r["minutes"] for r in results["needle"]}):
            rs = sorted((r for r in results["needle"] if r["minutes"] == minutes),
                        key=lambda r: r["stored_tokens_per_minute"])
            x = [r["stored_tokens_per_minute"] for r in rs]
            for ax, key in zip(axes, ("image", "citations"), strict=True):
                ax.plot(x, [r[f"recall_{key}@1"] for r in rs], "o-", label=f"{minutes:g} min @1")
                ax.plot(x, [r[f"recall_{key}@3"] for r in rs], "s--", label=f"{minutes:g} min @3")
        for ax, key in zip(axes, ("image-query search", "answer citations"), strict=True):
            ax.set_xscale("log")
            ax.set_xlabel("tokens stored per minute")
            ax.set_title(key)
        axes[0].set_ylabel("recall")
        axes[1].legend(fontsize=7)
        fig.tight_layout()
        fig.savefig(out / "recall.png", dpi=90)
        plt.close(fig)
        written.append("recall.png")
    if "ingest" in results:
        rows = [r for r in results["ingest"] if "skipped" not in r]
        if rows:
            fig, ax = plt.subplots(figsize=(6.4, 0.9 + 0.6 * len(rows)))
            left = np.zeros(len(rows))
            for k in STAGES:
                v = np.array([r["ms_per_input_frame"].get(k, 0.0) for r in rows])
                ax.barh(range(len(rows)), v, left=left, label=k)
                left += v
            ax.set_yticks(range(len(rows)), [r["label"].split(" @")[0] for r in rows], fontsize=7)
            ax.set_xlabel("ms per sampled frame")
            ax.legend(fontsize=7, ncol=3)
            ax.set_title("Ingest: per-stage time")
            fig.tight_layout()
            fig.savefig(out / "stages.png", dpi=90)
            plt.close(fig)
            written.append("stages.png")
    return written
