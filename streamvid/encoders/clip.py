"""The open_clip retrieval encoder: frames and text questions → L2-normalised keys in one space.

Keys are what memory searches (frame gate, segmentation, text → event lookup); the Video-LLM's
own vision tokens are a separate thing. Frames are preprocessed with torch on the uint8 array
(resize shortest side, centre crop, normalise with the model's mean/std), batched, no PIL.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from streamvid.errors import ModelError
from streamvid.hub import cached_hub_file, hub_offline, hub_reachable

# A tiny CLIP for the tiny-random preset: real open_clip architecture, random seeded weights.
# The text tower keeps open_clip's BPE vocabulary (49408) so open_clip's own tokenizer works.
TINY_CLIP_CONFIG: dict = {
    "embed_dim": 64,
    "vision_cfg": {"image_size": 64, "layers": 2, "width": 64, "head_width": 32, "patch_size": 16},
    "text_cfg": {"context_length": 32, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 2},
}

_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
_PRECISION = {"float32": "fp32", "float16": "fp16", "bfloat16": "bf16"}


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
    if hub_offline():
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


def preprocess_frames(
    rgb: torch.Tensor, size: int, mean: Sequence[float], std: Sequence[float], interpolation: str = "bicubic"
) -> torch.Tensor:
    """Resize the shortest side to ``size``, centre-crop to size×size and normalise.

    rgb: [B, H, W, 3] uint8 → returns [B, 3, size, size] float32.
    """
    x = rgb.permute(0, 3, 1, 2).float().div_(255.0)
    h, w = x.shape[-2:]
    scale = size / min(h, w)
    new_h, new_w = max(size, round(h * scale)), max(size, round(w * scale))
    if (new_h, new_w) != (h, w):
        mode = interpolation if interpolation in ("bilinear", "bicubic") else "bilinear"
        x = F.interpolate(x, size=(new_h, new_w), mode=mode, align_corners=False, antialias=True)
        x = x.clamp_(0.0, 1.0)
    top, left = (new_h - size) // 2, (new_w - size) // 2
    x = x[:, :, top : top + size, left : left + size]
    mean_t = torch.tensor(mean, dtype=x.dtype).view(1, 3, 1, 1)
    std_t = torch.tensor(std, dtype=x.dtype).view(1, 3, 1, 1)
    return (x - mean_t) / std_t


def shrink_short_side(rgb: np.ndarray, size: int) -> np.ndarray:
    """[H, W, 3] uint8 → the same with its short side at ``size`` (area-averaged), when it is larger.

    Area averaging on uint8 is cheap and antialiased, so a 1080p frame costs what a 224p one does
    in the float resize that follows."""
    h, w = rgb.shape[:2]
    if min(h, w) <= size:
        return rgb
    scale = size / min(h, w)
    return cv2.resize(rgb, (max(size, round(w * scale)), max(size, round(h * scale))), interpolation=cv2.INTER_AREA)


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
        batch_size: int = 32,
    ) -> None:
        import open_clip

        if dtype not in _DTYPES:
            raise ModelError(f"unsupported dtype {dtype!r} for the retrieval encoder; use one of {list(_DTYPES)}")
        self.model_name = model_name
        self.pretrained = pretrained
        self.device = torch.device(device)
        self.dtype = _DTYPES[dtype]
        self.batch_size = batch_size

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
                    precision=_PRECISION[dtype],
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
        self.dim = int(overrides.get("embed_dim") or open_clip.get_model_config(base)["embed_dim"])

    def _as_batches(self, rgb: np.ndarray | Sequence[np.ndarray]) -> list[np.ndarray]:
        """Group frames into same-shaped [b, H, W, 3] uint8 arrays of at most batch_size."""
        if isinstance(rgb, np.ndarray):
            if rgb.ndim == 3:
                rgb = rgb[None]
            frames = [rgb]
        else:
            frames = [np.asarray(f)[None] for f in rgb]
        for f in frames:
            if f.ndim != 4 or f.shape[-1] != 3 or f.dtype != np.uint8:
                raise ModelError(
                    f"encode_frames expects uint8 RGB frames shaped [B, H, W, 3] or [H, W, 3]; "
                    f"got dtype {f.dtype} shape {tuple(f.shape)}"
                )
        frames = [np.stack([shrink_short_side(x, self.image_size) for x in f]) if min(f.shape[1:3]) > self.image_size
                  else f for f in frames]
        batches: list[np.ndarray] = []
        run: list[np.ndarray] = []
        for f in frames:
            if run and run[0].shape[1:] != f.shape[1:]:
                batches.append(np.concatenate(run))
                run = []
            run.append(f)
        if run:
            batches.append(np.concatenate(run))
        out: list[np.ndarray] = []
        for b in batches:
            out.extend(b[i : i + self.batch_size] for i in range(0, len(b), self.batch_size))
        return out

    @torch.inference_mode()
    def encode_frames(self, rgb: np.ndarray | Sequence[np.ndarray]) -> torch.Tensor:
        """RGB uint8 frames [B, H, W, 3] (or a list of [H, W, 3]) → keys [B, dim] float32 on CPU, unit norm."""
        keys = []
        for batch in self._as_batches(rgb):
            if batch.shape[0] == 0:
                continue
            x = preprocess_frames(torch.from_numpy(np.ascontiguousarray(batch)), self.image_size, self.mean,
                                  self.std, self.interpolation)
            feats = self.model.encode_image(x.to(self.device, self.dtype))
            keys.append(F.normalize(feats.float(), dim=-1).cpu())
        if not keys:
            return torch.zeros(0, self.dim)
        return torch.cat(keys)

    @torch.inference_mode()
    def encode_text(self, texts: Sequence[str]) -> torch.Tensor:
        """Texts → keys [B, dim] float32 on CPU, unit norm."""
        if isinstance(texts, str) or not all(isinstance(t, str) for t in texts):
            raise ModelError("encode_text expects a list of strings")
        keys = []
        for i in range(0, len(texts), self.batch_size):
            tokens = self.tokenizer(list(texts[i : i + self.batch_size])).to(self.device)
            feats = self.model.encode_text(tokens)
            keys.append(F.normalize(feats.float(), dim=-1).cpu())
        if not keys:
            return torch.zeros(0, self.dim)
        return torch.cat(keys)

    def __repr__(self) -> str:
        source = self.pretrained or "random init"
        return f"RetrievalEncoder({self.model_name}, {Path(source).name if source else source}, dim={self.dim})"
