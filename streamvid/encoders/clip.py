"""The open_clip retrieval encoder: frames and text questions → L2-normalised keys in one space.

Keys are what memory searches (frame gate, segmentation, text → event lookup); the Video-LLM's
own vision tokens are a separate thing. Frames are preprocessed as open_clip's own eval transform
does (resize the shortest side, centre crop, normalise with the model's mean/std), but with
torchvision v2 on batched uint8 tensors on the encoder's device, no PIL (``encode_batch``).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import torchvision.transforms.v2.functional as tvF
from huggingface_hub import constants
from torchvision.transforms import InterpolationMode

from streamvid.device import default_batch_size, frame_batches, resolve_dtype, upload_frames
from streamvid.errors import ModelError
from streamvid.hub import cached_hub_file, hub_reachable
from streamvid.imageops import normalize
from streamvid.tensorops import l2_normalise

# A tiny CLIP for the tiny-random preset: real open_clip architecture, random seeded weights.
# The text tower keeps open_clip's BPE vocabulary (49408) so open_clip's own tokenizer works.
TINY_CLIP_CONFIG: dict = {
    "embed_dim": 64,
    "vision_cfg": {"image_size": 64, "layers": 2, "width": 64, "head_width": 32, "patch_size": 16},
    "text_cfg": {"context_length": 32, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 2},
}

_PRECISION = {torch.float32: "fp32", torch.float16: "fp16", torch.bfloat16: "bf16"}


def _resolve_pretrained(model_name: str, pretrained: str) -> tuple[str, dict]:
    """Turn an open_clip tag into a local checkpoint path without hanging when offline.

    Returns (checkpoint path or tag for open_clip to download, the tag's preprocess settings).
    Raises ModelError naming the model and how to get it when it cannot be had.
    """
    import open_clip

    if os.path.isfile(pretrained):
        return pretrained, {}
    tag_cfg = open_clip.get_pretrained_cfg(model_name, pretrained)
    if not tag_cfg:
        tags = open_clip.list_pretrained_tags_by_model(model_name)
        raise ModelError(
            f"open_clip model {model_name!r}: {pretrained!r} is neither a known pretrained tag nor a file; "
            f"known tags: {', '.join(tags) or 'none'}"
        )
    preprocess = {k: tag_cfg[k] for k in ("mean", "std", "interpolation", "resize_mode") if k in tag_cfg}
    hub = tag_cfg.get("hf_hub", "")
    how = (
        f"download it once with network access (python -c \"import open_clip; "
        f"open_clip.create_model_and_transforms('{model_name}', pretrained='{pretrained}')\"), "
        f"or pass a local checkpoint path as the pretrained value"
    )
    if hub:
        repo_id, filename = os.path.split(hub)
        names = [filename] if filename else ["open_clip_model.safetensors", "open_clip_pytorch_model.bin"]
        cached = cached_hub_file(repo_id, names)
        if cached is not None:
            return cached, preprocess
        where = f"Hugging Face repo {repo_id}"
    else:
        where = tag_cfg.get("url", "its download URL")
    if constants.HF_HUB_OFFLINE:
        raise ModelError(
            f"open_clip weights {model_name}/{pretrained} ({where}) are not in the local cache and "
            f"HF_HUB_OFFLINE is set; {how}"
        )
    if hub and not hub_reachable():
        raise ModelError(
            f"open_clip weights {model_name}/{pretrained} ({where}) are not in the local cache and the hub "
            f"cannot be reached; {how}"
        )
    return pretrained, preprocess


def preprocess_frames(rgb: torch.Tensor, size: int, mean: Sequence[float], std: Sequence[float],
                      interpolation: str = "bicubic", resize_mode: str = "shortest") -> torch.Tensor:
    """open_clip's eval transform on a batch, on the frames' device.

    rgb: uint8 [B, H, W, 3] → float32 [B, 3, size, size]: the shortest side resized to ``size``
    (antialiased, on uint8) and centre-cropped ("shortest"), or both sides to ``size`` ("squash");
    then (x/255 − mean)/std.
    """
    if resize_mode not in ("shortest", "squash"):
        raise ModelError(f"open_clip resize_mode {resize_mode!r} is not supported; use 'shortest' or 'squash'")
    x = rgb.permute(0, 3, 1, 2)
    mode = InterpolationMode.BILINEAR if interpolation == "bilinear" else InterpolationMode.BICUBIC
    if resize_mode == "squash":
        x = tvF.resize(x, [size, size], interpolation=mode, antialias=True)
    else:
        if min(x.shape[-2:]) != size:
            x = tvF.resize(x, [size], interpolation=mode, antialias=True)
        x = tvF.center_crop(x, [size, size])
    return normalize(x, mean, std)


class RetrievalEncoder:
    """open_clip image/text encoder producing L2-normalised retrieval keys of size ``dim``.

    model_name: an open_clip architecture ("ViT-B-32", …) or "tiny" for a seeded random tiny CLIP.
    pretrained: an open_clip tag, a local checkpoint path, or "" for random (seeded) weights.
    """

    def __init__(
        self,
        model_name: str = "ViT-B-32",
        pretrained: str = "laion2b_s34b_b79k",
        device: str = "cpu",
        dtype: str = "float32",
        seed: int = 0,
        batch_size: int | None = None,
    ) -> None:
        import open_clip

        self.model_name = model_name
        self.pretrained = pretrained
        self.device = torch.device(device)
        self.dtype = resolve_dtype(dtype, self.device)
        self.batch_size = int(batch_size) if batch_size else default_batch_size(self.device)

        base, overrides, context_length = model_name, {}, None
        if model_name == "tiny":
            if pretrained and not os.path.isfile(pretrained):
                raise ModelError(f"the tiny CLIP has no pretrained tags; got pretrained={pretrained!r}")
            base, overrides = "ViT-B-32", dict(TINY_CLIP_CONFIG)
            context_length = TINY_CLIP_CONFIG["text_cfg"]["context_length"]
        elif model_name not in open_clip.list_models():
            raise ModelError(
                f"unknown open_clip model {model_name!r}; use 'tiny' or one of open_clip.list_models()"
            )

        checkpoint, tag_preprocess = (None, {})
        if pretrained:
            checkpoint, tag_preprocess = _resolve_pretrained(base, pretrained)
        forks = [self.device] if self.device.type == "cuda" else []
        with torch.random.fork_rng(devices=forks):
            torch.manual_seed(seed)
            try:
                model, _, _ = open_clip.create_model_and_transforms(
                    base,
                    pretrained=checkpoint,
                    precision=_PRECISION[self.dtype],
                    device=self.device,
                    image_mean=tag_preprocess.get("mean"),
                    image_std=tag_preprocess.get("std"),
                    image_interpolation=tag_preprocess.get("interpolation"),
                    image_resize_mode=tag_preprocess.get("resize_mode"),
                    **overrides,
                )
            except ModelError:
                raise
            except Exception as exc:  # open_clip raises RuntimeError/FileNotFoundError/KeyError
                raise ModelError(
                    f"cannot build open_clip model {model_name!r} with pretrained={pretrained!r}: {exc}"
                ) from exc
        model.eval()
        self.model = model
        self.tokenizer = open_clip.get_tokenizer(base, context_length=context_length)
        cfg = open_clip.get_model_preprocess_cfg(model)
        size = cfg["size"]
        self.image_size = int(size if isinstance(size, int) else size[0])
        self.mean = tuple(float(v) for v in cfg["mean"])
        self.std = tuple(float(v) for v in cfg["std"])
        self.interpolation = str(cfg.get("interpolation", "bicubic"))
        self.resize_mode = str(cfg.get("resize_mode") or "shortest")
        self.dim = int(overrides.get("embed_dim") or open_clip.get_model_config(base)["embed_dim"])

    @torch.inference_mode()
    def encode_batch(self, frames: torch.Tensor | np.ndarray | Sequence[np.ndarray]) -> torch.Tensor:
        """uint8 RGB frames [B, H, W, 3] (torch on the CPU, pinned or on the device; numpy; or a list of
        same-sized [H, W, 3]) → keys [B, dim] float32 on the encoder's device, unit norm.

        Upload (pinned, non-blocking on CUDA), preprocessing and the image tower all run on the
        encoder's device, ``batch_size`` frames per tower call; nothing waits on the device."""
        x = upload_frames(frames, self.device)
        keys = []
        for i in range(0, x.shape[0], self.batch_size):
            px = preprocess_frames(x[i : i + self.batch_size], self.image_size, self.mean, self.std,
                                   self.interpolation, self.resize_mode)
            keys.append(l2_normalise(self.model.encode_image(px.to(self.dtype)).float()))
        return keys[0] if len(keys) == 1 else torch.cat(keys)

    def encode_frames(self, rgb: torch.Tensor | np.ndarray | Sequence[np.ndarray]) -> torch.Tensor:
        """RGB uint8 frames [B, H, W, 3] (or a list of [H, W, 3], sizes may differ) → keys [B, dim]
        float32 on CPU, unit norm."""
        try:
            runs = frame_batches(rgb)
        except ModelError as err:
            raise ModelError(f"encode_frames expects uint8 RGB frames [B, H, W, 3] or [H, W, 3]: {err}") from None
        return torch.cat([self.encode_batch(run).cpu() for run in runs])

    @torch.inference_mode()
    def encode_text(self, texts: Sequence[str]) -> torch.Tensor:
        """Texts → keys [B, dim] float32 on CPU, unit norm."""
        if isinstance(texts, str) or not all(isinstance(t, str) for t in texts):
            raise ModelError("encode_text expects a list of strings")
        keys = []
        for i in range(0, len(texts), self.batch_size):
            tokens = self.tokenizer(list(texts[i : i + self.batch_size])).to(self.device)
            keys.append(l2_normalise(self.model.encode_text(tokens).float()).cpu())
        if not keys:
            return torch.zeros(0, self.dim)
        return torch.cat(keys)

    def __repr__(self) -> str:
        source = self.pretrained or "random init"
        return f"RetrievalEncoder({self.model_name}, {Path(source).name if source else source}, dim={self.dim})"
