"""LLaVA-OneVision adapter (LlavaOnevisionForConditionalGeneration).

Frames take the model's video path: the video processor resizes each to the tower's square
input, SigLIP + projector give (S/p)² tokens, and 2×2 bilinear pooling leaves a
ceil(S/p/2)² grid (14×14 = 196 for the 384² 7B model). The learned ``image_newline`` the
model appends after a video is appended after each block in the prompt.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

from streamvid.models.base import BaseVideoLLM
from streamvid.prompt import VisualSlot


class LlavaOnevisionAdapter(BaseVideoLLM):
    family = "llava_onevision"

    def __init__(self, model: Any, processor: Any, *, name: str, device: str, dtype: torch.dtype) -> None:
        super().__init__(model, processor, name=name, device=device, dtype=dtype)
        cfg = model.config
        side = math.ceil(cfg.vision_config.image_size / cfg.vision_config.patch_size / 2)
        self.grid = (side, side)
        newline = model.model.image_newline.detach()[None]  # [1, d]
        self.slot = VisualSlot(marker="<video>", content_type="video", placeholder_id=int(cfg.video_token_id),
                               trailing=newline)
        tok = self.tokenizer
        stops = {tok.convert_tokens_to_ids("<|im_end|>"), tok.convert_tokens_to_ids("<|endoftext|>"), tok.eos_token_id}
        self.stop_token_ids = {int(s) for s in stops if s is not None and s != tok.unk_token_id}

    def pixel_inputs(self, frames: list[np.ndarray]) -> dict[str, torch.Tensor]:
        """Video-processor output with each frame as a 1-frame video: pixel_values_videos [B, 1, 3, S, S]."""
        out = self.processor.video_processor(videos=[f[None] for f in frames], return_tensors="pt")
        return {"pixel_values_videos": out["pixel_values_videos"].to(self.device)}

    def _encode(self, frames: list[np.ndarray]) -> torch.Tensor:
        px = self.pixel_inputs(frames)["pixel_values_videos"].to(self.dtype)
        feats = self.model.get_video_features(pixel_values_videos=px).pooler_output  # [B, n + 1, d]
        return feats[:, :-1]  # drop the per-video image_newline; the prompt adds one per block
