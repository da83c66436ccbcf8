"""The per-frame write path, question-agnostic: pre-gate → key → gate → vision tokens → compression.

``FramePipeline`` turns decoded frames into what memory stores, as three stage functions that each
own the state spanning frames (``pregate_stage``: the last thumbnail the pre-gate let through;
``device_stage``: the last kept key; ``compress_stage``: the last kept frame's full tokens), so they
can run one after another on the caller's thread (``process``) or each on its own thread with
bounded queues between them (:class:`StagedRun`): the same batches through the same functions in
the same order give the same memory either way. Every stage is timed in one ``StageTimer``.
"""

from __future__ import annotations

import queue
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import cv2
import numpy as np
import torch

from streamvid.compress.gate import FrameGate
from streamvid.compress.merge import compress_frames
from streamvid.compress.pregate import Change, PreGate, small_copy
from streamvid.config import AgentConfig
from streamvid.device import HostCopy
from streamvid.imageops import reduced_copy, short_side_shape
from streamvid.segment import SHOT_SIDE, ShotDetector
from streamvid.types import Frame, FrameBatch, FrameTokens

THUMBNAIL_SHORT_SIDE = 96


class StageTimer:
    """Accumulated milliseconds and frame counts per named stage; safe to use from several threads.

    Host stages are charged the wall time they took. A device stage (``stage(..., device=True)``) on a
    CUDA device is charged the device time between two CUDA events recorded around it, read only when
    the figures are (``ms`` / ``ms_per_frame``): nothing waits for the device while timing, and a stage
    that waits for an earlier stage's device work is not charged for it. On other devices a device
    stage is a host stage. Set ``sync`` (e.g. ``torch.cuda.synchronize``; :meth:`FramePipeline.exact_timings`
    does) to wait for the device at the end of every stage instead, charging host time (no overlap).
    """

    PENDING_MAX = 256  # event pairs kept unread before the finished ones are folded in

    def __init__(self, sync: Callable[[], None] | None = None, device: str | torch.device | None = None) -> None:
        self._ms: dict[str, float] = defaultdict(float)
        self._frames: dict[str, int] = defaultdict(int)
        self.sync = sync
        self.cuda_events = device is not None and torch.device(device).type == "cuda"
        self._pending: list[tuple[str, Any, Any, int]] = []  # (stage, start event, end event, frames)
        self._lock = threading.Lock()

    @contextmanager
    def stage(self, name: str, frames: int = 1, device: bool = False) -> Iterator[None]:
        if device and self.cuda_events and self.sync is None:
            start = torch.cuda.Event(enable_timing=True)
            start.record()
            try:
                yield
            finally:
                end = torch.cuda.Event(enable_timing=True)
                end.record()
                with self._lock:
                    self._pending.append((name, start, end, frames))
                    if len(self._pending) > self.PENDING_MAX:
                        self._fold(wait=False)
            return
        t0 = time.perf_counter()
        try:
            yield
        finally:
            if self.sync is not None:
                self.sync()
            self.add(name, (time.perf_counter() - t0) * 1000.0, frames)

    def _fold(self, wait: bool) -> None:
        """Add the device times of the pending event pairs (all of them, waiting; or those finished)."""
        left = []
        for name, start, end, frames in self._pending:
            if wait:
                end.synchronize()
            elif not end.query():
                left.append((name, start, end, frames))
                continue
            self._ms[name] += start.elapsed_time(end)
            self._frames[name] += frames
        self._pending = left

    def add(self, name: str, ms: float, frames: int) -> None:
        with self._lock:
            self._ms[name] += ms
            self._frames[name] += frames

    @property
    def ms(self) -> dict[str, float]:
        """Total ms per stage (a copy)."""
        with self._lock:
            self._fold(wait=True)
            return dict(self._ms)

    @property
    def frames(self) -> dict[str, int]:
        """Frames that went through each stage (a copy)."""
        with self._lock:
            self._fold(wait=True)
            return dict(self._frames)

    def ms_per_frame(self) -> dict[str, float]:
        """Mean ms per frame that went through each stage."""
        with self._lock:
            self._fold(wait=True)
            return {k: self._ms[k] / max(1, self._frames[k]) for k in self._ms}

    def reset(self) -> None:
        with self._lock:
            self._ms.clear()
            self._frames.clear()
            self._pending = []


@dataclass
class KeptFrame:
    """A frame that passed the gate, ready for ``MemoryBank.write`` (``pack_steps`` makes a batch of them)."""

    tokens: FrameTokens
    key: torch.Tensor | np.ndarray  # [k] L2-normalised retrieval key (float32 numpy from the pipeline)
    thumbnail: np.ndarray  # small RGB uint8
    raw_tokens: int  # tokens the vision tower produced for this frame, before compression
    cut: bool = False  # the frame starts a new shot (ShotDetector): memory starts a new event with it
    hold: bool = False  # the pixels say the open shot goes on (e.g. inside a fade): no event split on key surprise


@dataclass
class DroppedRun:
    """Consecutive frames the gate dropped as repeats of the last kept frame, for ``MemoryBank.count_seen``.

    The newest one's time ``t_last`` extends the open event's span: its content was still on screen.
    """

    count: int
    t_last: float


Step = KeptFrame | DroppedRun


def add_dropped(steps: list, t: float) -> None:
    """Record one dropped frame at time ``t`` in ``steps``, growing the run that ends it, if any."""
    if steps and isinstance(steps[-1], DroppedRun):
        steps[-1].count += 1
        steps[-1].t_last = t
    else:
        steps.append(DroppedRun(1, t))


def thumbnail(rgb: np.ndarray, short_side: int = THUMBNAIL_SHORT_SIDE) -> np.ndarray:
    """A small copy of a frame, aspect kept, for citations and the memory timeline: a bilinear resize
    of its ``reduced_copy`` (the same from the frame or from that copy). That copy is less than twice
    the thumbnail's size, so bilinear sampling still reads every 2×2 neighbourhood; an area resize at
    such a non-integer factor took 15× as long (0.66 vs 0.04 ms per 720p frame, one thread)."""
    small = reduced_copy(rgb, short_side)
    h, w = small.shape[:2]
    if min(h, w) <= short_side:
        return small.copy() if np.shares_memory(small, rgb) else np.ascontiguousarray(small)
    th, tw = short_side_shape(h, w, short_side)
    return cv2.resize(small, (tw, th), interpolation=cv2.INTER_LINEAR)


@dataclass
class GatedBatch:
    """Frames after the pixel stage. verdicts[i]: what the pre-gate saw in frames[i] (all GLOBAL when
    off); cuts / fading: indices of frames that start a new shot / lie inside a transition; reduced[i]:
    ``imageops.reduced_copy`` of frames[i] (the small copies and the memory thumbnail come from it)."""

    frames: list[Frame]
    verdicts: list[Change]
    reduced: list[np.ndarray] = field(default_factory=list)
    cuts: set[int] = field(default_factory=set)
    fading: set[int] = field(default_factory=set)
    pixels: Any = None  # after the upload stage: uint8 [n_passed, H, W, 3] on the model's device, or a list


@dataclass
class EncodedBatch:
    """Frames after the device stage, in order.

    steps:  per run of frames, the index of a kept frame into ``frames`` or a DroppedRun
    keys:   [n_kept, k] float32 retrieval keys of the kept frames, in order
    tokens: [n_kept, n, d] full vision tokens of the kept frames, in order (None when none was kept)
    """

    frames: list[Frame]
    steps: list[int | DroppedRun]
    reduced: list[np.ndarray] = field(default_factory=list)
    cuts: set[int] = field(default_factory=set)
    fading: set[int] = field(default_factory=set)
    keys: np.ndarray | None = None
    tokens: torch.Tensor | None = None
    grid: tuple[int, int] = (0, 0)


class FramePipeline:
    """Pre-gate, key, gate, tokenize and compress frames for one stream, in order.

    encoder: a RetrievalEncoder (``encode_frames``: uint8 [B, H, W, 3] → [B, k] unit keys)
    llm:     a VideoLLM (``frame_tokens``: uint8 [B, H, W, 3] → VisualTokens [B, n, d])

    A frame is dropped by the pre-gate when nothing beyond noise changed (no encoder sees it), kept
    when the pre-gate saw a local change (something small and new: a global key similarity would
    call it a duplicate) or the shot detector a cut, and otherwise (a global change, or the pre-gate
    off) kept unless its key's cosine with the last kept key is ≥ ``tau_dup``.
    """

    def __init__(self, config: AgentConfig, encoder, llm) -> None:
        self.config = config
        self.encoder = encoder
        self.llm = llm
        self.timer = StageTimer(device=getattr(llm, "device", None))
        self.pregate = PreGate(side=SHOT_SIDE) if config.pregate else None
        self.gate = FrameGate(config.tau_dup)
        self.shots = ShotDetector()
        self._last_tokens: torch.Tensor | None = None
        self.frames_in = 0
        self.frames_kept = 0
        self.raw_tokens = 0
        self.stored_tokens = 0

    def exact_timings(self, on: bool = True) -> None:
        """Charge device work to the stage that queued it (waits for the device after every stage)."""
        device = getattr(self.llm, "device", torch.device("cpu"))
        self.timer.sync = torch.cuda.synchronize if on and torch.device(device).type == "cuda" else None

    def stages(self) -> list[tuple[str, Callable[[Any], Any]]]:
        """(name, function) of each stage in order; chained, they are :meth:`process`."""
        return [("pregate", self.pregate_stage), ("upload", self.upload_stage), ("device", self.device_stage),
                ("compress", self.compress_stage)]

    def process(self, frames: Sequence[Frame]) -> FrameBatch:
        """Frames in source order → the kept frames (tokenized, compressed) and the runs of dropped ones."""
        return self.compress_stage(self.device_stage(self.upload_stage(self.pregate_stage(frames))))

    def upload_stage(self, batch: GatedBatch) -> GatedBatch:
        """The frames the pre-gate passed → one uint8 [n, H, W, 3] tensor on the model's device (from
        pinned memory, non-blocking, on CUDA), so the copy overlaps the device's work on the batch
        before. Frames of different sizes in one batch stay a list (the encoders group them)."""
        frames = [batch.frames[i].rgb for i, v in enumerate(batch.verdicts) if v.passes]
        if not frames:
            return batch
        with self.timer.stage("upload", len(frames), device=True):
            if len({f.shape for f in frames}) > 1:
                batch.pixels = frames
            else:
                from streamvid.device import upload_frames

                batch.pixels = upload_frames(frames, getattr(self.llm, "device", "cpu"))
        return batch

    def pregate_stage(self, frames: Sequence[Frame]) -> GatedBatch:
        """Pixel checks on every frame (CPU, cheap): shot changes, and the pre-gate's block-wise change
        against the last frame it let through."""
        frames = list(frames)
        self.frames_in += len(frames)
        batch = GatedBatch(frames, [Change.GLOBAL] * len(frames))
        with self.timer.stage("pregate", len(frames)):
            for i, f in enumerate(frames):
                batch.reduced.append(reduced_copy(f.rgb, THUMBNAIL_SHORT_SIDE))  # the only full-size pass
                small = small_copy(batch.reduced[i], SHOT_SIDE)  # one small copy serves both checks
                if self.shots.update(small):
                    batch.cuts.add(i)
                elif self.shots.in_transition:
                    batch.fading.add(i)
                if self.pregate is not None:
                    v = self.pregate.check_thumbnail(small.astype(np.float32))
                    batch.verdicts[i] = Change.GLOBAL if i in batch.cuts and not v.passes else v
        return batch

    def device_stage(self, batch: GatedBatch) -> EncodedBatch:
        """Keys of the frames the pre-gate passed, the key gate, vision tokens of the kept frames (batched)."""
        frames = batch.frames
        passed = [i for i, v in enumerate(batch.verdicts) if v.passes]
        out = EncodedBatch(frames, [], batch.reduced, cuts=batch.cuts, fading=batch.fading)
        keys = None
        pixels = batch.pixels if batch.pixels is not None else [frames[i].rgb for i in passed]
        if passed:
            with self.timer.stage("key", len(passed), device=True):
                keys = encode_keys(self.encoder, pixels)
        with self.timer.stage("gate", len(frames)):
            admitted = dict(zip(passed, self.gate.admit_batch(
                keys, [batch.verdicts[i] is Change.LOCAL or i in batch.cuts for i in passed]), strict=True)) \
                if passed else {}
            self.gate.seen += len(frames) - len(passed)
            if passed:
                out.keys = keys.float().numpy()[[j for j, i in enumerate(passed) if admitted[i]]]
            for i, frame in enumerate(frames):
                if admitted.get(i, False):
                    out.steps.append(i)
                else:
                    add_dropped(out.steps, frame.t)
        kept = [s for s in out.steps if isinstance(s, int)]
        self.frames_kept += len(kept)
        if kept:
            row = {i: j for j, i in enumerate(passed)}  # frame index → row of ``pixels``
            rows = [row[i] for i in kept]
            if isinstance(pixels, torch.Tensor):
                every = rows == list(range(len(passed)))
                chosen = pixels if every else pixels.index_select(0, torch.tensor(rows, device=pixels.device))
            else:
                chosen = [pixels[r] for r in rows]
            with self.timer.stage("vision", len(kept), device=True):
                visual = self.llm.frame_tokens(chosen, times=[frames[i].t for i in kept])
            out.tokens, out.grid = visual.tokens, visual.grid
        return out

    def compress_stage(self, batch: EncodedBatch) -> FrameBatch:
        """Temporal drop against the last kept frame, spatial merge to the budget, memory thumbnails: the
        batch as memory takes it in one write (``MemoryBank.write_batch``), its tokens on their way to
        the host (memory lives in RAM; the copy overlaps the device's next work)."""
        kept: list[int] = []
        dropped: list[tuple[int, int, float]] = []
        for s in batch.steps:
            if isinstance(s, int):
                kept.append(s)
            else:
                dropped.append((len(kept), s.count, s.t_last))
        if not kept:
            return empty_batch(self.llm_dims(), dropped)
        with self.timer.stage("compress", len(kept), device=True):
            full_tokens = batch.tokens
            if self._last_tokens is not None and self._last_tokens.shape != full_tokens.shape[1:]:
                self._last_tokens = None  # the grid changed (new resolution): start over
            packed = compress_frames(full_tokens, self._last_tokens, self.config.tau_temporal,
                                     self.config.tokens_per_frame, packed=True)
            self._last_tokens = full_tokens[-1]
            copy = HostCopy(packed.tokens, packed.positions, packed.sizes)
            counts = np.array(packed.counts, dtype=np.int64)
        with self.timer.stage("thumbnails", len(kept)):
            thumbs = [thumbnail(batch.reduced[i] if batch.reduced else batch.frames[i].rgb) for i in kept]
        raw = len(kept) * int(full_tokens.shape[1])
        self.raw_tokens += raw
        self.stored_tokens += int(counts.sum())
        tokens, positions, sizes = copy.tensors
        return FrameBatch(tokens, positions, sizes, counts, batch.grid,
                          np.array([batch.frames[i].t for i in kept], dtype=np.float64), batch.keys, thumbs,
                          np.array([i in batch.cuts for i in kept]), np.array([i in batch.fading for i in kept]),
                          dropped, raw, copy)

    def llm_dims(self) -> tuple[int, int]:
        """(token width, key width) of this pipeline's models."""
        return int(self.llm.hidden_size), int(self.encoder.dim)


def empty_batch(dims: tuple[int, int], dropped: list[tuple[int, int, float]]) -> FrameBatch:
    """A batch with no kept frame: only dropped runs (all ``before`` 0). dims: (token width, key width)."""
    return FrameBatch.of([], [], dropped=[(0, n, t) for _, n, t in dropped], token_dim=dims[0], key_dim=dims[1])


def pack_steps(steps: Sequence[Step], dims: tuple[int, int]) -> FrameBatch:
    """Kept frames and dropped runs, in order, as one FrameBatch. dims: (token width, key width)."""
    kept = [s for s in steps if isinstance(s, KeptFrame)]
    dropped, k = [], 0
    for s in steps:
        if isinstance(s, KeptFrame):
            k += 1
        else:
            dropped.append((k, s.count, s.t_last))
    out = FrameBatch.of([s.tokens for s in kept], [s.key for s in kept], [s.thumbnail for s in kept],
                        cuts=[s.cut for s in kept], holds=[s.hold for s in kept], dropped=dropped,
                        token_dim=dims[0], key_dim=dims[1])
    out.raw_tokens = sum(s.raw_tokens for s in kept)
    return out


def encode_keys(encoder: Any, pixels: Any) -> torch.Tensor:
    """Retrieval keys [B, k] float32 on the CPU (one transfer per batch) of uint8 frames: a [B, H, W, 3]
    tensor on the encoder's device goes through ``encode_batch`` where the encoder has it."""
    if isinstance(pixels, torch.Tensor) and hasattr(encoder, "encode_batch"):
        with torch.inference_mode():
            return encoder.encode_batch(pixels).cpu()
    return encoder.encode_frames(pixels)


# ----------------------------------------------------------------------------------------- staged run
class _End:
    """The producer finished: no more items."""


@dataclass
class _Failed:
    """Travels down the queues in order behind the items made before the failure."""

    error: BaseException
    stage: str


class StagedRun:
    """Items from ``produce`` through ``stages`` (functions applied in order), each on its own thread,
    joined by queues of at most ``maxsize`` items; iterate for the last stage's outputs, in order.

    Backpressure: a stage that cannot hand on its output waits, so a slow stage stalls the ones
    before it and the producer (a file is read no faster than the device takes it; a live source's
    own newest-frame-wins buffer then drops). An error in the producer or any stage travels down
    behind the items made before it: iteration yields those, then raises it. ``close()`` (also on
    leaving a ``with`` block, or when iteration ends) stops and joins every thread.

    ``max_in_flight`` (for live sources) bounds the items between the producer taking one and the
    caller finishing with it, whatever the number of stages: while the pipeline is that full the
    producer does not read its source, so a live source's newest-frame-wins buffer drops instead of
    frames waiting in queues (latency stays at most ``max_in_flight`` items deep).

    ``threaded=False`` runs the same functions on the caller's thread, one item at a time (the serial
    path). ``peaks`` holds the largest size each queue reached.
    """

    POLL_S = 0.05

    def __init__(self, produce: Iterable[Any], stages: Sequence[tuple[str, Callable[[Any], Any]]], *,
                 maxsize: int = 2, threaded: bool = True, max_in_flight: int | None = None,
                 name: str = "streamvid") -> None:
        if maxsize < 1:
            raise ValueError(f"maxsize must be >= 1, got {maxsize}")
        self.produce = produce
        self.stages = list(stages)
        self.threaded = threaded
        self.maxsize = maxsize
        names = ["produce"] + [n for n, _ in self.stages]
        self.queues: list[queue.Queue] = [queue.Queue(maxsize) for _ in names]  # queues[k]: out of thread k
        self.peaks = dict.fromkeys(names, 0)
        self._cancel = [threading.Event() for _ in names]
        self._slots = None if max_in_flight is None else threading.Semaphore(max_in_flight)
        self._holding = False  # the caller holds a slot for the item it was last given
        self._threads: list[threading.Thread] = []
        self._started = False
        self._done = False
        self._name = name

    # -------------------------------------------------------------- threads
    def _put(self, k: int, item: Any) -> bool:
        """Hand ``item`` from thread k downstream; False when thread k was cancelled meanwhile."""
        q = self.queues[k]
        while not self._cancel[k].is_set():
            try:
                q.put(item, timeout=self.POLL_S)
            except queue.Full:
                continue
            name = "produce" if k == 0 else self.stages[k - 1][0]
            self.peaks[name] = max(self.peaks[name], q.qsize())
            return True
        return False

    def _get(self, k: int) -> Any:
        """The next item for thread k from upstream; _End when thread k was cancelled."""
        q = self.queues[k - 1]
        while not self._cancel[k].is_set():
            try:
                return q.get(timeout=self.POLL_S)
            except queue.Empty:
                continue
        return _End()

    def _cancel_upstream(self, k: int) -> None:
        for j in range(k + 1):
            self._cancel[j].set()

    def _run_producer(self) -> None:
        it = iter(self.produce)
        try:
            while not self._cancel[0].is_set():
                if self._slots is not None and not self._slots.acquire(timeout=self.POLL_S):
                    continue
                try:
                    item = next(it)
                except StopIteration:
                    self._put(0, _End())
                    return
                if not self._put(0, item):
                    return
        except BaseException as exc:
            self._put(0, _Failed(exc, "produce"))
        finally:
            close = getattr(it, "close", None)
            if close is not None:
                close()

    def _run_stage(self, k: int) -> None:
        name, fn = self.stages[k - 1]
        while True:
            item = self._get(k)
            if isinstance(item, (_End, _Failed)):
                self._put(k, item)
                return
            try:
                out = fn(item)
            except BaseException as exc:
                self._cancel_upstream(k - 1)
                self._put(k, _Failed(exc, name))
                return
            if not self._put(k, out):
                return

    def _start(self) -> None:
        self._started = True
        self._threads = [threading.Thread(target=self._run_producer, name=f"{self._name}-produce", daemon=True)]
        self._threads += [threading.Thread(target=self._run_stage, args=(k,), name=f"{self._name}-{n}", daemon=True)
                          for k, (n, _) in enumerate(self.stages, start=1)]
        for t in self._threads:
            t.start()

    # -------------------------------------------------------------- caller side
    def __iter__(self) -> Iterator[Any]:
        if self._started or self._done:
            raise RuntimeError("a StagedRun is iterated once")
        if not self.threaded:
            yield from self._serial()
            return
        self._start()
        last = len(self.stages)
        try:
            while True:
                if self._holding:
                    self._slots.release()
                    self._holding = False
                item = self.queues[last].get()
                self._holding = self._slots is not None and not isinstance(item, (_End, _Failed))
                if isinstance(item, _End):
                    return
                if isinstance(item, _Failed):
                    raise item.error
                yield item
        finally:
            self.close()

    def _serial(self) -> Iterator[Any]:
        self._done = True
        it = iter(self.produce)
        try:
            for item in it:
                for _, fn in self.stages:
                    item = fn(item)
                yield item
        finally:
            close = getattr(it, "close", None)
            if close is not None:
                close()

    def cancel(self) -> None:
        """Ask every thread to stop at its next hand-off (a producer blocked inside its source waits
        for that source: close a live source to wake it)."""
        for c in self._cancel:
            c.set()

    def close(self) -> None:
        """Stop every thread and wait for them."""
        self.cancel()
        for t in self._threads:
            t.join()
        self._threads = []
        self._done = True

    @property
    def alive(self) -> int:
        """Threads still running."""
        return sum(t.is_alive() for t in self._threads)

    def __enter__(self) -> StagedRun:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
