"""Image operations shared by the encoders and the adapters: batched torch ops on uint8 frames,
on whatever device the frames are (see streamvid.device.upload_frames), and one short-side resize.

The resize + normalise below are the torchvision operations the Hugging Face image processors
run (``TorchvisionBackend.resize`` / ``rescale_and_normalize``), in the same order and dtype, so
the adapters' pixel values equal the processors' own (tests/test_preprocess.py states the bounds).
"""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np
import torch
import torchvision.transforms.v2.functional as tvF
from torchvision.transforms import InterpolationMode

# PIL resample codes (as stored in preprocessor_config.json) → torchvision modes.
_PIL_RESAMPLE = {0: InterpolationMode.NEAREST, 1: InterpolationMode.LANCZOS, 2: InterpolationMode.BILINEAR,
                 3: InterpolationMode.BICUBIC, 4: InterpolationMode.BOX, 5: InterpolationMode.HAMMING}
_NAMED = {"bilinear": InterpolationMode.BILINEAR, "bicubic": InterpolationMode.BICUBIC,
          "lanczos": InterpolationMode.LANCZOS, "nearest": InterpolationMode.NEAREST}


def interpolation(resample: int | str | InterpolationMode | None, device: torch.device) -> InterpolationMode:
    """A processor's ``resample`` (PIL code, name or mode) → the torchvision mode used on ``device``.

    torchvision resizes with LANCZOS on the CPU only; elsewhere BICUBIC stands in, as the Hugging
    Face processors do themselves.
    """
    if resample is None:
        mode = InterpolationMode.BILINEAR
    elif isinstance(resample, InterpolationMode):
        mode = resample
    elif isinstance(resample, str):
        mode = _NAMED[resample.lower()]
    else:
        mode = _PIL_RESAMPLE[int(resample)]
    if mode == InterpolationMode.LANCZOS and device.type != "cpu":
        return InterpolationMode.BICUBIC
    return mode


def resize_normalize(x: torch.Tensor, size: tuple[int, int], mean: Sequence[float], std: Sequence[float],
                     mode: InterpolationMode) -> torch.Tensor:
    """uint8 [B, 3, H, W] → float32 [B, 3, h, w]: antialiased resize on uint8, then (x/255 − mean)/std.

    The normalisation is fused as (x − 255·mean) / (255·std), exactly as the HF processors do it.
    """
    if tuple(x.shape[-2:]) != tuple(size):
        x = tvF.resize(x, list(size), interpolation=mode, antialias=True)
    return normalize(x, mean, std)


def normalize(x: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """uint8 [B, 3, H, W] → float32 (x/255 − mean)/std, fused as (x − 255·mean) / (255·std)."""
    m = torch.tensor(mean, dtype=torch.float32, device=x.device).view(1, -1, 1, 1) * 255.0
    s = torch.tensor(std, dtype=torch.float32, device=x.device).view(1, -1, 1, 1) * 255.0
    return x.to(torch.float32).sub_(m).div_(s)


def short_side_shape(height: int, width: int, short: int | None) -> tuple[int, int]:
    """(new_h, new_w) with the short side equal to ``short`` and the aspect ratio kept (None: unchanged)."""
    if short is None:
        return height, width
    if height <= width:
        return short, max(1, round(width * short / height))
    return max(1, round(height * short / width)), short


def resize_rgb(rgb: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """[H, W, 3] uint8 → [h, w, 3] uint8, C-contiguous: area-averaged when shrinking (cheap and
    antialiased), bilinear when enlarging; the input itself when it already has that shape."""
    h, w = shape
    if rgb.shape[:2] != (h, w):
        shrinking = h * w < rgb.shape[0] * rgb.shape[1]
        rgb = cv2.resize(rgb, (w, h), interpolation=cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR)
    return np.ascontiguousarray(rgb)


def resize_short_side(rgb: np.ndarray, short: int | None, *, enlarge: bool = True, copy: bool = False) -> np.ndarray:
    """[H, W, 3] uint8 → [h, w, 3] uint8 with its short side at ``short``, aspect kept (``resize_rgb``).

    short=None, or ``enlarge=False`` with the short side already at most ``short``: the frame as it
    is. ``copy=True``: never the input's own memory.
    """
    h, w = rgb.shape[:2]
    if short is not None and (enlarge or min(h, w) > short):
        out = resize_rgb(rgb, short_side_shape(h, w, short))
    else:
        out = np.ascontiguousarray(rgb)
    return out.copy() if copy and np.shares_memory(out, rgb) else out


REDUCED_SHORT_SIDE = 96  # reduced_copy halves while the short side stays at least this (the memory thumbnail's)


def reduced_copy(rgb: np.ndarray, min_short: int = REDUCED_SHORT_SIDE) -> np.ndarray:
    """[H, W, 3] uint8 → the frame halved, each pixel the rounded mean of a 2×2 block, as often as its
    short side stays ≥ ``min_short`` (a 720p frame → 320×180); the input itself when no halving fits.

    The small copies (the pre-gate's 64×64, the memory thumbnail) are area resizes of this copy: an
    exact halving takes OpenCV's fast area path, many times cheaper than one area resize of the full
    frame to an odd factor, and every source pixel still counts. Idempotent, so a small copy made from
    the reduced copy equals one made from the frame. An odd last row or column is left out.
    """
    while min(rgb.shape[0], rgb.shape[1]) // 2 >= min_short:
        h, w = rgb.shape[0] // 2, rgb.shape[1] // 2
        rgb = cv2.resize(rgb[: 2 * h, : 2 * w], (w, h), interpolation=cv2.INTER_AREA)
    return rgb
