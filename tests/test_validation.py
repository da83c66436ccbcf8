"""Settings and inputs are checked at the boundary: one ConfigError/StreamvidError naming the cause."""

from __future__ import annotations

import logging
import math

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
