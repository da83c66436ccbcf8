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

import threading
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from streamvid.config import AgentConfig
from streamvid.errors import ConfigError, MemoryInputError, QuestionError
from streamvid.memory.archive import EventArchive
from streamvid.memory.index import KeyIndex
from streamvid.memory.long_term import EventBuilder, consolidate, l2_normalise
from streamvid.memory.short_term import ShortTermFrame, ShortTermMemory
from streamvid.segment import EventSegmenter
from streamvid.types import Event, FrameTokens

SLOT_BITS = 16
TEXT_SLOT0 = 1 << 15
DELETED, IN_RAM, ARCHIVED = 0, 1, 2

TextEncoder = Callable[[list[str]], torch.Tensor]
ImageEncoder = Callable[[np.ndarray], torch.Tensor]


def _tensor_bytes(t: torch.Tensor | None) -> int:
    return 0 if t is None else t.numel() * t.element_size()


def _array_bytes(a: np.ndarray | None) -> int:
    return 0 if a is None else int(a.nbytes)


def event_bytes(e: Event) -> int:
    """RAM bytes an event holds (tokens, per-token and per-frame arrays, thumbnail)."""
    return (_tensor_bytes(e.tokens) + _array_bytes(e.token_times) + _array_bytes(e.token_positions)
            + _array_bytes(e.key) + _array_bytes(e.frame_keys) + _array_bytes(e.frame_times)
            + _array_bytes(e.thumbnail))


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
    """

    def __init__(self, config: AgentConfig, *, key_dim: int, token_dim: int,
                 text_encoder: TextEncoder | None = None, image_encoder: ImageEncoder | None = None,
                 recall_bonus: int = 8, index_exact_max: int = 20_000) -> None:
        _validate(config, key_dim, token_dim)
        self.config = config
        self.key_dim = key_dim
        self.token_dim = token_dim
        self.text_encoder = text_encoder
        self.image_encoder = image_encoder
        self.recall_bonus = recall_bonus
        # The open event's token pool is consolidated to event_tokens whenever it passes open_cap.
        # open_cap <= max_ram_tokens - 2·event_tokens keeps room for one long-term event (see _validate).
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
        self.index = KeyIndex(key_dim, exact_max=index_exact_max, device=config.device, seed=config.seed)
        self.archive = EventArchive(config.archive_dir, config.archive_max_bytes)
        self._frames_seen = 0
        self._frames_kept = 0
        self._last_t: float | None = None

    # ---- write path ------------------------------------------------------------------------
    def write(self, frame: FrameTokens, key: torch.Tensor | np.ndarray,
              thumbnail: np.ndarray | None = None, *, cut: bool = False, hold: bool = False) -> list[Event]:
        """Add one kept frame. key: [k] L2-normalised retrieval key; cut: the frame starts a new shot
        (it then starts a new event); hold: the pixels say the open shot goes on (the frame does not
        split on key surprise). Returns the events this frame closed."""
        key_np = self._check_key(key)
        self._check_frame(frame)
        with self._lock:
            if self._last_t is not None and frame.t < self._last_t:
                raise MemoryInputError(f"frame time {frame.t} precedes the previous frame's {self._last_t}; "
                                       "times must be non-decreasing")
            closed = []
            boundary = self._segmenter.update(key_np, shot=cut, hold=hold)
            grid = (int(frame.grid[0]), int(frame.grid[1]))
            if self._builder.n_frames and (boundary or grid != self._builder.grid):
                closed.append(self._close_open())
                if not boundary:  # the grid changed: restart the segmenter on this frame
                    self._segmenter.reset()
                    self._segmenter.update(key_np)
            self._builder.add(frame, key_np, thumbnail)
            if self._builder.n_tokens > self.open_cap:
                self._builder.compact(self.config.event_tokens)
            short_frame = frame if frame.n <= self.short_cap else _shrink(frame, self.short_cap)
            self.short.push(ShortTermFrame(short_frame, key_np, thumbnail))
            self._frames_seen += 1
            self._frames_kept += 1
            self._last_t = float(frame.t)
            self._enforce_budget()
            return closed

    def count_seen(self, n: int = 1, t: float | None = None) -> None:
        """Record ``n`` frames that were seen but not written (dropped by the duplicate gate as repeats
        of the last written frame); ``t``, the newest one's time, extends the open event's span to it."""
        if n < 0:
            raise MemoryInputError(f"count_seen needs n >= 0, got {n}")
        with self._lock:
            if t is not None and n and self._last_t is not None and t < self._last_t:
                raise MemoryInputError(f"frame time {t} precedes the previous frame's {self._last_t}; "
                                       "times must be non-decreasing")
            self._frames_seen += int(n)
            if t is not None and n:
                self._builder.extend_to(float(t))
                self._last_t = float(t)

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

    def _enforce_budget(self) -> None:
        while self.tokens_in_ram > self.config.max_ram_tokens and self._events:
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
    def _check_key(self, key: torch.Tensor | np.ndarray) -> np.ndarray:
        if isinstance(key, torch.Tensor):
            key = key.detach().to("cpu", torch.float32).numpy()
        key = np.asarray(key, dtype=np.float32)
        if key.shape == (1, self.key_dim):  # a batch of one, as encoders return it
            key = key[0]
        if key.shape != (self.key_dim,):
            raise MemoryInputError(f"key must have shape [{self.key_dim}], got {list(np.shape(key))}")
        if not np.all(np.isfinite(key)) or not np.any(key):
            raise MemoryInputError("key must be finite and non-zero")
        return l2_normalise(key)

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
            tokens, sizes, times, positions = self._builder.pool() if self._builder.n_frames else (None,) * 4
            open_bytes = (_tensor_bytes(tokens) + _tensor_bytes(sizes) + _array_bytes(times)
                          + _array_bytes(positions) + 4 * self.key_dim * self._builder.n_frames)
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

    # ---- persistence -------------------------------------------------------------------------
    def save(self, directory: str) -> None:
        """Save atomically to ``directory`` (replacing an earlier save there). See streamvid.memory.persist."""
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
        best key). Archived events come back loaded from disk. Every returned event counts a recall.
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
        for e, _ in out:
            e.recalls += 1
            if e.id not in self._ram:
                self._bank.archive.add_recall(e.id)
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
    times = np.full(frame.n, float(frame.t))
    tokens, sizes, _, positions = consolidate(frame.tokens, frame.sizes.to(torch.float32), times,
                                              frame.positions.to(torch.long).cpu().numpy(), budget)
    return FrameTokens(tokens=tokens, positions=torch.from_numpy(positions), sizes=sizes, grid=frame.grid, t=frame.t)


def _validate(config: AgentConfig, key_dim: int, token_dim: int) -> None:
    if key_dim < 1 or token_dim < 1:
        raise ConfigError(f"key_dim and token_dim must be >= 1, got {key_dim}, {token_dim}")
    if config.event_tokens < 1:
        raise ConfigError(f"event_tokens must be >= 1, got {config.event_tokens}")
    if config.short_term_frames < 1:
        raise ConfigError(f"short_term_frames must be >= 1, got {config.short_term_frames}")
    if config.max_ram_tokens < 4 * config.event_tokens:
        raise ConfigError(f"max_ram_tokens ({config.max_ram_tokens}) must be at least 4 × event_tokens "
                          f"({config.event_tokens}): room for the short-term frames, the open event and "
                          "at least one long-term event")
    if not 1 <= config.segment_min_frames <= config.segment_max_frames < TEXT_SLOT0 - 1:
        raise ConfigError(f"need 1 <= segment_min_frames <= segment_max_frames < {TEXT_SLOT0 - 1}, got "
                          f"{config.segment_min_frames}, {config.segment_max_frames}")
    if config.segment_window < 2:
        raise ConfigError(f"segment_window must be >= 2, got {config.segment_window}")
