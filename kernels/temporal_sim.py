"""Per-position temporal cosine + keep mask: the token drop of DyCoke / TimeChat-Online DTD.

For frames ``curr`` and ``prev`` [B, N, d] (token n of both sits at the same grid cell):
``cos[b, n] = cos(curr[b, n], prev[b, n])`` and ``keep[b, n] = cos[b, n] < tau`` (a token
that barely changed since the previous kept frame is dropped). Cosine uses
``x / max(||x||, eps)``, so a zero token has cosine 0 with everything and is kept for tau > 0.

The Triton kernel reads each pair of rows once and writes only the two [B, N] outputs.
"""

from __future__ import annotations

import math

import torch
from streamvid_kernels._dispatch import HAS_TRITON, _count_launch, select_impl

EPS = 1e-12


def _check(curr: torch.Tensor, prev: torch.Tensor, tau: float) -> None:
    if curr.dim() != 3 or curr.shape != prev.shape:
        raise ValueError(f"temporal_similarity expects curr and prev of one shape [B, N, d]; got "
                         f"{tuple(curr.shape)} and {tuple(prev.shape)}")
    if curr.device != prev.device:
        raise ValueError(f"temporal_similarity: curr is on {curr.device}, prev on {prev.device}")
    if not (curr.is_floating_point() and prev.is_floating_point()):
        raise ValueError(f"temporal_similarity expects float tensors; got {curr.dtype}, {prev.dtype}")
    if not math.isfinite(float(tau)):
        raise ValueError(f"temporal_similarity: tau must be a finite number, got {tau!r}")


def temporal_similarity_reference(
    curr: torch.Tensor, prev: torch.Tensor, tau: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Pure-torch reference. curr, prev [B, N, d] → (cos [B, N] float32, keep [B, N] bool)."""
    _check(curr, prev, tau)
    c, p = curr.float(), prev.float()
    dot = (c * p).sum(-1)
    norms = c.norm(dim=-1).clamp_min(EPS) * p.norm(dim=-1).clamp_min(EPS)
    cos = dot / norms
    return cos, cos < tau


if HAS_TRITON:
    import triton
    import triton.language as tl

    @triton.jit
    def _temporal_similarity_kernel(
        c_ptr, p_ptr, cos_ptr, keep_ptr, n_rows, n_d, sc_row, sp_row, tau,
        EPS_: tl.constexpr, BLOCK_R: tl.constexpr, BLOCK_D: tl.constexpr,
    ):
        rows = tl.program_id(0).to(tl.int64) * BLOCK_R + tl.arange(0, BLOCK_R)  # 64-bit: B*N*d may pass 2**31
        r_mask = rows < n_rows
        offs_d = tl.arange(0, BLOCK_D)
        dot = tl.zeros([BLOCK_R], dtype=tl.float32)
        c_sq = tl.zeros([BLOCK_R], dtype=tl.float32)
        p_sq = tl.zeros([BLOCK_R], dtype=tl.float32)
        for d0 in range(0, n_d, BLOCK_D):
            dd = d0 + offs_d
            mask = r_mask[:, None] & (dd[None, :] < n_d)
            c = tl.load(c_ptr + rows[:, None] * sc_row + dd[None, :], mask=mask, other=0.0).to(tl.float32)
            p = tl.load(p_ptr + rows[:, None] * sp_row + dd[None, :], mask=mask, other=0.0).to(tl.float32)
            dot += tl.sum(c * p, axis=1)
            c_sq += tl.sum(c * c, axis=1)
            p_sq += tl.sum(p * p, axis=1)
        cos = dot / (tl.maximum(tl.sqrt(c_sq), EPS_) * tl.maximum(tl.sqrt(p_sq), EPS_))
        tl.store(cos_ptr + rows, cos, mask=r_mask)
        tl.store(keep_ptr + rows, (cos < tau).to(tl.int8), mask=r_mask)


def temporal_similarity_triton(
    curr: torch.Tensor, prev: torch.Tensor, tau: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Triton kernel, same contract as :func:`temporal_similarity_reference`."""
    if not HAS_TRITON:
        raise RuntimeError("temporal_similarity_triton needs triton, which is not installed")
    _check(curr, prev, tau)
    n_batch, n_tok, n_d = curr.shape
    if prev.dtype != curr.dtype:
        prev = prev.to(curr.dtype)
    c = curr.reshape(n_batch * n_tok, n_d)
    p = prev.reshape(n_batch * n_tok, n_d)
    c = c if n_d == 0 or c.stride(-1) == 1 else c.contiguous()
    p = p if n_d == 0 or p.stride(-1) == 1 else p.contiguous()
    n_rows = c.shape[0]
    cos = torch.empty(n_rows, device=curr.device, dtype=torch.float32)
    keep = torch.empty(n_rows, device=curr.device, dtype=torch.int8)
    if n_rows:
        block_d = min(256, max(16, triton.next_power_of_2(max(n_d, 1))))
        block_r = max(1, min(64, 4096 // block_d))
        grid = (triton.cdiv(n_rows, block_r),)
        _temporal_similarity_kernel[grid](
            c, p, cos, keep, n_rows, n_d, c.stride(0), p.stride(0), float(tau),
            EPS_=EPS, BLOCK_R=block_r, BLOCK_D=block_d,
        )
        _count_launch("temporal_similarity")
    return cos.view(n_batch, n_tok), keep.view(torch.bool).view(n_batch, n_tok)


def temporal_similarity(
    curr: torch.Tensor, prev: torch.Tensor, tau: float, *, impl: str | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Cosine between same-position tokens of two frames and the keep mask ``cos < tau``.

    curr, prev: [B, N, d] (same shape and device; any float dtype)
    returns (cos [B, N] float32, keep [B, N] bool).
    ``impl``: "auto" | "triton" | "torch" (None: the STREAMVID_KERNELS env var, default auto).
    """
    if select_impl(curr, impl) == "triton":
        return temporal_similarity_triton(curr, prev, tau)
    return temporal_similarity_reference(curr, prev, tau)
