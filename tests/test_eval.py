"""`streamvid eval` on a tiny subset (one short generated clip, the offline preset's real models): the
harness runs end to end, writes JSON, markdown and a plot, and its scoring is exact."""

from __future__ import annotations

import json

import pytest
from streamvid_bench.evaluate import (
    CATEGORIES,
    METHODS,
    Question,
    boundary_scores,
    first_number,
    first_time,
    make_suite,
    score,
)


def test_scoring_is_exact_and_multiple_choice():
    q = Question("order", "What text appeared first?", "choice", "HELLO", ("EXIT", "STOP"))
    assert score(q, "'HELLO' (at 00:00:03).")
    assert not score(q, "The text 'HELLO' at 00:00:03, then 'EXIT' at 00:00:13.")  # two options named
    assert not score(q, "I did not see that.")
    assert score(Question("text", "?", "choice", "PLATFORM 3"), "'PLATFORM3'")
    assert score(Question("when", "?", "time", 12.0), "It appeared at 00:00:14.")
    assert not score(Question("when", "?", "time", 12.0), "It appeared at 00:00:15.")
    assert score(Question("count", "?", "number", 3), "The scene changed three times.")
    assert score(Question("u", "?", "abstain"), "I did not see that.")
    assert not score(Question("c", "?", "nocolour"), "The scene was mostly grey.")
    assert first_time("from 01:02 on") == 62 and first_number("no circles") == 0
    assert boundary_scores([10.5, 15.0], [10.0, 20.0]) == (1, 1, 1)


def test_suite_is_seeded():
    a, b = make_suite(3, 2), make_suite(3, 2)
    assert [q.text for c in a for q in c.questions] == [q.text for c in b for q in c.questions]
    assert {q.category for c in a for q in c.questions} == set(CATEGORIES)


@pytest.mark.timeout(600)
def test_eval_smoke_offline(tmp_path):
    from streamvid_bench.evaluate import main

    out = tmp_path / "eval"
    assert main(["--clips", "1", "--scene-seconds", "6", "--uniform", "4", "--out", str(out), "--json"]) == 0
    results = json.loads((out / "results.json").read_text())
    methods = results["summary"]["methods"]
    assert set(methods) == set(METHODS)
    mem = methods["memory"]
    assert set(mem["accuracy"]) == set(CATEGORIES)
    assert all(0.0 <= v <= 1.0 for m in methods.values() for v in m["accuracy"].values())
    assert mem["accuracy"]["unanswerable"] == 1.0 and mem["hallucination_rate"] == 0.0
    assert mem["accuracy_deep"] >= methods["last4"]["accuracy_deep"]
    assert results["summary"]["boundaries"]["f1"] == 1.0
    assert "| memory |" in (out / "results.md").read_text() and (out / "accuracy.png").stat().st_size > 0
