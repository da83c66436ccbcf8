"""Prompt assembly: chronological blocks with time labels, visual tokens at each family's placeholders,
Qwen2.5-VL M-RoPE positions from real time and grid, and no re-encoding at question time."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch
import torchvision.transforms.v2.functional as tvF
from torchvision.transforms import InterpolationMode

from streamvid.errors import ModelError, QuestionError
from streamvid.models import load_video_llm, shared_models_root
from streamvid.prompt import PromptBlock, order_block_tokens, time_labels
from streamvid.types import format_span

os.environ.setdefault("HF_HUB_OFFLINE", "1")

FAMILIES = ["smolvlm", "qwen2_5_vl", "llava_onevision"]


@pytest.fixture(scope="module")
def tiny():
    return {f: load_video_llm(f"tiny:{f}", seed=0) for f in FAMILIES}


def make_block(llm, t_start: float, t_end: float, n: int, event_id: int, seed: int = 0,
               frame_times: list[float] | None = None) -> PromptBlock:
    """A block of n tokens spread over frames at ``frame_times`` (default: one frame at t_start)."""
    gh, gw = llm.grid
    g = torch.Generator().manual_seed(seed)
    frame_times = frame_times or [t_start]
    per = gh * gw
    times = np.repeat(np.asarray(frame_times, dtype=np.float64), per)[:n]
    positions = torch.arange(per).repeat(len(frame_times))[:n]
    tokens = torch.randn(n, llm.hidden_size, generator=g)
    return PromptBlock(t_start, t_end, tokens, times, positions, (gh, gw), event_id)


def three_blocks(llm) -> list[PromptBlock]:
    return [make_block(llm, 83.0, 91.5, 10, 7, seed=1), make_block(llm, 5.0, 9.0, 16, 2, seed=2),
            make_block(llm, 300.0, 302.0, 3, 11, seed=3)]


@pytest.mark.parametrize("family", FAMILIES)
def test_layout_is_chronological_with_time_labels_and_token_counts(tiny, family):
    llm = tiny[family]
    blocks = three_blocks(llm)
    inputs = llm.build_prompt(blocks, "What did I hold up?", now=305.0)
    vis = inputs.visual_segments()
    # chronological, whatever order the blocks came in; token counts per block kept
    assert [s.event_id for s in vis] == [2, 7, 11]
    assert [s.length for s in vis] == [16, 10, 3]
    assert [s.t_start for s in vis] == [5.0, 83.0, 300.0]
    assert time_labels(inputs.text) == [("00:00:05", "00:00:09"), ("00:01:23", "00:01:31"), ("00:05:00", "00:05:02")]
    assert "Now: 00:05:05" in inputs.text
    assert inputs.text.index("Now: 00:05:05") < inputs.text.index("What did I hold up?")
    # segments tile the prompt exactly
    assert inputs.segments[0].start == 0
    for a, b in zip(inputs.segments, inputs.segments[1:], strict=False):
        assert a.start + a.length == b.start
    last = inputs.segments[-1]
    assert last.start + last.length == inputs.n_prompt_tokens == inputs.input_ids.shape[1]
    assert inputs.inputs_embeds.shape == (1, inputs.n_prompt_tokens, llm.hidden_size)
    by_id = {b.event_id: b for b in blocks}
    ids = inputs.input_ids[0]
    for seg in vis:
        block = by_id[seg.event_id]
        sl = slice(seg.start, seg.start + seg.length)
        # the block's tokens sit exactly where the placeholders were
        assert bool((ids[sl] == llm.slot.placeholder_id).all())
        torch.testing.assert_close(inputs.inputs_embeds[0, sl], block.tokens[order_block_tokens(block)])
        # the text just before the visual tokens carries the block's own time label
        before = llm.tokenizer.decode(ids[max(0, seg.start - 24):seg.start])
        assert format_span(block.t_start, block.t_end) in before
    # no placeholder id outside the visual (and special) segments: text never mimics a visual slot
    non_text = sum(s.length for s in inputs.segments if s.kind != "text")
    assert int((ids == llm.slot.placeholder_id).sum()) == non_text


def test_family_wrappers_around_visual_tokens(tiny):
    smol, qwen, llava = tiny["smolvlm"], tiny["qwen2_5_vl"], tiny["llava_onevision"]
    block = [make_block(smol, 1.0, 2.0, 5, 0)]

    inputs = smol.build_prompt(block, "q")
    seg = inputs.visual_segments()[0]
    toks = smol.tokenizer.convert_ids_to_tokens(inputs.input_ids[0, seg.start - 2:seg.start + seg.length + 1].tolist())
    assert toks[:2] == ["<fake_token_around_image>", "<global-img>"] and toks[-1] == "<fake_token_around_image>"
    assert inputs.text.startswith("<|im_start|>User:") and inputs.text.endswith("Assistant:")

    inputs = qwen.build_prompt([make_block(qwen, 1.0, 2.0, 5, 0)], "q")
    seg = inputs.visual_segments()[0]
    toks = qwen.tokenizer.convert_ids_to_tokens(inputs.input_ids[0, seg.start - 1:seg.start + seg.length + 1].tolist())
    assert toks[0] == "<|vision_start|>" and toks[-1] == "<|vision_end|>"
    assert inputs.text.endswith("<|im_start|>assistant\n")

    inputs = llava.build_prompt([make_block(llava, 1.0, 2.0, 5, 0)], "q")
    seg = inputs.visual_segments()[0]
    special = inputs.segments[inputs.segments.index(seg) + 1]
    assert special.kind == "special" and special.length == 1 and special.start == seg.start + seg.length
    torch.testing.assert_close(inputs.inputs_embeds[0, special.start], llava.model.model.image_newline.detach())


@pytest.mark.parametrize("family", FAMILIES)
def test_reversed_blocks_come_out_in_time_order(tiny, family):
    llm = tiny[family]
    blocks = [make_block(llm, 10.0 * i, 10.0 * i + 5, 4, i, seed=i) for i in range(5)]
    forward = llm.build_prompt(blocks, "and then?")
    backward = llm.build_prompt(blocks[::-1], "and then?")
    assert torch.equal(forward.inputs_embeds, backward.inputs_embeds)
    assert torch.equal(forward.input_ids, backward.input_ids)
    assert [s.event_id for s in backward.visual_segments()] == [0, 1, 2, 3, 4]
    starts = [s.t_start for s in backward.visual_segments()]
    assert starts == sorted(starts)


def test_tokens_inside_a_block_are_ordered_by_time_then_grid(tiny):
    llm = tiny["smolvlm"]
    gh, gw = llm.grid
    block = make_block(llm, 0.0, 1.0, 2 * gh * gw, 0, frame_times=[0.0, 0.5])
    perm = torch.randperm(block.n, generator=torch.Generator().manual_seed(0))
    shuffled = PromptBlock(0.0, 1.0, block.tokens[perm], block.token_times[perm.numpy()], block.positions[perm],
                           block.grid, 0)
    a = llm.build_prompt([block], "q")
    b = llm.build_prompt([shuffled], "q")
    torch.testing.assert_close(a.inputs_embeds, b.inputs_embeds)


def test_history_instruction_and_live_time(tiny):
    llm = tiny["qwen2_5_vl"]
    blocks = [make_block(llm, 60.0, 65.0, 4, 0)]
    inputs = llm.build_prompt(blocks, "and after that?", history=[("who came in?", "a man at 00:01:00")],
                              instruction="Answer briefly.")
    text = inputs.text
    assert text.index("Answer briefly.") < text.index("who came in?") < text.index("a man at 00:01:00") \
        < text.index("[00:01:00–00:01:05]") < text.index("and after that?")
    assert "Now:" not in text
    assert time_labels(llm.build_prompt([], "anything?").text) == []


def test_qwen_positions_follow_time_and_grid(tiny):
    llm = tiny["qwen2_5_vl"]
    gh, gw = llm.grid
    tps = llm.mrope.tokens_per_second
    times = [40.0, 40.5, 41.7, 44.0]
    block = make_block(llm, 40.0, 44.5, 4 * gh * gw, 3, frame_times=times)
    inputs = llm.build_prompt([block, make_block(llm, 50.0, 51.0, 5, 4)], "q")
    pos = inputs.position_ids[:, 0]  # [3, L]
    seg = inputs.visual_segments()[0]
    s = int(pos[0, seg.start - 1]) + 1  # the block starts right after <|vision_start|>
    vis = pos[:, seg.start:seg.start + seg.length]
    expect_t = torch.tensor([int(np.floor((t - 40.0) * tps)) for t in times]).repeat_interleave(gh * gw) + s
    idx = torch.arange(gh * gw).repeat(len(times))
    assert torch.equal(vis[0], expect_t)
    assert torch.equal(vis[1], idx // gw + s) and torch.equal(vis[2], idx % gw + s)
    # text runs count up by one on all three axes, and resume after the largest visual position
    after = seg.start + seg.length
    assert torch.equal(pos[:, after], torch.full((3,), int(vis.max()) + 1))
    text0 = inputs.segments[0]
    assert torch.equal(pos[:, :text0.length], torch.arange(text0.length).expand(3, -1))
    assert inputs.next_position == int(pos.max()) + 1


def test_qwen_dropped_tokens_keep_their_positions(tiny):
    llm = tiny["qwen2_5_vl"]
    gh, gw = llm.grid
    full = make_block(llm, 10.0, 12.0, 2 * gh * gw, 0, frame_times=[10.0, 11.0])
    keep = torch.tensor([0, 3, 5, gh * gw + 1, gh * gw + 6, 2 * gh * gw - 1])
    pruned = PromptBlock(10.0, 12.0, full.tokens[keep], full.token_times[keep.numpy()], full.positions[keep],
                         full.grid, 0)
    a, b = llm.build_prompt([full], "q"), llm.build_prompt([pruned], "q")
    sa, sb = a.visual_segments()[0], b.visual_segments()[0]
    assert sa.start == sb.start
    pa = a.position_ids[:, 0, sa.start:sa.start + sa.length]
    pb = b.position_ids[:, 0, sb.start:sb.start + sb.length]
    assert torch.equal(pa[:, keep], pb)


def test_qwen_positions_agree_with_the_models_own_rope_index(tiny):
    """A block of frames at the model's own temporal spacing gets exactly the positions
    Qwen2_5_VLModel.get_rope_index gives the same prompt as one video."""
    llm = tiny["qwen2_5_vl"]
    gh, gw = llm.grid
    second_per_grid = 0.5
    block = make_block(llm, 0.0, 1.0, 2 * gh * gw, 0, frame_times=[0.0, second_per_grid])
    inputs = llm.build_prompt([block], "what is it?")
    ids = inputs.input_ids
    mm_types = (ids == llm.slot.placeholder_id).int() * 2  # 2 = video
    ref, _ = llm.model.model.get_rope_index(
        ids, mm_token_type_ids=mm_types, video_grid_thw=torch.tensor([[2, 2 * gh, 2 * gw]]),
        second_per_grid_ts=torch.tensor([second_per_grid]))
    assert torch.equal(inputs.position_ids, ref)


def test_other_families_have_no_position_ids(tiny):
    for family in ("smolvlm", "llava_onevision"):
        llm = tiny[family]
        inputs = llm.build_prompt([make_block(llm, 0.0, 1.0, 3, 0)], "q")
        assert inputs.position_ids is None and inputs.next_position == inputs.n_prompt_tokens


def test_question_time_never_reencodes_frames(tiny):
    for llm in tiny.values():
        inner = llm.model.model
        tower = inner.vision_model if llm.family == "smolvlm" else (
            inner.visual if llm.family == "qwen2_5_vl" else inner.vision_tower)
        calls: list[int] = []
        handle = tower.register_forward_hook(lambda *a, calls=calls: calls.append(1))
        try:
            inputs = llm.build_prompt([make_block(llm, 0.0, 1.0, 4, 0)], "q")
            list(llm.generate(inputs, max_new_tokens=2))
        finally:
            handle.remove()
        assert calls == []


def test_bad_questions_and_blocks_are_rejected(tiny):
    llm = tiny["smolvlm"]
    with pytest.raises(QuestionError):
        llm.build_prompt([], "   ")
    wrong_d = PromptBlock(0.0, 1.0, torch.zeros(2, llm.hidden_size + 1), np.zeros(2), torch.arange(2), llm.grid, 0)
    with pytest.raises(ModelError, match="another model"):
        llm.build_prompt([wrong_d], "q")
    with pytest.raises(ModelError, match="times"):
        PromptBlock(0.0, 1.0, torch.zeros(3, 4), np.zeros(2), torch.arange(3), (2, 2), 0)
    with pytest.raises(ModelError, match="grid"):
        PromptBlock(0.0, 1.0, torch.zeros(2, 4), np.zeros(2), torch.tensor([0, 4]), (2, 2), 0)
    with pytest.raises(ModelError, match="t_end"):
        PromptBlock(2.0, 1.0, torch.zeros(1, 4), np.zeros(1), torch.zeros(1), (2, 2), 0)


QWEN_DIR = shared_models_root() / "Qwen__Qwen2.5-VL-3B-Instruct"


@pytest.mark.slow
@pytest.mark.skipif(not QWEN_DIR.is_dir(), reason="../shared/models not present")
def test_real_size_layer_cut_qwen2_5_vl_3b():
    """Qwen2.5-VL-3B's real config (1 text layer, 1 vision block) and tokenizer, random weights:
    frame tokens are what its LM reads, the prompt's positions match its own rope index, and it decodes."""
    llm = load_video_llm(str(QWEN_DIR), random_weights=True, seed=0, frame_hw=(112, 168),
                         config_overrides={"text_config.num_hidden_layers": 1, "vision_config.depth": 1,
                                           "vision_config.fullatt_block_indexes": [0]})
    assert llm.model.__class__.__name__ == "Qwen2_5_VLForConditionalGeneration"
    assert llm.hidden_size == 2048 and llm.grid == (4, 6)

    rgb = np.random.default_rng(0).integers(0, 256, (2, 60, 80, 3), dtype=np.uint8)
    msgs = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "hi"}]}]
    text = llm.processor.apply_chat_template(msgs, add_generation_prompt=True)
    # the adapter's fixed frame size, reached with the processor's own filter (antialiased bicubic)
    img = tvF.resize(torch.from_numpy(rgb[0]).permute(2, 0, 1), [112, 168], interpolation=InterpolationMode.BICUBIC,
                     antialias=True)
    proc = dict(llm.processor(text=[text], images=[img], return_tensors="pt"))
    seen: dict[str, torch.Tensor] = {}

    def capture(module, args, kwargs):
        seen["embeds"] = kwargs["inputs_embeds"].detach().clone()

    handle = llm.model.model.language_model.register_forward_pre_hook(capture, with_kwargs=True)
    try:
        with torch.inference_mode():
            llm.model(**proc, logits_to_keep=1)
    finally:
        handle.remove()
    at_image = seen["embeds"][0][proc["input_ids"][0] == llm.model.config.image_token_id]
    vt = llm.frame_tokens(rgb, times=[0.0, 0.5])
    torch.testing.assert_close(vt.tokens[0], at_image, rtol=1e-4, atol=1e-4)

    n = llm.tokens_per_frame
    block = PromptBlock(0.0, 1.0, vt.tokens.reshape(-1, llm.hidden_size), np.repeat([0.0, 0.5], n),
                        torch.arange(n).repeat(2), llm.grid, 0)
    inputs = llm.build_prompt([block], "What is shown?")
    assert [s.length for s in inputs.visual_segments()] == [2 * n]
    ids = inputs.input_ids
    ref, _ = llm.model.model.get_rope_index(
        ids, mm_token_type_ids=(ids == llm.slot.placeholder_id).int() * 2,
        video_grid_thw=torch.tensor([[2, 8, 12]]), second_per_grid_ts=torch.tensor([0.5]))
    assert torch.equal(inputs.position_ids, ref)
    stream = llm.generate(inputs, max_new_tokens=3)
    assert "".join(stream) == stream.text and 0 < stream.stats.new_tokens <= 3
