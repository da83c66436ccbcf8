"""The backend seam: backends chosen by registered name, the complete protocol, answers through
AnswerContext + GenerationOptions, and models shared between agents through ``sharing_models``."""

from __future__ import annotations

import numpy as np
import pytest
from streamvid_bench import samples as make_sample_video

from streamvid import ConfigError
from streamvid.agent import StreamAgent
from streamvid.backends import AnswerContext, Backend, GenerationOptions, backend_names, event_block, make_backend
from streamvid.backends.registry import register_backend
from streamvid.backends.vlm import VLMBackend
from streamvid.config import AgentConfig, preset_config

TINY = dict(fps=2.0, segment_max_frames=4, short_term_frames=4, device="cpu", captions=False)
SCENES = [
    make_sample_video.Scene(0.0, 3.0, (225, 215, 185), "hallway", "door", (30, 70, 200)),
    make_sample_video.Scene(3.0, 6.0, (40, 120, 60), "field", "ball", (245, 220, 40)),
]


def frames(n: int, start: float = 0.0) -> list[np.ndarray]:
    return [make_sample_video.render_frame(start + i / 2.0, 96, 72, SCENES, ()) for i in range(n)]


@pytest.fixture(scope="module")
def agent():
    a = StreamAgent.from_preset("tiny-random", **TINY)
    yield a
    a.close()


def test_presets_name_their_backend_and_unknown_names_are_refused():
    assert {"vlm", "offline"} <= set(backend_names())
    assert preset_config("offline").backend == "offline"
    assert preset_config("tiny-random").backend == AgentConfig().backend == "vlm"
    with pytest.raises(ConfigError, match="unknown backend 'nope'.*offline.*vlm"):
        make_backend(AgentConfig(backend="nope"))


def test_a_registered_backend_is_built_by_name():
    built = []

    def factory(config):
        built.append(config)
        return VLMBackend(config)

    register_backend("test-vlm", factory)
    config = preset_config("tiny-random", backend="test-vlm", **TINY)
    with StreamAgent(config) as a:
        assert built == [config] and isinstance(a.backend, VLMBackend)


def test_the_vlm_backend_is_a_complete_backend(agent):
    assert isinstance(agent.backend, Backend)
    agent.start()
    for i, rgb in enumerate(frames(6)):
        agent.push(rgb, t=i / 2.0)
    agent.stop()
    stages = agent.backend.stage_ms()
    assert {"key", "gate", "vision", "compress", "memory"} <= set(stages)
    assert agent.stage_ms_per_frame() == stages and all(v >= 0 for v in stages.values())


def test_answer_takes_a_context_and_options(agent):
    snap = agent.memory.snapshot()
    blocks = [event_block(e) for e in snap.events if e.tokens is not None][:2]
    assert blocks
    context = AnswerContext(blocks=blocks, question="what is there?")
    greedy = GenerationOptions(max_new_tokens=6)
    first = "".join(agent.backend.answer(context, greedy).pieces)
    run = agent.backend.answer(context, greedy)
    assert "".join(run.pieces) == first  # greedy is deterministic
    assert 0 < run.timings()["new_tokens"] <= 6
    # temperature 0 is greedy even when sampling is asked for: decided in one place
    assert "".join(agent.backend.answer(context, GenerationOptions(max_new_tokens=6, do_sample=True,
                                                                   temperature=0.0, seed=5)).pieces) == first
    with pytest.raises(ConfigError, match="top_p"):
        GenerationOptions(top_p=0.0)


def test_sharing_models_shares_weights_not_memory(agent):
    other = agent.sharing_models(fps=1.0)
    try:
        assert other.backend is not agent.backend
        assert other.backend.llm is agent.backend.llm and other.backend.encoder is agent.backend.encoder
        assert other.memory is not agent.memory and other.config.fps == 1.0
        before = agent.memory.stats()
        other.start()
        for i, rgb in enumerate(frames(4, start=3.0)):
            other.push(rgb, t=float(i))
        other.stop()
        assert other.memory.stats()["frames_seen"] + other.dropped_frames == 4
        assert agent.memory.stats() == before  # the first agent's memory is untouched
        assert other.backend.stage_ms()["vision"] >= 0 and agent.backend.timer is not other.backend.timer
    finally:
        other.close()
    with pytest.raises(ConfigError, match="model"):
        agent.sharing_models(model="tiny:qwen2_5_vl")
