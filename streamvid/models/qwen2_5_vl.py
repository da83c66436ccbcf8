"""Qwen2.5-VL adapter (Qwen2_5_VLForConditionalGeneration).

Each frame is resized to a fixed size (multiples of patch_size · merge_size, default 336×448)
with the processor's filter (BICUBIC, antialiased), normalised and cut into patches by the
processor's own ``patchify``, on the model's device, as one image: every frame has the same
(H/28)×(W/28) grid of merged tokens.

Why one image per frame, not two frames per temporal patch: fed as video, two consecutive frames
share one ``temporal_patch_size`` = 2 patch, so the tower runs over half the patches (half the
cost), but it returns one token grid per pair, not per frame: the pair's two frames are mixed
in the patch embedding, a frame's own tokens no longer exist, and the gate, the per-frame times
and the memory all work per frame. As an image, a frame is repeated into both temporal slots.
(Measured with scripts/bench_towers.py --qwen-video: pairs take 0.33–0.5× the time of images for
the same frames, and return half as many token grids.)

In the prompt a block is a video item ``<|vision_start|><|video_pad|>×n<|vision_end|>`` and its
tokens get M-RoPE (t, h, w) positions with t from each frame's real time at ``tokens_per_second``
(see streamvid.prompt).
"""

from __future__ import annotations

from typing import Any

import torch

from streamvid.errors import ModelError
from streamvid.imageops import interpolation, resize_normalize
from streamvid.models.base import BaseVideoLLM
from streamvid.models.registry import ModelFamily, register_family
from streamvid.prompt import MRopeSpec, VisualSlot

DEFAULT_FRAME_HW = (336, 448)


def preprocess(x: torch.Tensor, image_processor: Any, frame_hw: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
    """uint8 [B, 3, H, W] (any device) → (pixel_values float32 [B·gh·gw, C·T·p·p], image_grid_thw long [B, 3]),
    both on x's device (gh, gw: frame_hw // patch_size).

    The frames are resized to ``frame_hw`` (antialiased, the processor's filter), normalised and cut
    into patches by the processor's own ``patchify``: equal to the processor's output for the frames
    at ``frame_hw``.
    """
    ip = image_processor
    px = resize_normalize(x, frame_hw, ip.image_mean, ip.image_std, interpolation(ip.resample, x.device))
    patches, gh, gw = ip.patchify(px, patch_size=ip.patch_size, merge_size=ip.merge_size,
                                  temporal_patch_size=ip.temporal_patch_size)
    grid = torch.tensor([[1, gh, gw]], dtype=torch.long).expand(x.shape[0], 3)
    return patches.reshape(-1, patches.shape[-1]), grid.to(x.device, non_blocking=True)


class Qwen2_5_VLAdapter(BaseVideoLLM):
    family = "qwen2_5_vl"

    def __init__(self, model: Any, processor: Any, *, name: str, device: str, dtype: torch.dtype,
                 frame_hw: tuple[int, int] = DEFAULT_FRAME_HW, batch_size: int | None = None) -> None:
        super().__init__(model, processor, name=name, device=device, dtype=dtype, batch_size=batch_size)
        cfg = model.config
        vc = cfg.vision_config
        unit = vc.patch_size * vc.spatial_merge_size
        h, w = frame_hw
        if h % unit or w % unit or h < unit or w < unit:
            raise ModelError(f"Qwen2.5-VL frame size {frame_hw} must be positive multiples of {unit}")
        from transformers.models.qwen2_vl.image_processing_qwen2_vl import smart_resize

        ip = processor.image_processor
        if smart_resize(h, w, unit, ip.size["shortest_edge"], ip.size["longest_edge"]) != (h, w):
            raise ModelError(f"Qwen2.5-VL frame size {frame_hw} is outside the processor's min/max pixels")
        self.frame_hw = (int(h), int(w))
        self.grid = (h // unit, w // unit)
        self.mrope = MRopeSpec(tokens_per_second=float(vc.tokens_per_second))
        self._layouts: dict[int, dict[str, Any]] = {}
        self.slot = VisualSlot(marker="<|video_pad|>", content_type="video", placeholder_id=int(cfg.video_token_id))
        tok = self.tokenizer
        stops = {tok.convert_tokens_to_ids("<|im_end|>"), tok.convert_tokens_to_ids("<|endoftext|>"), tok.eos_token_id}
        self.stop_token_ids = {int(s) for s in stops if s is not None}

    def pixels(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """uint8 [B, 3, H, W] on the device → pixel_values [B·gh·gw, C·T·p·p] (model dtype), image_grid_thw [B, 3]."""
        patches, grid = preprocess(x, self.processor.image_processor, self.frame_hw)
        return {"pixel_values": patches.to(self.dtype), "image_grid_thw": grid}

    def tower(self, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        """The vision tower + merger: [B, n, d_llm]."""
        grid = inputs["image_grid_thw"]
        b = grid.shape[0]
        out = self.model.model.visual(inputs["pixel_values"], grid_thw=grid, **self._tower_layout(b)).pooler_output
        return out.reshape(b, -1, out.shape[-1])

    def _tower_layout(self, b: int) -> dict[str, Any]:
        """The tower's rotary positions, window order and sequence bounds for B frames of the fixed grid.

        Transformers computes these per call with a Python loop and host syncs per image; the grid never
        changes here, so they are computed once per batch size, kept on the device, and handed to the
        tower as its precomputed kwargs (transformers.vision_utils pops them)."""
        if b not in self._layouts:
            from transformers.utils.generic import get_max_seqlen
            from transformers.vision_utils import (
                get_vision_attention_seqlens,
                get_vision_position_ids,
                get_vision_window_index,
            )

            visual = self.model.model.visual
            grid = torch.tensor([[1, 2 * self.grid[0], 2 * self.grid[1]]] * b, dtype=torch.long)
            cu, max_len = get_vision_attention_seqlens(grid, visual.config)
            window_index, cu_window = get_vision_window_index(
                grid, spatial_merge_size=visual.spatial_merge_size, window_size=visual.window_size,
                patch_size=visual.patch_size)
            layout = {"position_ids": get_vision_position_ids(grid, visual.spatial_merge_size), "cu_seqlens": cu,
                      "window_index": window_index, "cu_window_seqlens": cu_window}
            layout = {k: v.to(self.device) for k, v in layout.items()}
            layout["max_seqlen"] = max_len if max_len is not None else int((cu[1:] - cu[:-1]).max())
            window_max = get_max_seqlen(cu_window, visual.config, kwarg_name="max_window_seqlen")
            layout["max_window_seqlen"] = (window_max if window_max is not None
                                           else int((cu_window[1:] - cu_window[:-1]).max()))
            self._layouts[b] = layout
        return dict(self._layouts[b])  # the tower pops what it uses


FAMILY = register_family(ModelFamily(
    name="qwen2_5_vl", adapter=Qwen2_5_VLAdapter, architectures=("Qwen2_5_VLForConditionalGeneration",),
    model_types=("qwen2_5_vl",), adapter_options=("frame_hw",),
))
