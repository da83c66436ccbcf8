"""Choosing between a Triton kernel and its pure-torch reference.

``impl`` is one of ``"auto"`` (Triton for CUDA tensors when triton is installed, the torch
reference otherwise), ``"triton"`` or ``"torch"``. When a call passes ``impl=None`` the
environment variable ``STREAMVID_KERNELS`` decides (same three values; default ``"auto"``).

Under ``TRITON_INTERPRET=1`` Triton runs kernels on CPU tensors through its interpreter (slow;
used by the tests), so ``impl="triton"`` is accepted for CPU tensors only then.
"""

from __future__ import annotations

import os

import torch

try:  # triton is optional: CPU-only installs and macOS have none
    import triton  # noqa: F401
    import triton.language  # noqa: F401

    HAS_TRITON = True
except ImportError:  # pragma: no cover - depends on the install
    HAS_TRITON = False

IMPLS = ("auto", "triton", "torch")
ENV_VAR = "STREAMVID_KERNELS"


def triton_interpreted() -> bool:
    """True when Triton kernels run through the CPU interpreter (``TRITON_INTERPRET=1``)."""
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


def select_impl(x: torch.Tensor, impl: str | None = None) -> str:
    """Which implementation runs for tensor ``x``: ``"triton"`` or ``"torch"``.

    Raises ValueError for an unknown ``impl`` and RuntimeError when Triton is forced where it
    cannot run (triton missing, or CPU tensors without the interpreter).
    """
    choice = (impl if impl is not None else os.environ.get(ENV_VAR, "auto")).strip().lower()
    if choice not in IMPLS:
        source = "impl" if impl is not None else ENV_VAR
        raise ValueError(f"{source}={choice!r} is not one of {', '.join(IMPLS)}")
    if choice == "torch":
        return "torch"
    if choice == "auto":
        return "triton" if HAS_TRITON and x.is_cuda else "torch"
    if not HAS_TRITON:
        raise RuntimeError("the Triton kernel was requested but triton is not installed")
    if not x.is_cuda and not triton_interpreted():
        raise RuntimeError(
            f"the Triton kernel needs CUDA tensors (got device {x.device}); "
            "set TRITON_INTERPRET=1 before importing triton to run it on CPU"
        )
    return "triton"


def launch_counts() -> dict[str, int]:
    """How many times each Triton kernel was launched in this process (for tests and benchmarks)."""
    return dict(_LAUNCHES)


_LAUNCHES: dict[str, int] = {}


def _count_launch(name: str) -> None:
    _LAUNCHES[name] = _LAUNCHES.get(name, 0) + 1
