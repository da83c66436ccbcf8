"""LLaVA-OneVision adapter (LlavaOnevisionForConditionalGeneration).

Frames take the model's video path: the video processor resizes each to the tower's square
input, SigLIP + projector give (S/p)² tokens, and 2×2 bilinear pooling leaves a
ceil(S/p/2)² grid (14×14 = 196 for the 384² 7B model). The learned ``image_newline`` the
model appends after a video is appended after each block in the prompt.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from streamvid.imageops import interpolation, resize_normalize
from streamvid.models.base import BaseVideoLLM
from streamvid.prompt import VisualSlot


def preprocess(x: torch.Tensor, video_processor: Any) -> torch.Tensor:
    """uint8 [B, 3, H, W] (any device) → float32 [B, 3, S, S] there: the video processor's resize (its
    filter, antialiased) and normalisation; equal to its output with each frame as a 1-frame video."""
    vp = video_processor
    size = (int(vp.size["height"]), int(vp.size["width"]))
    return resize_normalize(x, size, vp.image_mean, vp.image_std, interpolation(vp.resample, x.device))


class LlavaOnevisionAdapter(BaseVideoLLM):
    family = "llava_onevision"

    def __init__(self, model: Any, processor: Any, *, name: str, device: str, dtype: torch.dtype,
                 batch_size: int | None = None) -> None:
        super().__init__(model, processor, name=name, device=device, dtype=dtype, batch_size=batch_size)
        cfg = model.config
        side = math.ceil(cfg.vision_config.image_size / cfg.vision_config.patch_size / 2)
        self.grid = (side, side)
        newline = model.model.image_newline.detach()[None]  # [1, d]
        self.slot = VisualSlot(marker="<video>", content_type="video", placeholder_id=int(cfg.video_token_id),
                               trailing=newline)
        tok = self.tokenizer
        stops = {tok.convert_tokens_to_ids("<|im_end|>"), tok.convert_tokens_to_ids("<|endoftext|>"), tok.eos_token_id}
        self.stop_token_ids = {int(s) for s in stops if s is not None and s != tok.unk_token_id}

    def pixels(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """uint8 [B, 3, H, W] on the device → pixel_values_videos [B, 1, 3, S, S] in the model dtype."""
        return {"pixel_values_videos": preprocess(x, self.processor.video_processor)[:, None].to(self.dtype)}

    def tower(self, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        """SigLIP + projector + 2×2 pooling, each frame a 1-frame video: [B, n, d_llm]."""
        feats = self.model.get_video_features(pixel_values_videos=inputs["pixel_values_videos"]).pooler_output
        return feats[:, :-1]  # drop the per-video image_newline; the prompt adds one per block
