"""Shared fixtures. ``make_video`` writes deterministic videos (streamvid_bench.samples) once
per test session and returns (path, manifest)."""

from __future__ import annotations

import json
import os

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")


@pytest.fixture(scope="session")
def make_video(tmp_path_factory):
    """make_video(name, **write_video_options) -> (Path, manifest dict), cached by its arguments."""
    from streamvid_bench import samples as make_sample_video

    root = tmp_path_factory.mktemp("videos")
    cache: dict[str, tuple] = {}

    def make(name: str, **options):
        key = json.dumps([name, options], sort_keys=True, default=str)
        if key not in cache:
            path = root / f"{len(cache)}_{name}"
            cache[key] = (path, make_sample_video.write_video(path, **options))
        return cache[key]

    return make
