"""Frame gate: drop a frame whose retrieval key is a near-duplicate of the last KEPT frame's key.

As LongVU does with DINOv2 features: a frame is dropped when ``cos(key, last_kept) >= tau``.
Comparing with the last kept frame (not the last seen one) means a slow drift is eventually
kept instead of being dropped forever frame by frame.
"""

from __future__ import annotations

import torch

from streamvid.compress._checks import CompressionError, check_tau, check_tokens
from streamvid.tensorops import l2_normalise


def _unit(v: torch.Tensor) -> torch.Tensor:
    """[k] → float32 [k] on CPU, divided by its norm. Both gate functions use exactly this."""
    return l2_normalise(v.detach().float().cpu())


def keep_frame(key: torch.Tensor, last_kept: torch.Tensor | None, tau: float) -> bool:
    """Whether a frame with retrieval ``key`` [k] is kept, given the last kept frame's key [k] or None.

    The first frame (``last_kept is None``) is always kept; otherwise the frame is dropped when
    ``cos(key, last_kept) >= tau``. Keys need not be normalised.
    """
    tau = check_tau("tau", tau)
    check_tokens("key", key, 1, "[k]")
    if last_kept is None:
        return True
    check_tokens("last_kept", last_kept, 1, "[k]")
    if last_kept.shape != key.shape:
        raise CompressionError(f"key {tuple(key.shape)} and last_kept {tuple(last_kept.shape)} differ")
    return float(_unit(key) @ _unit(last_kept)) < tau


def gate_sequence(keys: torch.Tensor, tau: float) -> torch.Tensor:
    """The gate over a whole sequence: keys [T, k] → keep mask [T] bool (on the keys' device).

    Sequential: frame t is compared with the last frame before it that was kept.
    Same decisions as calling :func:`keep_frame` frame by frame.
    """
    tau = check_tau("tau", tau)
    check_tokens("keys", keys, 2, "[T, k]")
    n_frames = keys.shape[0]
    keep = torch.zeros(n_frames, dtype=torch.bool)
    if n_frames == 0:
        return keep.to(keys.device)
    keys = keys.detach().float().cpu()
    last = _unit(keys[0])
    keep[0] = True
    for t in range(1, n_frames):
        unit = _unit(keys[t])
        if float(unit @ last) < tau:
            keep[t] = True
            last = unit
    return keep.to(keys.device)


class FrameGate:
    """Stateful gate for a live stream: ``admit(key)`` says keep/drop and counts both.

    Holds only the last kept key. ``seen``, ``kept`` and ``dropped`` are running counts.
    """

    def __init__(self, tau: float) -> None:
        self.tau = check_tau("tau", tau)
        self.last_kept: torch.Tensor | None = None
        self.seen = 0
        self.kept = 0

    @property
    def dropped(self) -> int:
        return self.seen - self.kept

    def admit(self, key: torch.Tensor, force: bool = False) -> bool:
        """key [k] → True when the frame is kept (it becomes the new reference). ``force`` keeps it
        whatever the key says (e.g. it starts a new shot)."""
        check_tokens("key", key, 1, "[k]")
        return bool(self.admit_batch(key[None], [force])[0])

    def admit_batch(self, keys: torch.Tensor, force: list[bool] | None = None) -> list[bool]:
        """``admit`` over consecutive frames: keys [B, k] → B keep decisions, in order. The cosines
        of every frame with every earlier one and with the reference come from one product; only
        the choice of which one to read goes frame by frame (the reference moves when one is kept)."""
        check_tokens("keys", keys, 2, "[B, k]")
        n = keys.shape[0]
        force = [False] * n if force is None else list(force)
        if n == 0:
            return []
        units = _unit(keys)
        if self.last_kept is not None and self.last_kept.shape[0] != units.shape[1]:
            raise CompressionError(f"key {tuple(keys.shape[1:])} and last_kept {tuple(self.last_kept.shape)} differ")
        pair = (units @ units.T).tolist()  # pair[i][j]: cos(frame i, frame j)
        ref = (units @ self.last_kept).tolist() if self.last_kept is not None else None
        keep, last = [], -1  # last: the newest kept frame of this batch (-1: the reference from before)
        for i in range(n):
            sim = pair[i][last] if last >= 0 else (None if ref is None else ref[i])
            admit = force[i] or sim is None or sim < self.tau
            keep.append(admit)
            if admit:
                last = i
        self.seen += n
        self.kept += sum(keep)
        if last >= 0:
            self.last_kept = units[last].clone()
        return keep

    def reset(self) -> None:
        """Forget the reference (e.g. at a source change); counts are kept."""
        self.last_kept = None

    def stats(self) -> dict[str, int]:
        return {"frames_seen": self.seen, "frames_kept": self.kept, "frames_dropped": self.dropped}
