"""Idefics3 / SmolVLM / SmolVLM2 adapter (Idefics3ForConditionalGeneration, SmolVLMForConditionalGeneration).

Each frame goes in as one image, never split: it is squared to S = ``max_image_size`` in one
antialiased resize with the processor's filter (LANCZOS on a CPU, BICUBIC elsewhere, as the
processor itself does) and normalised, on the model's device; the SigLIP tower makes (S/p)²
patches, the connector pixel-shuffles them by ``scale_factor`` and projects to d_llm, giving a
fixed (S/p/scale)² grid (8×8 = 64 tokens for SmolVLM-256M at 512²).
In the prompt a block looks like ``<fake_token_around_image><global-img><image>×n<fake_token_around_image>``,
which is how the processor writes one unsplit image.
"""

from __future__ import annotations

from typing import Any

import torch

from streamvid.imageops import interpolation, resize_normalize
from streamvid.models.base import BaseVideoLLM
from streamvid.models.registry import ModelFamily, register_family
from streamvid.prompt import VisualSlot


def preprocess(x: torch.Tensor, image_processor: Any, size: int) -> torch.Tensor:
    """uint8 [B, 3, H, W] (any device) → float32 [B, 3, size, size] there: one antialiased resize to the
    square with the processor's filter, then its normalisation.

    Equals ``image_processor(images=[[f] ...], do_image_splitting=False)["pixel_values"][:, 0]`` when
    the processor's ``size`` is {height: size, width: size} (how the adapter sets it); within two grey
    levels of the shipped setting, which first scales the long side to 2048 (tests/test_preprocess.py).
    """
    ip = image_processor
    return resize_normalize(x, (size, size), ip.image_mean, ip.image_std, interpolation(ip.resample, x.device))


class SmolVLMAdapter(BaseVideoLLM):
    family = "smolvlm"

    def __init__(self, model: Any, processor: Any, *, name: str, device: str, dtype: torch.dtype,
                 batch_size: int | None = None) -> None:
        super().__init__(model, processor, name=name, device=device, dtype=dtype, batch_size=batch_size)
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
        # One resize straight to the tower's square. The shipped default first scales the long side to
        # size["longest_edge"] = 2048 and then squares: within two grey levels of this, at far more work.
        processor.image_processor.max_image_size = {"longest_edge": self.image_size}
        processor.image_processor.size = {"height": self.image_size, "width": self.image_size}

    def pixels(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """uint8 [B, 3, H, W] on the device → pixel_values [B, 3, S, S] in the model dtype."""
        return {"pixel_values": preprocess(x, self.processor.image_processor, self.image_size).to(self.dtype)}

    def tower(self, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        """SigLIP + connector on whole frames (no padding, so no patch mask): [B, n, d_llm]."""
        inner = self.model.model
        hidden = inner.vision_model(pixel_values=inputs["pixel_values"]).last_hidden_state
        return inner.connector(hidden)


FAMILY = register_family(ModelFamily(
    name="smolvlm", adapter=SmolVLMAdapter,
    architectures=("Idefics3ForConditionalGeneration", "SmolVLMForConditionalGeneration"),
    model_types=("idefics3", "smolvlm"),
))
