"""The benchmark suite end to end at its smallest size (``--smoke``, implies --quick): outputs exist and
hold sane, self-consistent fields. No timing assertions: speed is what the suite prints, not what tests check."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from streamvid_bench import cli, report, sections, sources

from streamvid.errors import ConfigError
from streamvid.pipeline import StageTimer

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench-out")
    cache = tmp_path_factory.mktemp("bench-cache")
    assert cli.main(["--smoke", "--out", str(out), "--cache-dir", str(cache), "--no-progress"]) == 0
    return out, json.loads((out / "results.json").read_text())


def test_outputs_exist_and_record_the_machine(run):
    out, r = run
    assert r["mode"] == "smoke"
    m = r["machine"]
    assert m["cpus"] >= 1 and m["versions"]["torch"] == torch.__version__
    assert "git_commit" in m and "load_average_start" in m and "load_average_end" in m
    md = (out / "results.md").read_text()
    for heading in ("## Ingest", "## Soak", "## Needle", "## Answer", "## GPU"):
        assert heading in md
    for name in ("rss.png", "recall.png", "stages.png"):
        data = (out / name).read_bytes()
        assert data[:8] == PNG_MAGIC and len(data) > 2000


def test_ingest_stages_are_consistent(run):
    _, r = run
    rows = [x for x in r["ingest"] if "skipped" not in x]
    assert rows
    for x in rows:
        assert 0 < x["frames_kept"] <= x["frames"]
        assert set(report.STAGES) <= set(x["ms_per_input_frame"])
        assert all(v >= 0 for v in x["stage_ms_total"].values())
        # Perception includes the vision tower, so it can only be larger.
        assert x["perception_over_vision"] >= 1.0
        assert x["ingest_fps"] > 0 and x["tokens_in_ram"] > 0


def test_soak_stays_within_budget_and_live_queue_is_bounded(run):
    _, r = run
    s = r["soak"]
    assert s["frames"] == int(s["minutes"] * 60 * s["fps"])
    assert s["budget_respected"] and s["max_tokens_in_ram"] <= s["max_ram_tokens"]
    minutes = [x["minute"] for x in s["samples"]]
    assert minutes == sorted(minutes) and len(minutes) >= s["minutes"]
    live = s["live"]
    assert live["pushed"] > 0 and live["ingested"] > 0
    assert live["ingested"] + live["dropped"] <= live["pushed"]
    # Newest frame wins: at most the buffer's frames wait, plus the pipeline's frames in flight and one
    # being counted (the counters are read one after another, not under one lock).
    assert live["max_waiting_or_in_flight"] <= live["buffer_capacity"] + live["max_in_flight"] + 1
    assert live["latency_samples"] > 0 and live["latency_ms_p50"] >= 0


def test_needle_recall_fields(run):
    _, r = run
    rows = r["needle"]
    assert len(rows) == len(sections.SIZES["smoke"].needle_settings) * len(sections.SIZES["smoke"].needle_minutes)
    for x in rows:
        assert all(0.0 <= t < x["minutes"] * 60 for t in x["needles"])
        for kind in ("image", "citations"):
            assert 0.0 <= x[f"recall_{kind}@1"] <= x[f"recall_{kind}@3"] <= 1.0
    by_budget = sorted(rows, key=lambda x: x["settings"]["tokens_per_frame"])
    assert by_budget[0]["stored_tokens_per_minute"] < by_budget[-1]["stored_tokens_per_minute"]


def test_answer_ratios_match_their_parts(run):
    _, r = run
    (model,) = r["answer"]["models"]
    mem = model["memory"]
    assert mem["prompt_tokens"] > 0 and mem["citations"] >= 1
    rows = model["uniform"]
    assert [u["n_frames"] for u in rows] == sorted(sections.SIZES["smoke"].answer_ns)
    tpf = model["tokens_per_frame_raw"]
    for a, b in zip(rows, rows[1:], strict=False):
        # N more frames with full tokens add at least N × tokens_per_frame prompt tokens.
        assert b["prompt_tokens"] - a["prompt_tokens"] >= (b["n_frames"] - a["n_frames"]) * tpf
    for u in rows:
        assert u["prompt_tokens_ratio"] == pytest.approx(mem["prompt_tokens"] / u["prompt_tokens"], abs=1e-4)
        assert u["ttft_ratio"] == pytest.approx(mem["ttft_ms"] / u["ttft_ms"], rel=1e-2)
        assert u["ingest_ms"] == pytest.approx(u["n_frames"] * model["vision_ms_per_frame"], rel=0.05)
    conc = r["answer"]["ask_while_ingesting"]
    assert conc["ingest_fps_alone"] > 0 and conc["ingest_fps_asking"] > 0


def test_serve_section_accounts_for_every_frame_and_event(run):
    r = run[1]["serve"]
    c = r["concurrency"]
    assert c["errors"] == 0, c["error_samples"]
    assert c["pushed"] == c["sessions"] * int(c["seconds"] * c["push_fps"])
    assert c["unaccounted"] == 0 and c["ingested"] + c["dropped_newest_wins"] == c["pushed"]
    assert c["within_budget"] and c["max_tokens_in_ram"] <= c["session_budget_tokens"]
    # Every event that closed reached its session's pass-all watch as a notification.
    assert c["watch_notifications"] == c["events_closed"] > 0
    o = r["api_overhead"]
    assert o["reps"] == 3 and o["api_ms_p50"] > 0 and o["in_process_ms_p50"] > 0


def test_gpu_section_says_why_it_did_not_run(run):
    _, r = run
    if torch.cuda.is_available():
        assert r["gpu"]["run"] and r["gpu"]["batch_sweep"]
    else:
        assert r["gpu"]["run"] is False and "CUDA" in r["gpu"]["reason"]


def test_unknown_section_is_a_clear_error(tmp_path):
    with pytest.raises(ConfigError, match="unknown bench section.*nope"):
        cli.main(["--smoke", "--sections", "ingest,nope", "--out", str(tmp_path)])


def test_uniform_times_nest():
    t64 = sections.uniform_times(600.0, 64)
    assert t64[0] == 0.0 and t64[-1] < 600.0 and np.all(np.diff(t64) > 0)
    np.testing.assert_allclose(t64[::2], sections.uniform_times(600.0, 32))
    np.testing.assert_allclose(t64[::8], sections.uniform_times(600.0, 8))


def test_rendered_and_timed_sources_keep_times():
    scenery = sources.Scenery(30.0, 64, 48, needles=(7.0,), seed=1)
    ticks = []
    src = sources.RenderedSource(np.arange(0.0, 30.0, 1.0), scenery, every=ticks.append, every_s=10.0)
    timer = StageTimer()
    frames = list(sources.TimedSource(src, timer, until=25.0))
    assert [f.t for f in frames] == [float(t) for t in range(25)]
    assert ticks == [10.0, 20.0]
    assert timer.frames["decode"] == 25
    assert np.array_equal(frames[7].rgb, scenery.needle_rgb(0)) and not np.array_equal(frames[6].rgb, frames[7].rgb)


def test_bench_compress_script_on_a_small_clip(tmp_path, make_video):
    path, _ = make_video("clip.mp4", duration=6.0, fps=10, width=160, height=120, cuts=[3.0])
    out = tmp_path / "compress.json"
    script = Path(__file__).resolve().parents[1] / "scripts" / "bench_compress.py"
    run = subprocess.run([sys.executable, str(script), "--models", "tiny:smolvlm", "--video", str(path),
                          "--json", str(out)], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    (r,) = json.loads(out.read_text())["runs"]
    assert r["frames_in"] == 6 and 0 < r["frames_kept"] <= 6
    assert r["tokens_per_kept_frame_after"] <= r["tokens_per_kept_frame_before"]
    assert r["stored_tokens_per_minute"] <= r["raw_tokens_per_minute"]
    assert r["identical_frames"]["frames_kept"] == 1
