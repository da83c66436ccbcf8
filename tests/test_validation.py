"""Settings and inputs are checked at the boundary: one ConfigError/StreamvidError naming the cause."""

from __future__ import annotations

import logging
import math
import time

import pytest

from streamvid.config import AgentConfig, check_generation, normalise_device, preset_config
from streamvid.errors import ConfigError


@pytest.mark.parametrize("alias, name", [("bf16", "bfloat16"), ("BF16", "bfloat16"), ("fp16", "float16"),
                                         ("half", "float16"), ("fp32", "float32"), ("torch.bfloat16", "bfloat16")])
def test_dtype_aliases_normalise_to_one_name(alias, name):
    assert AgentConfig(dtype=alias).dtype == name
    assert preset_config("tiny-random", dtype=alias).dtype == name


def test_torch_dtype_objects_are_accepted():
    torch = pytest.importorskip("torch")
    assert AgentConfig(dtype=torch.float16).dtype == "float16"


@pytest.mark.parametrize("field, value, match", [
    ("fps", 0, "fps"), ("fps", -1.0, "fps"), ("fps", math.nan, "fps"), ("fps", math.inf, "fps"), ("fps", "2", "fps"),
    ("fps", None, "fps"), ("fps", True, "fps"),
    ("tau_dup", 1.5, "tau_dup"), ("tau_dup", math.nan, "tau_dup"), ("tau_temporal", -2, "tau_temporal"),
    ("caption_similar", 3.0, "caption_similar"),
    ("tokens_per_frame", 0, "tokens_per_frame"), ("short_term_frames", 0, "short_term_frames"),
    ("event_tokens", 0, "event_tokens"), ("batch_frames", 0, "batch_frames"), ("read_tokens", 0, "read_tokens"),
    ("search_k", 0, "search_k"), ("max_new_tokens", 0, "max_new_tokens"),
    ("max_new_tokens", 10**12, "max_new_tokens"), ("caption_tokens", 1.5, "caption_tokens"),
    ("frame_size", 1, "frame_size"), ("frame_size", 100_000, "frame_size"), ("archive_max_bytes", -1, "archive"),
    ("segment_window", 1, "segment_window"), ("segment_min_frames", 0, "segment_min_frames"),
    ("caption_min_gap_s", -1.0, "caption_min_gap_s"), ("device", "bogus", "device"), ("device", "cuda:x", "device"),
    ("dtype", "int8", "dtype"), ("model", "", "model"), ("seed", -1, "seed"), ("captions", "yes", "captions"),
])
def test_bad_settings_are_config_errors_naming_the_field(field, value, match):
    with pytest.raises(ConfigError, match=match):
        AgentConfig(**{field: value})
    with pytest.raises(ConfigError, match=match):  # replace() goes through the same checks
        AgentConfig().replace(**{field: value})


def test_budget_must_leave_room_for_an_event():
    with pytest.raises(ConfigError, match="max_ram_tokens"):
        AgentConfig(event_tokens=64, max_ram_tokens=100)


def test_numbers_are_normalised():
    c = AgentConfig(fps=2, tau_dup=1, frame_size=224, device="CUDA:1")
    assert isinstance(c.fps, float) and isinstance(c.tau_dup, float) and c.device == "cuda:1"


@pytest.mark.parametrize("name", ["cpu", "cuda", "cuda:0", "mps"])
def test_known_device_names(name):
    assert normalise_device(name) == name


def test_generation_settings_are_bounded():
    check_generation(max_new_tokens=4096, temperature=0.0, top_p=1.0)
    for bad in (dict(max_new_tokens=10**12), dict(max_new_tokens=0), dict(temperature=math.nan),
                dict(temperature=-1), dict(temperature=1e9), dict(top_p=0), dict(top_p=2), dict(max_new_tokens=2.5)):
        with pytest.raises(ConfigError):
            check_generation(**bad)


def test_auto_fallback_is_logged_not_printed(monkeypatch, caplog, capsys):
    import streamvid.models

    monkeypatch.setattr(streamvid.models, "model_available", lambda model, timeout=3.0: False)
    logger = logging.getLogger("streamvid")
    logger.addHandler(caplog.handler)  # the CLI may have stopped propagation to the root logger
    try:
        with caplog.at_level(logging.INFO, logger="streamvid"):
            config = preset_config("auto")
    finally:
        logger.removeHandler(caplog.handler)
    assert config.preset == "offline"
    assert any(r.name.startswith("streamvid.") and "offline preset" in r.getMessage() for r in caplog.records)
    assert "offline preset" not in capsys.readouterr().err


# ---------------------------------------------------------------- sources and push


def test_size_over_the_bound_is_refused_before_any_decoder(make_video):
    from streamvid.sources import open_source

    path, _ = make_video("bound.mp4", duration=1.0, fps=5.0, width=64, height=48)
    for backend in ("decord", "pyav", "opencv"):
        with pytest.raises(ConfigError, match="size"):
            open_source(path, size=100_000, backend=backend)


def test_frame_side_bound_is_configurable(make_video, monkeypatch):
    from streamvid.errors import SourceError
    from streamvid.sources import open_source

    path, _ = make_video("bound.mp4", duration=1.0, fps=5.0, width=64, height=48)
    monkeypatch.setenv("STREAMVID_MAX_FRAME_SIDE", "32")
    with pytest.raises(SourceError, match="over the limit of 32"):
        open_source(path)
    assert open_source(path, size=24).height == 24  # 24×32 fits
    with pytest.raises(ConfigError, match="size"):
        open_source(path, size=40)


def test_a_path_too_long_is_a_source_error(tmp_path):
    from streamvid.errors import SourceError
    from streamvid.sources import FileSource, open_source

    long_path = str(tmp_path / ("x" * 5000 + ".mp4"))
    with pytest.raises(SourceError, match="not a usable path"):
        open_source(long_path)
    with pytest.raises(SourceError, match="cannot open the file"):
        FileSource(long_path)
    with pytest.raises(SourceError):
        open_source("bad\0name.mp4")


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf, -1.0, 1e300, "1.0", True, [1.0]])
def test_bad_push_times_are_refused_and_the_stream_goes_on(bad):
    np = pytest.importorskip("numpy")
    from streamvid.errors import SourceError
    from streamvid.sources import PushSource

    src = PushSource(max_pending=8)
    rgb = np.zeros((8, 8, 3), np.uint8)
    assert src.push(rgb, t=1.0)
    with pytest.raises(SourceError, match="push"):
        src.push(rgb, t=bad)
    assert src.push(rgb, t=2.0)
    src.close()
    assert [f.t for f in src] == [1.0, 2.0]  # the refused frame left no trace, later times are not pinned


def test_push_refuses_a_frame_over_the_side_bound(monkeypatch):
    np = pytest.importorskip("numpy")
    from streamvid.errors import SourceError
    from streamvid.sources import PushSource

    monkeypatch.setenv("STREAMVID_MAX_FRAME_SIDE", "16")
    src = PushSource()
    with pytest.raises(SourceError, match="limit of 16"):
        src.push(np.zeros((8, 40, 3), np.uint8))
    src.close()


def test_piped_mp4_with_its_index_at_the_end_is_spooled(make_video, caplog):
    import subprocess

    from streamvid.sources import FileSource, open_source

    path, manifest = make_video("moov-at-end.mp4", duration=2.0, fps=10.0, width=64, height=48)
    data = path.read_bytes()
    assert data.find(b"mdat") < data.find(b"moov")  # what this test is about
    expected = [f.t for f in FileSource(path, backend="pyav")]
    proc = subprocess.Popen(["cat", str(path)], stdout=subprocess.PIPE)
    logger = logging.getLogger("streamvid")
    logger.addHandler(caplog.handler)
    try:
        with caplog.at_level(logging.INFO, logger="streamvid"):
            src = open_source(proc.stdout)
    finally:
        logger.removeHandler(caplog.handler)
        proc.wait()
    assert any("temporary file" in r.getMessage() for r in caplog.records)
    spool = src.path
    assert spool.exists()
    times = [f.t for f in src]
    src.close()
    assert times == pytest.approx(expected) and len(times) == manifest["frame_count"]
    assert not spool.exists()  # streamvid's own temporary file is removed


def test_piped_streamable_containers_are_read_as_they_arrive(make_video):
    import subprocess

    from streamvid.sources import StreamSource, open_source

    for name, options in [("fast.mp4", {"faststart": True}), ("piped.mkv", {})]:
        path, manifest = make_video(name, duration=1.0, fps=10.0, width=64, height=48, **options)
        proc = subprocess.Popen(["cat", str(path)], stdout=subprocess.PIPE)
        with open_source(proc.stdout) as src:
            assert isinstance(src, StreamSource)
            assert len(list(src)) == manifest["frame_count"]
        proc.wait()


# ---------------------------------------------------------------- questions and generation


def test_questions_are_checked_and_special_tokens_neutralised():
    from streamvid.agent import MAX_QUESTION_CHARS, check_question
    from streamvid.errors import QuestionError

    with pytest.raises(QuestionError, match="Unicode"):
        check_question("what is \ud800 this?")
    with pytest.raises(QuestionError, match="limit"):
        check_question("a" * (MAX_QUESTION_CHARS + 1))
    with pytest.raises(QuestionError, match="empty"):
        check_question("\x00\x01  ")
    assert check_question("what <image> is <|im_start|> here?") == "what ‹image› is ‹|im_start|› here?"
    assert check_question("is 2 < 3 > 1?") == "is 2 < 3 > 1?"
    assert check_question("a\x00b") == "a b"


def test_device_that_is_not_here_fails_before_any_model_loads():
    torch = pytest.importorskip("torch")
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    import streamvid
    from streamvid.config import check_device_available

    with pytest.raises(ConfigError, match="CUDA is not available"):
        check_device_available("cuda")
    with pytest.raises(ConfigError, match="CUDA is not available"):
        streamvid.StreamAgent.from_preset("tiny-random", device="cuda")
    with pytest.raises(ConfigError, match="unknown device"):
        streamvid.StreamAgent.from_preset("tiny-random", device="bogus")


@pytest.fixture(scope="module")
def live_agent():
    import streamvid

    agent = streamvid.StreamAgent.from_preset("tiny-random", device="cpu", fps=1000.0, captions=False,
                                              max_new_tokens=4)
    agent.start()
    yield agent
    agent.close()


def test_agent_push_refuses_bad_times_and_ingestion_goes_on():
    np = pytest.importorskip("numpy")
    import streamvid
    from streamvid.errors import SourceError

    rng = np.random.default_rng(0)
    agent = streamvid.StreamAgent.from_preset("tiny-random", device="cpu", captions=False)
    try:
        agent.start()
        agent.push(rng.integers(0, 255, (48, 64, 3), dtype=np.uint8), t=0.0)
        for bad in (math.nan, math.inf, -3.0, "1.0", 1e300):
            with pytest.raises(SourceError):
                agent.push(rng.integers(0, 255, (48, 64, 3), dtype=np.uint8), t=bad)
        agent.push(rng.integers(0, 255, (48, 64, 3), dtype=np.uint8), t=1.0)
        assert agent.is_running
        stats = agent.stop()  # raises if the ingest thread died
        # Newest frame wins: the first may have been replaced while waiting, never lost silently.
        assert stats["frames_seen"] + agent.dropped_frames == 2 and agent.memory.now == 1.0
    finally:
        agent.close()


@pytest.mark.parametrize("settings, match", [
    (dict(temperature=math.nan), "temperature"), (dict(temperature=-0.5), "temperature"),
    (dict(max_new_tokens=10**12), "max_new_tokens"), (dict(top_p=0.0), "top_p"),
])
def test_generation_settings_are_refused_before_generating(live_agent, settings, match):
    with pytest.raises(ConfigError, match=match):
        live_agent.ask("what is there?", **settings)


def test_a_question_with_model_markers_is_answered(live_agent):
    answer = live_agent.ask("what <image> is <fake_token_around_image> there <end_of_utterance>?")
    assert isinstance(answer.text, str)


# ---------------------------------------------------------------- the CLI: one line, before any work


@pytest.fixture
def cli(monkeypatch, capsys):
    """Run ``streamvid.cli.main`` in-process → (exit code, stderr); logging and warning hooks restored."""
    import warnings

    from streamvid.cli import main

    logger, root = logging.getLogger("streamvid"), logging.getLogger()
    saved = (list(logger.handlers), logger.level, logger.propagate, root.level)
    monkeypatch.setattr(warnings, "showwarning", warnings.showwarning)

    def run(*args: str) -> tuple[int, str]:
        t0 = time.monotonic()
        try:
            code = main(list(args))
        except SystemExit as exc:
            code = exc.code
        run.seconds = time.monotonic() - t0
        return code, capsys.readouterr().err.strip()

    yield run
    logger.handlers[:] = saved[0]
    logger.setLevel(saved[1])
    logger.propagate = saved[2]
    root.setLevel(saved[3])


def assert_one_line(code: int, err: str, *words: str, exit_code: int = 1) -> None:
    assert code == exit_code, err
    assert "Traceback" not in err and "unexpected error" not in err, err
    last = err.splitlines()[-1]
    assert last.startswith("streamvid: "), err
    for w in words:
        assert w in last, err


def test_cli_refuses_fps_zero(cli):
    code, err = cli("ask", "a.mp4", "q", "--fps", "0", "--preset", "tiny-random")
    assert code == 2 and "--fps" in err and "above 0" in err
    code, err = cli("info", "a.mp4", "--fps", "-1")
    assert code == 2 and "--fps" in err


def test_cli_bad_device_is_one_line(cli, make_video):
    path, _ = make_video("dev.mp4", duration=1.0, fps=5.0, width=64, height=48)
    assert_one_line(*cli("ask", str(path), "what?", "--preset", "tiny-random", "--device", "bogus"),
                    "unknown device 'bogus'")
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        assert_one_line(*cli("ask", str(path), "what?", "--preset", "tiny-random", "--device", "cuda"),
                        "CUDA is not available")
        assert cli.seconds < 30  # refused before any model is built


def test_cli_index_memory_path_is_checked_before_any_work(cli, make_video, tmp_path):
    path, _ = make_video("dev.mp4", duration=1.0, fps=5.0, width=64, height=48)
    a_file = tmp_path / "notes.txt"
    a_file.write_text("mine")
    for memory, words in [(str(a_file), ("--memory", "not a directory")),
                          (str(a_file / "mem"), ("--memory", "is a file")),
                          ("/proc/streamvid-mem", ("--memory", "system filesystem"))]:
        assert_one_line(*cli("index", str(path), "--memory", memory, "--preset", "tiny-random"), *words)
        assert cli.seconds < 10
    assert a_file.read_text() == "mine"


def test_cli_ui_port_in_use_names_the_flag(cli):
    import socket

    pytest.importorskip("gradio")
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        port = busy.getsockname()[1]
        assert_one_line(*cli("ui", "--port", str(port), "--preset", "tiny-random"), f"port {port}", "--port")


def test_cli_verbosity_flags_parse(cli):
    code, err = cli("-q", "presets")
    assert code == 0
    code, err = cli("presets", "-v")
    assert code == 0


def test_damaged_images_in_a_folder_are_source_errors(tmp_path):
    import random

    cv2 = pytest.importorskip("cv2")
    np = pytest.importorskip("numpy")
    from streamvid.errors import SourceError
    from streamvid.sources import open_source

    rng = random.Random(3)
    img = np.random.default_rng(3).integers(0, 255, (24, 32, 3), dtype=np.uint8)
    for suffix in (".png", ".jpg"):
        good = cv2.imencode(suffix, img)[1].tobytes()
        for k in range(15):
            folder = tmp_path / f"{suffix[1:]}{k}"
            folder.mkdir()
            data = bytearray(good)
            for _ in range(1 + k):
                data[rng.randrange(len(data))] ^= 1 << rng.randrange(8)
            (folder / f"a{suffix}").write_bytes(bytes(data[: len(data) - rng.randrange(0, len(data) // 2)]))
            try:
                frames = list(open_source(folder))
            except SourceError:
                continue
            assert all(f.rgb.ndim == 3 for f in frames)
