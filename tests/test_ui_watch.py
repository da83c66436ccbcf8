"""The browser app's Live-tab watch ("tell me when …"), through the app's callbacks on a real
tiny-random agent. The watch passes every event (threshold −1, no model check: tiny-random's keys and
answers are random), so this tests the plumbing: matches appear as events close, with times inside
the stream, per browser session, and survive neither a new watch nor a reset."""

from __future__ import annotations

import re
import time

import gradio as gr
import numpy as np
import pytest


@pytest.fixture(scope="module")
def factory():
    from streamvid_ui.sessions import SharedModelFactory

    return SharedModelFactory("tiny-random", device="cpu", fps=4)


@pytest.fixture
def app(factory):
    from streamvid_ui.app import StreamvidApp

    ui = StreamvidApp(factory)
    yield ui
    ui.close()


A, B = gr.Request(session_hash="tab-a"), gr.Request(session_hash="tab-b")


def scene_frame(i: int, size: int = 96) -> np.ndarray:
    colours = [(230, 30, 30), (30, 220, 30), (30, 30, 230), (230, 230, 30)]
    img = np.empty((size, size, 3), np.uint8)
    img[:] = colours[(i // 6) % len(colours)]
    img[:, (i * 5) % size] = 255
    return img


def match_times(panel: str) -> list[float]:
    return [float(t) for t in re.findall(r'class="sv-match" data-t="([\d.]+)"', panel)]


def test_live_watch_reports_closed_events_per_session(app) -> None:
    assert "No watch set" in app.refresh_watch(A)
    panel, notice = app.watch_live("x" * 600, A)  # too long: refused with a notice, no watch set
    assert "No watch set" in panel and "limit" in notice
    app.session(A).live.watch("anything at all", threshold=-1.0, verify=False)
    t0 = time.monotonic()
    deadline = t0 + 120
    i = 0
    while not match_times(app.refresh_watch(A)):
        assert time.monotonic() < deadline, "no match from a changing live stream"
        app.on_frame(scene_frame(i), A)
        i += 1
        time.sleep(0.1)
    elapsed = time.monotonic() - t0
    panel = app.refresh_watch(A)
    times = match_times(panel)
    assert "Watching for “anything at all”" in panel
    assert all(0.0 <= t <= elapsed for t in times) and times == sorted(times, reverse=True)  # newest first
    assert "No watch set" in app.refresh_watch(B)  # another tab sees nothing of A's watch
    # A new watch replaces the old one and starts with no matches; an empty query stops watching.
    panel, notice = app.watch_live("a red square", A)
    assert match_times(panel) == [] and "Watching for “a red square”: 0 matches" in panel and "error" not in notice
    panel, _ = app.watch_live("", A)
    assert "No watch set" in panel
