"""``streamvid.Library``: search and ask across every video indexed into a store.

Asking: the question's content is searched across the library's keys (or one video's); the videos
holding the best moments are read through ``streamvid.library.index.video_bank`` (Milvus keys, the
events read from each video's saved folder by id, nothing else loaded), and retrieval runs on each
as on one video (time phrases, neighbours, read-time pruning). Then:

- a backend that answers from tokens alone (the Video-LLM presets) gets one prompt over the best
  events of all those videos, each block labelled with its video's name and time;
- a backend whose answers rest on what it recorded per video (``Backend.state()``, e.g. the offline
  preset's perception records: one timeline per video, so they are not pooled — "the first text"
  or "at 00:00:05" mean something only inside one video) answers for each video on its own
  records and blocks; answers that abstain are dropped and the rest are merged, each cited in its
  video.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from streamvid.errors import MemoryFormatError, StoreError
from streamvid.library.store import KeyHit, MilvusStore, VideoRecord
from streamvid.types import NOT_SEEN

log = logging.getLogger("streamvid.library")


@dataclass(frozen=True)
class VideoCitation:
    """A moment an answer used: which video (id and path) and the event's time span in it."""

    video_id: str
    path: str
    event_id: int
    t_start: float
    t_end: float


@dataclass
class LibraryAnswer:
    """An answer over the library: text, the (video, time) moments it cites (in video then time order),
    the video of its best moment (None when it abstains), timings."""

    text: str
    citations: list[VideoCitation]
    video_id: str | None
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def videos(self) -> list[str]:
        """The ids of the cited videos, each once."""
        return list(dict.fromkeys(c.video_id for c in self.citations))


# A video is read for an answer when its best key scores at least this fraction of the library's best.
RELATIVE = 0.8
OPEN_BANKS = 16  # video banks kept open between questions (each holds two file handles), least recent closed


class Library:
    """The videos indexed into ``uri`` (``milvus:///path/lib.db`` or ``milvus://host:19530``).

    ``search`` ranks events of every video (or one, ``video=``) by their best key; ``ask`` answers
    from the best moments of up to ``max_videos`` videos (see the module docstring), with the models
    that indexed the library, and cites (video, time). ``overrides``: settings changed by name
    (e.g. ``device``), as for ``StreamAgent.from_memory``.
    """

    def __init__(self, uri: str, *, store_dir: str | Path | None = None, max_videos: int = 3,
                 **overrides: Any) -> None:
        if max_videos < 1:
            raise StoreError(f"max_videos must be >= 1, got {max_videos}")
        self.store = MilvusStore(uri, store_dir=store_dir)
        self.overrides = overrides
        self.max_videos = max_videos
        self._backend: Any = None
        self._config: Any = None
        self._banks: OrderedDict[str, Any] = OrderedDict()

    def videos(self) -> list[VideoRecord]:
        """Every indexed video."""
        return self.store.videos()

    def _record(self, video: str) -> VideoRecord:
        for r in self.videos():
            if video in (r.video_id, r.path) or (len(video) >= 8 and r.video_id.startswith(video)):
                return r
        raise StoreError(f"no video {video!r} in {self.store.uri}")

    def bank(self, video: str) -> Any:
        """A read-only MemoryBank of one video (id or path): keys in the store, events read by id from its
        saved folder (``streamvid.library.index.video_bank``), with the library's query encoders."""
        from streamvid.library.index import video_bank

        vid = self._record(video).video_id
        if vid in self._banks:
            self._banks.move_to_end(vid)
        else:
            backend = self._models(vid)
            bank = video_bank(self.store, vid, text_encoder=backend.encode_text,
                              image_encoder=backend.image_encoder)
            if (bank.key_dim, bank.token_dim) != (backend.key_dim, backend.token_dim):
                bank.close()
                raise MemoryFormatError(f"video {vid}: its memory holds {bank.token_dim}-d tokens and "
                                        f"{bank.key_dim}-d keys, the library's models make {backend.token_dim}-d "
                                        f"and {backend.key_dim}-d; the library was indexed with other models")
            self._banks[vid] = bank
            while len(self._banks) > max(OPEN_BANKS, self.max_videos):
                self._banks.popitem(last=False)[1].close()
        return self._banks[vid]

    def event(self, video: str, event_id: int) -> Any:
        """One event of one video (id or path) with its tokens and thumbnail, read from the video's saved
        memory by id; None when the video holds no such event."""
        return self.bank(video).archive.get(event_id)

    def _models(self, video_id: str) -> Any:
        """The backend (models loaded once) of the preset that indexed the library, read from ``video_id``'s
        saved settings."""
        if self._backend is None:
            from streamvid.backends import make_backend
            from streamvid.library.index import SavedEvents

            saved = SavedEvents(self.store.checkout(video_id, lazy=True))
            try:
                config = saved.config()
            finally:
                saved.close()
            self._config = config.replace(**self.overrides) if self.overrides else config
            self._backend = make_backend(self._config)
        return self._backend

    def encode(self, query: str | np.ndarray) -> np.ndarray:
        """A text, an RGB image [H, W, 3] uint8 or a key [d] → the L2-normalised query key [d]."""
        videos = self.videos()
        if not videos:
            raise StoreError(f"{self.store.uri} holds no indexed video")
        return self.bank(videos[0].video_id).snapshot().encode(query)

    def search(self, query: str | np.ndarray, k: int = 5, video: str | None = None) -> list[KeyHit]:
        """The top ``k`` events (one hit per (video, event), its best key), best first."""
        if k <= 0:
            return []
        vid = self._record(video).video_id if video else None
        q = self.encode(query)
        fetch = max(8 * k, 64)
        best: dict[tuple[str, int], KeyHit] = {}
        while True:
            hits = self.store.search(q[None], k=min(fetch, 16_384), video_id=vid)[0]
            for h in hits:
                best.setdefault((h.video_id, h.event_id), h)
            if len(best) >= k or len(hits) < fetch or fetch >= 16_384:
                break
            fetch *= 4
        return sorted(best.values(), key=lambda h: -h.score)[:k]

    def candidates(self, question: str, video: str | None = None) -> list[str]:
        """The videos to read for ``question``: ``video`` alone, else up to ``max_videos`` whose best moment
        scores at least ``RELATIVE`` × the library's best, best first (every video, up to the cap, when the
        question names only a time)."""
        from streamvid.retrieve import plan_query

        if video:
            return [self._record(video).video_id]
        records = self.videos()
        if not records:
            raise StoreError(f"{self.store.uri} holds no indexed video to answer from")
        content = plan_query(question, max(r.duration for r in records)).content
        if not content:
            return [r.video_id for r in records[: self.max_videos]]
        best: dict[str, float] = {}
        for h in self.search(content, k=max(16, 4 * self.max_videos)):
            best.setdefault(h.video_id, h.score)
        if not best:
            return []
        top = max(best.values())
        floor = RELATIVE * top if top > 0 else top
        return [v for v, s in sorted(best.items(), key=lambda vs: -vs[1]) if s >= floor][: self.max_videos]

    def ask(self, question: str, video: str | None = None, *, max_new_tokens: int | None = None,
            do_sample: bool = False, temperature: float = 0.7, top_p: float = 0.9) -> LibraryAnswer:
        """Answer ``question`` from the best moments across the library (or of ``video``, an id or path),
        citing (video, time) for each moment the answer rests on."""
        from streamvid.agent import check_question
        from streamvid.config import check_generation
        from streamvid.generation import GenerationOptions

        question = check_question(question)
        check_generation(max_new_tokens, temperature, top_p)
        t0 = time.perf_counter()
        videos = self.candidates(question, video)
        if not videos:
            return LibraryAnswer(NOT_SEEN, [], None, {"retrieval_ms": (time.perf_counter() - t0) * 1e3})
        backend, config = self._models(videos[0]), self._config
        options = GenerationOptions(max_new_tokens=max_new_tokens or config.max_new_tokens, do_sample=do_sample,
                                    temperature=temperature, top_p=top_p, seed=config.seed,
                                    repetition_penalty=config.repetition_penalty,
                                    no_repeat_ngram_size=config.no_repeat_ngram_size)
        query = backend.query_tokens(question)
        reads = [_VideoRead(self._record(v), self.bank(v), question, config, query) for v in videos]
        retrieval_ms = (time.perf_counter() - t0) * 1e3
        if any(r.bank.archive.extra_state for r in reads):
            answer = _answer_each(reads, backend, question, options)
        else:
            answer = _answer_pooled(reads, backend, question, options, config, query)
        answer.timings = {"retrieval_ms": retrieval_ms, **answer.timings}
        log.debug("library answer from %d video(s): %s", len(reads), [c.video_id for c in answer.citations])
        return answer

    def close(self) -> None:
        for bank in self._banks.values():
            bank.close()
        self._banks.clear()
        self.store.close()

    def __enter__(self) -> Library:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class _VideoRead:
    """One video's part of a library answer: its retrieval (``gather``) on its bank."""

    def __init__(self, record: VideoRecord, bank: Any, question: str, config: Any, query: Any) -> None:
        from streamvid.retrieve import gather

        self.record, self.bank = record, bank
        self.snap = bank.snapshot()
        self.plan, self.blocks, self.used = gather(self.snap, question, budget=config.read_tokens,
                                                   k=config.search_k, query=query)
        self.name = Path(record.path).name or record.video_id[:12]

    def cite(self, event_id: int, t_start: float, t_end: float) -> VideoCitation:
        return VideoCitation(self.record.video_id, self.record.path, int(event_id), float(t_start), float(t_end))


def _abstains(reads: list[_VideoRead], config: Any) -> bool:
    """The agent's rule (``abstain_below``) over the pooled retrieval scores."""
    if config.abstain_below is None:
        return False
    plans = [r.plan for r in reads]
    if not any(p.content for p in plans) or any(p.about_now for p in plans):
        return False
    return max((s for r in reads for _, s in r.used), default=0.0) < config.abstain_below


def _answer_pooled(reads: list[_VideoRead], backend: Any, question: str, options: Any, config: Any,
                   query: Any) -> LibraryAnswer:
    """One prompt over the best events of every video read, each block labelled with its video."""
    from streamvid.backends import AnswerContext
    from streamvid.retrieve import assemble

    pooled = sorted(((r, e, s) for r in reads for e, s in r.used), key=lambda res: (-res[2], res[1].t_start))
    pooled = pooled[: max(config.search_k, len(reads))]
    if not pooled or _abstains(reads, config):
        return LibraryAnswer(NOT_SEEN, [], None, {"abstained": 1.0})
    # Event ids repeat across videos: the prompt numbers its events 0..n-1 and maps them back.
    renumbered = [dataclasses.replace(e, id=j) for j, (_, e, _) in enumerate(pooled)]
    blocks = assemble(renumbered, (), config.read_tokens, query=query)
    for b in blocks:
        b.source = f"[{pooled[b.event_id][0].name}]"
    context = AnswerContext(blocks=blocks, question=question,
                            captions={j: e.caption for j, (_, e, _) in enumerate(pooled) if e.caption},
                            scores={j: float(s) for j, (_, _, s) in enumerate(pooled)})
    run = backend.answer(context, options)
    text = "".join(run.pieces).strip()
    used = run.used(text) if run.used is not None else None
    cites = [pooled[b.event_id][0].cite(pooled[b.event_id][1].id, b.t_start, b.t_end) for b in blocks
             if not used or b.event_id in used]
    cites = _ordered(cites)
    return LibraryAnswer(text, cites, pooled[0][0].record.video_id, dict(run.timings()))


def _answer_each(reads: list[_VideoRead], backend: Any, question: str, options: Any) -> LibraryAnswer:
    """Each video answered on its own records and blocks; abstentions dropped, the rest merged."""
    from streamvid.agent import citations_for, citations_of_spans
    from streamvid.backends import AnswerContext

    parts: list[tuple[_VideoRead, str, list[VideoCitation]]] = []
    timings: dict[str, float] = {}
    for r in reads:
        backend.load_state(r.bank.archive.extra_state)
        context = AnswerContext(blocks=r.blocks, question=question,
                                captions={e.id: e.caption for e, _ in r.used if e.caption},
                                scores={e.id: float(s) for e, s in r.used})
        run = backend.answer(context, options)
        text = "".join(run.pieces).strip()
        t = run.timings()
        timings.setdefault("ttft_ms", float(t.get("ttft_ms", 0.0)))
        timings["answer_ms"] = timings.get("answer_ms", 0.0) + float(t.get("total_ms", 0.0))
        if t.get("abstained") or not text or text == NOT_SEEN:
            continue
        if run.spans is not None:
            cited = citations_of_spans(run.spans, r.snap)
        else:
            used = run.used(text) if run.used is not None else None
            cited = [c for c in citations_for(r.blocks, r.snap) if not used or c.event_id in used]
        parts.append((r, text, [r.cite(c.event_id, c.t_start, c.t_end) for c in cited]))
    backend.load_state({})
    if not parts:
        return LibraryAnswer(NOT_SEEN, [], None, {**timings, "abstained": 1.0})
    text = parts[0][1] if len(parts) == 1 else "\n".join(f"{r.name}: {t}" for r, t, _ in parts)
    return LibraryAnswer(text, _ordered([c for _, _, cs in parts for c in cs]), parts[0][0].record.video_id,
                         timings)


def _ordered(cites: list[VideoCitation]) -> list[VideoCitation]:
    """Each (video, event, span) once, video by video in the order first cited, each in time order."""
    first = {c.video_id: i for i, c in reversed(list(enumerate(cites)))}
    unique = {(c.video_id, c.event_id, c.t_start, c.t_end): c for c in cites}
    return sorted(unique.values(), key=lambda c: (first[c.video_id], c.t_start, c.t_end, c.event_id))
