"""Token compression: pure tensor functions for the write path (gate, temporal drop, spatial merge,
event consolidation) and the read path (query-aware pruning). Similarity hot paths run through
``streamvid_kernels`` (Triton on CUDA, torch elsewhere).
"""

from streamvid.compress._checks import CompressionError, debug_checks, debug_checks_on, set_debug_checks
from streamvid.compress.gate import FrameGate, gate_sequence, keep_frame
from streamvid.compress.merge import (
    CompressedFrame,
    Consolidated,
    bipartite_soft_matching,
    compress_frame,
    compress_frames,
    merge_adjacent_frames,
    merge_to_budget,
    merge_wavg,
    temporal_keep_mask,
)
from streamvid.compress.pregate import Change, PreGate, block_change, classify_change, gate_thumbnail
from streamvid.compress.prune import Pruned, prune_tokens

__all__ = [
    "Change", "CompressedFrame", "CompressionError", "Consolidated", "FrameGate", "PreGate", "Pruned",
    "bipartite_soft_matching", "block_change", "classify_change", "compress_frame", "compress_frames", "debug_checks",
    "debug_checks_on", "gate_sequence", "gate_thumbnail", "keep_frame", "merge_adjacent_frames", "merge_to_budget",
    "merge_wavg", "prune_tokens", "set_debug_checks", "temporal_keep_mask",
]
