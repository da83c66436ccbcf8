"""Qwen2.5-VL adapter (Qwen2_5_VLForConditionalGeneration).

Each frame is resized to a fixed size (multiples of patch_size · merge_size, default 336×448)
and given to the model's own image processor as one image, so every frame has the same
(H/28)×(W/28) grid of merged tokens. In the prompt a block is a video item
``<|vision_start|><|video_pad|>×n<|vision_end|>`` and its tokens get M-RoPE (t, h, w)
positions with t from each frame's real time at ``tokens_per_second`` (see streamvid.prompt).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from PIL import Image

from streamvid.errors import ModelError
from streamvid.models.base import BaseVideoLLM
from streamvid.prompt import MRopeSpec, VisualSlot

DEFAULT_FRAME_HW = (336, 448)


class Qwen2_5_VLAdapter(BaseVideoLLM):
    family = "qwen2_5_vl"

    def __init__(self, model: Any, processor: Any, *, name: str, device: str, dtype: torch.dtype,
                 frame_hw: tuple[int, int] = DEFAULT_FRAME_HW) -> None:
        super().__init__(model, processor, name=name, device=device, dtype=dtype)
        cfg = model.config
        vc = cfg.vision_config
        unit = vc.patch_size * vc.spatial_merge_size
        h, w = frame_hw
        if h % unit or w % unit or h < unit or w < unit:
            raise ModelError(f"Qwen2.5-VL frame size {frame_hw} must be positive multiples of {unit}")
        self.frame_hw = (int(h), int(w))
        self.grid = (h // unit, w // unit)
        self.mrope = MRopeSpec(tokens_per_second=float(vc.tokens_per_second))
        self.slot = VisualSlot(marker="<|video_pad|>", content_type="video", placeholder_id=int(cfg.video_token_id))
        tok = self.tokenizer
        stops = {tok.convert_tokens_to_ids("<|im_end|>"), tok.convert_tokens_to_ids("<|endoftext|>"), tok.eos_token_id}
        self.stop_token_ids = {int(s) for s in stops if s is not None}

    def pixel_inputs(self, frames: list[np.ndarray]) -> dict[str, torch.Tensor]:
        """Processor output for frames resized to ``frame_hw``.

        pixel_values [B·patches, C·T·p·p], image_grid_thw [B, 3]
        """
        h, w = self.frame_hw
        images = [Image.fromarray(f).resize((w, h), Image.BICUBIC) for f in frames]
        out = self.processor.image_processor(images=images, return_tensors="pt")
        grid = out["image_grid_thw"]
        if not bool((grid[:, 1:] == torch.tensor([2 * self.grid[0], 2 * self.grid[1]])).all()):
            raise ModelError(f"the Qwen2.5-VL processor changed the frame grid to {grid[0].tolist()}; "
                             f"frame_hw {self.frame_hw} is outside its min/max pixels")
        return {"pixel_values": out["pixel_values"].to(self.device), "image_grid_thw": grid.to(self.device)}

    def _encode(self, frames: list[np.ndarray]) -> torch.Tensor:
        px = self.pixel_inputs(frames)
        feats = self.model.get_image_features(
            pixel_values=px["pixel_values"].to(self.dtype), image_grid_thw=px["image_grid_thw"]).pooler_output
        return torch.stack(list(feats))  # [B, n, d]
