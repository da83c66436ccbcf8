"""Input checks shared by the compression functions; each failure names the argument and the cause.

Checks on shapes, dtypes and devices read only metadata and always run. Checks on the VALUES
(NaN/inf tokens, non-positive sizes) need the data on the host, which on CUDA is a synchronisation
per call (per frame on the write path), so they run only while debug checks are on:
``STREAMVID_DEBUG_CHECKS=1`` in the environment, or :func:`set_debug_checks` / :func:`debug_checks`.
"""

from __future__ import annotations

import contextlib
import math
import operator
import os
from collections.abc import Iterator
from typing import Any

import torch

from streamvid.errors import CompressionError

_debug = os.environ.get("STREAMVID_DEBUG_CHECKS", "").strip().lower() not in ("", "0", "false", "no", "off")


def debug_checks_on() -> bool:
    """Whether the value checks (which synchronise with the device) run."""
    return _debug


def set_debug_checks(on: bool) -> bool:
    """Turn the value checks on or off for the whole process; returns the previous setting."""
    global _debug
    previous, _debug = _debug, bool(on)
    return previous


@contextlib.contextmanager
def debug_checks(on: bool = True) -> Iterator[None]:
    """Value checks on (or off) inside the ``with`` block."""
    previous = set_debug_checks(on)
    try:
        yield
    finally:
        set_debug_checks(previous)


def check_tokens(name: str, x: object, ndim: int, shape_doc: str) -> torch.Tensor:
    """``x`` must be a floating-point tensor with ``ndim`` dimensions (and, under debug checks, only
    finite values)."""
    if not isinstance(x, torch.Tensor):
        raise CompressionError(f"{name} must be a torch.Tensor {shape_doc}, got {type(x).__name__}")
    if x.dim() != ndim:
        raise CompressionError(f"{name} must have shape {shape_doc}, got {tuple(x.shape)}")
    if not x.is_floating_point():
        raise CompressionError(f"{name} must be floating point, got {x.dtype}")
    # One reduction instead of an isfinite pass: any NaN/inf (or a sum overflowing float) shows up here.
    if _debug and x.numel() and not math.isfinite(float(x.sum(dtype=torch.float32))):
        raise CompressionError(f"{name} contains NaN or infinite values")
    return x


def check_same_device(**tensors: torch.Tensor | None) -> None:
    devices = {name: t.device for name, t in tensors.items() if t is not None}
    if len(set(devices.values())) > 1:
        where = ", ".join(f"{k} on {v}" for k, v in devices.items())
        raise CompressionError(f"tensors on different devices: {where}")


def check_budget(name: str, budget: Any) -> int:
    """A token budget: an int >= 1."""
    if isinstance(budget, bool):
        raise CompressionError(f"{name} must be an int >= 1, got {budget!r}")
    try:
        budget = operator.index(budget)  # int, numpy integer, 0-d integer tensor
    except TypeError:
        raise CompressionError(f"{name} must be an int >= 1, got {budget!r}") from None
    if budget < 1:
        raise CompressionError(f"{name} must be >= 1, got {budget}")
    return budget


def check_tau(name: str, tau: object) -> float:
    """A cosine threshold: any finite number (values > 1 never drop, values <= -1 always drop)."""
    try:
        value = float(tau)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise CompressionError(f"{name} must be a number, got {tau!r}") from None
    if not math.isfinite(value):
        raise CompressionError(f"{name} must be finite, got {tau!r}")
    return value


def check_sizes(name: str, sizes: torch.Tensor, shape: tuple[int, ...]) -> torch.Tensor:
    """Patch counts: a tensor of ``shape`` (under debug checks: of positive finite values); returned as float32."""
    if not isinstance(sizes, torch.Tensor) or tuple(sizes.shape) != shape:
        got = tuple(sizes.shape) if isinstance(sizes, torch.Tensor) else type(sizes).__name__
        raise CompressionError(f"{name} must have shape {shape}, got {got}")
    sizes = sizes.float()
    if _debug and sizes.numel() and not bool(((sizes > 0) & torch.isfinite(sizes)).all()):
        raise CompressionError(f"{name} must be positive and finite")
    return sizes


def check_index(name: str, index: torch.Tensor, shape: tuple[int, ...]) -> torch.Tensor:
    """An integer tensor of ``shape``; returned as int64."""
    if not isinstance(index, torch.Tensor) or tuple(index.shape) != shape:
        got = tuple(index.shape) if isinstance(index, torch.Tensor) else type(index).__name__
        raise CompressionError(f"{name} must have shape {shape}, got {got}")
    if index.is_floating_point() or index.is_complex() or index.dtype == torch.bool:
        raise CompressionError(f"{name} must be an integer tensor, got {index.dtype}")
    return index.long()
