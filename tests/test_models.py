"""Video-LLM adapters: frame tokens are what the LM reads, generation streams correctly, loading fails clearly.

Tiny random models of all three families, plus real-size random-weight SmolVLM-256M built from
the shared config/tokenizer files (the layer-cut Qwen2.5-VL-3B is in test_prompt.py, to spread
the cost of building it). Text output of random
weights is meaningless: these tests check structure, never content.
"""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import torch
import torchvision.transforms.v2.functional as tvF
from torchvision.transforms import InterpolationMode

from streamvid.errors import ConfigError, ModelError, QuestionError
from streamvid.models import load_video_llm, model_available, shared_models_root
from streamvid.models.base import VideoLLM
from streamvid.prompt import PromptBlock

os.environ.setdefault("HF_HUB_OFFLINE", "1")

FAMILIES = ["smolvlm", "qwen2_5_vl", "llava_onevision"]
SMOL_DIR = shared_models_root() / "HuggingFaceTB__SmolVLM-256M-Instruct"
QWEN_DIR = shared_models_root() / "Qwen__Qwen2.5-VL-3B-Instruct"
needs_shared = pytest.mark.skipif(not SMOL_DIR.is_dir() or not QWEN_DIR.is_dir(),
                                  reason="../shared/models not present")


@pytest.fixture(scope="module")
def tiny():
    return {f: load_video_llm(f"tiny:{f}", seed=0) for f in FAMILIES}


@pytest.fixture(scope="module")
def real_smol():
    return load_video_llm(str(SMOL_DIR), random_weights=True, seed=0,
                          config_overrides={"text_config.num_hidden_layers": 2, "vision_config.num_hidden_layers": 1})


def frames(n: int, h: int = 90, w: int = 120, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, h, w, 3), dtype=np.uint8)


def language_model(llm):
    inner = llm.model.model
    return inner.text_model if llm.family == "smolvlm" else inner.language_model


def lm_input_embeds(llm, **inputs) -> torch.Tensor:
    """Run the HF model's own forward and capture the inputs_embeds its language model receives. [L, d]"""
    seen = {}

    def hook(module, args, kwargs):
        seen["embeds"] = kwargs["inputs_embeds"].detach().clone()

    handle = language_model(llm).register_forward_pre_hook(hook, with_kwargs=True)
    try:
        with torch.inference_mode():
            llm.model(**inputs, logits_to_keep=1)
    finally:
        handle.remove()
    return seen["embeds"][0]


def processor_inputs(llm, rgb: np.ndarray) -> tuple[dict, int]:
    """The model's own processor output for a chat with the frames, and the id of the placeholder."""
    proc = llm.processor
    if llm.family == "smolvlm":
        msgs = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "hi"}]}]
        text = proc.apply_chat_template(msgs, add_generation_prompt=True)
        inputs = proc(text=[text], images=[[rgb[0]]], do_image_splitting=False, return_tensors="pt")
        return dict(inputs), llm.model.config.image_token_id
    if llm.family == "qwen2_5_vl":
        h, w = llm.frame_hw
        msgs = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "hi"}]}]
        text = proc.apply_chat_template(msgs, add_generation_prompt=True)
        # the adapter's fixed frame size, reached with the processor's own filter (antialiased bicubic)
        img = tvF.resize(torch.from_numpy(rgb[0]).permute(2, 0, 1), [h, w], interpolation=InterpolationMode.BICUBIC,
                         antialias=True)
        return dict(proc(text=[text], images=[img], return_tensors="pt")), llm.model.config.image_token_id
    msgs = [{"role": "user", "content": [{"type": "video"}, {"type": "text", "text": "hi"}]}]
    text = proc.apply_chat_template(msgs, add_generation_prompt=True)
    return dict(proc(text=[text], videos=[rgb], return_tensors="pt")), llm.model.config.video_token_id


def check_frame_tokens_match_forward(llm, rgb: np.ndarray) -> None:
    inputs, placeholder = processor_inputs(llm, rgb)
    embeds = lm_input_embeds(llm, **inputs)
    at_visual = embeds[inputs["input_ids"][0] == placeholder]
    ours = llm.frame_tokens(rgb).tokens
    if llm.family == "llava_onevision":
        # the model's video is all frames then one image_newline
        assert at_visual.shape[0] == ours.shape[0] * ours.shape[1] + 1
        torch.testing.assert_close(at_visual[-1], llm.model.model.image_newline.detach())
        at_visual = at_visual[:-1]
        ours = ours.reshape(-1, ours.shape[-1])
    else:
        ours = ours[0]
    assert at_visual.shape == ours.shape
    torch.testing.assert_close(ours, at_visual, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("family", FAMILIES)
def test_frame_tokens_are_what_the_lm_reads(tiny, family):
    llm = tiny[family]
    rgb = frames(2 if family == "llava_onevision" else 1)
    check_frame_tokens_match_forward(llm, rgb)


@pytest.mark.parametrize("family", FAMILIES)
def test_frame_tokens_shapes_grid_and_batching(tiny, family):
    llm = tiny[family]
    assert isinstance(llm, VideoLLM)
    rgb = frames(3)
    vt = llm.frame_tokens(rgb)
    gh, gw = llm.grid
    assert vt.grid == llm.grid and llm.tokens_per_frame == gh * gw
    assert vt.tokens.shape == (3, gh * gw, llm.hidden_size)
    # batched == one at a time, and a list input == an array input
    singles = torch.cat([llm.frame_tokens(rgb[i : i + 1]).tokens for i in range(3)])
    torch.testing.assert_close(vt.tokens, singles, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(llm.frame_tokens(list(rgb)).tokens, vt.tokens)
    # any frame size gives the same grid
    assert llm.frame_tokens(frames(1, 240, 100)).tokens.shape == (1, gh * gw, llm.hidden_size)


def test_same_seed_same_model_other_seed_other_model(tiny):
    rgb = frames(1)
    a = tiny["smolvlm"].frame_tokens(rgb).tokens
    b = load_video_llm("tiny:smolvlm", seed=0).frame_tokens(rgb).tokens
    c = load_video_llm("tiny:smolvlm", seed=1).frame_tokens(rgb).tokens
    assert torch.equal(a, b)
    assert not torch.allclose(a, c)


def test_loading_does_not_disturb_the_callers_rng():
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    load_video_llm("tiny:llava_onevision", seed=5)
    assert torch.equal(torch.rand(3), expected)


def test_qwen_rope_positions_follow_time_and_grid(tiny):
    llm = tiny["qwen2_5_vl"]
    gh, gw = llm.grid
    vt = llm.frame_tokens(frames(3), times=[0.0, 1.2, 10.0])
    rope = vt.rope_positions
    assert rope.shape == (3, gh * gw, 3)
    tps = llm.model.config.vision_config.tokens_per_second
    assert rope[:, 0, 0].tolist() == [0, int(1.2 * tps), int(10.0 * tps)]
    idx = torch.arange(gh * gw)
    for b in range(3):
        assert torch.equal(rope[b, :, 1], idx // gw) and torch.equal(rope[b, :, 2], idx % gw)
    assert tiny["smolvlm"].frame_tokens(frames(1)).rope_positions is None


def test_embed_text_is_mean_input_embedding(tiny):
    llm = tiny["smolvlm"]
    e = llm.embed_text("a red car")
    ids = llm.tokenizer("a red car", add_special_tokens=False)["input_ids"]
    table = llm.model.get_input_embeddings().weight.detach()
    assert e.shape == (llm.hidden_size,)
    torch.testing.assert_close(e, table[ids].mean(0))
    with pytest.raises(QuestionError):
        llm.embed_text("  ")


def blocks_from(llm, rgb: np.ndarray, t0: float = 0.0) -> list[PromptBlock]:
    vt = llm.frame_tokens(rgb)
    n = vt.tokens.shape[1]
    return [PromptBlock(t_start=t0 + 4 * i, t_end=t0 + 4 * i + 2, tokens=vt.tokens[i], grid=vt.grid,
                        token_times=np.full(n, t0 + 4 * i), positions=torch.arange(n), event_id=i)
            for i in range(len(rgb))]


def greedy_without_cache(llm, inputs, steps: int) -> list[int]:
    """Reference decoding: the whole sequence re-run from scratch for every token, no KV cache."""
    embeds = inputs.inputs_embeds
    pos = inputs.position_ids
    out: list[int] = []
    with torch.inference_mode():
        for step in range(steps):
            logits = llm.model(inputs_embeds=embeds, position_ids=pos, use_cache=False).logits[0, -1]
            tok = int(torch.argmax(logits))
            if tok in llm.stop_token_ids:
                break
            out.append(tok)
            new = llm.model.get_input_embeddings()(torch.tensor([[tok]]))
            embeds = torch.cat([embeds, new], dim=1)
            if pos is not None:
                pos = torch.cat([pos, llm.step_position_ids(inputs, step)], dim=-1)
    return out


@pytest.mark.parametrize("family", FAMILIES)
def test_streamed_pieces_join_to_the_greedy_answer(tiny, family):
    llm = tiny[family]
    inputs = llm.build_prompt(blocks_from(llm, frames(2)), "What happens?")
    stream = llm.generate(inputs, max_new_tokens=8)
    pieces = list(stream)
    reference = greedy_without_cache(llm, inputs, 8)
    assert stream.token_ids == reference
    assert len(reference) > 0
    assert "".join(pieces) == llm.tokenizer.decode(reference, skip_special_tokens=True) == stream.text
    assert len(set(reference)) > 1  # the tiny LMs do not collapse onto one token
    s = stream.stats
    assert s.prompt_tokens == inputs.n_prompt_tokens and s.new_tokens == len(reference)
    assert 0 < s.prefill_ms <= s.ttft_ms <= s.total_ms
    assert s.new_tokens < 2 or s.decode_tok_s > 0
    assert s.stop_reason in ("eos", "length")
    # the same prompt again gives the same answer (deterministic greedy)
    assert list(llm.generate(inputs, max_new_tokens=8)) == pieces


def test_smolvlm_stream_matches_transformers_generate(tiny):
    llm = tiny["smolvlm"]
    inputs = llm.build_prompt(blocks_from(llm, frames(2)), "Describe it.")
    stream = llm.generate(inputs, max_new_tokens=10)
    list(stream)
    with torch.inference_mode():
        ids = llm.model.generate(inputs_embeds=inputs.inputs_embeds, attention_mask=torch.ones_like(inputs.input_ids),
                                 max_new_tokens=10, do_sample=False, eos_token_id=sorted(llm.stop_token_ids),
                                 pad_token_id=2)
    hf = [t for t in ids[0].tolist() if t not in llm.stop_token_ids]
    assert stream.token_ids == hf


def test_sampling_is_seeded_and_generation_is_bounded(tiny):
    llm = tiny["llava_onevision"]
    inputs = llm.build_prompt(blocks_from(llm, frames(1)), "Anything?")
    a = llm.generate(inputs, max_new_tokens=8, do_sample=True, seed=3)
    b = llm.generate(inputs, max_new_tokens=8, do_sample=True, seed=3)
    c = llm.generate(inputs, max_new_tokens=8, do_sample=True, temperature=1.5, top_p=1.0, seed=4)
    assert "".join(a) == "".join(b) and a.token_ids == b.token_ids
    list(c)
    assert a.token_ids != c.token_ids
    assert len(a.token_ids) <= 8 and len(c.token_ids) <= 8
    with pytest.raises(ModelError):
        llm.generate(inputs, max_new_tokens=0)


def test_generation_does_not_leak_inference_mode(tiny):
    llm = tiny["smolvlm"]
    inputs = llm.build_prompt(blocks_from(llm, frames(1)), "Why?")
    for _ in llm.generate(inputs, max_new_tokens=3):
        assert not torch.is_inference_mode_enabled()


def test_unknown_hub_id_offline_fails_fast_naming_the_model(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    monkeypatch.setenv("HF_HOME", str(tmp_path))
    with pytest.raises(ModelError) as err:
        load_video_llm("nobody-here/NoSuchModel-7B")
    msg = str(err.value)
    assert "nobody-here/NoSuchModel-7B" in msg and "huggingface-cli download" in msg and "--model PATH" in msg


def test_model_available_offline(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    assert not model_available("nobody-here/NoSuchModel-7B")
    assert model_available("tiny:smolvlm") and not model_available("tiny:gpt9")
    assert not model_available(str(tmp_path))
    (tmp_path / "config.json").write_text("{}")
    assert model_available(str(tmp_path))


def test_unsupported_architecture_and_bad_names(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"architectures": ["BertForMaskedLM"], "model_type": "bert"}))
    with pytest.raises(ModelError, match="unsupported architecture BertForMaskedLM"):
        load_video_llm(str(tmp_path))
    with pytest.raises(ModelError, match="tiny:smolvlm"):
        load_video_llm("tiny:gpt9")
    with pytest.raises(ModelError, match="neither a model directory nor a hub id"):
        load_video_llm("not a model")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ModelError, match="without config.json"):
        load_video_llm(str(empty))
    with pytest.raises(ConfigError, match="dtype"):
        load_video_llm("tiny:smolvlm", dtype="float8")


def test_missing_shared_models_folder_is_named(monkeypatch, tmp_path):
    monkeypatch.setenv("STREAMVID_SHARED_MODELS", str(tmp_path / "nowhere"))
    with pytest.raises(ModelError, match="nowhere"):
        load_video_llm("tiny:qwen2_5_vl")


def test_bad_frames_are_rejected(tiny):
    llm = tiny["smolvlm"]
    with pytest.raises(ModelError, match="uint8"):
        llm.frame_tokens(np.zeros((1, 32, 32, 3), dtype=np.float32))
    with pytest.raises(ModelError, match="H×W×3"):
        llm.frame_tokens(np.zeros((1, 32, 32), dtype=np.uint8))
    with pytest.raises(ModelError, match="no frames"):
        llm.frame_tokens([])
    with pytest.raises(ModelError, match="times"):
        llm.frame_tokens(frames(2), times=[0.0])


@needs_shared
@pytest.mark.slow
def test_real_size_smolvlm_256m(real_smol):
    llm = real_smol
    assert llm.model.__class__.__name__ == "Idefics3ForConditionalGeneration"
    assert llm.grid == (8, 8) and llm.tokens_per_frame == 64 and llm.hidden_size == 576
    check_frame_tokens_match_forward(llm, frames(1, 60, 80))
    inputs = llm.build_prompt(blocks_from(llm, frames(2, 60, 80)), "What is shown?")
    assert [s.length for s in inputs.visual_segments()] == [64, 64]
    stream = llm.generate(inputs, max_new_tokens=4)
    assert "".join(stream) == stream.text and stream.stats.new_tokens <= 4


def test_families_register_themselves_and_tiny_configs_are_package_data():
    from importlib import resources

    from streamvid.models import families
    from streamvid.models.tiny import tiny_names, tiny_spec

    assert set(FAMILIES) <= set(families())
    assert set(tiny_names()) == set(FAMILIES)
    assert (resources.files("streamvid.models") / "model_configs" / "tiny-smolvlm.json").is_file()
    for name in tiny_names():
        assert tiny_spec(name)["family"] in families()


@pytest.mark.parametrize("family", FAMILIES)
def test_tiny_configs_token_ids_match_their_tokenizers(tiny, family):
    llm = tiny[family]
    tok, cfg = llm.tokenizer, llm.model.config
    names = {"smolvlm": {"image_token_id": "<image>"},
             "qwen2_5_vl": {"image_token_id": "<|image_pad|>", "video_token_id": "<|video_pad|>",
                            "vision_start_token_id": "<|vision_start|>", "vision_end_token_id": "<|vision_end|>"},
             "llava_onevision": {"image_token_id": "<image>", "video_token_id": "<video>"}}[family]
    for field, token in names.items():
        assert getattr(cfg, field) == tok.convert_tokens_to_ids(token), field


def test_a_family_added_in_one_place_is_found_by_its_architecture(monkeypatch, tmp_path):
    from streamvid.models import registry
    from streamvid.models.smolvlm import SmolVLMAdapter

    monkeypatch.setattr(registry, "_FAMILIES", dict(registry.families()))
    fam = registry.register_family(registry.ModelFamily(
        name="my_vlm", adapter=SmolVLMAdapter, architectures=("MyVLMForConditionalGeneration",),
        model_types=("my_vlm",)))
    assert registry.family_for_config({"architectures": ["MyVLMForConditionalGeneration"]}) is fam
    assert registry.family_for_config({"model_type": "my_vlm"}) is fam
    assert registry.get_family("my_vlm") is fam
    with pytest.raises(ModelError, match="registered twice"):
        registry.register_family(registry.ModelFamily(name="my_vlm", adapter=SmolVLMAdapter, architectures=(),
                                                      model_types=()))
    with pytest.raises(ModelError, match="unknown model family 'nope'"):
        registry.get_family("nope")


@pytest.mark.parametrize("n", [1, 3])
def test_qwen_tower_layout_computed_once_equals_transformers_own(n):
    llm = load_video_llm("tiny:qwen2_5_vl", seed=0, frame_hw=(112, 168))  # 2 × 3 windows of 56 px
    x = torch.from_numpy(frames(n, 100, 130)).permute(0, 3, 1, 2)
    with torch.inference_mode():
        px = llm.pixels(x)
        own = llm.model.model.visual(px["pixel_values"], grid_thw=px["image_grid_thw"]).pooler_output
        ours = llm.tower(px)
        again = llm.tower(px)  # from the cached layout
    assert ours.shape == (n, llm.tokens_per_frame, llm.hidden_size)
    assert torch.equal(ours.reshape(own.shape), own) and torch.equal(again, ours)
