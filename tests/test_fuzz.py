"""A seeded corpus of 200+ damaged videos through every installed file backend: each run gives
frames or a SourceError, never another exception, a hang or a crash (streamvid_bench.fuzz)."""

from __future__ import annotations

import pytest
from streamvid_bench.fuzz import BASES, MUTATIONS, installed_backends, make_corpus, run_corpus

FILES = 208  # 16 per mutation kind


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return make_corpus(tmp_path_factory.mktemp("fuzz"), FILES, seed=12)


def test_corpus_is_seeded_and_covers_every_mutation(corpus, tmp_path):
    bases = [corpus[0].parent / "bases" / f"base-{name}" for name, _ in BASES]
    again = make_corpus(tmp_path, 26, seed=12, bases=bases)
    assert [p.read_bytes() for p in again] == [p.read_bytes() for p in corpus[:26]]
    assert {p.name.split("-")[1] for p in corpus} == set(MUTATIONS)


def test_every_backend_gives_frames_or_a_source_error(corpus):
    backends = [*installed_backends(), "auto"]  # each forced, and the default choice with its fallbacks
    report = run_corpus(corpus, backends, workers=2, timeout_s=20.0)
    assert report.runs == len(corpus) * len(backends)
    assert report.bad == []
    assert report.counts["frames"] > 0 and report.counts["source_error"] > 0  # the corpus has both kinds
