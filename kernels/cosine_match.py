"""Pairwise cosine similarity + row argmax: the matching step of bipartite token merging.

For every row of ``a`` [B, Na, c] find the most similar row of ``b`` [B, Nb, c] by cosine:
``score[b, i] = max_j cos(a[b, i], b[b, j])`` and ``index[b, i]`` the first ``j`` reaching it.
Cosine uses ``x / max(||x||, eps)`` (as ``torch.nn.functional.normalize``), so a zero row has
cosine 0 with everything.

The Triton kernel never writes the [B, Na, Nb] score matrix: each program holds a block of
``a`` rows, streams ``b`` in blocks, and keeps a running max/argmax per row.
"""

from __future__ import annotations

import torch
from streamvid_kernels._dispatch import HAS_TRITON, _count_launch, select_impl, triton_interpreted

EPS = 1e-12


def _check(a: torch.Tensor, b: torch.Tensor) -> None:
    if a.dim() != 3 or b.dim() != 3:
        raise ValueError(f"cosine_argmax expects a [B, Na, c] and b [B, Nb, c]; got {tuple(a.shape)} and "
                         f"{tuple(b.shape)}")
    if a.shape[0] != b.shape[0] or a.shape[2] != b.shape[2]:
        raise ValueError(f"cosine_argmax: batch/channel sizes differ: a {tuple(a.shape)}, b {tuple(b.shape)}")
    if b.shape[1] == 0 and a.shape[1] > 0:
        raise ValueError("cosine_argmax: b has no rows to match against")
    if a.device != b.device:
        raise ValueError(f"cosine_argmax: a is on {a.device}, b on {b.device}")
    if not (a.is_floating_point() and b.is_floating_point()):
        raise ValueError(f"cosine_argmax expects floating-point tensors; got {a.dtype} and {b.dtype}")


def cosine_argmax_reference(a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Pure-torch reference. a [B, Na, c], b [B, Nb, c] → (score [B, Na] float32, index [B, Na] int64).

    Computes in float32 and materialises the [B, Na, Nb] cosine matrix.
    """
    _check(a, b)
    an = torch.nn.functional.normalize(a.float(), dim=-1, eps=EPS)
    bn = torch.nn.functional.normalize(b.float(), dim=-1, eps=EPS)
    scores = an @ bn.transpose(-1, -2)
    if scores.shape[-1] == 0:
        empty = scores.new_zeros(scores.shape[:-1])
        return empty, empty.long()
    index = scores.argmax(dim=-1)  # documented to return the first maximal index
    return scores.gather(-1, index[..., None]).squeeze(-1), index


if HAS_TRITON:
    import triton
    import triton.language as tl

    @triton.jit
    def _cosine_argmax_kernel(
        a_ptr, b_ptr, score_ptr, index_ptr,
        n_a, n_b, n_c,
        sa_b, sa_n, sa_c, sb_b, sb_n, sb_c, so_b, so_n,
        EPS_: tl.constexpr, PRECISION: tl.constexpr, UPCAST: tl.constexpr,
        BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
    ):
        pid_m = tl.program_id(0)
        pid_b = tl.program_id(1).to(tl.int64)  # 64-bit offsets: B * N * c may pass 2**31
        offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
        offs_k = tl.arange(0, BLOCK_K)
        m_mask = offs_m < n_a
        a_base = a_ptr + pid_b * sa_b + offs_m[:, None].to(tl.int64) * sa_n
        b_base = b_ptr + pid_b * sb_b

        # Norms of this block's a rows, once.
        a_sq = tl.zeros([BLOCK_M], dtype=tl.float32)
        for k0 in range(0, n_c, BLOCK_K):
            kk = k0 + offs_k
            a = tl.load(a_base + kk[None, :] * sa_c, mask=m_mask[:, None] & (kk[None, :] < n_c), other=0.0)
            a = a.to(tl.float32)
            a_sq += tl.sum(a * a, axis=1)
        a_inv = 1.0 / tl.maximum(tl.sqrt(a_sq), EPS_)

        best = tl.full([BLOCK_M], float("-inf"), dtype=tl.float32)
        best_idx = tl.zeros([BLOCK_M], dtype=tl.int32)
        for n0 in range(0, n_b, BLOCK_N):
            offs_n = n0 + tl.arange(0, BLOCK_N)
            n_mask = offs_n < n_b
            acc = tl.zeros([BLOCK_M, BLOCK_N], dtype=tl.float32)
            b_sq = tl.zeros([BLOCK_N], dtype=tl.float32)
            for k0 in range(0, n_c, BLOCK_K):
                kk = k0 + offs_k
                k_mask = kk < n_c
                a = tl.load(a_base + kk[None, :] * sa_c, mask=m_mask[:, None] & k_mask[None, :], other=0.0)
                # b loaded transposed: [BLOCK_K, BLOCK_N]
                bt = tl.load(b_base + offs_n[None, :] * sb_n + kk[:, None] * sb_c,
                             mask=n_mask[None, :] & k_mask[:, None], other=0.0)
                if UPCAST:
                    a = a.to(tl.float32)
                    bt = bt.to(tl.float32)
                acc = tl.dot(a, bt, acc, input_precision=PRECISION)
                btf = bt.to(tl.float32)
                b_sq += tl.sum(btf * btf, axis=0)
            b_inv = 1.0 / tl.maximum(tl.sqrt(b_sq), EPS_)
            cos = acc * a_inv[:, None] * b_inv[None, :]
            cos = tl.where(n_mask[None, :], cos, float("-inf"))
            blk_best = tl.max(cos, axis=1)
            blk_idx = tl.argmax(cos, axis=1).to(tl.int32) + n0
            better = blk_best > best  # strict: an earlier block wins ties, as torch.argmax does
            best = tl.where(better, blk_best, best)
            best_idx = tl.where(better, blk_idx, best_idx)

        out = pid_b * so_b + offs_m * so_n
        tl.store(score_ptr + out, best, mask=m_mask)
        tl.store(index_ptr + out, best_idx.to(tl.int64), mask=m_mask)


def cosine_argmax_triton(a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Triton kernel, same contract as :func:`cosine_argmax_reference`. Any strides are accepted."""
    if not HAS_TRITON:
        raise RuntimeError("cosine_argmax_triton needs triton, which is not installed")
    _check(a, b)
    if b.dtype != a.dtype:
        b = b.to(a.dtype)
    if a.dtype not in (torch.float16, torch.bfloat16, torch.float32):
        a, b = a.float(), b.float()
    n_batch, n_a, n_c = a.shape
    n_b = b.shape[1]
    score = torch.empty((n_batch, n_a), device=a.device, dtype=torch.float32)
    index = torch.empty((n_batch, n_a), device=a.device, dtype=torch.int64)
    if n_batch == 0 or n_a == 0:
        return score, index
    # tl.dot needs every block dimension >= 16; fp32 blocks are kept smaller to fit shared memory.
    block_k = 32 if a.dtype == torch.float32 else 64
    block_m = 64 if n_a > 32 else (32 if n_a > 16 else 16)
    block_n = 64 if n_b > 32 else (32 if n_b > 16 else 16)
    # Triton's CPU interpreter computes bf16 dots wrongly, so there the tiles go to fp32 first.
    upcast = triton_interpreted() and a.dtype == torch.bfloat16
    precision = "ieee" if a.dtype == torch.float32 or upcast else None  # None: Triton's default for 16-bit
    grid = (triton.cdiv(n_a, block_m), n_batch)
    _cosine_argmax_kernel[grid](
        a, b, score, index, n_a, n_b, n_c,
        a.stride(0), a.stride(1), a.stride(2), b.stride(0), b.stride(1), b.stride(2),
        score.stride(0), score.stride(1),
        EPS_=EPS, PRECISION=precision, UPCAST=upcast, BLOCK_M=block_m, BLOCK_N=block_n, BLOCK_K=block_k,
    )
    _count_launch("cosine_argmax")
    return score, index


def cosine_argmax(
    a: torch.Tensor, b: torch.Tensor, *, impl: str | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Best cosine match in ``b`` for every row of ``a``, per batch item.

    a: [B, Na, c], b: [B, Nb, c] (same device; any float dtype; any strides)
    returns (score [B, Na] float32, index [B, Na] int64 into Nb); ties go to the lowest index.
    ``impl``: "auto" | "triton" | "torch" (None: the STREAMVID_KERNELS env var, default auto).
    """
    if select_impl(a, impl) == "triton":
        return cosine_argmax_triton(a, b)
    return cosine_argmax_reference(a, b)
