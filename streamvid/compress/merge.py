"""Write-time token compression: temporal drop, ToMe spatial merge, MovieChat-style consolidation.

Every function here is pure (inputs are never modified), deterministic, works on CPU and CUDA
tensors, and computes in float32 internally (outputs keep the input dtype). Merges are
size-weighted averages: a token that stands for ``s`` patches weighs ``s``, so
``sum(tokens * sizes)`` over a sequence is conserved by merging. On CUDA the scatter-adds
are bitwise deterministic only under ``torch.use_deterministic_algorithms(True)``.

The similarity hot paths go through :mod:`streamvid_kernels` (Triton on CUDA, torch elsewhere).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import NamedTuple

import torch
from streamvid_kernels import cosine_argmax, temporal_similarity

from streamvid.compress._checks import (
    CompressionError,
    check_budget,
    check_index,
    check_same_device,
    check_sizes,
    check_tau,
    check_tokens,
)

_EPS = 1e-12


# --------------------------------------------------------------------------- temporal drop


def temporal_keep_mask(
    curr: torch.Tensor, prev: torch.Tensor, tau: float, *, impl: str | None = None
) -> torch.Tensor:
    """Which tokens of a frame changed since the previous kept frame (DyCoke, TimeChat-Online DTD).

    curr, prev: [B, N, d], token n of both at the same grid cell.
    Returns keep [B, N] bool: False where ``cos(curr[b, n], prev[b, n]) >= tau`` (dropped).
    """
    tau = check_tau("tau", tau)
    check_tokens("curr", curr, 3, "[B, N, d]")
    check_tokens("prev", prev, 3, "[B, N, d]")
    if curr.shape != prev.shape:
        raise CompressionError(f"curr {tuple(curr.shape)} and prev {tuple(prev.shape)} differ in shape")
    check_same_device(curr=curr, prev=prev)
    return temporal_similarity(curr, prev, tau, impl=impl)[1]


# --------------------------------------------------------------------------- bipartite matching


class _MergePlan(NamedTuple):
    """Indices into the full sequence [0, N) of one bipartite merge round, per batch item.

    src:  [B, r] tokens merged away (from the even set A)
    dst:  [B, r] the odd-set (B) token each one is merged into
    keep: [B, N - r] survivors, ascending (so merging preserves sequence order)
    """

    src: torch.Tensor
    dst: torch.Tensor
    keep: torch.Tensor


def _plan(metric: torch.Tensor, r: int, impl: str | None) -> _MergePlan:
    """ToMe matching on metric [B, N, c]: A = even, B = odd positions; the r best A→B edges merge."""
    n_batch, n_tok, _ = metric.shape
    if r == 0:  # nothing merges (also the N < 2 case, where set B is empty)
        none = torch.zeros(n_batch, 0, dtype=torch.long, device=metric.device)
        return _MergePlan(none, none, torch.arange(n_tok, device=metric.device).expand(n_batch, -1))
    a, b = metric[:, ::2], metric[:, 1::2]
    score, best = cosine_argmax(a, b, impl=impl)  # [B, Na] each
    order = torch.argsort(score, dim=1, descending=True, stable=True)
    src_a, unm_a = order[:, :r], order[:, r:]
    dst_b = best.gather(1, src_a)
    b_all = (2 * torch.arange(b.shape[1], device=metric.device) + 1).expand(n_batch, -1)
    keep = torch.cat([2 * unm_a, b_all], dim=1).sort(dim=1).values
    return _MergePlan(src=2 * src_a, dst=2 * dst_b + 1, keep=keep)


def _apply(plan: _MergePlan, x: torch.Tensor, mode: str) -> torch.Tensor:
    """x [B, N, c] → [B, N - r, c]: each src token reduced into its dst, survivors in order."""
    c = x.shape[-1]
    moved = x.gather(1, plan.src[..., None].expand(-1, -1, c))
    full = x.scatter_reduce(1, plan.dst[..., None].expand(-1, -1, c), moved, reduce=mode, include_self=True)
    return full.gather(1, plan.keep[..., None].expand(-1, -1, c))


def _clip_r(n_tok: int, r: int) -> int:
    """r is at most the size of set A, ceil(N/2), and 0 when there is no set B (N < 2)."""
    return 0 if n_tok < 2 else max(0, min(int(r), (n_tok + 1) // 2))


def bipartite_soft_matching(
    metric: torch.Tensor, r: int, *, impl: str | None = None
) -> tuple[Callable[..., torch.Tensor], Callable[[torch.Tensor], torch.Tensor]]:
    """ToMe bipartite soft matching: plan to merge ``r`` tokens away, return (merge, unmerge).

    metric [B, N, c]: the features similarity is measured on (cosine). Tokens at even positions
    form set A, odd positions set B; every A token picks its most similar B token and the ``r``
    A tokens with the best match are merged into their picks. ``r`` is clipped to [0, ceil(N/2)].

    merge(x [B, N, c'], mode="sum") → [B, N - r, c']: ``mode`` is a ``scatter_reduce`` reduction
        ("sum", "mean", "amax", "amin", "prod"); survivors keep their relative order.
    unmerge(y [B, N - r, c']) → [B, N, c']: every merged-away token gets its destination's value.
    """
    check_tokens("metric", metric, 3, "[B, N, c]")
    n_batch, n_tok, _ = metric.shape
    r = _clip_r(n_tok, r)
    plan = _plan(metric, r, impl)

    def merge(x: torch.Tensor, mode: str = "sum") -> torch.Tensor:
        if x.dim() != 3 or x.shape[:2] != (n_batch, n_tok):
            raise CompressionError(f"merge expects x of shape [{n_batch}, {n_tok}, c], got {tuple(x.shape)}")
        return _apply(plan, x, mode)

    def unmerge(y: torch.Tensor) -> torch.Tensor:
        if y.dim() != 3 or y.shape[:2] != (n_batch, n_tok - r):
            raise CompressionError(
                f"unmerge expects y of shape [{n_batch}, {n_tok - r}, c], got {tuple(y.shape)}"
            )
        c = y.shape[-1]
        full = y.new_zeros(n_batch, n_tok, c)
        full.scatter_(1, plan.keep[..., None].expand(-1, -1, c), y)
        dst_values = full.gather(1, plan.dst[..., None].expand(-1, -1, c))
        return full.scatter(1, plan.src[..., None].expand(-1, -1, c), dst_values)

    return merge, unmerge


def merge_wavg(
    merge: Callable[..., torch.Tensor], x: torch.Tensor, size: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Size-weighted average merge. x [B, N, c], size [B, N] or [B, N, 1] (default ones).

    Returns (x [B, n, c], size with the shape layout it came in: [B, n] or [B, n, 1]); a merged
    token is the size-weighted mean of its members and its size is their sum.
    """
    squeeze = size is not None and size.dim() == 2
    if size is None:
        size = torch.ones_like(x[..., :1], dtype=torch.float32)
    elif squeeze:
        size = size[..., None]
    size = size.float()
    total = merge(x.float() * size, mode="sum")
    size = merge(size, mode="sum")
    out = (total / size).to(x.dtype)
    return out, (size[..., 0] if squeeze else size)


# --------------------------------------------------------------------------- spatial merge


def _merge_sums(
    sums: torch.Tensor, sizes: torch.Tensor, positions: torch.Tensor, budget: int, impl: str | None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Repeated bipartite rounds on size-weighted SUMS [B, N, d] (cosine of a sum = cosine of its mean)."""
    while sums.shape[1] > budget:
        r = _clip_r(sums.shape[1], sums.shape[1] - budget)
        plan = _plan(sums, r, impl)
        sums = _apply(plan, sums, "sum")
        sizes = _apply(plan, sizes[..., None], "sum")[..., 0]
        positions = positions.gather(1, plan.keep)
    return sums, sizes, positions


def merge_to_budget(
    tokens: torch.Tensor,
    budget: int,
    sizes: torch.Tensor | None = None,
    positions: torch.Tensor | None = None,
    *,
    impl: str | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Spatial ToMe merge of each sequence down to ``budget`` tokens.

    tokens:    [B, N, d]
    sizes:     [B, N] patches each token stands for (> 0); default 1 each
    positions: [B, N] long, where each token sits (e.g. grid index); default 0..N-1
    Returns (tokens [B, n, d], sizes [B, n] float32, positions [B, n] long), n = min(N, budget).

    Input is first ordered by position (stable), so bipartite sets A/B alternate in space/time.
    Each round merges ``min(n - budget, ceil(n/2))`` tokens; a merged token is the size-weighted
    mean of its members, sits at the position of the member that was never merged away, and
    its size is the members' sum, so output sizes sum to input sizes. Output is sorted by position.
    """
    budget = check_budget("budget", budget)
    check_tokens("tokens", tokens, 3, "[B, N, d]")
    n_batch, n_tok, _ = tokens.shape
    if sizes is None:
        sizes = torch.ones(n_batch, n_tok, device=tokens.device)
    else:
        sizes = check_sizes("sizes", sizes, (n_batch, n_tok))
    given_positions = positions is not None
    if positions is None:
        positions = torch.arange(n_tok, device=tokens.device).expand(n_batch, -1)
    else:
        positions = check_index("positions", positions, (n_batch, n_tok))
    check_same_device(tokens=tokens, sizes=sizes, positions=positions)

    x = tokens
    if given_positions and n_tok > 1:  # sorted unconditionally: testing first would sync with the device
        order = torch.argsort(positions, dim=1, stable=True)
        positions = positions.gather(1, order)
        sizes = sizes.gather(1, order)
        x = tokens.gather(1, order[..., None].expand(-1, -1, tokens.shape[-1]))
    if n_tok <= budget:  # nothing to merge; copies, so the result never aliases the input
        return (x.clone() if x is tokens else x), sizes.clone(), positions.contiguous().clone()
    sums, sizes, positions = _merge_sums(x.float() * sizes[..., None], sizes, positions, budget, impl)
    return (sums / sizes[..., None]).to(tokens.dtype), sizes, positions


# --------------------------------------------------------------------------- per-frame write path


class CompressedFrame(NamedTuple):
    """One frame after :func:`compress_frame`.

    tokens:    [n, d] the survivors after temporal drop, merged to the budget
    positions: [n] long grid index (0..N-1) each token sits at, ascending
    sizes:     [n] float32 grid cells each token stands for; they cover the SURVIVORS only, so
               ``N - sizes.sum()`` cells were dropped as unchanged since the previous kept frame
               (those cells are represented by the previous frame's tokens already in memory).
    """

    tokens: torch.Tensor
    positions: torch.Tensor
    sizes: torch.Tensor


def compress_frame(
    tokens: torch.Tensor,
    prev_tokens: torch.Tensor | None,
    tau_temporal: float,
    budget: int,
    *,
    impl: str | None = None,
) -> CompressedFrame:
    """The per-frame write path: temporal drop, then spatial merge of the survivors.

    tokens:      [N, d] this frame's full vision tokens (row-major grid)
    prev_tokens: [N, d] the previous KEPT frame's full (uncompressed) tokens, or None for the
                 first frame of a stream (nothing is dropped then)
    A token whose cosine to ``prev_tokens`` at the same grid cell is >= ``tau_temporal`` is
    dropped; the rest are merged with :func:`merge_to_budget` to at most ``budget`` tokens.
    An identical frame collapses to 0 tokens. See :class:`CompressedFrame` for the outputs.
    """
    tau = check_tau("tau_temporal", tau_temporal)
    budget = check_budget("budget", budget)
    check_tokens("tokens", tokens, 2, "[N, d]")
    n_tok = tokens.shape[0]
    if prev_tokens is None:
        kept_positions = torch.arange(n_tok, device=tokens.device)
    else:
        check_tokens("prev_tokens", prev_tokens, 2, "[N, d]")
        if prev_tokens.shape != tokens.shape:
            raise CompressionError(
                f"prev_tokens {tuple(prev_tokens.shape)} and tokens {tuple(tokens.shape)} differ in shape "
                "(the token grid changed; pass prev_tokens=None to start over)"
            )
        check_same_device(tokens=tokens, prev_tokens=prev_tokens)
        keep = temporal_similarity(tokens[None], prev_tokens[None], tau, impl=impl)[1][0]
        kept_positions = keep.nonzero().squeeze(1)
    survivors = tokens.index_select(0, kept_positions)
    merged, sizes, positions = merge_to_budget(
        survivors[None], budget, positions=kept_positions[None], impl=impl
    )
    return CompressedFrame(tokens=merged[0], positions=positions[0], sizes=sizes[0])


def compress_frames(
    tokens: torch.Tensor,
    prev_tokens: torch.Tensor | None,
    tau_temporal: float,
    budget: int,
    *,
    impl: str | None = None,
    packed: bool = False,
) -> list[CompressedFrame] | PackedFrames:
    """:func:`compress_frame` over consecutive kept frames at once, with ONE host transfer per call.

    tokens:      [K, N, d] the full tokens of K consecutive kept frames; frame k's previous kept frame
                 is frame k-1, and frame 0's is ``prev_tokens`` [N, d] (None: nothing dropped for it)
    The temporal masks of all K frames are computed in one batched call and brought to the host
    together (the only synchronisation; a per-frame ``nonzero`` would wait on the device K times), and
    frames with the same number of surviving tokens are merged together in one batched
    :func:`merge_to_budget` call (every frame of a batch at once when nothing was dropped), so the
    Python work per call grows with the number of distinct survivor counts, not with K.
    Returns the same K results, in order, as calling :func:`compress_frame` frame by frame; with
    ``packed``, those results one after another as :class:`PackedFrames` (no per-frame copies).
    """
    tau = check_tau("tau_temporal", tau_temporal)
    budget = check_budget("budget", budget)
    check_tokens("tokens", tokens, 3, "[K, N, d]")
    n_frames, n_tok, _ = tokens.shape
    if n_frames == 0:
        if packed:
            empty = torch.zeros(0, dtype=torch.long, device=tokens.device)
            return PackedFrames(tokens.reshape(0, tokens.shape[-1]), empty, empty.float(), [])
        return []
    if prev_tokens is not None:
        check_tokens("prev_tokens", prev_tokens, 2, "[N, d]")
        if prev_tokens.shape != tokens.shape[1:]:
            raise CompressionError(
                f"prev_tokens {tuple(prev_tokens.shape)} and tokens {tuple(tokens.shape[1:])} differ in shape "
                "(the token grid changed; pass prev_tokens=None to start over)"
            )
        check_same_device(tokens=tokens, prev_tokens=prev_tokens)
        prev = torch.cat([prev_tokens[None], tokens[:-1]])
        keep = temporal_similarity(tokens, prev, tau, impl=impl)[1].cpu()
    else:
        keep = torch.ones(n_frames, n_tok, dtype=torch.bool)
        if n_frames > 1:
            keep[1:] = temporal_similarity(tokens[1:], tokens[:-1], tau, impl=impl)[1].cpu()
    groups = _merge_groups_by_count(tokens, keep, budget, impl)
    if packed:
        return _pack(groups, n_frames)
    out = []
    for frames, merged, sizes, positions in groups:
        # Each frame's own copy: memory keeps frames apart (and safetensors refuses shared storage).
        own = (lambda x: x) if len(frames) == 1 else torch.Tensor.clone
        out += [(k, CompressedFrame(tokens=own(merged[j]), positions=own(positions[j]), sizes=own(sizes[j])))
                for j, k in enumerate(frames)]
    return [r for _, r in sorted(out, key=lambda kv: kv[0])]


class PackedFrames(NamedTuple):
    """K frames after :func:`compress_frames` with ``packed=True``, one after another in frame order:
    tokens [M, d], positions [M] long, sizes [M] float32; counts: K ints, frame k's share of M."""

    tokens: torch.Tensor
    positions: torch.Tensor
    sizes: torch.Tensor
    counts: list[int]


def _pack(groups: list[tuple[list[int], torch.Tensor, torch.Tensor, torch.Tensor]], n_frames: int) -> PackedFrames:
    """Merged groups → one packed result: a reshape when one group holds every frame (the usual case:
    nothing reordered, no per-frame work), else one concatenation of per-frame views in frame order."""
    if len(groups) == 1:
        _, merged, sizes, positions = groups[0]
        n = int(merged.shape[1])
        return PackedFrames(merged.reshape(-1, merged.shape[-1]), positions.reshape(-1), sizes.reshape(-1),
                            [n] * n_frames)
    rows = sorted((k, g, j) for g, (frames, *_rest) in enumerate(groups) for j, k in enumerate(frames))
    pick = [(groups[g][1][j], groups[g][3][j], groups[g][2][j]) for _, g, j in rows]
    return PackedFrames(torch.cat([p[0] for p in pick]), torch.cat([p[1] for p in pick]),
                        torch.cat([p[2] for p in pick]), [int(p[0].shape[0]) for p in pick])


def _merge_groups_by_count(tokens: torch.Tensor, keep: torch.Tensor, budget: int, impl: str | None
                           ) -> list[tuple[list[int], torch.Tensor, torch.Tensor, torch.Tensor]]:
    """(frame indices, merged [g, n, d], sizes [g, n], positions [g, n]) per group of the frames of
    tokens [K, N, d] with the same survivor count (keep [K, N] bool, on the host): each group goes
    through ONE batched merge; row j of a group's results is its frame j."""
    counts = keep.sum(1)
    # The survivors' grid indices of every frame, ascending, packed to the left of each row.
    order = torch.argsort((~keep).to(torch.uint8), dim=1, stable=True)
    out = []
    for count in torch.unique(counts).tolist():
        frames = (counts == count).nonzero().squeeze(1)
        kept_positions = order.index_select(0, frames)[:, :count].to(tokens.device, non_blocking=True)
        rows = frames.to(tokens.device, non_blocking=True)
        group = tokens if len(frames) == len(tokens) else tokens.index_select(0, rows)
        if count == tokens.shape[1]:  # every token survived: the grid order as it is (no gathers)
            merged, sizes, positions = merge_to_budget(group, budget, impl=impl)
        else:
            survivors = group.gather(1, kept_positions[..., None].expand(-1, -1, tokens.shape[-1]))
            merged, sizes, positions = merge_to_budget(survivors, budget, positions=kept_positions, impl=impl)
        out.append((frames.tolist(), merged, sizes, positions))
    return out


# --------------------------------------------------------------------------- event consolidation


class Consolidated(NamedTuple):
    """An event's tokens after :func:`merge_adjacent_frames`, in chronological order.

    tokens: [n, d] size-weighted means
    sizes:  [n] float32 patches each token stands for (sums to the input sizes' total)
    source: [n] long index into the CONCATENATION of the input frames' tokens of the token each
            output token sits at (the member never merged away); ascending
    frame:  [n] long index of the input frame that token came from (``source`` → frame)
    """

    tokens: torch.Tensor
    sizes: torch.Tensor
    source: torch.Tensor
    frame: torch.Tensor


class _Group(NamedTuple):
    sums: torch.Tensor  # [g, d] float32 size-weighted sums
    sizes: torch.Tensor  # [g] float32
    source: torch.Tensor  # [g] long, ascending

    def mean(self) -> torch.Tensor:
        return self.sums.sum(0) / self.sizes.sum()


def _merge_groups(first: _Group, second: _Group, r: int, impl: str | None) -> _Group:
    """Merge the r best tokens of the smaller group (the earlier one on a tie) into the other."""
    small, large = (first, second) if first.sums.shape[0] <= second.sums.shape[0] else (second, first)
    score, best = cosine_argmax(small.sums[None], large.sums[None], impl=impl)
    order = torch.argsort(score[0], descending=True, stable=True)
    src, unmerged = order[:r], order[r:]
    dst = best[0].index_select(0, src)
    sums = large.sums.index_add(0, dst, small.sums.index_select(0, src))
    sizes = large.sizes.index_add(0, dst, small.sizes.index_select(0, src))
    source = torch.cat([small.source.index_select(0, unmerged), large.source])
    sums = torch.cat([small.sums.index_select(0, unmerged), sums])
    sizes = torch.cat([small.sizes.index_select(0, unmerged), sizes])
    order = torch.argsort(source)
    return _Group(sums[order], sizes[order], source[order])


def merge_adjacent_frames(
    frames: Sequence[torch.Tensor],
    m: int,
    sizes: Sequence[torch.Tensor] | None = None,
    *,
    tau_frames: float | None = None,
    impl: str | None = None,
) -> Consolidated:
    """Consolidate an event's per-frame tokens to at most ``m`` tokens (MovieChat-style).

    frames: per-frame token sets [n_i, d] in chronological order (counts may differ; 0 allowed)
    sizes:  per-frame patch counts [n_i] (> 0), default 1 each
    m:      token budget of the event (>= 1)
    tau_frames: None (MovieChat: merge frames until one group is left or the budget is met), or
            a cosine: the temporal phase stops once the most similar adjacent pair is below it,
            so a frame unlike its neighbours is not folded into them wholesale.

    1. Temporal: while the total exceeds ``m`` and more than one frame group remains, the two
       ADJACENT groups whose size-weighted mean tokens are most similar (cosine; the earliest
       pair on a tie) are merged: each token of the smaller group is matched to its most
       similar token of the other, and the best matches (all of them, or fewer when that
       reaches ``m``) are folded in as size-weighted means. Frames with 0 tokens are skipped.
    2. Spatial: if the total is still above ``m``, :func:`merge_to_budget` finishes the job on
       all remaining tokens in chronological order (so bipartite sets alternate in time).

    Returns :class:`Consolidated`; map ``source`` through the frames' offsets (or use ``frame``)
    to get each token's time and grid position. ``n = min(m, sum(n_i))``.
    """
    m = check_budget("m", m)
    stop_below = None if tau_frames is None else check_tau("tau_frames", tau_frames)
    if len(frames) == 0:
        raise CompressionError("merge_adjacent_frames needs at least one frame")
    for i, f in enumerate(frames):
        check_tokens(f"frames[{i}]", f, 2, "[n_i, d]")
    dims = {int(f.shape[1]) for f in frames}
    if len(dims) != 1:
        raise CompressionError(f"frames have different token widths d: {sorted(dims)}")
    check_same_device(**{f"frames[{i}]": f for i, f in enumerate(frames)})
    if sizes is not None and len(sizes) != len(frames):
        raise CompressionError(f"sizes has {len(sizes)} entries for {len(frames)} frames")
    device, dtype = frames[0].device, frames[0].dtype
    counts = [int(f.shape[0]) for f in frames]
    offsets = torch.tensor([0, *counts], device=device).cumsum(0)

    groups: list[_Group] = []
    for i, f in enumerate(frames):
        if counts[i] == 0:
            continue
        s = torch.ones(counts[i], device=device) if sizes is None else \
            check_sizes(f"sizes[{i}]", sizes[i], (counts[i],)).to(device)
        groups.append(_Group(f.float() * s[:, None], s, torch.arange(counts[i], device=device) + offsets[i]))
    total = sum(counts)

    while total > m and len(groups) > 1:
        means = torch.nn.functional.normalize(torch.stack([g.mean() for g in groups]), dim=-1, eps=_EPS)
        adjacent = (means[:-1] * means[1:]).sum(-1)
        i = int(torch.argmax(adjacent))  # first maximum: the earliest pair wins a tie
        if stop_below is not None and float(adjacent[i]) < stop_below:
            break
        r = min(min(groups[i].sums.shape[0], groups[i + 1].sums.shape[0]), total - m)
        groups[i:i + 2] = [_merge_groups(groups[i], groups[i + 1], r, impl)]
        total -= r

    if not groups:
        d = frames[0].shape[1]
        empty = torch.zeros(0, device=device, dtype=torch.long)
        return Consolidated(torch.zeros(0, d, device=device, dtype=dtype), torch.zeros(0, device=device),
                            empty, empty.clone())
    sums = torch.cat([g.sums for g in groups])
    group_sizes = torch.cat([g.sizes for g in groups])
    source = torch.cat([g.source for g in groups])
    if total > m:
        merged, group_sizes, source = _merge_sums(sums[None], group_sizes[None], source[None], m, impl)
        sums, group_sizes, source = merged[0], group_sizes[0], source[0]
    frame = torch.searchsorted(offsets, source, right=True) - 1
    return Consolidated((sums / group_sizes[:, None]).to(dtype), group_sizes, source, frame)
