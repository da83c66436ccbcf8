"""Read-time pruning: keep the tokens most relevant to the question, to a fixed budget.

Writes are question-agnostic; this is where the question finally shapes what the LLM reads.
Every frame keeps one summary token (the size-weighted mean of its tokens), so the prompt
still covers the whole time span; the rest of the budget goes to the individual tokens with
the highest cosine to the question embedding (in the LLM's input-embedding space).
"""

from __future__ import annotations

from typing import NamedTuple

import torch

from streamvid.compress._checks import (
    CompressionError,
    check_budget,
    check_index,
    check_same_device,
    check_sizes,
    check_tokens,
)

_EPS = 1e-12


class Pruned(NamedTuple):
    """The tokens :func:`prune_tokens` kept, in chronological order.

    tokens: [n, d] kept tokens (summary tokens are size-weighted frame means)
    group:  [n] long frame id of each (the ``groups`` value it came from)
    source: [n] long index into the input tokens, or -1 for a frame's summary token
    Within a frame the summary comes first, then the kept tokens in input order.
    """

    tokens: torch.Tensor
    group: torch.Tensor
    source: torch.Tensor


def prune_tokens(
    tokens: torch.Tensor,
    groups: torch.Tensor,
    query: torch.Tensor,
    budget: int,
    sizes: torch.Tensor | None = None,
) -> Pruned:
    """Keep at most ``budget`` tokens: one summary per frame plus the most query-relevant tokens.

    tokens: [N, d] an event's (or a prompt's) visual tokens, chronological
    groups: [N] long frame id per token, non-decreasing (a frame = a run of equal ids)
    query:  [d] the question embedded in the same d space as the tokens
    sizes:  [N] patches each token stands for (> 0), weights of the summaries; default 1 each
    budget: >= 1. With F frames, n = min(budget, F + N):
      - budget >= F: every frame's summary, plus the ``budget - F`` tokens with the highest
        cosine to ``query`` (the lower index on a tie);
      - budget <  F: only summaries, of the ``budget`` frames whose summary has the highest
        cosine to ``query`` (the earlier frame on a tie), in chronological order.
    """
    budget = check_budget("budget", budget)
    check_tokens("tokens", tokens, 2, "[N, d]")
    n_tok, dim = tokens.shape
    groups = check_index("groups", groups, (n_tok,))
    check_tokens("query", query, 1, "[d]")
    if query.shape[0] != dim:
        raise CompressionError(f"query has {query.shape[0]} dims but tokens have {dim}")
    unit_weights = torch.ones(n_tok, device=tokens.device)
    weights = unit_weights if sizes is None else check_sizes("sizes", sizes, (n_tok,))
    check_same_device(tokens=tokens, groups=groups, query=query, sizes=weights)
    if n_tok > 1 and bool((groups[1:] < groups[:-1]).any()):
        raise CompressionError("groups must be non-decreasing (tokens in chronological order)")
    device = tokens.device
    if n_tok == 0:
        empty = torch.zeros(0, dtype=torch.long, device=device)
        return Pruned(tokens[:0], empty, empty.clone())

    frame_ids, counts = torch.unique_consecutive(groups, return_counts=True)
    n_frames = frame_ids.shape[0]
    frame_of_token = torch.repeat_interleave(torch.arange(n_frames, device=device), counts)
    first_index = torch.cumsum(counts, 0) - counts

    x = tokens.float()
    weighted = torch.zeros(n_frames, dim, device=device).index_add_(0, frame_of_token, x * weights[:, None])
    frame_weight = torch.zeros(n_frames, device=device).index_add_(0, frame_of_token, weights)
    summaries = weighted / frame_weight[:, None]

    unit_query = torch.nn.functional.normalize(query.float(), dim=0, eps=_EPS)
    token_score = torch.nn.functional.normalize(x, dim=-1, eps=_EPS) @ unit_query
    summary_score = torch.nn.functional.normalize(summaries, dim=-1, eps=_EPS) @ unit_query

    if budget < n_frames:
        chosen = torch.argsort(summary_score, descending=True, stable=True)[:budget].sort().values
        return Pruned(summaries[chosen].to(tokens.dtype), frame_ids[chosen],
                      torch.full((budget,), -1, dtype=torch.long, device=device))

    n_extra = min(budget - n_frames, n_tok)
    picked = torch.argsort(token_score, descending=True, stable=True)[:n_extra]
    # Chronological: a frame's summary sorts just before its first token (keys 2*first, 2*i + 1).
    keys = torch.cat([2 * first_index, 2 * picked + 1])
    order = torch.argsort(keys)
    all_tokens = torch.cat([summaries, x[picked]])[order]
    group = torch.cat([frame_ids, groups[picked]])[order]
    source = torch.cat([torch.full((n_frames,), -1, dtype=torch.long, device=device), picked])[order]
    return Pruned(all_tokens.to(tokens.dtype), group, source)
