"""MemoryBank: short-term ring buffer + long-term events + on-disk archive + FAISS key index.

Write path (one writer thread): ``write(frame_tokens, key)`` → the segmenter decides whether
the frame starts a new event → the open event's tokens are pooled (and consolidated when the
pool grows past ``open_cap``, 2–4·event_tokens) → a closed event is consolidated to ``event_tokens`` tokens
and joins long-term memory, its event key and frame keys join the index → the RAM budget is
enforced by moving the oldest, least-recalled events to the archive.

Read path (any thread): ``snapshot()`` copies references under the lock; a snapshot's
``search`` then runs without the bank's lock (the index and the archive have their own short
locks), so answering never waits for ingestion.

Index ids pack (event id, slot): ``event_id << 16 | slot``; slot 0 is the event key, slots
1..f the frame keys (near-duplicates within an event left out), slots from 2**15 on the text
(caption) keys.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import numpy as np
import torch

from streamvid.config import PRESETS, AgentConfig
from streamvid.errors import ConfigError, MemoryFormatError, MemoryInputError, QuestionError, StreamvidError
from streamvid.memory.archive import EventArchive, check_event_tensors, event_from_tensors, event_tensors
from streamvid.memory.index import KeyIndex
from streamvid.memory.long_term import EventBuilder, consolidate, own_tensor
from streamvid.memory.short_term import ShortTermFrame, ShortTermMemory
from streamvid.segment import EventSegmenter
from streamvid.tensorops import l2_normalise
from streamvid.types import Event, FrameBatch, FrameTokens, TokenSet

SLOT_BITS = 16
TEXT_SLOT0 = 1 << 15
DELETED, IN_RAM, ARCHIVED = 0, 1, 2

log = logging.getLogger("streamvid.memory")

TextEncoder = Callable[[list[str]], torch.Tensor]
ImageEncoder = Callable[[np.ndarray], torch.Tensor]


def _tensor_bytes(t: torch.Tensor | None) -> int:
    return 0 if t is None else t.numel() * t.element_size()


def _array_bytes(a: np.ndarray | None) -> int:
    return 0 if a is None else int(a.nbytes)


def event_bytes(e: Event) -> int:
    """RAM bytes an event holds (tokens, per-token and per-frame arrays, thumbnail)."""
    return (_tensor_bytes(e.tokens) + _tensor_bytes(e.token_times) + _tensor_bytes(e.token_positions)
            + _tensor_bytes(e.token_sizes) + _array_bytes(e.key) + _array_bytes(e.frame_keys)
            + _array_bytes(e.frame_times) + _array_bytes(e.thumbnail))


def frame_bytes(f: ShortTermFrame) -> int:
    fr = f.frame
    return (_tensor_bytes(fr.tokens) + _tensor_bytes(fr.positions) + _tensor_bytes(fr.sizes)
            + _array_bytes(f.key) + _array_bytes(f.thumbnail))


class EventTable:
    """Append-only per-event (t_start, t_end, state) arrays indexed by event id.

    Growing replaces the arrays, so views handed to a snapshot stay valid; a state flag that
    changes later (RAM → archived → deleted) is read as whatever it is at read time, which the
    readers tolerate.
    """

    def __init__(self) -> None:
        self.t0 = np.zeros(64, dtype=np.float64)
        self.t1 = np.zeros(64, dtype=np.float64)
        self.state = np.zeros(64, dtype=np.int8)
        self.n = 0

    def add(self, event_id: int, t0: float, t1: float, state: int) -> None:
        if event_id != self.n:
            raise AssertionError(f"event ids must be consecutive: got {event_id}, expected {self.n}")
        if self.n == len(self.t0):
            cap = 2 * len(self.t0)
            self.t0 = np.resize(self.t0, cap)
            self.t1 = np.resize(self.t1, cap)
            self.state = np.concatenate([self.state, np.zeros(cap - len(self.state), np.int8)])
        self.t0[self.n], self.t1[self.n], self.state[self.n] = t0, t1, state
        self.n += 1

    def views(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        return self.t0[: self.n], self.t1[: self.n], self.state[: self.n]


class MemoryBank:
    """Bounded hierarchical memory of a stream. See the module docstring for the data flow.

    config:        AgentConfig (short_term_frames, event_tokens, max_ram_tokens, archive_dir,
                   archive_max_bytes, segment_*, device, seed are read)
    key_dim:       size k of the retrieval keys
    token_dim:     size d of the visual tokens
    text_encoder:  list[str] → Tensor [B, k] (for text search); image_encoder: uint8 [B, H, W, 3] → [B, k]
    recall_bonus:  an event recalled r times is evicted as if it were r·recall_bonus events younger
    index_exact_max: keys up to which the index searches exactly (IVF above)
    index, archive: a key index and an event archive to use instead of a new FAISS ``KeyIndex`` and a new
                   ``EventArchive`` (same methods; e.g. a library store's keys, see ``MemoryBank.over``)
    """

    def __init__(self, config: AgentConfig, *, key_dim: int, token_dim: int,
                 text_encoder: TextEncoder | None = None, image_encoder: ImageEncoder | None = None,
                 recall_bonus: int = 8, index_exact_max: int = 20_000, index: Any = None,
                 archive: Any = None) -> None:
        if key_dim < 1 or token_dim < 1:  # the config's own fields are checked by AgentConfig
            raise ConfigError(f"key_dim and token_dim must be >= 1, got {key_dim}, {token_dim}")
        self.config = config
        self.key_dim = key_dim
        self.token_dim = token_dim
        self.text_encoder = text_encoder
        self.image_encoder = image_encoder
        self.recall_bonus = recall_bonus
        # What the backend that wrote this memory knows beyond tokens and keys (e.g. the offline preset's
        # perception records), JSON-able; saved with the memory. extra_state_fn, when set, gives the
        # current value at save time (the agent points it at ``Backend.state``).
        self.extra_state: dict[str, Any] = {}
        self.extra_state_fn: Callable[[], dict[str, Any]] | None = None
        # The open event's token pool is consolidated to event_tokens whenever it passes open_cap.
        # open_cap <= max_ram_tokens - 2·event_tokens keeps room for one long-term event
        # (AgentConfig guarantees max_ram_tokens >= 4·event_tokens).
        self.open_cap = max(2 * config.event_tokens, min(4 * config.event_tokens,
                                                         config.max_ram_tokens - 2 * config.event_tokens))
        self.short_cap = max(1, (config.max_ram_tokens - self.open_cap) // 2)
        self._lock = threading.RLock()
        self.short = ShortTermMemory(config.short_term_frames, self.short_cap)
        self._builder = EventBuilder()
        self._segmenter = EventSegmenter(min_frames=config.segment_min_frames, max_frames=config.segment_max_frames,
                                         z=config.segment_z, window=config.segment_window,
                                         hard_surprise=config.segment_hard_surprise)
        self._events: list[Event] = []
        self._long_tokens = 0
        self._table = EventTable()
        self._text_keys: dict[int, int] = {}
        self.index = index if index is not None else KeyIndex(key_dim, exact_max=index_exact_max,
                                                              device=config.device, seed=config.seed)
        self.archive = archive if archive is not None else EventArchive(config.archive_dir, config.archive_max_bytes)
        self._frames_seen = 0
        self._frames_kept = 0
        self._last_t: float | None = None

    @classmethod
    def over(cls, config: AgentConfig, *, key_dim: int, token_dim: int, index: Any, archive: Any,
             text_encoder: TextEncoder | None = None, image_encoder: ImageEncoder | None = None) -> MemoryBank:
        """A bank whose long-term memory is an existing key index and event archive, e.g. a library
        store's keys of one video and that video's saved events read in place (``streamvid.library.index``).

        ``archive.spans()`` gives (t_start [n], t_end [n], stored [n] bool) for event ids 0..n-1; every
        stored event is served from the archive, loaded only when a read returns it. The bank holds no
        short-term frames and no open event; it is for reading (search, retrieval, answers).
        """
        bank = cls(config, key_dim=key_dim, token_dim=token_dim, text_encoder=text_encoder,
                   image_encoder=image_encoder, index=index, archive=archive)
        t0, t1, stored = archive.spans()
        for i in range(len(t0)):
            bank._table.add(i, float(t0[i]), float(t1[i]), ARCHIVED if stored[i] else DELETED)
        bank._last_t = float(np.max(t1)) if len(t1) else None
        return bank

    # ---- write path ------------------------------------------------------------------------
    def write(self, frame: FrameTokens, key: torch.Tensor | np.ndarray,
              thumbnail: np.ndarray | None = None, *, cut: bool = False, hold: bool = False) -> list[Event]:
        """Add one kept frame. key: [k] L2-normalised retrieval key; cut: the frame starts a new shot
        (it then starts a new event); hold: the pixels say the open shot goes on (the frame does not
        split on key surprise). Returns the events this frame closed. ``write_batch`` of one frame."""
        self._check_frame(frame)
        key = self._check_key(key, normalise=False)  # write_batch normalises
        return self.write_batch(FrameBatch.of([frame], [key], [thumbnail], cuts=[cut], holds=[hold]))

    def write_batch(self, batch: FrameBatch) -> list[Event]:
        """Add a batch of frames (``FrameBatch``: kept frames packed, runs of dropped repeats between
        them) under one lock: the same memory as ``write`` / ``count_seen`` frame by frame, in order.
        Returns the events the batch closed.

        The per-frame work is integer bookkeeping; the rest goes by runs of frames that join the open
        event together (up to a new event or a consolidation of the open pool): keys checked and
        normalised together, surprises computed together (``EventSegmenter.update_batch``), one
        append of the run to the open event, the short-term ring filled once with only the frames
        that stay in it, the RAM budget enforced once per run at its largest point in the run.
        """
        if batch.ready is not None:
            batch.ready.synchronize()  # a copy to the host still in flight
        keys = self._check_keys(batch.keys)
        counts, times = self._check_batch(batch)
        b = len(times)
        drops = sorted(batch.dropped, key=lambda d: d[0])
        with self._lock:
            self._check_times(times, drops)
            closed: list[Event] = []
            starts = np.zeros(b, dtype=bool)  # frame i starts a new event
            if b:
                first = 0
                if self._builder.n_frames and batch.grid != self._builder.grid:
                    # The grid changed: the first frame starts a new event, on a fresh segmenter.
                    if not self._segmenter.update_batch(keys[:1], batch.cuts[:1], batch.holds[:1])[0]:
                        self._segmenter.reset()
                        self._segmenter.update_batch(keys[:1], np.zeros(1, bool), np.zeros(1, bool))
                    starts[0] = True
                    first = 1
                starts[first:] = self._segmenter.update_batch(keys[first:], batch.cuts[first:], batch.holds[first:])
            offsets = np.concatenate([[0], np.cumsum(counts)])
            d = 0  # next dropped run
            i = 0
            while i < b:
                while d < len(drops) and drops[d][0] <= i:
                    self._seen_dropped(drops[d][1], drops[d][2])
                    d += 1
                if starts[i] and self._builder.n_frames:
                    closed.append(self._close_open())
                # The run: frames i..r-1, up to the next new event or the frame whose tokens pass open_cap.
                r = i + 1
                while r < b and not starts[r]:
                    r += 1
                pooled = self._builder.n_tokens + np.cumsum(counts[i:r])
                over = np.flatnonzero(pooled > self.open_cap)
                if len(over):
                    r = i + int(over[0]) + 1
                    pooled = pooled[: r - i]
                inside = []
                while d < len(drops) and drops[d][0] < r:
                    inside.append(drops[d])
                    d += 1
                self._add_run(batch, keys, i, r, offsets, inside)
                if self._builder.n_tokens > self.open_cap:
                    self._builder.compact(self.config.event_tokens)
                    pooled[-1] = self._builder.n_tokens
                short_tokens = self._push_short(batch, keys, i, r, offsets)
                self._frames_seen += r - i + sum(n for _, n, _ in inside)
                self._frames_kept += r - i
                self._last_t = float(times[r - 1])  # the dropped runs inside came before it
                self._enforce_budget(int(np.max(short_tokens + pooled)))
                i = r
            for _, n, t in drops[d:]:
                self._seen_dropped(n, t)
            return closed

    def _add_run(self, batch: FrameBatch, keys: np.ndarray, i: int, r: int, offsets: np.ndarray,
                 drops: list[tuple[int, int, float]]) -> None:
        """Frames i..r-1 of ``batch`` join the open event, and the dropped runs between them stretch it."""
        a, z = int(offsets[i]), int(offsets[r])
        times = batch.times[i:r]
        counts = batch.counts[i:r]
        token_times = torch.from_numpy(np.repeat(times, counts))
        tokens = batch.tokens[a:z]
        if token_times.device != tokens.device:
            from streamvid.device import to_device

            token_times = to_device(token_times, tokens.device)
        chunk = TokenSet(tokens, token_times, batch.positions[a:z], batch.sizes[a:z], batch.grid)
        self._builder.add_run(chunk, counts.tolist(), keys[i:r], times.tolist(), batch.thumbnails[i:r])
        for before, _, t in drops:  # count_seen between frames before-1 and before
            if t > batch.times[before - 1]:
                self._builder.last_seen = t if self._builder.last_seen is None else max(self._builder.last_seen, t)

    def _push_short(self, batch: FrameBatch, keys: np.ndarray, i: int, r: int, offsets: np.ndarray) -> np.ndarray:
        """Frames i..r-1 into the short-term ring (only those that stay in it are built); returns the
        ring's tokens after each push [r - i]."""
        counts = np.minimum(batch.counts[i:r], self.short_cap)  # an oversize frame is merged down to the cap

        def make(j: int) -> ShortTermFrame:
            f = i + j
            a, z = int(offsets[f]), int(offsets[f + 1])
            # A slice of a larger batch is copied: a view would keep the whole batch's tensors alive for as
            # long as the frame stays.
            frame = FrameTokens(own_tensor(batch.tokens[a:z]), own_tensor(batch.positions[a:z]),
                                own_tensor(batch.sizes[a:z]), batch.grid, float(batch.times[f]))
            if frame.n > self.short_cap:
                frame = _shrink(frame, self.short_cap)
            return ShortTermFrame(frame, keys[f], batch.thumbnails[f])

        return np.asarray(self.short.push_many(counts.tolist(), make), dtype=np.int64)

    def _seen_dropped(self, n: int, t: float) -> None:
        self._frames_seen += int(n)
        if n:
            self._builder.extend_to(float(t))
            self._last_t = float(t)

    def count_seen(self, n: int = 1, t: float | None = None) -> None:
        """Record ``n`` frames that were seen but not written (dropped by the duplicate gate as repeats
        of the last written frame); ``t``, the newest one's time, extends the open event's span to it."""
        if n < 0:
            raise MemoryInputError(f"count_seen needs n >= 0, got {n}")
        with self._lock:
            if t is not None and n and self._last_t is not None and t < self._last_t:
                raise MemoryInputError(f"frame time {t} precedes the previous frame's {self._last_t}; "
                                       "times must be non-decreasing")
            if t is None:
                self._frames_seen += int(n)
            else:
                self._seen_dropped(n, t)

    def flush(self) -> list[Event]:
        """Close the open event (end of stream). Returns it, or [] if no frame is pending."""
        with self._lock:
            if not self._builder.n_frames:
                return []
            event = self._close_open()
            self._segmenter.reset()
            self._enforce_budget()
            return [event]

    def add_text_key(self, event_id: int, key: torch.Tensor | np.ndarray) -> None:
        """Make ``key`` [k] (e.g. a caption embedding) another searchable key of the event."""
        key_np = self._check_key(key)
        with self._lock:
            self._check_alive(event_id)
            j = self._text_keys.get(event_id, 0)
            if TEXT_SLOT0 + j >= 1 << SLOT_BITS:
                raise MemoryInputError(f"event {event_id} already has {j} text keys")
            self.index.add(key_np[None], np.array([(event_id << SLOT_BITS) | (TEXT_SLOT0 + j)], np.int64))
            self._text_keys[event_id] = j + 1

    def set_caption(self, event_id: int, caption: str, key: torch.Tensor | np.ndarray | None = None) -> None:
        """Store an event's caption (RAM or archive); with ``key``, also index it as a text key."""
        with self._lock:
            self._check_alive(event_id)
            for e in self._events:
                if e.id == event_id:
                    e.caption = caption
            if self._table.state[event_id] == ARCHIVED:
                self.archive.set_caption(event_id, caption)
            if key is not None:
                self.add_text_key(event_id, key)

    def count_recalls(self, event_ids: Sequence[int]) -> None:
        """Count one recall of each event in ``event_ids`` (ids no longer in memory are skipped).

        Readers hand their hits here: the counts steer eviction, so they change under the lock
        that ``_enforce_budget`` holds, and only the bank writes the archive's database.
        """
        with self._lock:
            ram = {e.id: e for e in self._events}
            for event_id in event_ids:
                if event_id in ram:
                    ram[event_id].recalls += 1
                elif 0 <= event_id < self._table.n and self._table.state[event_id] == ARCHIVED:
                    self.archive.add_recall(event_id)

    def _close_open(self) -> Event:
        event = self._builder.build(self._table.n, self.config.event_tokens)
        self._builder = EventBuilder()
        self._events.append(event)
        self._long_tokens += event.n_tokens
        self._table.add(event.id, event.t_start, event.t_end, IN_RAM)
        # Index the event key and the frame keys that are not near-duplicates of an earlier frame key of
        # the same event (cosine >= tau_dup, the gate's own threshold): searching them would find the
        # same event at the same score, and the archive's keys stay in RAM for as long as it keeps them.
        slots = 1 + distinct_rows(event.frame_keys, self.config.tau_dup)
        keys = np.concatenate([event.key[None], event.frame_keys[slots - 1]])
        self.index.add(keys, (event.id << SLOT_BITS) + np.concatenate([[0], slots]).astype(np.int64))
        return event

    def _enforce_budget(self, others: int | None = None) -> None:
        """Archive events until the RAM budget holds; ``others``: the short-term + open-event tokens to
        budget for (default: what they hold now), e.g. the largest they reached during a run of frames."""
        if others is None:
            others = self.short.n_tokens + self._builder.n_tokens
        while others + self._long_tokens > self.config.max_ram_tokens and self._events:
            victim = min(self._events, key=lambda e: (e.id + self.recall_bonus * e.recalls, e.id))
            self._archive_event(victim)

    def _archive_event(self, event: Event) -> None:
        self._events = [e for e in self._events if e.id != event.id]
        self._long_tokens -= event.n_tokens
        self._table.state[event.id] = ARCHIVED
        for gone in self.archive.put(event):
            self._table.state[gone] = DELETED
            self.index.remove_range(gone << SLOT_BITS, (gone + 1) << SLOT_BITS)
            self._text_keys.pop(gone, None)

    # ---- checks ------------------------------------------------------------------------------
    def _check_key(self, key: torch.Tensor | np.ndarray, normalise: bool = True) -> np.ndarray:
        """key [k] (or [1, k]) → float32 [k], L2-normalised unless ``normalise`` is False."""
        if isinstance(key, torch.Tensor):
            key = key.detach().to("cpu", torch.float32).numpy()
        key = np.asarray(key, dtype=np.float32)
        if key.shape == (1, self.key_dim):  # a batch of one, as encoders return it
            key = key[0]
        if key.shape != (self.key_dim,):
            raise MemoryInputError(f"key must have shape [{self.key_dim}], got {list(np.shape(key))}")
        if not np.all(np.isfinite(key)) or not np.any(key):
            raise MemoryInputError("key must be finite and non-zero")
        return l2_normalise(key) if normalise else key

    def _check_keys(self, keys: np.ndarray) -> np.ndarray:
        """keys [B, k] → float32, L2-normalised; MemoryInputError for a wrong shape or a zero/non-finite row."""
        keys = np.asarray(keys, dtype=np.float32)
        if keys.ndim != 2 or keys.shape[1] != self.key_dim:
            raise MemoryInputError(f"keys must have shape [B, {self.key_dim}], got {list(keys.shape)}")
        if not np.all(np.isfinite(keys)) or not np.all(np.any(keys, axis=1)):
            raise MemoryInputError("key must be finite and non-zero")
        return l2_normalise(keys)

    def _check_batch(self, batch: FrameBatch) -> tuple[np.ndarray, np.ndarray]:
        """The batch's (counts [B] int64, times [B] float64) once its shapes agree; MemoryInputError if not."""
        if not isinstance(batch, FrameBatch):
            raise MemoryInputError(f"write_batch() needs a FrameBatch, got {type(batch).__name__}")
        counts = np.asarray(batch.counts, dtype=np.int64).reshape(-1)
        times = np.asarray(batch.times, dtype=np.float64).reshape(-1)
        b, n = len(times), int(counts.sum())
        tokens = batch.tokens
        if tokens.ndim != 2 or tokens.shape[1] != self.token_dim:
            raise MemoryInputError(f"frame tokens must be [n, {self.token_dim}], got {list(tokens.shape)}")
        if (len(counts) != b or len(batch.keys) != b or len(batch.thumbnails) != b or len(batch.cuts) != b
                or len(batch.holds) != b):
            raise MemoryInputError(f"a batch of {b} frame times has {len(counts)} token counts, {len(batch.keys)} "
                                   f"keys, {len(batch.thumbnails)} thumbnails, {len(batch.cuts)} cuts and "
                                   f"{len(batch.holds)} holds")
        if (counts < 0).any() or tokens.shape[0] != n or batch.positions.numel() != n or batch.sizes.numel() != n:
            raise MemoryInputError(f"frame tokens: {tokens.shape[0]} tokens, {batch.positions.numel()} positions and "
                                   f"{batch.sizes.numel()} sizes for {n} counted")
        if not np.all(np.isfinite(times)):
            raise MemoryInputError(f"frame time must be finite, got {times[~np.isfinite(times)][0]}")
        for before, count, t in batch.dropped:
            if not 0 <= before <= b or count < 0 or not np.isfinite(t):
                raise MemoryInputError(f"a dropped run ({before}, {count}, {t}) does not fit a batch of {b} frames")
        return counts, times

    def _check_times(self, times: np.ndarray, drops: list[tuple[int, int, float]]) -> None:
        """Every time of the batch (kept frames, and dropped runs in their places) is non-decreasing,
        from the newest frame already seen on."""
        seq = times
        if drops:
            seq = np.insert(times, [p for p, n, _ in drops if n], [t for _, n, t in drops if n])
        prev = np.concatenate([[self._last_t if self._last_t is not None else -np.inf], seq[:-1]])
        bad = np.flatnonzero(seq < prev)
        if len(bad):
            k = int(bad[0])
            raise MemoryInputError(f"frame time {seq[k]} precedes the previous frame's {prev[k]}; "
                                   "times must be non-decreasing")

    def _check_frame(self, frame: FrameTokens) -> None:
        if not isinstance(frame, FrameTokens):
            raise MemoryInputError(f"write() needs a FrameTokens, got {type(frame).__name__}")
        tokens = frame.tokens
        if tokens.ndim != 2 or tokens.shape[1] != self.token_dim:
            raise MemoryInputError(f"frame tokens must be [n, {self.token_dim}], got {list(tokens.shape)}")
        n = tokens.shape[0]
        if frame.positions.numel() != n or frame.sizes.numel() != n:
            raise MemoryInputError(f"frame at t={frame.t}: {n} tokens but {frame.positions.numel()} positions "
                                   f"and {frame.sizes.numel()} sizes")
        if not np.isfinite(frame.t):
            raise MemoryInputError(f"frame time must be finite, got {frame.t}")

    def _check_alive(self, event_id: int) -> None:
        if not 0 <= event_id < self._table.n or self._table.state[event_id] == DELETED:
            raise MemoryInputError(f"no event {event_id} in memory")

    # ---- reads -------------------------------------------------------------------------------
    @property
    def tokens_in_ram(self) -> int:
        """Short-term + open-event + long-term tokens held in RAM."""
        return self.short.n_tokens + self._builder.n_tokens + self._long_tokens

    @property
    def now(self) -> float | None:
        """Time of the newest frame seen (written or dropped as a repeat); None before any."""
        with self._lock:
            return self._last_t

    def snapshot(self) -> MemorySnapshot:
        """A read-only view of the memory now; reading it takes no bank lock."""
        with self._lock:
            t0, t1, state = self._table.views()
            return MemorySnapshot(bank=self, events=tuple(self._events), short_term=self.short.frames(),
                                  now=self._last_t, event_times=(t0, t1), event_state=state,
                                  open_start=self._builder.frame_times[0] if self._builder.n_frames else None)

    def search(self, query: str | np.ndarray | torch.Tensor, k: int = 5,
               time_range: tuple[float, float] | None = None, neighbours: int = 1) -> list[Event]:
        """Events for a text, an RGB image [H, W, 3] uint8 or a key [k]. See ``MemorySnapshot.search``."""
        return self.snapshot().search(query, k=k, time_range=time_range, neighbours=neighbours)

    def events(self) -> list[Event]:
        """The long-term events held in RAM, oldest first."""
        with self._lock:
            return list(self._events)

    def stats(self) -> dict[str, Any]:
        with self._lock:
            archived = int(np.count_nonzero(self._table.views()[2] == ARCHIVED))
            open_bytes = (self._builder.nbytes()
                          + 4 * self.key_dim * self._builder.n_frames)
            bytes_in_ram = (sum(event_bytes(e) for e in self._events) + sum(frame_bytes(f) for f in self.short.frames())
                            + open_bytes + self.index.nbytes)
            return {
                "frames_seen": self._frames_seen,
                "frames_kept": self._frames_kept,
                "short_term_frames": len(self.short),
                "events": len(self._events) + archived,
                "ram_events": len(self._events),
                "archived_events": archived,
                "open_event_frames": self._builder.n_frames,
                "tokens_in_ram": self.tokens_in_ram,
                "bytes_in_ram": int(bytes_in_ram),
                "archive_bytes": self.archive.total_bytes,
                "index_keys": self.index.ntotal,
                "index_kind": self.index.kind,
            }

    # ---- state (PyTorch's state_dict convention) -----------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """Everything this bank holds in RAM, as plain data:

        ``{"meta": JSON-able dict, "tensors": name → contiguous CPU tensor, "index": bytes}``.
        Archived events are not in it: their shards and database stay in ``self.archive``, which
        copies itself (``archive.copy_to``). The tensors are copies; the bank may go on writing.
        """
        extra = self.extra_state_fn() if self.extra_state_fn is not None else self.extra_state
        with self._lock:
            tensors: dict[str, torch.Tensor] = {}
            t0, t1, state = self._table.views()
            tensors["table.t0"] = torch.from_numpy(t0.copy())
            tensors["table.t1"] = torch.from_numpy(t1.copy())
            tensors["table.state"] = torch.from_numpy(state.copy())
            events = []
            for e in self._events:
                events.append(dict(id=e.id, t_start=e.t_start, t_end=e.t_end, grid=list(e.grid), caption=e.caption,
                                   recalls=e.recalls))
                tensors.update({f"e{e.id}.{k}": v for k, v in event_tensors(e).items()})
            short = []
            for i, f in enumerate(self.short.frames()):
                short.append(dict(t=f.frame.t, grid=list(f.frame.grid)))
                tensors[f"s{i}.tokens"] = f.frame.tokens
                tensors[f"s{i}.positions"] = f.frame.positions
                tensors[f"s{i}.sizes"] = f.frame.sizes
                tensors[f"s{i}.key"] = torch.from_numpy(f.key)
                if f.thumbnail is not None:
                    tensors[f"s{i}.thumbnail"] = torch.from_numpy(np.ascontiguousarray(f.thumbnail, dtype=np.uint8))
            tensors.update({f"open.{k}": v for k, v in self._builder.tensors().items()})
            meta: dict[str, Any] = {
                "config": dataclasses.asdict(self.config),
                "key_dim": self.key_dim,
                "token_dim": self.token_dim,
                "recall_bonus": self.recall_bonus,
                "index_exact_max": self.index.exact_max,
                "frames_seen": self._frames_seen,
                "frames_kept": self._frames_kept,
                "last_t": self._last_t,
                "segmenter": self._segmenter.state(),
                "events": events,
                "short_term": short,
                "open_grid": None if self._builder.grid is None else list(self._builder.grid),
                "text_keys": {str(k): v for k, v in self._text_keys.items()},
                "extra": extra,
            }
            return {"meta": meta, "tensors": {k: v.detach().to("cpu").contiguous().clone() for k, v in tensors.items()},
                    "index": self.index.to_bytes()}

    @classmethod
    def from_state_dict(cls, state: dict[str, Any], *, text_encoder: TextEncoder | None = None,
                        image_encoder: ImageEncoder | None = None, config: AgentConfig | None = None) -> MemoryBank:
        """A new bank built from ``state_dict()`` output (its archive is left empty: restore it with
        ``bank.archive.restore_from``). config None → the saved config, with a fresh temporary archive
        directory, and on the CPU when the saved device is not available here.

        Raises StateError (a MemoryFormatError; ``.part`` is "meta", "tensors" or "index") for any
        malformed entry.
        """
        meta = state.get("meta") if isinstance(state, dict) else None
        try:
            if not isinstance(meta, dict):
                raise TypeError("meta is not a mapping")
            if config is None:
                config = saved_config(meta["config"])
            args = {name: _int(meta, name) for name in ("key_dim", "token_dim", "recall_bonus", "index_exact_max")}
            bank = cls(config, text_encoder=text_encoder, image_encoder=image_encoder, **args)
        except (StreamvidError, KeyError, TypeError, ValueError) as e:
            raise StateError("meta", f"{type(e).__name__}: {e}") from e
        try:
            bank.load_state_dict(state)
        except BaseException:
            bank.close()
            raise
        return bank

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore ``state_dict()`` output into this bank, which must be new (nothing written yet).

        Every entry is checked (types, dtypes, shapes, consistency) before anything is changed;
        a malformed one raises StateError naming its part ("meta", "tensors" or "index").
        """
        with self._lock:
            if self._frames_seen or self._events or len(self.short) or self._table.n:
                raise MemoryInputError("load_state_dict needs a new, empty MemoryBank")
            restored = _parse_state(state, key_dim=self.key_dim, token_dim=self.token_dim)
            index = KeyIndex(self.key_dim, exact_max=self.index.exact_max, device=self.config.device,
                             seed=self.config.seed)
            try:
                index.load_bytes(restored.index)
                keys, ids = index.vectors()
            except Exception as e:  # faiss raises RuntimeError for any damage
                raise StateError("index", f"{type(e).__name__}: {e}") from e
            if not np.isfinite(keys).all() or (len(ids) and not 0 <= int(ids.min()) <= int(ids.max())
                                               < len(restored.table_state) << SLOT_BITS):
                raise StateError("index", "it holds keys that are not finite or ids of no event")
            segmenter = EventSegmenter(min_frames=self.config.segment_min_frames,
                                       max_frames=self.config.segment_max_frames, z=self.config.segment_z,
                                       window=self.config.segment_window,
                                       hard_surprise=self.config.segment_hard_surprise)
            try:
                segmenter.load_state(restored.segmenter)
            except (KeyError, TypeError, ValueError) as e:
                raise StateError("meta", f"segmenter: {type(e).__name__}: {e}") from e
            for i, state_i in enumerate(restored.table_state):
                self._table.add(i, float(restored.table_t0[i]), float(restored.table_t1[i]), int(state_i))
            self._events = restored.events
            self._long_tokens = sum(e.n_tokens for e in restored.events)
            for frame in restored.short_term:
                self.short.push(frame)
            self._builder = restored.builder
            self._segmenter = segmenter
            self._text_keys = restored.text_keys
            self.extra_state = restored.extra
            self.index = index
            self._frames_seen, self._frames_kept, self._last_t = restored.counters

    # ---- persistence -------------------------------------------------------------------------
    def save(self, directory: str) -> None:
        """Save atomically to ``directory``, replacing an earlier save there. A folder holding anything
        else is refused with MemoryFolderError and left as it is. See streamvid.memory.persist."""
        from streamvid.memory.persist import save_bank

        with self._lock:
            save_bank(self, directory)

    @classmethod
    def load(cls, directory: str, text_encoder: TextEncoder | None = None, image_encoder: ImageEncoder | None = None,
             config: AgentConfig | None = None) -> MemoryBank:
        """A bank restored from ``save``; raises MemoryFormatError for a damaged or other-version directory.

        config None → the saved config with a fresh temporary archive directory.
        """
        from streamvid.memory.persist import load_bank

        return load_bank(cls, directory, text_encoder=text_encoder, image_encoder=image_encoder, config=config)

    def close(self) -> None:
        """Release the archive (an owned temporary archive directory is deleted)."""
        self.archive.close()

    def __enter__(self) -> MemoryBank:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class MemorySnapshot:
    """Read-only view of a MemoryBank at one moment (references, no tensor copies).

    events:     long-term events in RAM, oldest first
    short_term: the recent kept frames, oldest first
    now:        time of the newest written frame (None before any)
    """

    def __init__(self, *, bank: MemoryBank, events: tuple[Event, ...], short_term: tuple[ShortTermFrame, ...],
                 now: float | None, event_times: tuple[np.ndarray, np.ndarray], event_state: np.ndarray,
                 open_start: float | None) -> None:
        self._bank = bank
        self.events = events
        self.short_term = short_term
        self.now = now
        self.open_start = open_start
        self._t0, self._t1 = event_times
        self._state = event_state
        self._ram = {e.id: e for e in events}
        self._text_keys: dict[str, torch.Tensor | np.ndarray] = {}

    @property
    def key_dim(self) -> int:
        return self._bank.key_dim

    def encode(self, query: str | np.ndarray | torch.Tensor) -> np.ndarray:
        """A query → L2-normalised key [k]: text via the text encoder, an RGB image [H, W, 3] via the
        image encoder, a [k] vector as is."""
        bank = self._bank
        if isinstance(query, str):
            if not query.strip():
                raise QuestionError("empty search query")
            if bank.text_encoder is None:
                raise QuestionError("this memory has no text encoder; search with a key or an image")
            if query not in self._text_keys:  # a planner searches the same text more than once
                self._text_keys[query] = bank.text_encoder([query])
            vec = self._text_keys[query]
        elif isinstance(query, np.ndarray) and query.ndim == 3:
            if query.shape[-1] != 3:
                raise QuestionError(f"an image query must be [H, W, 3], got {list(query.shape)}")
            if bank.image_encoder is None:
                raise QuestionError("this memory has no image encoder; search with a key or a text")
            vec = bank.image_encoder(np.ascontiguousarray(query, dtype=np.uint8)[None])
        elif isinstance(query, (np.ndarray, torch.Tensor)):
            vec = query
        else:
            raise QuestionError(f"cannot search with a {type(query).__name__}")
        if isinstance(vec, torch.Tensor):
            vec = vec.detach().to("cpu", torch.float32).numpy()
        vec = np.asarray(vec, dtype=np.float32).reshape(-1)
        if vec.shape != (bank.key_dim,) or not np.all(np.isfinite(vec)) or not np.any(vec):
            raise QuestionError(f"a search key must be a finite non-zero [{bank.key_dim}] vector, got shape "
                                f"{list(np.shape(vec))}")
        return l2_normalise(vec)

    def _alive(self, ev: int, time_range: tuple[float, float] | None) -> bool:
        if ev >= len(self._state) or self._state[ev] == DELETED:
            return False
        return time_range is None or (self._t1[ev] >= time_range[0] and self._t0[ev] <= time_range[1])

    def _resolve(self, ev: int) -> Event | None:
        e = self._ram.get(ev)
        return e if e is not None else self._bank.archive.get(ev)

    def search_scored(self, query: str | np.ndarray | torch.Tensor, k: int = 5,
                      time_range: tuple[float, float] | None = None, neighbours: int = 1) -> list[tuple[Event, float]]:
        """(event, similarity) pairs: the top ``k`` events by their best key similarity (event key, frame
        keys, text keys), restricted to events overlapping ``time_range``, best first; then for each hit
        up to ``neighbours`` temporal neighbours on each side not already listed (scored by their own
        best key). Archived events come back loaded from disk. Every returned event counts a recall: the
        ids go to the bank, which counts them under its lock (this view changes nothing itself).
        """
        if k <= 0:
            return []
        q = self.encode(query)
        index = self._bank.index
        fetch = max(8 * k, 64)
        while True:
            scores, ids = index.search(q[None], fetch)
            best: dict[int, float] = {}
            for s, i in zip(scores[0], ids[0], strict=True):
                if i < 0:
                    break
                ev = int(i) >> SLOT_BITS
                if ev not in best and self._alive(ev, time_range):
                    best[ev] = float(s)
            if len(best) >= k or fetch >= index.ntotal:
                break
            fetch *= 4
        hits: list[tuple[Event, float]] = []
        for ev, s in sorted(best.items(), key=lambda kv: (-kv[1], kv[0])):
            e = self._resolve(ev)
            if e is not None:
                hits.append((e, s))
            if len(hits) == k:
                break
        out = list(hits)
        listed = {e.id for e, _ in hits}
        for e, _ in hits:
            for step in (-1, 1):
                found, ev = 0, e.id + step
                while found < neighbours and 0 <= ev < len(self._state):
                    if self._alive(ev, time_range):
                        found += 1
                        if ev not in listed:
                            n = self._resolve(ev)
                            if n is not None:
                                listed.add(ev)
                                out.append((n, float(np.max(np.concatenate([n.frame_keys, n.key[None]]) @ q))))
                    ev += step
        self._bank.count_recalls([e.id for e, _ in out])
        return out

    def search(self, query: str | np.ndarray | torch.Tensor, k: int = 5,
               time_range: tuple[float, float] | None = None, neighbours: int = 1) -> list[Event]:
        """The events of ``search_scored`` without their scores: top ``k`` hits first, then neighbours."""
        return [e for e, _ in self.search_scored(query, k=k, time_range=time_range, neighbours=neighbours)]

    def events_between(self, t0: float, t1: float, limit: int | None = None) -> list[Event]:
        """Events (RAM and archived, loaded) overlapping [t0, t1], oldest first, at most ``limit``
        (the ones nearest t1 when limited)."""
        ids = np.flatnonzero((self._state != DELETED) & (self._t1 >= t0) & (self._t0 <= t1))
        if limit is not None:
            ids = ids[-limit:] if limit > 0 else ids[:0]
        return [e for e in (self._resolve(int(i)) for i in ids) if e is not None]


def distinct_rows(keys: np.ndarray, tau: float) -> np.ndarray:
    """Indices of the rows of keys [f, k] (unit norm) kept by a greedy pass that drops a row whose cosine
    with an already kept row is >= tau. Row 0 is always kept."""
    kept: list[int] = []
    for i in range(len(keys)):
        if not kept or float(np.max(keys[kept] @ keys[i])) < tau:
            kept.append(i)
    return np.asarray(kept, dtype=np.int64)


def _shrink(frame: FrameTokens, budget: int) -> FrameTokens:
    """A frame with more tokens than the short-term cap, merged down to ``budget`` tokens."""
    merged = consolidate(frame, budget)
    return FrameTokens(merged.tokens, merged.positions, merged.sizes, frame.grid, frame.t)


# ---- restoring a state dict ----------------------------------------------------------------------
class StateError(MemoryFormatError):
    """A malformed state dict; ``part`` is the entry at fault: "meta", "tensors" or "index"."""

    def __init__(self, part: str, message: str) -> None:
        self.part = part
        super().__init__(message)


def available_device(device: object) -> str:
    """``device`` if this machine has it, else "cpu" with a one-line log note (a memory saved on a GPU
    machine loads anywhere)."""
    device = str(device)
    kind = device.partition(":")[0]
    ok = (kind == "cpu" or (kind == "cuda" and torch.cuda.is_available())
          or (kind == "mps" and torch.backends.mps.is_available()))
    if not ok:
        log.info("memory was saved with device %r, which is not available here; loading it on the CPU", device)
        return "cpu"
    return device


def saved_config(saved: object) -> AgentConfig:
    """The AgentConfig of a saved memory's meta ``config``, with no archive directory, on the CPU when
    the saved device is not available here. TypeError / ValueError / ConfigError when malformed."""
    if not isinstance(saved, dict):
        raise TypeError("config is not a mapping")
    names = {f.name for f in dataclasses.fields(AgentConfig)}
    saved = {k: v for k, v in saved.items() if k in names}
    saved["device"] = available_device(saved.get("device", "cpu"))
    if "backend" not in saved:  # saved before AgentConfig.backend existed: the preset implies it
        saved["backend"] = PRESETS.get(saved.get("preset", ""), {}).get("backend", "vlm")
    return AgentConfig(**{**saved, "archive_dir": None})


def _int(meta: dict[str, Any], name: str, lo: int = 0) -> int:
    v = meta[name]
    if isinstance(v, bool) or not isinstance(v, int) or v < lo:
        raise ValueError(f"{name} must be an integer >= {lo}, got {v!r}")
    return v


def _float(v: object, name: str) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not np.isfinite(v):
        raise ValueError(f"{name} must be a finite number, got {v!r}")
    return float(v)


def _grid(v: object, name: str) -> tuple[int, int]:
    if not isinstance(v, list) or len(v) != 2 or not all(isinstance(x, int) and not isinstance(x, bool) and x >= 0
                                                         for x in v):
        raise ValueError(f"{name} must be [grid_h, grid_w], got {v!r}")
    return int(v[0]), int(v[1])


def _tensor(tensors: dict[str, torch.Tensor], name: str, dtype: torch.dtype | None, shape: tuple[int | None, ...]
            ) -> torch.Tensor:
    """tensors[name], checked: dtype (None: any float) and shape (None: any size on that axis)."""
    if name not in tensors:
        raise ValueError(f"array {name!r} is missing")
    t = tensors[name]
    if not isinstance(t, torch.Tensor):
        raise ValueError(f"{name!r} is not a tensor")
    if t.is_floating_point() and not bool(torch.isfinite(t).all()):
        raise ValueError(f"array {name!r} holds values that are not finite")
    dtype_ok = t.is_floating_point() if dtype is None else t.dtype == dtype
    if not dtype_ok or t.ndim != len(shape) or any(s is not None and s != n for s, n in zip(shape, t.shape,
                                                                                            strict=True)):
        want = "float" if dtype is None else str(dtype)
        raise ValueError(f"array {name!r} is {t.dtype} {list(t.shape)}, expected {want} "
                         f"{['*' if s is None else s for s in shape]}")
    return t


def _check_positions(positions: torch.Tensor, grid: tuple[int, int], name: str) -> None:
    if len(positions) and (int(positions.min()) < 0 or int(positions.max()) >= grid[0] * grid[1]):
        raise ValueError(f"{name}: positions outside the {grid[0]}x{grid[1]} grid")


class _Restored(NamedTuple):
    table_t0: np.ndarray
    table_t1: np.ndarray
    table_state: np.ndarray
    events: list[Event]
    short_term: list[ShortTermFrame]
    builder: EventBuilder
    segmenter: dict[str, Any]
    text_keys: dict[int, int]
    counters: tuple[int, int, float | None]
    index: bytes
    extra: dict[str, Any]


def _parse_state(state: dict[str, Any], *, key_dim: int, token_dim: int) -> _Restored:
    """Check every entry of a state dict and build the objects it describes; nothing is changed."""
    if not isinstance(state, dict) or not all(k in state for k in ("meta", "tensors", "index")):
        raise StateError("meta", "a state dict has the entries meta, tensors and index")
    meta, tensors, index = state["meta"], state["tensors"], state["index"]
    if not isinstance(index, (bytes, bytearray)) or len(index) < 8:
        raise StateError("index", "the key index is empty or not bytes")
    if not isinstance(tensors, dict):
        raise StateError("tensors", "tensors is not a mapping")
    try:
        if not isinstance(meta, dict):
            raise TypeError("meta is not a mapping")
        counters = (_int(meta, "frames_seen"), _int(meta, "frames_kept"),
                    None if meta["last_t"] is None else _float(meta["last_t"], "last_t"))
        segmenter = meta["segmenter"]
        if not isinstance(segmenter, dict):
            raise TypeError("segmenter is not a mapping")
        key_sum = segmenter.get("key_sum")
        if key_sum is not None and (not isinstance(key_sum, list) or len(key_sum) != key_dim):
            raise ValueError(f"segmenter key_sum must be {key_dim} numbers")
        events_meta, short_meta, text_keys = meta["events"], meta["short_term"], meta["text_keys"]
        if not isinstance(events_meta, list) or not isinstance(short_meta, list) or not isinstance(text_keys, dict):
            raise TypeError("events and short_term must be lists, text_keys a mapping")
        events_meta = [dict(id=_int(m, "id"), t_start=_float(m["t_start"], "t_start"),
                            t_end=_float(m["t_end"], "t_end"), grid=_grid(m["grid"], "grid"),
                            caption=_str(m["caption"]), recalls=_int(m, "recalls")) for m in events_meta]
        short_meta = [(_float(m["t"], "t"), _grid(m["grid"], "grid")) for m in short_meta]
        open_grid = None if meta["open_grid"] is None else _grid(meta["open_grid"], "open_grid")
        keys = {int(k): _int(text_keys, k, 1) for k in text_keys}
        extra = meta.get("extra", {})  # absent in memories saved before it existed
        if not isinstance(extra, dict):
            raise TypeError("extra is not a mapping")
    except (KeyError, TypeError, ValueError, AttributeError) as e:
        raise StateError("meta", f"{type(e).__name__}: {e}") from e

    used: set[str] = set()
    try:
        t0 = _tensor(tensors, "table.t0", torch.float64, (None,)).numpy()
        t1 = _tensor(tensors, "table.t1", torch.float64, (len(t0),)).numpy()
        table_state = _tensor(tensors, "table.state", torch.int8, (len(t0),)).numpy()
        used.update(("table.t0", "table.t1", "table.state"))
        if not np.isin(table_state, (DELETED, IN_RAM, ARCHIVED)).all():
            raise ValueError("the event table holds an unknown state")
        if set(np.flatnonzero(table_state == IN_RAM).tolist()) != {m["id"] for m in events_meta}:
            raise StateError("meta", "its events in RAM do not match the event table of the tensors")
        if not all(0 <= k < len(t0) and table_state[k] != DELETED for k in keys):
            raise ValueError("text keys name events that are not in memory")
        events = []
        for m in events_meta:
            prefix = f"e{m['id']}."
            part = {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}
            used.update(prefix + k for k in part)
            check_event_tensors(part, token_dim=token_dim, key_dim=key_dim)
            if "tokens" not in part:
                raise ValueError(f"event {m['id']} in RAM has no tokens")
            _check_positions(part["token_positions"], m["grid"], f"event {m['id']}")
            events.append(event_from_tensors(m, part))
        short = []
        for i, (t, grid) in enumerate(short_meta):
            tokens = _tensor(tensors, f"s{i}.tokens", None, (None, token_dim))
            n = len(tokens)
            positions = _tensor(tensors, f"s{i}.positions", torch.int64, (n,))
            _check_positions(positions, grid, f"short-term frame {i}")
            frame = FrameTokens(tokens, positions, _tensor(tensors, f"s{i}.sizes", torch.float32, (n,)), grid, t)
            key = _tensor(tensors, f"s{i}.key", torch.float32, (key_dim,)).numpy()
            thumb = tensors.get(f"s{i}.thumbnail")
            if thumb is not None:
                thumb = _tensor(tensors, f"s{i}.thumbnail", torch.uint8, (None, None, 3)).numpy()
            used.update(f"s{i}.{k}" for k in ("tokens", "positions", "sizes", "key", "thumbnail"))
            short.append(ShortTermFrame(frame, key, thumb))
        part = {k[5:]: v for k, v in tensors.items() if k.startswith("open.")}
        used.update("open." + k for k in part)
        if part:
            if open_grid is None:
                raise ValueError("the open event has tokens but no grid")
            tokens = _tensor(part, "tokens", None, (None, token_dim))
            n = len(tokens)
            for name, dtype in (("sizes", torch.float32), ("times", torch.float64), ("positions", torch.int64)):
                _tensor(part, name, dtype, (n,))
            _check_positions(part["positions"], open_grid, "the open event")
            f = len(_tensor(part, "frame_times", torch.float64, (None,)))
            _tensor(part, "frame_keys", torch.float32, (f, key_dim))
            expected = {"tokens", "sizes", "times", "positions", "frame_keys", "frame_times", "last_seen",
                        *(f"thumb.{i}" for i in range(f))}
            if f == 0 or set(part) - expected:
                raise ValueError(f"the open event has unexpected arrays {sorted(set(part) - expected)}")
            for name in part:
                if name.startswith("thumb."):
                    _tensor(part, name, torch.uint8, (None, None, 3))
            if "last_seen" in part:
                _tensor(part, "last_seen", torch.float64, (1,))
        builder = EventBuilder.from_tensors(part, open_grid)
        unknown = set(tensors) - used
        if unknown:
            raise ValueError(f"unknown arrays {sorted(unknown)[:5]}")
    except StateError:
        raise
    except (MemoryInputError, KeyError, TypeError, ValueError) as e:
        raise StateError("tensors", f"{type(e).__name__}: {e}") from e
    return _Restored(t0, t1, table_state, events, short, builder, segmenter, keys, counters, bytes(index), extra)


def _str(v: object) -> str:
    if not isinstance(v, str):
        raise TypeError(f"expected text, got {type(v).__name__}")
    return v
