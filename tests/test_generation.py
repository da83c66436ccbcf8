"""One generation stack: the Video-LLMs' KV-cache loop and the text LLM's ``model.generate`` share
GenerationOptions, the transformers logits processors and GenerationStats."""

from __future__ import annotations

import threading

import numpy as np
import pytest
import torch

from streamvid import ConfigError
from streamvid.generation import GenerationOptions, logits_processors
from streamvid.models import load_video_llm
from streamvid.prompt import PromptBlock

STATS_KEYS = {"prompt_tokens", "new_tokens", "prefill_ms", "ttft_ms", "decode_ms", "decode_tok_s", "total_ms"}


@pytest.fixture(scope="module")
def vlm():
    return load_video_llm("tiny:smolvlm", seed=0)


@pytest.fixture(scope="module")
def inputs(vlm):
    rgb = np.random.default_rng(0).integers(0, 256, (2, 90, 120, 3), dtype=np.uint8)
    vt = vlm.frame_tokens(rgb)
    n = vt.tokens.shape[1]
    blocks = [PromptBlock(t_start=4.0 * i, t_end=4.0 * i + 2, tokens=vt.tokens[i], grid=vt.grid,
                          token_times=np.full(n, 4.0 * i), positions=torch.arange(n), event_id=i) for i in range(2)]
    return vlm.build_prompt(blocks, "What happens?")


def test_greedy_is_decided_in_one_place():
    assert GenerationOptions().greedy and GenerationOptions(do_sample=True, temperature=0.0).greedy
    assert not GenerationOptions(do_sample=True).greedy
    assert len(logits_processors(GenerationOptions(do_sample=True, temperature=0.0))) == 0  # plain argmax
    names = [type(p).__name__ for p in logits_processors(GenerationOptions(do_sample=True, temperature=0.5,
                                                                           top_p=0.8, repetition_penalty=1.2))]
    assert names == ["RepetitionPenaltyLogitsProcessor", "TemperatureLogitsWarper", "TopPLogitsWarper",
                     "SeededSampling"]
    for bad in (dict(top_p=0.0), dict(top_p=1.5), dict(repetition_penalty=0.0), dict(no_repeat_ngram_size=-1)):
        with pytest.raises(ConfigError):
            GenerationOptions(**bad)


def test_seeded_sampling_ignores_the_global_random_state(vlm, inputs):
    options = GenerationOptions(max_new_tokens=8, do_sample=True, temperature=1.5, top_p=1.0, seed=7)
    torch.manual_seed(1)
    a = vlm.generate(inputs, options)
    a.read()
    torch.manual_seed(2)
    torch.rand(100)
    b = vlm.generate(inputs, options)
    b.read()
    assert a.token_ids == b.token_ids and a.text == b.text


def test_no_repeat_ngram_and_repetition_penalty_shape_the_answer(vlm, inputs):
    plain = vlm.generate(inputs, max_new_tokens=24)
    plain.read()
    unique = vlm.generate(inputs, max_new_tokens=24, no_repeat_ngram_size=1)
    unique.read()
    assert len(unique.token_ids) == len(set(unique.token_ids)) > 0
    # a strong penalty on every token already generated also keeps the answer free of repeats
    penalised = vlm.generate(inputs, max_new_tokens=24, repetition_penalty=1e6)
    penalised.read()
    assert len(penalised.token_ids) == len(set(penalised.token_ids))
    if len(plain.token_ids) != len(set(plain.token_ids)):  # the processors changed what was generated
        assert unique.token_ids != plain.token_ids


def test_video_llm_stats_have_the_shared_keys(vlm, inputs):
    stream = vlm.generate(inputs, GenerationOptions(max_new_tokens=5))
    text = stream.read()
    assert set(stream.timings) == STATS_KEYS and stream.text == text
    s = stream.stats
    assert s.new_tokens == len(stream.token_ids) <= 5 and s.prompt_tokens == inputs.n_prompt_tokens
    assert 0 < s.prefill_ms <= s.ttft_ms <= s.total_ms and s.decode_ms >= 0


@pytest.fixture(scope="module")
def text_llm():
    from streamvid.perceive import TextLLM

    return TextLLM()


@pytest.mark.slow
def test_text_llm_streams_through_generate_with_the_same_stats(text_llm):
    stream = text_llm.generate("Name three colours.", GenerationOptions(max_new_tokens=12))
    pieces = list(stream)
    assert pieces and "".join(pieces) == stream.text
    assert text_llm.tokenizer.decode(stream.token_ids, skip_special_tokens=True) == stream.text
    assert set(stream.timings) == STATS_KEYS and stream.stats.new_tokens == len(stream.token_ids) <= 12
    assert stream.stats.stop_reason in ("eos", "length")
    sampled = [text_llm.generate("Name three colours.", max_new_tokens=12, do_sample=True, temperature=1.0,
                                 seed=s).read() for s in (3, 3)]
    assert sampled[0] == sampled[1]


@pytest.mark.slow
def test_text_llm_stops_when_the_reader_leaves(text_llm):
    before = threading.active_count()
    stream = text_llm.generate("Tell a long story about a train.", max_new_tokens=200)
    next(stream)
    stream.close()
    assert threading.active_count() == before
    assert text_llm._lock.acquire(timeout=0)  # the model is free again at once
    text_llm._lock.release()
    assert text_llm.generate("Say hi.", max_new_tokens=4).read()
