"""LLaVA-OneVision adapter (LlavaOnevisionForConditionalGeneration).

Frames take the model's video path: the video processor resizes each to the tower's square
input, SigLIP + projector give (S/p)² tokens, and 2×2 bilinear pooling leaves a
ceil(S/p/2)² grid (14×14 = 196 for the 384² 7B model). The learned ``image_newline`` the
model appends after a video is appended after each block in the prompt.

LLaVA-OneVision's own hub chat template writes every visual item of a turn before its text, which
would separate each block from its time label; ``CHAT_TEMPLATE`` keeps the order of the content
list in the same ChatML format and replaces it on load.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch

from streamvid.imageops import interpolation, resize_normalize
from streamvid.models.base import BaseVideoLLM
from streamvid.models.registry import ModelFamily, auto_processor, register_family
from streamvid.prompt import VisualSlot

CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{% if loop.first and message['role'] != 'system' %}<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
    "{% endif %}<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}{% else %}"
    "{% for content in message['content'] %}"
    "{% if content['type'] == 'image' %}<image>{% elif content['type'] == 'video' %}<video>"
    "{% elif content['type'] == 'text' %}{{ content['text'] }}{% endif %}"
    "{% endfor %}{% endif %}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def load_processor(model_dir: str | Path, image_size: int | None = None) -> Any:
    """The folder's LLaVA-OneVision processor with ``CHAT_TEMPLATE``.

    image_size: instead build one around the folder's (Qwen2) tokenizer, with <image>/<video> added,
    for a square tower input of this many pixels (how the tiny model uses Qwen2.5-VL's files).
    """
    if image_size is None:
        processor = auto_processor(model_dir)
        processor.chat_template = CHAT_TEMPLATE
        return processor
    from transformers import AutoTokenizer, LlavaOnevisionImageProcessor, LlavaOnevisionProcessor
    from transformers.models.llava_onevision.video_processing_llava_onevision import LlavaOnevisionVideoProcessor

    tok = AutoTokenizer.from_pretrained(model_dir)
    tok.add_special_tokens({"additional_special_tokens": ["<image>", "<video>"]})
    size = {"height": image_size, "width": image_size}
    return LlavaOnevisionProcessor(
        image_processor=LlavaOnevisionImageProcessor(size=size, image_grid_pinpoints=[[image_size, image_size]]),
        tokenizer=tok, video_processor=LlavaOnevisionVideoProcessor(size=size),
        num_image_tokens=(image_size // 14) ** 2, vision_feature_select_strategy="full", chat_template=CHAT_TEMPLATE,
    )


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


FAMILY = register_family(ModelFamily(
    name="llava_onevision", adapter=LlavaOnevisionAdapter, architectures=("LlavaOnevisionForConditionalGeneration",),
    model_types=("llava_onevision",), load_processor=load_processor,
))
