"""``streamvid.Library``: search and ask across every video indexed into a store."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from streamvid.errors import QuestionError, StoreError
from streamvid.library.store import KeyHit, MilvusStore, VideoRecord

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
    """An answer over the library: text, the (video, time) moments it cites, timings."""

    text: str
    citations: list[VideoCitation]
    video_id: str | None
    timings: dict[str, float] = field(default_factory=dict)


class Library:
    """The videos indexed into ``uri`` (``milvus:///path/lib.db`` or ``milvus://host:19530``).

    ``search`` ranks events of every video (or one, ``video=``) by their best key; ``ask``
    answers from the memory of the video that holds the best-matching moment, with the models
    that indexed the library, and cites (video, time).
    """

    def __init__(self, uri: str, *, store_dir: str | Path | None = None, **overrides: Any) -> None:
        self.store = MilvusStore(uri, store_dir=store_dir)
        self.overrides = overrides
        self._agent: Any = None  # an agent over one video's memory: the library's models and query encoder
        self._agent_video: str | None = None

    def videos(self) -> list[VideoRecord]:
        """Every indexed video."""
        return self.store.videos()

    def _record(self, video: str) -> VideoRecord:
        for r in self.videos():
            if video in (r.video_id, r.path) or (len(video) >= 8 and r.video_id.startswith(video)):
                return r
        raise StoreError(f"no video {video!r} in {self.store.uri}")

    def _agent_for(self, video_id: str) -> Any:
        """An agent over ``video_id``'s saved memory, reusing the models already loaded."""
        from streamvid.agent import StreamAgent

        if self._agent is not None and self._agent_video == video_id:
            return self._agent
        agent = StreamAgent.from_memory(str(self.store.video_dir(video_id)), **self.overrides,
                                        share_from=self._agent.backend if self._agent is not None else None)
        if self._agent is not None:
            self._agent.close()
        self._agent, self._agent_video = agent, video_id
        return agent

    def encode(self, query: str | np.ndarray) -> np.ndarray:
        """A text, an RGB image [H, W, 3] uint8 or a key [d] → the L2-normalised query key [d]."""
        videos = self.videos()
        if not videos:
            raise StoreError(f"{self.store.uri} holds no indexed video")
        agent = self._agent if self._agent is not None else self._agent_for(videos[0].video_id)
        return agent.memory.snapshot().encode(query)

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

    def ask(self, question: str, video: str | None = None, **generation: Any) -> LibraryAnswer:
        """Answer ``question`` from the video holding the best-matching moment (or ``video``)."""
        from streamvid.agent import check_question

        question = check_question(question)
        hits = self.search(question, k=1, video=video)
        if not hits:
            raise QuestionError(f"{self.store.uri} holds no indexed video to answer from")
        vid = hits[0].video_id
        record = self._record(vid)
        answer = self._agent_for(vid).ask(question, **generation)
        cites = [VideoCitation(video_id=vid, path=record.path, event_id=c.event_id, t_start=c.t_start,
                               t_end=c.t_end) for c in answer.citations]
        return LibraryAnswer(text=answer.text, citations=cites, video_id=vid, timings=dict(answer.timings))

    def close(self) -> None:
        if self._agent is not None:
            self._agent.close()
            self._agent = None
        self.store.close()

    def __enter__(self) -> Library:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
