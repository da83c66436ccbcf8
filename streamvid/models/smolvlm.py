"""Idefics3 / SmolVLM / SmolVLM2 adapter (Idefics3ForConditionalGeneration, SmolVLMForConditionalGeneration).

Each frame goes in as one image, never split: the processor squares it to ``max_image_size``,
the SigLIP tower makes (S/p)² patches, the connector pixel-shuffles them by ``scale_factor`` and
projects to d_llm, giving a fixed (S/p/scale)² grid (8×8 = 64 tokens for SmolVLM-256M at 512²).
In the prompt a block looks like ``<fake_token_around_image><global-img><image>×n<fake_token_around_image>``,
which is how the processor writes one unsplit image.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from streamvid.models.base import BaseVideoLLM
from streamvid.prompt import VisualSlot


class SmolVLMAdapter(BaseVideoLLM):
    family = "smolvlm"

    def __init__(self, model: Any, processor: Any, *, name: str, device: str, dtype: torch.dtype) -> None:
        super().__init__(model, processor, name=name, device=device, dtype=dtype)
        cfg = model.config
        side = cfg.vision_config.image_size // cfg.vision_config.patch_size // cfg.scale_factor
        self.grid = (side, side)
        tok = self.tokenizer
        image_id = int(cfg.image_token_id)
        fake_id = tok.convert_tokens_to_ids("<fake_token_around_image>")
        global_id = tok.convert_tokens_to_ids("<global-img>")
        self.slot = VisualSlot(marker="<image>", content_type="image", placeholder_id=image_id,
                               prefix_ids=(fake_id, global_id), suffix_ids=(fake_id,))
        stops = {tok.convert_tokens_to_ids("<end_of_utterance>"), tok.eos_token_id}
        self.stop_token_ids = {int(s) for s in stops if s is not None and s != tok.unk_token_id}
        self.image_size = int(cfg.vision_config.image_size)

    def pixel_inputs(self, frames: list[np.ndarray]) -> dict[str, torch.Tensor]:
        """The processor's output for frames as unsplit images: pixel_values [B, 1, 3, S, S] + mask."""
        out = self.processor.image_processor(
            images=[[f] for f in frames], do_image_splitting=False,
            max_image_size={"longest_edge": self.image_size}, return_tensors="pt",
        )
        return {k: v.to(self.device) for k, v in out.items() if k in ("pixel_values", "pixel_attention_mask")}

    def _encode(self, frames: list[np.ndarray]) -> torch.Tensor:
        px = self.pixel_inputs(frames)
        feats = self.model.get_image_features(
            pixel_values=px["pixel_values"].to(self.dtype), pixel_attention_mask=px.get("pixel_attention_mask"),
        ).pooler_output
        return torch.stack(list(feats))  # [B, n, d]
