"""Properties of the compression functions: budgets, patch accounting, order, determinism, errors."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from streamvid import StreamvidError
from streamvid.compress import (
    CompressionError,
    FrameGate,
    bipartite_soft_matching,
    compress_frame,
    compress_frames,
    debug_checks,
    gate_sequence,
    keep_frame,
    merge_adjacent_frames,
    merge_to_budget,
    merge_wavg,
    prune_tokens,
    temporal_keep_mask,
)

FAST = settings(max_examples=40, deadline=None)
DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def randn(*shape: int, seed: int, device: str = "cpu") -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=g).to(device)


def distinct_tokens(n: int, d: int, seed: int) -> torch.Tensor:
    """n tokens whose pairwise cosines are well below 0.9 (orthogonal rows when n <= d)."""
    x = randn(max(n, d), d, seed=seed)
    q, _ = torch.linalg.qr(x if n > d else x.T)
    rows = q.T[:n] if n <= d else q[:n]
    return rows * 3.0 if n <= d else x[:n]


# --------------------------------------------------------------------------- gate


def test_gate_keeps_first_and_drops_duplicates():
    k = torch.tensor([1.0, 0.0, 0.0])
    assert keep_frame(k, None, 0.98)
    assert not keep_frame(k * 5, k, 0.98)  # scale does not matter
    assert keep_frame(torch.tensor([0.0, 1.0, 0.0]), k, 0.98)


def test_gate_sequence_compares_with_last_kept_not_last_seen():
    # Slow drift: each step is within tau of the previous frame, but not of the last kept one.
    angles = torch.linspace(0, 0.6, 13)
    keys = torch.stack([torch.cos(angles), torch.sin(angles)], dim=1)
    keep = gate_sequence(keys, 0.99)
    assert keep[0]
    assert 1 < int(keep.sum()) < 13
    gate = FrameGate(0.99)
    assert [gate.admit(k) for k in keys] == keep.tolist()
    kept = int(keep.sum())
    assert gate.stats() == {"frames_seen": 13, "frames_kept": kept, "frames_dropped": 13 - kept}


@FAST
@given(t=st.integers(0, 30), k=st.integers(1, 8), tau=st.floats(-1, 1.2), seed=st.integers(0, 2**16))
def test_gate_sequence_equals_frame_by_frame(t, k, tau, seed):
    keys = randn(t, k, seed=seed)
    keys[1::3] = keys[0::3][: keys[1::3].shape[0]]  # some exact repeats
    mask = gate_sequence(keys, tau)
    last = None
    expected = []
    for key in keys:
        kept = keep_frame(key, last, tau)
        expected.append(kept)
        if kept:
            last = key
    assert mask.tolist() == expected


def test_gate_errors():
    with pytest.raises(CompressionError, match="tau"):
        keep_frame(torch.ones(3), None, float("nan"))
    with pytest.raises(CompressionError, match="differ"):
        keep_frame(torch.ones(3), torch.ones(4), 0.9)
    with pytest.raises(CompressionError, match=r"\[T, k\]"):
        gate_sequence(torch.ones(3), 0.9)


# --------------------------------------------------------------------------- temporal drop


@FAST
@given(b=st.integers(1, 3), n=st.integers(1, 40), d=st.integers(2, 24), seed=st.integers(0, 2**16))
def test_temporal_keep_mask_drops_exactly_the_unchanged_tokens(b, n, d, seed):
    prev = randn(b, n, d, seed=seed)
    changed = randn(b, n, seed=seed + 1) > 0
    curr = torch.where(changed[..., None], -prev + 0.01 * randn(b, n, d, seed=seed + 2), prev * 2.0)
    keep = temporal_keep_mask(curr, prev, 0.9)
    assert keep.shape == (b, n) and keep.dtype == torch.bool
    assert torch.equal(keep, changed)


# --------------------------------------------------------------------------- spatial merge


@FAST
@given(
    b=st.integers(1, 3), n=st.integers(0, 70), d=st.integers(1, 16), budget=st.integers(1, 80),
    weighted=st.booleans(), seed=st.integers(0, 2**16),
)
def test_merge_to_budget_properties(b, n, d, budget, weighted, seed):
    tokens = randn(b, n, d, seed=seed)
    sizes = (randn(b, n, seed=seed + 1).abs() + 0.5) if weighted else None
    perm = torch.stack([torch.randperm(n, generator=torch.Generator().manual_seed(seed + i))
                        for i in range(b)])
    positions = perm * 3 + 7  # arbitrary unique positions, unsorted
    out, out_sizes, out_pos = merge_to_budget(tokens, budget, sizes, positions)
    n_out = min(n, budget)
    assert out.shape == (b, n_out, d) and out_sizes.shape == (b, n_out) and out_pos.shape == (b, n_out)
    in_sizes = torch.ones(b, n) if sizes is None else sizes
    # Patch accounting and mass: merging is a size-weighted average.
    torch.testing.assert_close(out_sizes.sum(1), in_sizes.sum(1))
    torch.testing.assert_close((out * out_sizes[..., None]).sum(1), (tokens * in_sizes[..., None]).sum(1),
                               atol=1e-4, rtol=1e-4)
    # Positions: a subset of the input positions, strictly ascending.
    for i in range(b):
        assert set(out_pos[i].tolist()) <= set(positions[i].tolist())
        assert bool((out_pos[i, 1:] > out_pos[i, :-1]).all())
    # Deterministic; batched == one item at a time.
    again = merge_to_budget(tokens, budget, sizes, positions)
    assert all(torch.equal(x, y) for x, y in zip((out, out_sizes, out_pos), again, strict=True))
    for i in range(b):
        single = merge_to_budget(tokens[i:i + 1], budget, None if sizes is None else sizes[i:i + 1],
                                 positions[i:i + 1])
        torch.testing.assert_close(single[0][0], out[i])
        torch.testing.assert_close(single[1][0], out_sizes[i])
        assert torch.equal(single[2][0], out_pos[i])


def test_merge_to_budget_merges_duplicates_first():
    base = distinct_tokens(6, 16, seed=1)
    # 8 tokens: base + two exact duplicates of tokens 0 and 3, placed where they meet in A/B sets.
    tokens = torch.stack([base[0], base[0], base[1], base[2], base[3], base[3], base[4], base[5]])[None]
    out, sizes, positions = merge_to_budget(tokens, 6)
    assert positions[0].tolist() == [1, 2, 3, 5, 6, 7]
    assert sizes[0].tolist() == [2, 1, 1, 2, 1, 1]
    torch.testing.assert_close(out[0, 0], base[0])


def test_merge_to_budget_keeps_dtype_and_errors():
    x = randn(1, 10, 4, seed=0).to(torch.bfloat16)
    assert merge_to_budget(x, 3)[0].dtype == torch.bfloat16
    with pytest.raises(CompressionError, match="budget"):
        merge_to_budget(x, 0)
    with pytest.raises(CompressionError, match=r"\[B, N, d\]"):
        merge_to_budget(x[0], 3)
    with pytest.raises(CompressionError, match="positions"):
        merge_to_budget(x, 3, positions=torch.zeros(1, 9, dtype=torch.long))


def test_value_checks_run_only_under_debug_checks():
    """Checks on tensor VALUES synchronise with the device, so they are a debug setting."""
    x = randn(1, 10, 4, seed=0)
    nan = torch.full((1, 4, 2), float("nan"))
    with debug_checks(True):
        with pytest.raises(CompressionError, match="sizes"):
            merge_to_budget(x, 3, sizes=torch.zeros(1, 10))
        with pytest.raises(StreamvidError, match="NaN"):
            merge_to_budget(nan, 2)
        with pytest.raises(StreamvidError, match="NaN"):
            compress_frame(nan[0], None, 0.9, 2)
    with debug_checks(False):
        assert merge_to_budget(nan, 2)[0].shape == (1, 2, 2)
        assert merge_to_budget(x, 3, sizes=torch.zeros(1, 10))[0].shape == (1, 3, 4)
    with debug_checks(False), pytest.raises(CompressionError, match="budget"):  # metadata checks always run
        merge_to_budget(x, 0)


@FAST
@given(b=st.integers(1, 2), n=st.integers(1, 40), c=st.integers(1, 8), r=st.integers(0, 30),
       seed=st.integers(0, 2**16))
def test_bipartite_soft_matching_closures(b, n, c, r, seed):
    x = randn(b, n, c, seed=seed)
    merge, unmerge = bipartite_soft_matching(x, r)
    r_eff = 0 if n < 2 else min(r, (n + 1) // 2)
    merged, size = merge_wavg(merge, x)
    assert merged.shape == (b, n - r_eff, c) and size.shape == (b, n - r_eff, 1)
    torch.testing.assert_close(size.sum(1), torch.full((b, 1), float(n)))
    torch.testing.assert_close((merged * size).sum(1), x.sum(1), atol=1e-4, rtol=1e-4)
    restored = unmerge(merged)
    assert restored.shape == x.shape
    # Every restored row is one of the merged rows (each token gets its group's value).
    distance = (restored[:, :, None] - merged[:, None]).abs().amax(-1)
    assert bool((distance.min(-1).values == 0).all())
    if r_eff == 0:
        assert torch.equal(merged, x) and torch.equal(restored, x)


# --------------------------------------------------------------------------- per-frame write path


@pytest.mark.parametrize("device", DEVICES)
def test_compress_frame_identical_frame_collapses(device):
    x = randn(64, 32, seed=3, device=device)
    out = compress_frame(x, x.clone(), 0.9, 16)
    assert out.tokens.shape == (0, 32) and out.positions.numel() == 0 and float(out.sizes.sum()) == 0


@FAST
@given(n=st.integers(1, 64), d=st.integers(8, 48), budget=st.integers(1, 70), seed=st.integers(0, 2**16))
def test_compress_frame_distinct_frames_survive(n, d, budget, seed):
    prev = distinct_tokens(n, d, seed)
    curr = -prev  # every token changed (cosine -1)
    for ref in (None, prev):
        out = compress_frame(curr, ref, 0.9, budget)
        assert out.tokens.shape == (min(n, budget), d)
        assert float(out.sizes.sum()) == n
        assert bool((out.positions[1:] > out.positions[:-1]).all())
        assert int(out.positions.min()) >= 0 and int(out.positions.max()) < n


@FAST
@given(n=st.integers(2, 64), d=st.integers(8, 32), budget=st.integers(1, 16), seed=st.integers(0, 2**16))
def test_compress_frame_keeps_only_changed_cells(n, d, budget, seed):
    prev = randn(n, d, seed=seed)
    changed = torch.zeros(n, dtype=torch.bool)
    changed[torch.randperm(n, generator=torch.Generator().manual_seed(seed))[: n // 3]] = True
    curr = torch.where(changed[:, None], -prev, prev * 1.5)
    out = compress_frame(curr, prev, 0.9, budget)
    assert float(out.sizes.sum()) == int(changed.sum())  # n - sizes.sum() cells were dropped
    assert out.tokens.shape[0] == min(int(changed.sum()), budget)
    assert set(out.positions.tolist()) <= set(changed.nonzero().squeeze(1).tolist())
    again = compress_frame(curr, prev, 0.9, budget)
    assert torch.equal(out.tokens, again.tokens) and torch.equal(out.positions, again.positions)


def test_compress_frame_errors():
    x = randn(16, 8, seed=0)
    with pytest.raises(CompressionError, match="grid changed"):
        compress_frame(x, x[:8], 0.9, 4)
    with pytest.raises(CompressionError, match="budget"):
        compress_frame(x, None, 0.9, -1)
    with pytest.raises(CompressionError, match="tau_temporal"):
        compress_frame(x, None, float("inf"), 4)


# --------------------------------------------------------------------------- event consolidation


@FAST
@given(
    counts=st.lists(st.integers(0, 20), min_size=1, max_size=8), d=st.integers(2, 12), m=st.integers(1, 60),
    weighted=st.booleans(), tau_frames=st.sampled_from([None, 0.5]), seed=st.integers(0, 2**16),
)
def test_merge_adjacent_frames_properties(counts, d, m, weighted, tau_frames, seed):
    frames = [randn(c, d, seed=seed + i) for i, c in enumerate(counts)]
    sizes = [randn(c, seed=seed + 100 + i).abs() + 0.5 for i, c in enumerate(counts)] if weighted else None
    out = merge_adjacent_frames(frames, m, sizes, tau_frames=tau_frames)
    total = sum(counts)
    n = min(total, m)
    assert out.tokens.shape == (n, d) and out.sizes.shape == (n,) and out.source.shape == (n,)
    all_tokens = torch.cat(frames)
    all_sizes = torch.ones(total) if sizes is None else torch.cat(sizes)
    torch.testing.assert_close(out.sizes.sum(), all_sizes.sum())
    torch.testing.assert_close((out.tokens * out.sizes[:, None]).sum(0),
                               (all_tokens * all_sizes[:, None]).sum(0), atol=1e-4, rtol=1e-4)
    assert bool((out.source[1:] > out.source[:-1]).all())  # chronological, no repeats
    if n:
        assert int(out.source.min()) >= 0 and int(out.source.max()) < total
    offsets = torch.tensor([0, *counts]).cumsum(0)
    for s, f in zip(out.source.tolist(), out.frame.tolist(), strict=True):
        assert offsets[f] <= s < offsets[f + 1]
    again = merge_adjacent_frames(frames, m, sizes, tau_frames=tau_frames)
    assert torch.equal(out.tokens, again.tokens) and torch.equal(out.source, again.source)


def test_merge_adjacent_frames_merges_the_similar_pair_first():
    x, y = distinct_tokens(8, 32, seed=5), distinct_tokens(8, 32, seed=6)
    frames = [y, x, x + 0.001 * randn(8, 32, seed=7), y * -1]
    out = merge_adjacent_frames(frames, 24)
    assert sorted(set(out.frame.tolist())) == [0, 2, 3]  # frames 1 and 2 folded together
    assert out.sizes[out.frame == 2].tolist() == [2.0] * 8
    torch.testing.assert_close(out.tokens[out.frame == 0], y)
    torch.testing.assert_close(out.tokens[out.frame == 3], -y)


def test_merge_adjacent_frames_tau_frames_stops_temporal_phase():
    frames = [distinct_tokens(6, 24, seed=s) for s in range(3)]
    out = merge_adjacent_frames(frames, 9, tau_frames=0.99)  # no pair is that similar: spatial only
    assert out.tokens.shape == (9, 24) and float(out.sizes.sum()) == 18
    assert set(out.frame.tolist()) == {0, 1, 2}


def test_merge_adjacent_frames_errors():
    with pytest.raises(CompressionError, match="at least one"):
        merge_adjacent_frames([], 4)
    with pytest.raises(CompressionError, match="widths"):
        merge_adjacent_frames([torch.ones(2, 3), torch.ones(2, 4)], 4)
    with pytest.raises(CompressionError, match="m must be"):
        merge_adjacent_frames([torch.ones(2, 3)], 0)
    with pytest.raises(CompressionError, match="sizes"):
        merge_adjacent_frames([torch.ones(2, 3)], 2, [torch.ones(3)])


# --------------------------------------------------------------------------- read-time pruning


@FAST
@given(counts=st.lists(st.integers(1, 12), min_size=1, max_size=8), d=st.integers(2, 16),
       budget=st.integers(1, 80), seed=st.integers(0, 2**16))
def test_prune_tokens_properties(counts, d, budget, seed):
    tokens = randn(sum(counts), d, seed=seed)
    groups = torch.repeat_interleave(torch.arange(len(counts)) * 10, torch.tensor(counts))
    query = randn(d, seed=seed + 1)
    out = prune_tokens(tokens, groups, query, budget)
    n_frames, n_tok = len(counts), sum(counts)
    n = min(budget, n_frames + n_tok)
    assert out.tokens.shape == (n, d) and out.group.shape == (n,) and out.source.shape == (n,)
    assert int((out.source == -1).sum()) == min(budget, n_frames)
    assert bool((out.group[1:] >= out.group[:-1]).all())  # chronological
    real = out.source[out.source >= 0]
    assert bool((real[1:] > real[:-1]).all())
    assert torch.equal(groups[real], out.group[out.source >= 0])
    torch.testing.assert_close(out.tokens[out.source >= 0], tokens[real])
    cos = torch.nn.functional.normalize(tokens, dim=-1) @ torch.nn.functional.normalize(query, dim=0)
    if budget >= n_frames:
        assert set(out.group.tolist()) == set(groups.tolist())  # every frame has its summary
        dropped = torch.ones(n_tok, dtype=torch.bool)
        dropped[real] = False
        if real.numel() and dropped.any():
            assert float(cos[real].min()) >= float(cos[dropped].max()) - 1e-6  # the most relevant kept
    for g, s, t in zip(out.group.tolist(), out.source.tolist(), out.tokens, strict=True):
        if s == -1:
            torch.testing.assert_close(t, tokens[groups == g].mean(0))


def test_prune_tokens_keeps_most_relevant_frame_summaries_when_budget_is_short():
    tokens = torch.eye(4).repeat_interleave(2, dim=0)  # frame f = two copies of e_f
    groups = torch.arange(8) // 2
    out = prune_tokens(tokens, groups, torch.tensor([0.1, 0.0, 1.0, 0.5]), 2)
    assert out.group.tolist() == [2, 3] and out.source.tolist() == [-1, -1]
    weighted = prune_tokens(tokens, groups, torch.tensor([1.0, 1.0, 0.0, 0.0]), 8,
                            sizes=torch.tensor([1.0, 3.0] * 4))
    assert weighted.source.tolist()[:2] == [-1, 0]


def test_prune_tokens_errors():
    t = torch.ones(4, 3)
    with pytest.raises(CompressionError, match="budget"):
        prune_tokens(t, torch.zeros(4, dtype=torch.long), torch.ones(3), 0)
    with pytest.raises(CompressionError, match="non-decreasing"):
        prune_tokens(t, torch.tensor([0, 1, 0, 1]), torch.ones(3), 4)
    with pytest.raises(CompressionError, match="query"):
        prune_tokens(t, torch.zeros(4, dtype=torch.long), torch.ones(5), 4)
    with pytest.raises(CompressionError, match="integer"):
        prune_tokens(t, torch.zeros(4), torch.ones(3), 4)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_matches_cpu():
    tokens = randn(4, 256, 64, seed=11)
    cpu = merge_to_budget(tokens, 32)
    gpu = merge_to_budget(tokens.cuda(), 32)
    torch.testing.assert_close(gpu[0].cpu(), cpu[0], atol=1e-4, rtol=1e-4)
    assert torch.equal(gpu[2].cpu(), cpu[2])
    frame = compress_frame(tokens[0].cuda(), tokens[1].cuda(), 0.9, 16)
    assert frame.tokens.is_cuda and frame.tokens.shape == (16, 64)


def test_compression_goes_through_the_kernel_dispatch(monkeypatch):
    x = randn(16, 8, seed=0)
    monkeypatch.setenv("STREAMVID_KERNELS", "bogus")
    with pytest.raises(ValueError, match="STREAMVID_KERNELS"):
        compress_frame(x, x, 0.9, 4)
    with pytest.raises(ValueError, match="STREAMVID_KERNELS"):
        merge_to_budget(x[None], 4)
    monkeypatch.setenv("STREAMVID_KERNELS", "torch")
    assert compress_frame(-x, x, 0.9, 4).tokens.shape == (4, 8)


def test_budget_accepts_numpy_integers():
    np = pytest.importorskip("numpy")
    out = merge_to_budget(randn(1, 10, 4, seed=0), np.int64(3))
    assert out[0].shape == (1, 3, 4)
    with pytest.raises(CompressionError, match="budget"):
        merge_to_budget(randn(1, 10, 4, seed=0), 2.5)


@pytest.mark.parametrize("with_prev", [False, True])
def test_compress_frames_equals_compress_frame_frame_by_frame(with_prev):
    """The batched write path (one host transfer) gives what the per-frame one gives, in order."""
    base = randn(16, 8, seed=1)
    # consecutive frames: some cells unchanged (dropped), some changed
    frames = torch.stack([base + (randn(16, 8, seed=10 + k) * (torch.arange(16) % (k + 2) == 0)[:, None])
                          for k in range(5)])
    prev = (base + 0.01 * randn(16, 8, seed=3)) if with_prev else None
    batched = compress_frames(frames, prev, 0.9, 4)
    last = prev
    for k, got in enumerate(batched):
        want = compress_frame(frames[k], last, 0.9, 4)
        last = frames[k]
        assert torch.equal(got.tokens, want.tokens) and torch.equal(got.positions, want.positions)
        assert torch.equal(got.sizes, want.sizes)
    assert len(batched) == 5 and any(c.sizes.sum() < 16 for c in batched)  # the temporal drop did drop
    packed = compress_frames(frames, prev, 0.9, 4, packed=True)  # the same results, one after another
    assert packed.counts == [c.tokens.shape[0] for c in batched]
    assert torch.equal(packed.tokens, torch.cat([c.tokens for c in batched]))
    assert torch.equal(packed.positions, torch.cat([c.positions for c in batched]))
    assert torch.equal(packed.sizes, torch.cat([c.sizes for c in batched]))
    with pytest.raises(CompressionError, match="grid changed"):
        compress_frames(frames, randn(9, 8, seed=0), 0.9, 4)


def test_compress_frames_merges_equal_counts_together_bitwise():
    """Frames with the same survivor count are merged in one batched call: still bit-identical to
    the per-frame path, for a group of every frame (nothing dropped) and for mixed counts."""
    frames = randn(8, 64, 24, seed=5)  # unrelated frames: no token is dropped, one group of 8
    frames[5] = frames[4]  # an exact repeat: 0 survivors
    frames[6, ::2] = frames[5, ::2]  # half the cells unchanged
    batched = compress_frames(frames, None, 0.9, 16)
    last = None
    for k, got in enumerate(batched):
        want = compress_frame(frames[k], last, 0.9, 16)
        last = frames[k]
        assert torch.equal(got.tokens, want.tokens) and torch.equal(got.positions, want.positions)
        assert torch.equal(got.sizes, want.sizes)
    assert [int(c.sizes.sum()) for c in batched][4:7] == [64, 0, 32]
    filled = [t for c in batched for t in c if t.numel()]
    assert len({t.untyped_storage().data_ptr() for t in filled}) == len(filled)  # no frame shares another's memory
    for tokens in (randn(8, 64, 24, seed=6), frames):  # one group of every frame (a reshape), and mixed groups
        listed, packed = compress_frames(tokens, None, 0.9, 16), compress_frames(tokens, None, 0.9, 16, packed=True)
        assert packed.counts == [c.tokens.shape[0] for c in listed]
        for name in ("tokens", "positions", "sizes"):
            assert torch.equal(getattr(packed, name), torch.cat([getattr(c, name) for c in listed])), name
