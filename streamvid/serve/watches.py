"""Standing "tell me when" queries over a running StreamAgent.

Every event that closes is scored against every watch in two stages:

1. key similarity: the query's text key (the memory's own text encoder) against the event's key and
   its kept frames' keys (cosine; the best one is the score). Cheap; most events stop here.
2. when the score reaches the watch's threshold and the watch asks for it (``verify``), a yes/no
   check: the answering model reads the event (its stored tokens, or the offline preset's notes) and
   is asked whether it shows the query. Only a "yes" is a match.

Scoring runs on one worker thread per WatchSet, so ingestion never waits for it. A match carries the
time of the first frame in the event whose key passed the threshold (when the watched thing
appeared), the score and the event's thumbnail.
"""

from __future__ import annotations

import base64
import itertools
import logging
import queue
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import cv2
import numpy as np

from streamvid.errors import StreamvidError
from streamvid.tensorops import l2_normalise
from streamvid.types import Event

if TYPE_CHECKING:
    from streamvid.agent import StreamAgent

log = logging.getLogger("streamvid.serve.watches")

# Key-similarity thresholds that separate "shows it" from "does not" for each kind of key: the offline
# preset's keys are sentence embeddings of frame descriptions (text against text); a Video-LLM preset's are
# open_clip image keys (text against image, where cosines run lower).
DEFAULT_THRESHOLD_OFFLINE = 0.45
DEFAULT_THRESHOLD_CLIP = 0.25
VERIFY_QUESTION = "Answer with yes or no only. Does this part of the video show {query}?"
MAX_QUERY_CHARS = 500


def default_threshold(agent: StreamAgent) -> float:
    return DEFAULT_THRESHOLD_OFFLINE if agent.config.backend == "offline" else DEFAULT_THRESHOLD_CLIP


def check_query(query: object) -> str:
    """The query with its spacing normalised; StreamvidError when it is empty, not text or too long."""
    if not isinstance(query, str) or not query.strip():
        raise StreamvidError("a watch needs a non-empty query")
    query = " ".join(query.split())
    if len(query) > MAX_QUERY_CHARS:
        raise StreamvidError(f"the watch query is {len(query)} characters long; the limit is {MAX_QUERY_CHARS}")
    return query


def score_event(query_key: np.ndarray, event: Event, threshold: float) -> tuple[float, float | None]:
    """(best cosine of ``query_key`` [k] with the event's key and frame keys [f, k], time of the first
    frame whose key reaches ``threshold`` — the event's start when only the event key does — or None)."""
    frame_scores = event.frame_keys @ query_key if len(event.frame_keys) else np.zeros(0, np.float32)
    event_score = float(event.key @ query_key)
    best = max(event_score, float(frame_scores.max()) if frame_scores.size else -1.0)
    passing = np.flatnonzero(frame_scores >= threshold)
    if passing.size:
        return best, float(event.frame_times[passing[0]])
    return best, (float(event.t_start) if event_score >= threshold else None)


def model_says_yes(agent: StreamAgent, event: Event, query: str) -> bool | None:
    """The answering model's yes/no on whether ``event`` shows ``query``; None when the event's tokens
    have already left RAM (nothing to show the model)."""
    from streamvid.backends import AnswerContext, GenerationOptions, event_block

    if event.tokens is None:
        return None
    context = AnswerContext(blocks=[event_block(event)], question=VERIFY_QUESTION.format(query=query),
                            captions={event.id: event.caption} if event.caption else {})
    run = agent.backend.answer(context, GenerationOptions(max_new_tokens=3, seed=agent.config.seed))
    text = "".join(run.pieces).strip().lstrip("\"'*").casefold()
    return text.startswith("yes")


def jpeg_base64(rgb: np.ndarray | None, quality: int = 85) -> str | None:
    """An RGB uint8 image [H, W, 3] as base64 JPEG text (None for None)."""
    if rgb is None:
        return None
    ok, buf = cv2.imencode(".jpg", cv2.cvtColor(np.ascontiguousarray(rgb), cv2.COLOR_RGB2BGR),
                           [cv2.IMWRITE_JPEG_QUALITY, quality])
    return base64.b64encode(buf.tobytes()).decode("ascii") if ok else None


@dataclass
class WatchMatch:
    """One event that matched a watch. ``t``: when the watched thing appeared (source seconds);
    ``verified``: the model's yes (True), or None when no model check ran (the watch skips it, or the
    event's tokens had already left RAM).
    ``closed_at`` / ``matched_at``: time.monotonic() of the event closing and of this match."""

    watch_id: str
    query: str
    event_id: int
    t: float
    t_start: float
    t_end: float
    score: float
    verified: bool | None
    thumbnail: np.ndarray | None
    closed_at: float
    matched_at: float

    def to_dict(self, thumbnail: bool = True) -> dict[str, Any]:
        out = {"watch_id": self.watch_id, "query": self.query, "event_id": self.event_id, "t": self.t,
               "t_start": self.t_start, "t_end": self.t_end, "score": round(self.score, 4),
               "verified": self.verified, "latency_ms": round((self.matched_at - self.closed_at) * 1e3, 1)}
        if thumbnail:
            out["thumbnail"] = jpeg_base64(self.thumbnail)
        return out


@dataclass
class Watch:
    """A standing query. ``key``: its text key [k], unit norm."""

    id: str
    query: str
    threshold: float
    verify: bool
    key: np.ndarray
    matches: list[WatchMatch] = field(default_factory=list)
    events_scored: int = 0
    checks: int = 0  # yes/no checks the answering model ran
    closed: bool = False
    _scored_ids: set[int] = field(default_factory=set, repr=False)

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "object": "watch", "query": self.query, "threshold": self.threshold,
                "verify": self.verify, "events_scored": self.events_scored, "model_checks": self.checks,
                "matches": len(self.matches),
                "closed": self.closed}


_STOP = object()


class WatchSet:
    """The watches of one agent. Subscribes to the agent's closed events (``agent.on_event``) and scores
    them on its own thread; ``follow`` yields a watch's matches as they come.

    max_pending: closed events waiting to be scored at most; beyond it the oldest are skipped and counted
    in ``events_skipped`` (an agent far ahead of its watches must not queue without bound).
    """

    def __init__(self, agent: StreamAgent, max_pending: int = 1024) -> None:
        self.agent = agent
        self._watches: dict[str, Watch] = {}
        self._cond = threading.Condition()
        self._queue: queue.Queue[Any] = queue.Queue(maxsize=max_pending)
        self._busy = 0
        self.events_skipped = 0
        self.match_listeners: list[Callable[[WatchMatch], None]] = []
        self._ids = itertools.count(1)
        self._unsubscribe = agent.on_event(self._on_event)
        self._thread = threading.Thread(target=self._loop, name="streamvid-watches", daemon=True)
        self._thread.start()

    # ---- managing watches ---------------------------------------------------------------------
    def add(self, query: str, threshold: float | None = None, verify: bool = True, backfill: bool = False) -> Watch:
        """A new watch over the events that close from now on; with ``backfill``, also over the events
        already in the memory's RAM (oldest first)."""
        query = check_query(query)
        if threshold is None:
            threshold = default_threshold(self.agent)
        if not -1.0 <= float(threshold) <= 1.0:
            raise StreamvidError(f"a watch threshold is a cosine similarity in [-1, 1], got {threshold}")
        key = self.agent.backend.encode_text([query])[0]
        key = np.asarray(key.detach().cpu().float().numpy() if hasattr(key, "detach") else key, dtype=np.float32)
        key = l2_normalise(key)
        watch = Watch(f"watch_{next(self._ids)}_{uuid.uuid4().hex[:6]}", query, float(threshold), bool(verify), key)
        with self._cond:
            self._watches[watch.id] = watch
        if backfill:
            now = time.monotonic()
            for event in self.agent.memory.events():
                self._put((event, now, watch.id))
        return watch

    def get(self, watch_id: str) -> Watch | None:
        with self._cond:
            return self._watches.get(watch_id)

    def list(self) -> list[Watch]:
        with self._cond:
            return list(self._watches.values())

    def remove(self, watch_id: str) -> Watch | None:
        with self._cond:
            watch = self._watches.pop(watch_id, None)
            if watch is not None:
                watch.closed = True
                self._cond.notify_all()
            return watch

    def drain(self) -> None:
        """Wait until every event handed over so far has been scored."""
        self._queue.join()

    @property
    def idle(self) -> bool:
        return self._queue.unfinished_tasks == 0

    def close(self) -> None:
        """Stop listening to the agent and end the worker; every watch is closed."""
        self._unsubscribe()
        self._queue.put(_STOP)
        self._thread.join(timeout=30)
        with self._cond:
            for watch in self._watches.values():
                watch.closed = True
            self._watches.clear()
            self._cond.notify_all()

    def follow(self, watch: Watch, done: Callable[[], bool], poll_s: float = 0.2) -> Iterator[WatchMatch]:
        """The watch's matches so far, then new ones as they come, until the watch is removed or ``done()``
        holds (e.g. ingestion ended) and every closed event has been scored."""
        i = 0
        while True:
            with self._cond:
                while i >= len(watch.matches) and not watch.closed and not (done() and self.idle):
                    self._cond.wait(timeout=poll_s)
                batch = watch.matches[i:]
                finished = watch.closed or (done() and self.idle)
            i += len(batch)
            yield from batch
            if finished:
                return

    # ---- scoring --------------------------------------------------------------------------------
    def _on_event(self, event: Event) -> None:
        if self._watches:
            self._put((event, time.monotonic(), None))

    def _put(self, item: tuple[Event, float, str | None]) -> None:
        while True:
            try:
                self._queue.put_nowait(item)
                return
            except queue.Full:
                try:
                    self._queue.get_nowait()
                    self._queue.task_done()
                    self.events_skipped += 1
                except queue.Empty:
                    pass

    def _loop(self) -> None:
        while True:
            item = self._queue.get()
            try:
                if item is _STOP:
                    return
                event, closed_at, only = item
                self._score(event, closed_at, only)
            except Exception:
                log.exception("scoring an event against the watches failed")
            finally:
                self._queue.task_done()

    def _score(self, event: Event, closed_at: float, only: str | None) -> None:
        watches = [w for w in self.list() if only is None or w.id == only]
        for watch in watches:
            if event.id in watch._scored_ids:
                continue
            watch._scored_ids.add(event.id)
            watch.events_scored += 1
            score, t = score_event(watch.key, event, watch.threshold)
            if t is None:
                continue
            verified = model_says_yes(self.agent, event, watch.query) if watch.verify else None
            watch.checks += verified is not None
            if verified is False:
                continue
            match = WatchMatch(watch.id, watch.query, event.id, t, float(event.t_start), float(event.t_end), score,
                               verified, event.thumbnail, closed_at, time.monotonic())
            with self._cond:
                watch.matches.append(match)
                self._cond.notify_all()
            for listener in self.match_listeners:
                listener(match)
