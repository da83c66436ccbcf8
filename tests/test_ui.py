"""The browser app's logic without a browser: formatting, upload checks, and the callbacks driven
directly against a real tiny-random agent (live pushes from threads, indexing a file, cited answers)."""

from __future__ import annotations

import base64
import re
import threading
import time
from pathlib import Path

import cv2
import gradio as gr
import numpy as np
import pytest
from streamvid_ui.render import (
    RateMeter,
    UploadError,
    check_video_file,
    citations_text,
    format_captions,
    format_citations,
    format_notice,
    format_progress,
    format_stats,
    player_can_show,
    thumbnail_data_uri,
    timeline_items,
)

from streamvid.types import Caption, Citation, Event

pytestmark = pytest.mark.timeout(120)

SPAN = re.compile(r"\[(\d\d):(\d\d):(\d\d)–(\d\d):(\d\d):(\d\d)\]")


def span_seconds(text: str) -> list[tuple[int, int]]:
    return [(int(a) * 3600 + int(b) * 60 + int(c), int(d) * 3600 + int(e) * 60 + int(f))
            for a, b, c, d, e, f in SPAN.findall(text)]


def stat_value(html: str, key: str) -> str:
    m = re.search(rf'data-key="{key}" data-value="([^"]*)"', html)
    assert m, f"{key} missing from the stats panel"
    return m.group(1)


def make_event(i: int, t0: float, t1: float, caption: str = "", thumb: bool = True) -> Event:
    rgb = np.full((48, 64, 3), 40 * i % 255, np.uint8) if thumb else None
    return Event(id=i, t_start=t0, t_end=t1, tokens=None, token_times=np.zeros(0), token_positions=np.zeros(0),
                 grid=(1, 1), key=np.zeros(4, np.float32), frame_keys=np.zeros((0, 4), np.float32),
                 frame_times=np.zeros(0), caption=caption, thumbnail=rgb)


# ---------------------------------------------------------------- pure formatting
def test_stats_panel_shows_every_figure_with_raw_values() -> None:
    html = format_stats({"status": "streaming <ok>", "ingest_fps": 1.96, "frames_seen": 1234, "events": 3,
                         "dropped_frames": 2, "tokens_in_ram": 4096, "bytes_in_ram": 3 * 1024**2,
                         "last_ttft_ms": 87.4})
    assert stat_value(html, "frames_seen") == "1234"
    assert stat_value(html, "events") == "3"
    assert stat_value(html, "last_ttft_ms") == "87.4"
    assert "1,234" in html and "3.0 MB" in html and "87 ms" in html and "2.0" in html
    assert "<ok>" not in html and "&lt;ok&gt;" in html  # the status text is escaped
    # Figures not known yet show a dash rather than a made-up zero.
    empty = format_stats({"status": "idle"})
    assert stat_value(empty, "last_ttft_ms") == "" and "–" in empty


def test_rate_meter_measures_over_its_window_and_restarts_with_the_counter() -> None:
    meter = RateMeter(window_s=4.0)
    assert meter.rate() == 0.0
    for t in range(11):
        meter.add(float(t), 2 * t)  # 2 per second
    assert meter.rate() == pytest.approx(2.0)
    meter.add(11.0, 22 + 10)  # a burst: only the window's samples count
    assert 2.0 < meter.rate() < 5.0
    meter.add(12.0, 0)  # a new agent's counter: no negative rates
    assert meter.rate() == 0.0
    meter.add(13.0, 5)
    assert meter.rate() == pytest.approx(5.0)
    with pytest.raises(ValueError):
        RateMeter(window_s=0)


def test_upload_check_refuses_wrong_type_large_missing_and_empty_files(tmp_path: Path) -> None:
    video = tmp_path / "clip.mp4"
    video.write_bytes(b"x" * 2048)
    assert check_video_file(video, max_bytes=4096) == video.resolve()

    text = tmp_path / "notes.txt"
    text.write_text("hello")
    with pytest.raises(UploadError, match=r"notes\.txt: not a video file type \(\.txt\)"):
        check_video_file(text)
    with pytest.raises(UploadError, match=r"clip\.mp4 is 2\.0 KB; the upload limit is 1\.0 KB"):
        check_video_file(video, max_bytes=1024)
    with pytest.raises(UploadError, match="no such file"):
        check_video_file(tmp_path / "gone.mp4")
    (tmp_path / "empty.webm").write_bytes(b"")
    with pytest.raises(UploadError, match="empty"):
        check_video_file(tmp_path / "empty.webm")
    with pytest.raises(UploadError, match="no video given"):
        check_video_file("  ")
    # The message names the user's file, not the server's temporary copy; its extension decides.
    with pytest.raises(UploadError, match=r"^holiday\.exe: not a video"):
        check_video_file(video, display_name="holiday.exe")
    # No size limit for a file already on this machine.
    assert check_video_file(video, max_bytes=None) == video.resolve()
    assert issubclass(UploadError, Exception) and "StreamvidError" in [c.__name__ for c in UploadError.__mro__]


def test_player_shows_only_playable_files_gradio_may_serve(tmp_path: Path) -> None:
    mp4 = tmp_path / "a.mp4"
    assert player_can_show(mp4)  # pytest's tmp_path is under the temp dir gradio serves
    assert not player_can_show(tmp_path / "a.avi")
    outside = Path("/srv/media/film.mp4")
    assert not player_can_show(outside)
    assert player_can_show(outside, allowed_dirs=["/srv/media"])


def test_captions_feed_lines_are_time_spans_with_text() -> None:
    caps = [Caption(0.0, 4.5, "a red ball", 0), Caption(4.5, 61.0, "", 1), Caption(61.0, 3725.0, "door opens", 2)]
    text = format_captions(caps)
    assert text.splitlines() == ["[00:00:00–00:00:04] a red ball", "[00:00:04–00:01:01] (no caption)",
                                 "[00:01:01–01:02:05] door opens"]
    assert format_captions(caps, limit=1) == "[00:01:01–01:02:05] door opens"
    assert format_captions([]) == ""


def test_citations_carry_exact_times_thumbnails_and_seek_targets() -> None:
    thumb = np.zeros((120, 320, 3), np.uint8)
    thumb[:, :160] = (255, 0, 0)
    cites = [Citation(3, 12.25, 15.5, thumb), Citation(7, 61.0, 64.0, None)]
    html = format_citations(cites, seekable=True)
    assert html.count('class="sv-cite"') == 2
    assert 'data-t-start="12.250" data-t-end="15.500"' in html and 'data-seek="12.250"' in html
    assert 'data-seek="61.000"' in html and "[00:01:01–00:01:04]" in html
    live = format_citations(cites, seekable=False)
    assert "data-seek" not in live and "<button" not in live and 'data-t-start="61.000"' in live
    assert "Cited in the answer" in html and "Cited in the answer" in live  # the panel is labelled
    assert "No cited moments yet" in format_citations(None, seekable=True)  # no answer yet
    assert "cites nothing" in format_citations([], seekable=True)  # an answer that cites nothing
    assert citations_text(cites) == "Cited: [00:00:12–00:00:15], [00:01:01–00:01:04]"
    assert "nothing" in citations_text([])

    # The embedded thumbnail decodes back to the same picture, shrunk to fit 160 px.
    uri = thumbnail_data_uri(thumb)
    assert uri is not None and uri.startswith("data:image/jpeg;base64,")
    img = cv2.imdecode(np.frombuffer(base64.b64decode(uri.split(",", 1)[1]), np.uint8), cv2.IMREAD_COLOR)
    assert img.shape == (60, 160, 3)
    assert img[30, 20, 2] > 200 and img[30, 20, 0] < 60  # left half red (BGR order after decoding)
    assert img[30, 140].max() < 60
    assert thumbnail_data_uri(None) is None
    with pytest.raises(ValueError):
        thumbnail_data_uri(np.zeros((4, 4), np.uint8))


def test_timeline_is_in_time_order_and_skips_events_without_thumbnails() -> None:
    events = [make_event(2, 10.0, 14.0, "later"), make_event(1, 0.0, 4.0, "first"),
              make_event(3, 20.0, 22.0, thumb=False)]
    items = timeline_items(events)
    assert [label for _, label in items] == ["[00:00:00–00:00:04] first", "[00:00:10–00:00:14] later"]
    assert all(img.dtype == np.uint8 and img.ndim == 3 for img, _ in items)


def test_progress_line_reports_fraction_rate_events_and_eta() -> None:
    line = format_progress("movie.mp4", 50, 200, 10.0, 3)
    assert "50/200 frames (25%)" in line and "10.0 frames/s" in line and "3 events" in line
    assert "ETA 00:00:15" in line
    done = format_progress("movie.mp4", 200, 200, 10.0, 9, finished=True)
    assert "200 frames" in done and "ETA" not in done and "done" in done
    assert "12 frames" in format_progress("cam", 12, None, 0.0, 0)
    cut = format_progress("movie.mp4", 120, 200, 10.0, 5, finished=True, partial=True)
    assert "partial" in cut and "done" not in cut and "120 frames" in cut


def test_notice_shows_an_error_and_clears() -> None:
    assert format_notice(None) == "" and format_notice("") == ""
    html = format_notice("bad <file>")
    assert 'class="sv-error"' in html and "bad &lt;file&gt;" in html


def test_both_launchers_share_the_cli_parser() -> None:
    """``python -m streamvid_ui`` is ``streamvid ui``: one parser, the same options and errors."""
    import subprocess
    import sys

    from streamvid.cli import build_parser

    args = build_parser().parse_args(["ui", "--device", "cpu", "--stream-every", "0.2", "--allow-dir", "/srv/v"])
    assert (args.device, args.stream_every, args.allow_dir) == ("cpu", 0.2, ["/srv/v"])
    out = subprocess.run([sys.executable, "-m", "streamvid_ui", "--help"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and "usage: streamvid ui" in out.stdout and "--stream-every" in out.stdout
    bad = subprocess.run([sys.executable, "-m", "streamvid_ui", "--set", "device=cpu"], capture_output=True,
                         text=True, timeout=60)
    assert bad.returncode == 2 and "unrecognized arguments: --set" in bad.stderr


# ---------------------------------------------------------------- callbacks on a real tiny agent
@pytest.fixture(scope="module")
def factory():
    from streamvid_ui.sessions import SharedModelFactory

    return SharedModelFactory("tiny-random", device="cpu", fps=4)


@pytest.fixture
def app(factory):
    from streamvid_ui.app import StreamvidApp

    ui = StreamvidApp(factory, max_upload_bytes=50 * 1024**2)
    yield ui
    ui.close()


def req(session: str) -> gr.Request:
    """What gradio passes a callback from the browser tab ``session``."""
    return gr.Request(session_hash=session)


A, B = req("tab-a"), req("tab-b")


def scene_frame(i: int, size: int = 96) -> np.ndarray:
    """Frames whose scene changes every 6 frames, with a moving bar so none repeats."""
    colours = [(230, 30, 30), (30, 220, 30), (30, 30, 230), (230, 230, 30)]
    img = np.empty((size, size, 3), np.uint8)
    img[:] = colours[(i // 6) % len(colours)]
    img[:, (i * 5) % size] = 255
    return img


def drain(gen):
    """The last value a callback generator yields."""
    outputs = list(gen)
    return outputs[-1] if outputs else None


def panel_spans(cites_html: str) -> list[tuple[float, float]]:
    return [(float(a), float(b)) for a, b in re.findall(r'data-t-start="([\d.]+)" data-t-end="([\d.]+)"', cites_html)]


def wait_for_event(app, request, timeout: float = 60) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        stats_html, _ = app.refresh_live(request)
        if int(stat_value(stats_html, "events") or 0) >= 1:
            return stats_html
        time.sleep(0.2)
    raise AssertionError("no event closed from a changing live stream")


def test_live_frames_from_threads_while_answering(app) -> None:
    assert app.session(A).live.stats()["status"] == "idle"
    app.on_frame(None, A)  # the stream's first call may carry no image
    assert app.session(A).live.frames_received == 0

    stop = threading.Event()
    errors: list[BaseException] = []

    def camera(offset: int) -> None:
        i = offset
        try:
            while not stop.is_set() and i < offset + 400:
                app.on_frame(scene_frame(i), A)
                i += 1
                time.sleep(0.01)
        except BaseException as exc:
            errors.append(exc)

    cams = [threading.Thread(target=camera, args=(k * 1000,)) for k in range(2)]
    t_start = time.monotonic()
    for c in cams:
        c.start()
    live = app.session(A).live
    try:
        stats_html = wait_for_event(app, A)
        assert stat_value(stats_html, "status") == "streaming"

        seen_before = live.agent().memory.stats()["frames_seen"]
        steps = list(app.ask_live("what colour was shown?", [], A))
        chat, box, cites, notice = steps[-1]
        elapsed = time.monotonic() - t_start
        assert box == "" and notice == ""
        assert [m["role"] for m in chat] == ["user", "assistant"]
        assert chat[0]["content"] == "what colour was shown?"
        assert chat[1]["content"].strip() and "Cited: [" in chat[1]["content"]
        # The panel shows exactly the answer's citations, labelled; while the answer streams it shows none.
        times = panel_spans(cites)
        assert times, "the answer cites nothing"
        assert "Cited in the answer" in cites
        assert [(int(a), int(b)) for a, b in times] == span_seconds(chat[1]["content"])
        assert all(0.0 <= a <= b <= elapsed + 0.5 for a, b in times), (times, elapsed)
        assert all(not panel_spans(step[2]) for step in steps[:-1] if isinstance(step[2], str))
        assert live.last_ttft_ms is not None and live.last_ttft_ms > 0

        # Ingestion went on during and after the answer.
        deadline = time.monotonic() + 20
        while live.agent().memory.stats()["frames_seen"] <= seen_before and time.monotonic() < deadline:
            time.sleep(0.1)
        assert live.agent().memory.stats()["frames_seen"] > seen_before
    finally:
        stop.set()
        for c in cams:
            c.join()
    assert not errors

    stats_html, captions, notice = app.stop_live(A)
    assert notice == "" and live.stats()["status"].startswith("stopped")
    for line in captions.splitlines():
        assert SPAN.match(line), line

    stats_html, captions, chat, cites, notice = app.reset_live(A)
    assert chat == [] and captions == "" and "No cited moments yet" in cites and notice == ""
    assert stat_value(stats_html, "frames_seen") == ""


def test_stop_stays_stopped_while_the_webcam_streams_until_start(app) -> None:
    live = app.session(A).live
    for i in range(12):
        app.on_frame(scene_frame(i), A)
    app.stop_live(A)
    stopped_at = live.agent().memory.stats()["frames_seen"]
    received = live.frames_received
    for i in range(12, 40):  # the webcam keeps streaming after Stop
        app.on_frame(scene_frame(i), A)
    time.sleep(0.5)
    assert live.agent().memory.stats()["frames_seen"] == stopped_at and not live.agent().is_running
    assert live.frames_received == received and live.frames_ignored == 28
    assert live.stats()["status"] == "stopped (press Start to ingest)"

    app.start_live(A)
    app.on_frame(scene_frame(40), A)
    assert live.agent().is_running and live.frames_received == received + 1
    deadline = time.monotonic() + 20
    while live.agent().memory.stats()["frames_seen"] == stopped_at and time.monotonic() < deadline:
        time.sleep(0.05)
    assert live.agent().memory.stats()["frames_seen"] == stopped_at + 1  # the same memory goes on


def test_live_question_on_an_empty_memory_says_nothing_was_seen(app) -> None:
    from streamvid_ui.app import NOTHING_SEEN

    chat, box, cites, notice = drain(app.ask_live("what is on the table?", [], A))
    assert chat[-1] == {"role": "assistant", "content": NOTHING_SEEN}
    assert box == "" and notice == "" and not panel_spans(cites)
    assert app.session(A).live.last_ttft_ms is None  # no answer was generated
    # Nor after a reset, even while frames are arriving.
    app.on_frame(scene_frame(0), A)
    app.reset_live(A)
    chat, *_ = drain(app.ask_live("and now?", chat, A))
    assert chat[-1]["content"] == NOTHING_SEEN and len(chat) == 4


def test_two_sessions_never_see_each_others_memory(app, make_video) -> None:
    path, _ = make_video("ui_iso.mp4", duration=4.0, fps=10, cuts=(2.0,))
    deadline, i = time.monotonic() + 30, 0
    while not app.session(A).live.has_memory() and time.monotonic() < deadline:
        app.on_frame(scene_frame(i), A)
        i += 1
        time.sleep(0.05)
    drain(app.index_video(str(path), "", A))
    a = app.session(A)
    assert a.live.has_memory() and a.video.events()

    stats_b, captions_b = app.refresh_live(B)
    assert stat_value(stats_b, "frames_seen") == "" and captions_b == ""
    b = app.session(B)
    assert b.live.stats()["frames_received"] == 0 and b.video.events() == []
    chat, *_ = drain(app.ask_live("what did the camera see?", [], B))
    assert "Nothing has been seen yet" in chat[-1]["content"]
    chat, box, cites, notice = drain(app.ask_video("what happens?", [], B))
    assert chat == [] and "no video yet" in notice
    # Both sessions are built around the same models (Backend.share), each with its own backend and memory.
    assert b.live.agent().backend.llm is a.live.agent().backend.llm
    assert b.live.agent().backend is not a.live.agent().backend

    # B's own memory stays B's: A still sees its own figures only.
    for i in range(100, 130):
        app.on_frame(scene_frame(i), B)
    b.live.stop()
    assert b.live.agent().memory is not a.live.agent().memory
    assert a.live.agent().memory.stats()["frames_kept"] >= 1


def test_a_closed_or_idle_session_frees_its_memories(factory, make_video) -> None:
    from streamvid_ui.sessions import SessionRegistry

    now = [0.0]
    reg = SessionRegistry(factory, idle_timeout_s=60.0, clock=lambda: now[0])
    try:
        a, b, c = reg.get("a"), reg.get("b"), reg.get("c")
        for i in range(8):
            a.live.push(scene_frame(i))
        agent_a = a.live.agent()
        assert reg.end("a") and reg.get("a", create=False) is None and not agent_a.is_running
        assert not reg.end("a")  # a second unload is harmless

        path, _ = make_video("ui_idle.mp4", duration=30.0, fps=10, cuts=(10.0, 20.0))
        job = c.video.start_indexing(path)  # indexing counts as activity
        now[0] = 30.0
        b.touch()
        now[0] = 61.0
        assert reg.sweep() == []  # b was active 31 s ago, c is indexing
        now[0] = 95.0
        assert reg.sweep() == ["b"] and reg.ids() == ["c"]
        job.cancel()
        job.done.wait(30)
        assert reg.sweep() == ["c"] and reg.ids() == []
        assert reg.get("b") is not b  # the tab coming back starts afresh
    finally:
        reg.close()


def test_app_frees_a_session_on_unload(app) -> None:
    app.on_frame(scene_frame(0), A)
    assert "tab-a" in app.sessions.ids()
    app.end_session(A)
    assert "tab-a" not in app.sessions.ids()
    stats_html, captions = app.refresh_live(A)  # a late timer tick does not bring it back
    assert "tab-a" not in app.sessions.ids() and stat_value(stats_html, "status") == "idle"


def test_video_upload_indexes_and_answers_with_seekable_citations(app, factory, make_video, tmp_path: Path) -> None:
    path, manifest = make_video("ui_clip.mp4", duration=6.0, fps=10, cuts=(2.0, 4.0))
    chat, box, cites, notice = drain(app.ask_video("anything?", [], A))
    assert "no video yet" in notice and 'class="sv-error"' in notice and box == "anything?"

    outputs = list(app.index_video(str(path), "", A))
    progress, player, timeline, chat, cites, notice = outputs[0]
    assert player == str(path.resolve()) and chat == [] and "ui_clip.mp4" in progress and notice == ""
    final = outputs[-1]
    assert "done" in final[0] and "%" not in final[0] and "partial" not in final[0]
    video = app.session(A).video
    events = video.events()
    assert events and len(final[2]) == sum(e.thumbnail is not None for e in events)
    labels = [label for _, label in final[2]]
    assert [span_seconds(label)[0] for label in labels] == sorted(span_seconds(label)[0] for label in labels)

    chat, box, cites, notice = drain(app.ask_video("what happens at the start?", [], A))
    assert chat[-1]["role"] == "assistant" and chat[-1]["content"].strip() and notice == ""
    seeks = [float(s) for s in re.findall(r'data-seek="([\d.]+)"', cites)]
    assert seeks and all(0.0 <= s <= manifest["duration"] for s in seeks)
    assert [(int(a), int(b)) for a, b in panel_spans(cites)] == span_seconds(chat[-1]["content"])

    # Refused inputs say why in the tab's notice and keep the indexed video's memory.
    bad = tmp_path / "notes.txt"
    bad.write_text("not a video")
    *_, notice = drain(app.index_video(str(bad), "", A))
    assert re.search(r"notes\.txt: not a video file type", notice)
    *_, notice = drain(app.index_video(None, "   ", A))
    assert "no video given" in notice
    small = type(app)(factory, max_upload_bytes=1024)
    try:
        *_, notice = drain(small.index_video(str(path), "", A))
        assert "the upload limit is 1.0 KB" in notice
    finally:
        small.close()
    fake = tmp_path / "broken.mp4"
    fake.write_bytes(b"\x00" * 4096)
    *_, notice = drain(app.index_video(None, str(fake), A))
    assert "broken.mp4" in notice
    assert video.events() == events
    chat2, box, _, notice = drain(app.ask_video("   ", chat, A))
    assert "empty" in notice and chat2 == chat
    # The next success clears the error.
    chat2, _, _, notice = drain(app.ask_video("and then?", chat, A))
    assert len(chat2) == 4 and notice == ""


def test_a_cancelled_index_says_it_is_partial(app, make_video) -> None:
    path, _ = make_video("ui_long.mp4", duration=60.0, fps=10, width=160, height=120, cuts=(20.0, 40.0))
    steps = app.index_video(str(path), "", A)
    next(steps)
    video = app.session(A).video
    while video.job.progress()[0] == 0 and not video.job.done.is_set():
        next(steps)
    assert "Stopping" in app.cancel_index(A)
    progress, *_, notice = list(steps)[-1]
    assert "partial" in progress and "done, ask away" not in progress and notice == ""
    assert app.cancel_index(A) == "Nothing is being indexed."
    assert 0 < app.session(A).video.agent().memory.stats()["frames_seen"] < 600


def test_live_status_reports_errors_until_the_next_good_frame_then_idles_and_streams(factory) -> None:
    from streamvid_ui.sessions import LIVE_ERROR_SHOW_S, LIVE_IDLE_S, LiveSession

    now = [100.0]
    live = LiveSession(factory, clock=lambda: now[0])
    try:
        assert live.stats()["status"] == "idle"
        with pytest.raises(Exception, match="H×W×3 uint8"):
            live.push(np.zeros((4, 4, 4), np.uint8))
        assert live.stats()["status"].startswith("error: ")
        live.push(scene_frame(1))
        assert live.stats()["status"] == "streaming"  # an accepted frame clears the error
        with pytest.raises(Exception, match="H×W×3 uint8"):
            live.push(np.zeros((4, 4, 4), np.uint8))
        now[0] += LIVE_ERROR_SHOW_S + 1
        assert live.stats()["status"] == "waiting for the camera"  # no frame for longer than LIVE_IDLE_S
        live.push(scene_frame(2))
        assert live.stats()["status"] == "streaming"
        now[0] += LIVE_IDLE_S + 0.5
        assert live.stats()["status"] == "waiting for the camera"
        live.stop()
        assert live.stats()["status"].startswith("stopped")
    finally:
        live.close()
