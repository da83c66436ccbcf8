"""Small numeric helpers used across the engine."""

from __future__ import annotations

from typing import TypeVar

import numpy as np
import torch
import torch.nn.functional as F

EPS = 1e-12
Array = TypeVar("Array", np.ndarray, torch.Tensor)


def l2_normalise(x: Array, eps: float = EPS) -> Array:
    """Unit L2 norm along the last axis: x / max(‖x‖, eps); a zero vector stays zero.

    torch [..., k] → the same dtype and device; numpy (or anything array-like) [..., k] → float32 numpy.
    """
    if isinstance(x, torch.Tensor):
        return F.normalize(x, dim=-1, eps=eps)
    x = np.asarray(x, dtype=np.float32)
    norm = np.linalg.norm(x, axis=-1, keepdims=True)
    return np.ascontiguousarray(x / np.maximum(norm, eps), dtype=np.float32)
