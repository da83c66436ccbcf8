"""streamvid_kernels: fused Triton kernels for streamvid's hot paths, each beside a torch reference.

Imports only torch (and triton when it is installed). Each ``name`` dispatches: the Triton
kernel for CUDA tensors, ``name_reference`` elsewhere; ``impl=`` or the ``STREAMVID_KERNELS``
environment variable ("auto" | "triton" | "torch") forces one.

- :func:`cosine_argmax` — a [B, Na, c] vs b [B, Nb, c] → best cosine [B, Na], its index [B, Na]
- :func:`temporal_similarity` — curr, prev [B, N, d], tau → cos [B, N], keep = cos < tau [B, N]
"""

from streamvid_kernels._dispatch import HAS_TRITON, launch_counts, select_impl, triton_interpreted
from streamvid_kernels.cosine_match import cosine_argmax, cosine_argmax_reference, cosine_argmax_triton
from streamvid_kernels.temporal_sim import (
    temporal_similarity,
    temporal_similarity_reference,
    temporal_similarity_triton,
)

__all__ = [
    "HAS_TRITON", "cosine_argmax", "cosine_argmax_reference", "cosine_argmax_triton", "launch_counts",
    "select_impl", "temporal_similarity", "temporal_similarity_reference", "temporal_similarity_triton",
    "triton_interpreted",
]
