"""Shared fixtures. ``make_video`` writes deterministic videos (streamvid_bench.samples) once
per test session and returns (path, manifest)."""

from __future__ import annotations

import json
import logging
import os

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")


@pytest.fixture(autouse=True)
def restore_streamvid_logger():
    """``streamvid.cli.main`` run in-process points the "streamvid" logger at that test's captured stderr;
    later tests must not log into a closed stream (or see another test's handler)."""
    logger = logging.getLogger("streamvid")
    saved = (list(logger.handlers), logger.level, logger.propagate)
    yield
    logger.handlers[:] = saved[0]
    logger.setLevel(saved[1])
    logger.propagate = saved[2]


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
