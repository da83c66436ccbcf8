"""Frame sources: every kind that runs here, every error the issue lists, and the backends'
agreement on frames, timestamps and pixels."""

from __future__ import annotations

import threading
import time
import warnings
import weakref

import cv2
import numpy as np
import pytest
from media import SHARED_MEDIA, ScriptedHTTPServer, free_port
from streamvid_bench import samples as make_sample_video

import streamvid
from streamvid.errors import ConfigError, SourceError
from streamvid.sources import PushSource, TruncatedVideoWarning
from streamvid.sources.decoders import backend_available

BACKENDS = [b for b in ("decord", "pyav", "opencv") if backend_available(b)]
SMALL = dict(width=160, height=120)
VTEST = SHARED_MEDIA / "vtest.avi"


def read_all(spec, **kwargs):
    with streamvid.open_source(spec, **kwargs) as src:
        return src, list(src)


def times(frames) -> np.ndarray:
    return np.array([f.t for f in frames])


def expected_picks(frame_times, fps: float) -> list[int]:
    """Independent statement of fps= resampling: for each tick k/fps, the first frame at or after it."""
    picks, ft = [], np.asarray(frame_times)
    for k in range(int(ft[-1] * fps) + 2):
        later = np.nonzero(ft >= k / fps - 1e-6)[0]
        if later.size and (not picks or later[0] != picks[-1]):
            picks.append(int(later[0]))
    return picks


def scene_colour_at(manifest, t):
    return next(s["colour"] for s in manifest["scenes"] if s["t_start"] <= t < s["t_end"])


def check_frames(frames, manifest, shape=None):
    assert [f.index for f in frames] == list(range(manifest["frame_count"]))
    np.testing.assert_allclose(times(frames), manifest["frame_times"], atol=1.5e-3)
    h, w = shape or (manifest["height"], manifest["width"])
    for f in frames:
        assert f.rgb.shape == (h, w, 3) and f.rgb.dtype == np.uint8 and f.rgb.flags.c_contiguous


# ---------------------------------------------------------------- files: formats and backends


@pytest.mark.parametrize("suffix", [".mp4", ".avi", ".mkv", ".webm"])
@pytest.mark.parametrize("backend", BACKENDS)
def test_each_container_decodes_every_frame_at_its_pts(make_video, suffix, backend):
    path, manifest = make_video(f"clip{suffix}", duration=2.0, fps=15, cuts=[1.0], **SMALL)
    src, frames = read_all(path, backend=backend)
    assert src.backend == backend and not src.is_live and src.dropped == 0
    assert src.native_fps == pytest.approx(15)
    assert src.duration == pytest.approx(2.0, abs=0.07)
    check_frames(frames, manifest)
    # The picture at each time is the scene the manifest puts there (the cut is at 1.0 s).
    for f in (frames[0], frames[-1]):
        centre = f.rgb[5:15, 5:15].reshape(-1, 3).mean(0)
        np.testing.assert_allclose(centre, scene_colour_at(manifest, f.t), atol=12)


def test_every_backend_gives_the_container_times_exactly(make_video):
    # 25 fps over 60 s: most times (e.g. 35.52) have no exact float32 form, which decord hands over.
    path, _ = make_video("exact_times.mp4", duration=60.0, fps=25, **SMALL)
    results = {b: times(read_all(path, fps=2, backend=b)[1]) for b in BACKENDS}
    for backend, ts in results.items():
        np.testing.assert_array_equal(ts, results["pyav"], err_msg=backend)
    assert 35.52 in results["pyav"].tolist()


def test_default_backend_is_decord_when_importable(make_video):
    path, _ = make_video("clip.mp4", duration=2.0, fps=15, cuts=[1.0], **SMALL)
    with streamvid.open_source(path) as src:
        assert src.backend == ("decord" if backend_available("decord") else "pyav")


def test_backends_agree_on_frames_times_and_pixels(make_video):
    path, manifest = make_video("agree.mp4", duration=3.0, fps=25, cuts=[1.0, 2.0], needles=[1.5],
                                texts=[make_sample_video.Text(0.5, 2.5, "HELLO")], **SMALL)
    results = {b: read_all(path, backend=b)[1] for b in BACKENDS}
    reference = results[BACKENDS[0]]
    for backend, frames in results.items():
        assert abs(len(frames) - len(reference)) <= 1, backend
        n = min(len(frames), len(reference))
        assert np.all(np.abs(times(frames[:n]) - times(reference[:n])) <= 1 / 25 + 1e-6), backend
        diffs = [np.abs(a.rgb.astype(int) - b.rgb.astype(int)).mean()
                 for a, b in zip(frames[:n], reference[:n], strict=True)]
        assert max(diffs) < 6, (backend, max(diffs))
        needle = manifest["needles"][0]["frame_index"]
        magenta = [i for i, f in enumerate(frames)
                   if np.abs(f.rgb.reshape(-1, 3).mean(0) - (127, 127, 127)).max() < 40
                   and (f.rgb[..., 1] > 200).mean() > 0.3]
        assert magenta == [needle], backend


@pytest.mark.parametrize("suffix", [".mp4", ".mkv"])
@pytest.mark.parametrize("backend", BACKENDS)
def test_variable_frame_rate_times_come_from_pts(make_video, suffix, backend):
    path, manifest = make_video(f"vfr{suffix}", duration=3.0, fps=30, vfr=True, cuts=[1.5], **SMALL)
    gaps = np.unique(np.round(np.diff(manifest["frame_times"]), 3))
    assert len(gaps) >= 3  # really variable
    src, frames = read_all(path, backend=backend)
    check_frames(frames, manifest)
    _, sampled = read_all(path, backend=backend, fps=4)
    assert [f.index for f in sampled] == expected_picks(manifest["frame_times"], 4)


@pytest.mark.parametrize("suffix", [".mp4", ".mkv", ".webm"])
@pytest.mark.parametrize("backend", BACKENDS)
def test_nonzero_start_time_counts_from_first_frame(make_video, suffix, backend):
    path, manifest = make_video(f"late{suffix}", duration=1.0, fps=20, start_time=7.25, **SMALL)
    src, frames = read_all(path, backend=backend)
    assert frames[0].t == 0.0
    check_frames(frames, manifest)
    assert src.duration == pytest.approx(1.0, abs=0.06)


@pytest.mark.parametrize("backend", BACKENDS)
def test_fps_resamples_on_the_source_clock(make_video, backend):
    path, manifest = make_video("thirty.mp4", duration=4.0, fps=30, **SMALL)
    _, frames = read_all(path, backend=backend, fps=2)
    np.testing.assert_allclose(times(frames), np.arange(8) * 0.5, atol=1e-3)
    assert [f.index for f in frames] == list(range(0, 120, 15))
    _, frames = read_all(path, backend=backend, fps=7)
    assert [f.index for f in frames] == expected_picks(manifest["frame_times"], 7)
    # Asking for more than the source has gives every frame once, never duplicates.
    _, frames = read_all(path, backend=backend, fps=100)
    assert len(frames) == manifest["frame_count"]


@pytest.mark.parametrize("backend", BACKENDS)
def test_frames_fps_skips_are_never_converted_to_rgb(make_video, backend, monkeypatch):
    from streamvid.sources import decoders

    path, _ = make_video("thirty.mp4", duration=4.0, fps=30, **SMALL)
    cls = {"decord": decoders.DecordDecoder, "pyav": decoders.PyAVDecoder, "opencv": decoders.OpenCVDecoder}
    calls = []
    original = cls[backend]._rgb
    monkeypatch.setattr(cls[backend], "_rgb", lambda self, *a: calls.append(1) or original(self, *a))
    _, frames = read_all(path, backend=backend, fps=2)
    assert len(frames) == 8 and len(calls) == 8


@pytest.mark.parametrize("backend", BACKENDS)
def test_size_resizes_the_short_side_keeping_aspect(make_video, backend):
    landscape, _ = make_video("thirty.mp4", duration=4.0, fps=30, **SMALL)
    portrait, _ = make_video("portrait.mkv", duration=0.5, fps=10, width=120, height=160)
    src, frames = read_all(landscape, backend=backend, size=64, fps=1)
    assert {f.rgb.shape for f in frames} == {(64, 85, 3)} and (src.height, src.width) == (64, 85)
    _, frames = read_all(portrait, backend=backend, size=64)
    assert {f.rgb.shape for f in frames} == {(85, 64, 3)}
    assert all(f.rgb.flags.c_contiguous for f in frames)


@pytest.mark.parametrize("backend", BACKENDS)
def test_reading_holds_a_constant_number_of_frames(make_video, backend):
    path, _ = make_video("thirty.mp4", duration=4.0, fps=30, **SMALL)
    alive, peak = [], 0
    with streamvid.open_source(path, backend=backend) as src:
        for frame in src:
            alive.append(weakref.ref(frame.rgb))
            del frame  # nothing else should keep the pixels alive (plain refcounting, no gc needed)
            peak = max(peak, sum(r() is not None for r in alive))
    assert len(alive) == 120 and peak <= 2


def test_a_file_source_can_be_read_twice_and_closed_midway(make_video):
    path, _ = make_video("thirty.mp4", duration=4.0, fps=30, **SMALL)
    with streamvid.open_source(path, fps=5) as src:
        first, second = list(src), list(src)
        assert times(first).tolist() == times(second).tolist()
        seen = 0
        for _ in src:
            seen += 1
            if seen == 3:
                src.close()
        assert seen == 3
    with pytest.raises(SourceError, match="closed"):
        list(src)


@pytest.mark.slow
@pytest.mark.skipif(not VTEST.exists(), reason=f"shared sample {VTEST} is not on this machine")
def test_vtest_avi_all_backends_agree():
    # The AVI header declares 682 frames at 50 fps; the H.264 stream in it holds 341 pictures at
    # 25 fps (PTS step 2), with B-frames whose AVI timestamps are out of order.
    results = {}
    for backend in BACKENDS:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # decord: "no usable timestamps"
            src, frames = read_all(VTEST, backend=backend)
        assert frames[0].rgb.shape == (720, 1280, 3)
        assert abs(len(frames) - 341) <= 1, backend
        ts = times(frames)
        assert np.all(np.diff(ts) >= 0) and ts[-1] == pytest.approx(13.6, abs=0.1), backend
        results[backend] = ts
    for ts in results.values():
        n = min(len(ts), len(results["pyav"]))
        assert np.abs(ts[:n] - results["pyav"][:n]).max() <= 1.5 * 0.04  # ±1 frame
    with streamvid.open_source(VTEST) as src:
        assert src.backend == "pyav"  # decord has no timestamps for this file, so auto skips it


# ---------------------------------------------------------------- errors


def test_missing_file(tmp_path):
    with pytest.raises(SourceError, match="file not found") as info:
        streamvid.open_source(tmp_path / "nope.mp4")
    assert info.value.source.endswith("nope.mp4") and isinstance(info.value, streamvid.StreamvidError)


def test_text_file_named_mp4(tmp_path):
    path = tmp_path / "notes.mp4"
    path.write_text("this is not a video\n" * 50)
    with pytest.raises(SourceError, match="not a video") as info:
        streamvid.open_source(path)
    assert "notes.mp4" in str(info.value)


@pytest.mark.parametrize("suffix", [".mp4", ".mkv"])
def test_zero_length_video(tmp_path, suffix):
    empty = tmp_path / f"empty{suffix}"
    empty.write_bytes(b"")
    with pytest.raises(SourceError, match="zero-length"):
        streamvid.open_source(empty)
    headers_only = tmp_path / f"no_frames{suffix}"
    make_sample_video.write_empty_video(headers_only)
    with pytest.raises(SourceError, match="zero-length"):
        streamvid.open_source(headers_only)


def _truncated(make_video, tmp_path, name, **options):
    path, manifest = make_video(name, duration=4.0, fps=25, **SMALL, **options)
    cut = tmp_path / f"cut_{name}"
    data = path.read_bytes()
    cut.write_bytes(data[: len(data) // 2])
    return cut, manifest


@pytest.mark.parametrize("backend", [None, *BACKENDS])
def test_truncated_file_gives_frames_then_a_warning(make_video, tmp_path, backend):
    for name, options in [("trunc.mkv", {}), ("trunc.mp4", {"faststart": True})]:
        cut, manifest = _truncated(make_video, tmp_path, name, **options)
        if backend == "decord" and name.endswith(".mp4"):
            # decord indexes every packet when it opens, so it refuses a cut MP4 outright.
            with pytest.raises(SourceError, match="decord"):
                streamvid.open_source(cut, backend="decord")
            continue
        with pytest.warns(TruncatedVideoWarning, match=f"cut_{name}.*truncated"):
            src, frames = read_all(cut, backend=backend)
        assert 10 < len(frames) < manifest["frame_count"]
        # Every delivered frame sits at one of the encoded times (B-frames whose references were
        # cut off are missing, so the last frame can jump ahead).
        gaps = np.abs(times(frames)[:, None] - np.array(manifest["frame_times"])[None]).min(1)
        assert gaps.max() < 1.5e-3 and np.all(np.diff(times(frames)) > 0)


def test_truncated_mp4_without_index_is_an_error(make_video, tmp_path):
    cut, _ = _truncated(make_video, tmp_path, "noindex.mp4")
    with pytest.raises(SourceError, match="truncated"):
        streamvid.open_source(cut)


def test_bad_arguments(make_video):
    path, _ = make_video("clip.mp4", duration=2.0, fps=15, cuts=[1.0], **SMALL)
    with pytest.raises(ConfigError, match="fps"):
        streamvid.open_source(path, fps=0)
    with pytest.raises(ConfigError, match="size"):
        streamvid.open_source(path, size=0)
    with pytest.raises(SourceError, match="unknown backend"):
        streamvid.open_source(path, backend="gstreamer")
    with pytest.raises(SourceError, match="scheme"):
        streamvid.open_source("ftp://example.com/a.mp4")
    with pytest.raises(SourceError, match="not a source"):
        streamvid.open_source(3.5)


@pytest.mark.parametrize("spec", [63, "camera:63", "/dev/video63"])
def test_unavailable_camera(spec):
    start = time.monotonic()
    with pytest.raises(SourceError, match="camera not available") as info:
        streamvid.open_source(spec)
    assert "63" in str(info.value)
    assert time.monotonic() - start < 10


# ---------------------------------------------------------------- image directories


def _write_images(folder, n):
    folder.mkdir()
    for i in range(n):  # unpadded names: natural order must put img2 before img10
        cv2.imwrite(str(folder / f"img{i}.png"), np.full((30, 40, 3), (i * 20, 0, 255 - i * 20), np.uint8))
    (folder / "notes.txt").write_text("not an image")


def test_image_directory_plays_in_natural_order(tmp_path):
    _write_images(tmp_path / "imgs", 12)
    src, frames = read_all(tmp_path / "imgs", image_fps=4)
    assert src.backend == "opencv" and src.duration == 3.0
    assert [f.index for f in frames] == list(range(12))
    np.testing.assert_allclose(times(frames), np.arange(12) / 4)
    # BGR (i*20, 0, 255-i*20) on disk → red channel 255 - i*20.
    assert [int(f.rgb[0, 0, 0]) for f in frames] == [255 - i * 20 for i in range(12)]
    _, frames = read_all(tmp_path / "imgs", image_fps=4, fps=2, size=15)
    assert [f.index for f in frames] == list(range(0, 12, 2))
    assert frames[0].rgb.shape == (15, 20, 3)
    # Without image_fps the images play at fps.
    _, frames = read_all(tmp_path / "imgs", fps=2)
    np.testing.assert_allclose(times(frames), np.arange(12) / 2)


def test_image_directory_errors(tmp_path):
    (tmp_path / "none").mkdir()
    (tmp_path / "none" / "readme.txt").write_text("x")
    with pytest.raises(SourceError, match="no images"):
        streamvid.open_source(tmp_path / "none")
    _write_images(tmp_path / "bad", 3)
    (tmp_path / "bad" / "img1.png").write_bytes(b"garbage")
    with pytest.raises(SourceError, match="img1.png"):
        list(streamvid.open_source(tmp_path / "bad"))


# ---------------------------------------------------------------- push


def _img(value: int = 0) -> np.ndarray:
    return np.full((24, 32, 3), value % 256, np.uint8)


def test_push_source_delivers_with_arrival_or_given_times():
    src = PushSource(max_pending=8)
    assert src.is_live and src.backend == "push"
    buffer = _img(7)
    src.push(buffer)
    buffer[:] = 99  # the source copied the frame
    time.sleep(0.02)
    src.push(_img(1))
    src.push(_img(2), t=5.0)
    src.close()
    frames = list(src)
    assert [f.index for f in frames] == [0, 1, 2]
    assert frames[0].t == 0.0 and 0.015 < frames[1].t < 5.0 and frames[2].t == 5.0
    assert int(frames[0].rgb[0, 0, 0]) == 7 and src.dropped == 0


def test_push_source_errors():
    src = PushSource()
    with pytest.raises(SourceError, match="uint8"):
        src.push(np.zeros((4, 4, 3), np.float32))
    with pytest.raises(SourceError, match="H×W×3"):
        src.push(np.zeros((4, 4), np.uint8))
    src.push(_img(), t=2.0)
    with pytest.raises(SourceError, match="earlier"):
        src.push(_img(), t=1.0)
    src.close()
    with pytest.raises(SourceError, match="closed"):
        src.push(_img())
    with pytest.raises(SourceError, match="max_pending"):
        PushSource(max_pending=0)


def test_push_source_newest_frame_wins_for_a_slow_consumer():
    src = PushSource(max_pending=1)
    received = []

    def consume():
        for frame in src:
            received.append(frame)
            time.sleep(0.01)

    consumer = threading.Thread(target=consume)
    consumer.start()
    for i in range(200):
        src.push(_img(i), t=i / 100)
        time.sleep(0.0005)
    src.close()
    consumer.join(10)
    assert not consumer.is_alive()
    assert src.dropped > 0 and len(received) + src.dropped == 200
    assert received[-1].index == 199  # the newest frame is never the one dropped
    assert all(a.index < b.index and a.t <= b.t for a, b in zip(received, received[1:], strict=False))


def test_push_source_is_thread_safe_with_many_producers():
    src = PushSource(max_pending=4, fps=None)
    received = []
    consumer = threading.Thread(target=lambda: received.extend(src))
    consumer.start()

    def produce():
        for i in range(150):
            src.push(_img(i))

    producers = [threading.Thread(target=produce) for _ in range(4)]
    for p in producers:
        p.start()
    for p in producers:
        p.join()
    src.close()
    consumer.join(10)
    assert len(received) + src.dropped == 600
    assert all(a.index < b.index and a.t <= b.t for a, b in zip(received, received[1:], strict=False))


def test_push_source_read_times_out_and_fps_skips():
    src = PushSource(max_pending=10, fps=2, size=12)
    start = time.monotonic()
    assert src.read(timeout=0.05) is None and time.monotonic() - start < 2
    kept = [src.push(_img(i), t=i * 0.1) for i in range(10)]
    assert kept == [True, False, False, False, False, True, False, False, False, False]
    src.close()
    frames = list(src)
    assert [f.t for f in frames] == [0.0, 0.5] and frames[0].rgb.shape == (12, 16, 3)
    assert src.finished


# ---------------------------------------------------------------- network


@pytest.fixture(scope="module")
def served_mkv(make_video):
    return make_video("served.mkv", duration=4.0, fps=25, cuts=[2.0], **SMALL)


def test_http_file_stream_reads_every_frame(served_mkv):
    path, manifest = served_mkv
    with ScriptedHTTPServer(path.read_bytes()) as server:
        src, frames = read_all(server.url, timeout=5)
    assert not src.is_live and src.backend == "pyav" and src.duration == pytest.approx(4.0, abs=0.05)
    check_frames(frames, manifest)


def test_http_live_stream_newest_frame_wins_then_closed(make_video):
    path, manifest = make_video("live.ts", duration=4.0, fps=25, cuts=[2.0], **SMALL)
    received = []
    start = time.monotonic()
    with ScriptedHTTPServer(path.read_bytes(), "live", live_seconds=2.0) as server:
        src = streamvid.open_source(server.url, timeout=5)
        assert src.is_live
        with pytest.raises(SourceError, match="closed"):
            for frame in src:
                received.append(frame)
                time.sleep(0.1)  # a consumer slower than the stream
        src.close()
    assert time.monotonic() - start < 20
    assert src.dropped > 0 and len(received) < manifest["frame_count"]
    assert all(a.index < b.index and a.t <= b.t for a, b in zip(received, received[1:], strict=False))


def test_network_connect_failure():
    start = time.monotonic()
    with pytest.raises(SourceError, match="cannot connect"):
        streamvid.open_source(f"http://127.0.0.1:{free_port()}/video.mkv", timeout=2)
    with pytest.raises(SourceError, match="cannot connect"):
        streamvid.open_source(f"rtsp://127.0.0.1:{free_port()}/stream", timeout=2)
    assert time.monotonic() - start < 10


def test_network_server_that_never_answers_times_out(served_mkv):
    path, _ = served_mkv
    start = time.monotonic()
    with ScriptedHTTPServer(path.read_bytes(), "stall_head") as server, \
            pytest.raises(SourceError, match="timed out"):
        streamvid.open_source(server.url, timeout=1)
    assert time.monotonic() - start < 10


@pytest.mark.parametrize("mode, cause", [("stall_body", "timed out"), ("close_body", "closed")])
def test_network_stream_that_stops_midway(served_mkv, mode, cause):
    path, manifest = served_mkv
    received = []
    start = time.monotonic()
    with ScriptedHTTPServer(path.read_bytes(), mode) as server:
        with pytest.raises(SourceError, match=cause) as info:
            for frame in streamvid.open_source(server.url, timeout=1):
                received.append(frame)
        assert server.url in str(info.value)
    assert time.monotonic() - start < 10
    assert 0 < len(received) < manifest["frame_count"]
