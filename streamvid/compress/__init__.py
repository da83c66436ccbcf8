"""Token compression: pure tensor functions for the write path (gate, temporal drop, spatial merge,
event consolidation) and the read path (query-aware pruning). Similarity hot paths run through
``streamvid_kernels`` (Triton on CUDA, torch elsewhere).
"""

from streamvid.compress._checks import CompressionError
from streamvid.compress.gate import FrameGate, gate_sequence, keep_frame
from streamvid.compress.merge import (
    CompressedFrame,
    Consolidated,
    bipartite_soft_matching,
    compress_frame,
    merge_adjacent_frames,
    merge_to_budget,
    merge_wavg,
    temporal_keep_mask,
)
from streamvid.compress.prune import Pruned, prune_tokens

__all__ = [
    "CompressedFrame", "CompressionError", "Consolidated", "FrameGate", "Pruned", "bipartite_soft_matching",
    "compress_frame", "gate_sequence", "keep_frame", "merge_adjacent_frames", "merge_to_budget", "merge_wavg",
    "prune_tokens", "temporal_keep_mask",
]
