"""End-to-end in a real browser: headless Chromium's fake camera streams a generated .y4m into the
app's Live tab; the stats must show frames ingested and an event; a question gets a cited answer;
Stop holds while the camera streams, until Start. A second browser session sees none of the first
one's memory (stats, captions, answers, video) and is freed when its page closes.

Needs Debian's chromium (``apt-get install chromium``) and playwright's Python package (no
``playwright install``: the browser is the system one). Saves test-artifacts/browser-live.png.
"""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import cv2
import numpy as np
import pytest

CHROMIUM = Path(os.environ.get("STREAMVID_CHROMIUM", "/usr/bin/chromium"))
ARTIFACTS = Path(__file__).resolve().parents[1] / "test-artifacts"

pytestmark = [
    pytest.mark.skipif(not CHROMIUM.exists(), reason=f"chromium not installed at {CHROMIUM} "
                                                     "(apt-get install -y chromium chromium-driver)"),
    pytest.mark.timeout(180),
]

CLIP_FPS = 10
CLIP_SIZE = (320, 240)  # width, height
SCENE_S = 4.0
SCENE_COLOURS = [(220, 40, 40), (40, 200, 60), (40, 70, 220), (230, 210, 40), (200, 60, 200), (30, 200, 210)]


def clip_frame(i: int) -> np.ndarray:
    """Frame i of the fake camera clip, RGB [H, W, 3]: a scene colour that changes every SCENE_S
    seconds and brightens within its scene, a white square sliding across it and a frame counter,
    so consecutive frames differ a little and scene cuts differ a lot."""
    w, h = CLIP_SIZE
    per_scene = int(CLIP_FPS * SCENE_S)
    scene = (i // per_scene) % len(SCENE_COLOURS)
    brightness = 0.4 + 0.6 * (i % per_scene) / per_scene
    img = np.empty((h, w, 3), np.uint8)
    img[:] = (np.array(SCENE_COLOURS[scene]) * brightness).astype(np.uint8)
    x = (i * 9) % (w - 80)
    cv2.rectangle(img, (x, 60), (x + 80, 180), (255, 255, 255), -1)
    cv2.putText(img, f"{i:04d}", (10, 225), cv2.FONT_HERSHEY_SIMPLEX, 0.8, (0, 0, 0), 2)
    return img


def write_y4m(path: Path, frames: list[np.ndarray], fps: int) -> None:
    """Write RGB frames as a 4:2:0 Y4M file, the format Chromium's fake camera reads."""
    h, w = frames[0].shape[:2]
    with open(path, "wb") as f:
        f.write(f"YUV4MPEG2 W{w} H{h} F{fps}:1 Ip A1:1 C420jpeg\n".encode())
        for rgb in frames:
            f.write(b"FRAME\n")
            f.write(cv2.cvtColor(rgb, cv2.COLOR_RGB2YUV_I420).tobytes())  # Y plane, then U, then V


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_http(url: str, proc: subprocess.Popen, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the app exited with code {proc.returncode} before serving")
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            time.sleep(0.5)
    raise TimeoutError(f"the app did not answer on {url} within {timeout:.0f} s")


def stat(page, key: str) -> float:
    """A number from the live stats panel, read from its data-value attribute."""
    value = page.locator(f'#sv-live-stats [data-key="{key}"]').get_attribute("data-value")
    return float(value) if value else 0.0


class Server:
    """The app in a subprocess (``python -m streamvid_ui``), its log in a file."""

    def __init__(self, log_path: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/"
        self.log_path = log_path
        # A 1 s heartbeat: gradio notices a closed page (and runs the unload event) within about a second.
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "GRADIO_ANALYTICS_ENABLED": "False", "PYTHONUNBUFFERED": "1",
               "GRADIO_HEARTBEAT_INTERVAL": "1"}
        with open(log_path, "w") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "streamvid_ui", "--host", "127.0.0.1", "--port", str(self.port),
                 "--preset", "tiny-random", "--device", "cpu"],
                stdout=log, stderr=subprocess.STDOUT, env=env)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-20_000:]

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


@pytest.fixture(scope="module")
def camera_clip(tmp_path_factory) -> Path:
    clip = tmp_path_factory.mktemp("camera") / "camera.y4m"
    write_y4m(clip, [clip_frame(i) for i in range(int(CLIP_FPS * SCENE_S * len(SCENE_COLOURS)))], CLIP_FPS)
    return clip.resolve()


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    srv = Server(tmp_path_factory.mktemp("server") / "server.log")
    try:
        wait_for_http(srv.url, srv.proc, timeout=90)
    except BaseException:
        print("---- server log ----\n" + srv.log())
        srv.stop()
        raise
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def browser(camera_clip):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        b = pw.chromium.launch(
            executable_path=str(CHROMIUM), headless=True,
            args=["--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--use-fake-device-for-media-stream",
                  "--use-fake-ui-for-media-stream", f"--use-file-for-fake-video-capture={camera_clip}"])
        yield b
        b.close()


class Pages:
    """Opens pages on the app, each in its own browser context (its own gradio session); on failure
    the server log and the pages' console lines are printed."""

    def __init__(self, server: Server, browser) -> None:
        self.server, self.browser = server, browser
        self.contexts: list = []
        self.console: list[str] = []

    def open(self):
        context = self.browser.new_context(viewport={"width": 1400, "height": 1100})
        self.contexts.append(context)
        pg = context.new_page()
        n = len(self.contexts)
        pg.on("console", lambda m: self.console.append(f"page {n} {m.type}: {m.text}"))
        pg.goto(self.server.url, wait_until="load")
        return pg

    def close(self) -> None:
        for context in self.contexts:
            context.close()


@pytest.fixture
def pages(server, browser):
    opened = Pages(server, browser)
    try:
        yield opened
    finally:
        opened.close()
        # pytest shows captured output only for failing tests, so this costs nothing on success.
        print("---- server log ----\n" + server.log())
        print("---- browser console ----\n" + "\n".join(opened.console[-100:]))


@pytest.fixture
def page(pages):
    return pages.open()


def ask(page, tab: str, question: str) -> str:
    """Ask in the ``tab`` ("live" or "video") and return the finished answer bubble's text."""
    page.locator(f"#sv-{tab}-question textarea").fill(question)
    page.locator(f"#sv-{tab}-ask").click()
    page.wait_for_function(
        f"() => [...document.querySelectorAll('#sv-{tab}-chat .bot-row')]"
        ".some(e => e.innerText.includes('Cited:') || e.innerText.includes('Nothing has been seen'))",
        timeout=30_000)
    return page.locator(f"#sv-{tab}-chat .bot-row").last.inner_text().strip()


def wait_stat_above(page, key: str, value: float, timeout_ms: int = 15_000) -> None:
    page.wait_for_function(
        f"() => Number(document.querySelector('#sv-live-stats [data-key=\"{key}\"]')?.dataset.value || 0) > {value}",
        timeout=timeout_ms)


def test_live_webcam_stream_answers_with_citations(pages) -> None:
    page = pages.open()
    page.get_by_text("Click to Access Webcam").click()
    page.wait_for_function(
        "() => { const v = document.querySelector('[data-testid=webcam-video]');"
        " return v && v.readyState >= 2 && !v.paused && v.videoWidth > 0; }", timeout=20_000)
    page.locator("button.capture-button").click()
    streaming_since = time.monotonic()

    # Frames reach the agent and at least one event closes (the clip cuts scenes every 4 s).
    page.wait_for_function(
        "() => { const v = k => Number(document.querySelector("
        "`#sv-live-stats [data-key=\"${k}\"]`)?.dataset.value || 0);"
        " return v('frames_seen') > 0 && v('events') >= 1; }", timeout=60_000)
    frames_before = stat(page, "frames_seen")

    answer = ask(page, "live", "What did the camera show?")
    answered_at = time.monotonic()
    assert answer and not answer.startswith("…"), "the answer bubble is empty"
    assert "Cited: [" in answer, f"the answer cites nothing: {answer!r}"
    # The citations panel is labelled and shows exactly the answer's citations.
    page.wait_for_selector("#sv-live-citations .sv-cite", timeout=10_000)
    assert "Cited in the answer" in page.locator("#sv-live-citations").inner_text()
    cites = page.locator("#sv-live-citations .sv-cite")
    span_s = answered_at - streaming_since + 1.0  # push times count from the first frame received
    for i in range(cites.count()):
        t0 = float(cites.nth(i).get_attribute("data-t-start"))
        t1 = float(cites.nth(i).get_attribute("data-t-end"))
        assert 0.0 <= t0 <= t1 <= span_s, f"citation {t0}–{t1} s is outside the stream's 0–{span_s:.1f} s"
    shown = re.findall(r"\[\d\d:\d\d:\d\d–\d\d:\d\d:\d\d\]", answer)
    panel = [cites.nth(i).inner_text().strip() for i in range(cites.count())]
    assert shown == panel, f"the chat cites {shown}, the panel shows {panel}"

    # The camera kept streaming while the answer was generated and after it.
    wait_stat_above(page, "frames_seen", frames_before)

    # A second browser session sees nothing of the first one's memory, and gets no invented answer.
    other = pages.open()
    other.wait_for_timeout(2500)  # two stats refreshes
    assert stat(other, "frames_seen") == 0 and stat(other, "events") == 0
    assert other.locator("#sv-live-captions textarea").input_value() == ""
    reply = ask(other, "live", "What did the camera show?")
    assert "Nothing has been seen yet" in reply and "Cited" not in reply, reply
    assert other.locator("#sv-live-citations .sv-cite").count() == 0
    other.get_by_role("tab", name="Video").click()
    other.locator("#sv-video-question textarea").fill("What is in the video?")
    other.locator("#sv-video-ask").click()
    other.wait_for_selector("#sv-video-notice .sv-error", timeout=10_000)
    assert "no video yet" in other.locator("#sv-video-notice").inner_text()
    # Closing that page frees its session (gradio's unload event).
    pages.contexts[-1].close()
    deadline = time.monotonic() + 20
    while "ended (the page was closed)" not in pages.server.log() and time.monotonic() < deadline:
        time.sleep(0.25)
    assert "ended (the page was closed)" in pages.server.log()

    # Stop holds while the webcam keeps streaming, until Start.
    page.locator("#sv-live-stop").click()
    page.wait_for_function("() => (document.querySelector('#sv-live-stats [data-key=\"status\"]')?.dataset.value"
                           " || '').startsWith('stopped')", timeout=10_000)
    stopped_at = stat(page, "frames_seen")
    ignored = stat(page, "frames_ignored")
    wait_stat_above(page, "frames_ignored", ignored + 4)  # frames still arrive, and are ignored
    assert stat(page, "frames_seen") == stopped_at
    page.locator("#sv-live-start").click()
    wait_stat_above(page, "frames_seen", stopped_at)
    page.wait_for_timeout(1500)  # one more stats refresh so the screenshot shows current figures
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "browser-live.png"), full_page=True)


def test_video_upload_indexes_answers_and_citations_seek_the_player(page, make_video, tmp_path: Path) -> None:
    path, manifest = make_video("browser_clip.mp4", duration=8.0, fps=10, cuts=(2.0, 4.0, 6.0))
    page.get_by_role("tab", name="Video").click()
    # A file that is not a video is refused with a message naming it.
    notes = tmp_path / "notes.txt"
    notes.write_text("not a video")
    page.locator("#sv-upload input[type=file]").set_input_files(str(notes))  # gradio's own upload check
    page.wait_for_function("() => [...document.querySelectorAll('.toast-body')]"
                           ".some(t => t.innerText.includes('notes.txt') && /file type/i.test(t.innerText))",
                           timeout=10_000)
    page.locator(".toast-close").first.click()
    page.locator("#sv-path textarea, #sv-path input").first.fill(str(notes))  # the app's own check, by path
    page.locator("#sv-index").click()
    page.wait_for_function("() => { const t = document.querySelector('#sv-video-notice')?.innerText || '';"
                           " return t.includes('notes.txt') && /file type/i.test(t); }", timeout=10_000)
    page.locator("#sv-path textarea, #sv-path input").first.fill("")

    page.locator("#sv-upload input[type=file]").set_input_files(str(path))
    page.wait_for_function("() => document.querySelector('#sv-upload')?.innerText.includes('browser_clip')",
                           timeout=20_000)
    page.locator("#sv-index").click()
    page.wait_for_function("() => document.querySelector('#sv-progress')?.innerText.includes('done')",
                           timeout=60_000)
    assert page.locator("#sv-timeline img").count() >= 1, "the memory timeline shows no events"
    assert page.locator("#sv-video-notice .sv-error").count() == 0, "the earlier error is still shown"

    page.locator("#sv-video-question textarea").fill("What is shown in the video?")
    page.locator("#sv-video-ask").click()
    page.wait_for_function(
        "() => [...document.querySelectorAll('#sv-video-chat .bot-row')].some(e => e.innerText.includes('Cited:'))",
        timeout=30_000)
    answer = page.locator("#sv-video-chat .bot-row").last.inner_text()
    assert "Cited: [" in answer, f"the answer cites nothing: {answer!r}"
    # The citations panel arrives in the same update as the chat; give its template a moment to render.
    page.wait_for_selector("#sv-video-citations button.sv-cite", timeout=10_000)
    buttons = page.locator("#sv-video-citations button.sv-cite")
    seeks = [float(buttons.nth(i).get_attribute("data-seek")) for i in range(buttons.count())]
    assert all(0.0 <= s <= manifest["duration"] for s in seeks), seeks

    # Clicking a cited moment moves the player there.
    page.wait_for_function("() => (document.querySelector('#sv-video video')?.readyState || 0) >= 1",
                           timeout=20_000)
    target = max(seeks)
    buttons.nth(seeks.index(target)).click()
    page.wait_for_function(
        f"() => {{ const v = document.querySelector('#sv-video video');"
        f" return v && v.currentTime >= {target} - 0.05 && v.currentTime <= {target} + 2; }}", timeout=10_000)
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "browser-video.png"), full_page=True)
