"""Where tensors run: dtype "auto", the batch size a device wants, and getting uint8 frames onto it.

* ``resolve_dtype("auto", device)``: bf16 on a CUDA card that supports it (else fp16); on a CPU,
  bf16 where the CPU computes it natively (AVX512-BF16 or AMX), fp32 elsewhere.
* ``default_batch_size(device)``: frames per encoder call — large on a GPU, where the towers need
  dozens of frames to fill the card, small on a CPU, where a batch only adds latency.
* ``upload_frames(frames, device)``: uint8 [B, H, W, 3] frames (numpy, a list, a CPU or pinned
  tensor) → one uint8 tensor on the device. On CUDA the copy is non-blocking from pinned host
  memory; resizing and normalising then happen on the device (see streamvid.imageops).
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from streamvid.config import normalise_dtype
from streamvid.errors import ModelError

log = logging.getLogger("streamvid.device")

# CPU flags (Linux /proc/cpuinfo names) of native bf16 matrix arithmetic.
BF16_CPU_FLAGS = ("avx512_bf16", "amx_bf16")
GPU_BATCH = 32  # SmolVLM-256M's tower on an H100: 1173 frames/s at 32, 1190 at 64 (docs/BENCHMARKS.md)
CPU_BATCH = 2


@functools.lru_cache(maxsize=1)
def cpu_flags(cpuinfo: str = "/proc/cpuinfo") -> frozenset[str]:
    """The CPU's feature flags from /proc/cpuinfo (empty where that file does not exist)."""
    try:
        text = Path(cpuinfo).read_text(encoding="utf-8", errors="replace")
    except OSError:
        return frozenset()
    for line in text.splitlines():
        if line.startswith("flags") and ":" in line:
            return frozenset(line.split(":", 1)[1].split())
    return frozenset()


def cpu_has_native_bf16(flags: frozenset[str] | None = None) -> bool:
    """Whether this CPU multiplies bf16 natively (AVX512-BF16 or AMX-BF16), so that bf16 halves the
    vision tower's time instead of being emulated. ``flags`` defaults to this machine's."""
    if torch.backends.cpu.get_cpu_capability() not in ("AVX512", "AMX"):
        return False
    return any(f in (cpu_flags() if flags is None else flags) for f in BF16_CPU_FLAGS)


def resolve_dtype(dtype: str | torch.dtype, device: str | torch.device) -> torch.dtype:
    """A dtype name (any streamvid.config.DTYPES name, or "auto") → torch.dtype for ``device``.

    "auto": CUDA → bf16 when the card supports it, else fp16; CPU → bf16 when the CPU has native
    bf16 (``cpu_has_native_bf16``), else fp32; anything else → fp32.
    """
    if isinstance(dtype, torch.dtype):
        return dtype
    dtype = normalise_dtype(dtype)  # the one map of names (streamvid.config.DTYPES); ConfigError if unknown
    if dtype == "auto":
        dev = torch.device(device)
        if dev.type == "cuda":
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        if dev.type == "cpu" and cpu_has_native_bf16():
            return torch.bfloat16
        return torch.float32
    return getattr(torch, dtype)


def default_batch_size(device: str | torch.device) -> int:
    """Frames per vision-tower / key-encoder call on ``device``: 32 on a GPU, 2 on a CPU."""
    return GPU_BATCH if torch.device(device).type == "cuda" else CPU_BATCH


Frames = torch.Tensor | np.ndarray | Sequence[np.ndarray | torch.Tensor]


def frame_batches(rgb: Frames) -> list[torch.Tensor | np.ndarray]:
    """uint8 RGB frames → runs of same-sized frames, each [b, H, W, 3] (validated, order kept).

    rgb: a [B, H, W, 3] / [H, W, 3] torch tensor (CPU, pinned, or on a device) or numpy array, or
    a list of [H, W, 3] frames whose sizes may differ. ModelError names a bad frame.
    """
    if isinstance(rgb, (np.ndarray, torch.Tensor)):
        x = rgb[None] if rgb.ndim == 3 else rgb
        if x.ndim != 4 or x.shape[-1] != 3:
            raise ModelError(f"frames must be H×W×3 uint8 RGB arrays ([B, H, W, 3]), got {x.dtype} {tuple(x.shape)}")
        if x.dtype not in (np.uint8, torch.uint8):
            raise ModelError(f"frames must be H×W×3 uint8 RGB arrays, got {x.dtype} {tuple(x.shape)}")
        if x.shape[0] == 0:
            raise ModelError("got no frames")
        return [x]
    frames = list(rgb)
    if not frames:
        raise ModelError("got no frames")
    for i, f in enumerate(frames):
        if (not isinstance(f, (np.ndarray, torch.Tensor)) or f.ndim != 3 or f.shape[2] != 3
                or f.dtype not in (np.uint8, torch.uint8)):
            desc = f"{f.dtype} {tuple(f.shape)}" if isinstance(f, (np.ndarray, torch.Tensor)) else type(f).__name__
            raise ModelError(f"frame {i} must be an H×W×3 uint8 RGB array, got {desc}")
    runs: list[list] = []
    for f in frames:
        if runs and runs[-1][0].shape == f.shape:
            runs[-1].append(f)
        else:
            runs.append([f])
    return [torch.stack([torch.as_tensor(f) for f in run]) if isinstance(run[0], torch.Tensor) else np.stack(run)
            for run in runs]


def upload_frames(frames: Frames, device: str | torch.device) -> torch.Tensor:
    """uint8 RGB frames → uint8 [B, H, W, 3] on ``device``.

    frames: a [B, H, W, 3] or [H, W, 3] uint8 tensor (CPU, pinned or already on the device) or numpy
    array, or a list of same-sized [H, W, 3] frames (on CUDA stacked straight into pinned memory,
    so pass a list rather than stacking it first). On CUDA a host tensor is pinned (when it is not
    already) and copied with ``non_blocking=True``; the copy is ordered on the current stream, so
    work queued after it sees the frames. The caller must not overwrite a pinned buffer it passed
    until that stream has moved past the copy.
    """
    dev = torch.device(device)
    if isinstance(frames, (np.ndarray, torch.Tensor)):
        x = frames
    else:
        items = list(frames)
        if not items:
            raise ModelError("got no frames")
        shapes = {tuple(f.shape) for f in items}
        if len(shapes) > 1:
            raise ModelError(f"frames in one batch must share one size; got {sorted(shapes)}")
        tensors = [torch.as_tensor(f) for f in items]
        if dev.type == "cuda" and tensors[0].device.type == "cpu":  # stacked straight into pinned memory: one host copy
            x = torch.empty((len(tensors), *tensors[0].shape), dtype=tensors[0].dtype, pin_memory=True)
            torch.stack(tensors, out=x)
        else:
            x = torch.stack(tensors)
    if isinstance(x, np.ndarray):
        x = torch.from_numpy(np.ascontiguousarray(x))
    if x.ndim == 3:
        x = x[None]
    if x.ndim != 4 or x.shape[-1] != 3 or x.dtype != torch.uint8 or x.shape[0] == 0:
        raise ModelError(f"frames must be uint8 RGB shaped [B, H, W, 3] with B ≥ 1; got {x.dtype} {tuple(x.shape)}")
    if x.device == dev or (dev.type == x.device.type and dev.index is None):
        return x
    if dev.type == "cuda" and x.device.type == "cpu":
        if not x.is_pinned():
            x = x.contiguous().pin_memory()
        return x.to(dev, non_blocking=True)
    return x.to(dev)


def to_device(x: torch.Tensor, device: str | torch.device) -> torch.Tensor:
    """A host tensor on ``device``; to a CUDA device through pinned memory, non-blocking (ordered on the
    current stream, so work queued after it sees the values; the host never waits for the device)."""
    dev = torch.device(device)
    if x.device == dev:
        return x
    if dev.type == "cuda" and x.device.type == "cpu":
        return x.pin_memory().to(dev, non_blocking=True)
    return x.to(dev)


class HostCopy:
    """Device tensors on their way to the host: ``tensors`` (pinned host copies on CUDA, the tensors
    themselves elsewhere) may be read once ``wait()`` returns, which waits only for the work queued
    before the copy, not for what other threads queued since (unlike a blocking ``.cpu()``)."""

    def __init__(self, *tensors: torch.Tensor) -> None:
        self._event = None
        if any(t.device.type == "cuda" for t in tensors):
            out = []
            for t in tensors:
                host = torch.empty(t.shape, dtype=t.dtype, pin_memory=True)
                host.copy_(t, non_blocking=True)
                out.append(host)
            self._event = torch.cuda.Event()
            self._event.record()
            self.tensors = tuple(out)
        else:
            self.tensors = tuple(t.cpu() for t in tensors)

    def synchronize(self) -> None:
        """Wait until the copies are done (at once where nothing was in flight)."""
        if self._event is not None:
            self._event.synchronize()
            self._event = None
