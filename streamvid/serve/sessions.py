"""Sessions: one StreamAgent each (own memory, captions, watches), models shared between them.

A session reads from a source (a file, a URL, an RTSP stream) in the background, or takes frames
pushed over HTTP. The manager enforces the caps of ServeSettings and finalises sessions whose source
has ended (so their caption and match streams can end).
"""

from __future__ import annotations

import logging
import secrets
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from streamvid.agent import Dialogue, StreamAgent
from streamvid.backends import Backend, make_backend
from streamvid.config import AgentConfig, preset_config
from streamvid.errors import StreamvidError
from streamvid.serve.errors import APIError, from_streamvid, not_found
from streamvid.serve.settings import ServeSettings
from streamvid.serve.watches import WatchSet
from streamvid.types import Answer

log = logging.getLogger("streamvid.serve")

PUSH = "push"


class ModelPool:
    """Loaded models, shared: one backend per model set, built on first use. Each session's agent gets
    its own backend over those models (``Backend.share``): fresh per-stream state, one copy of weights."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._backends: dict[tuple, Backend] = {}

    @staticmethod
    def _key(config: AgentConfig) -> tuple:
        return (config.backend, config.model, config.clip_model, config.clip_pretrained, config.device, config.dtype,
                config.seed)

    def backend(self, config: AgentConfig) -> Backend:
        """The pool's backend holding the models ``config`` picks (loaded on first use)."""
        with self._lock:  # one load per model set, even when sessions start at once
            key = self._key(config)
            if key not in self._backends:
                self._backends[key] = make_backend(config)
            return self._backends[key]

    def agent(self, config: AgentConfig) -> StreamAgent:
        """A new agent (fresh memory) over the pool's models for ``config``."""
        return StreamAgent(config, backend=self.backend(config).share(config))

    def agent_from_memory(self, directory: str, config: AgentConfig, overrides: dict[str, Any]) -> StreamAgent:
        """An agent over a saved memory, with the pool's models for ``config`` (the session's preset),
        which must be the models that built the memory (MemoryFormatError otherwise)."""
        return StreamAgent.from_memory(directory, share_from=self.backend(config), **overrides)


class Session:
    """One live video session: an agent, its source, its watches."""

    def __init__(self, session_id: str, agent: StreamAgent, source: str, memory: str | None) -> None:
        self.id = session_id
        self.agent = agent
        self.source = source
        self.memory_dir = memory
        self.created = int(time.time())
        self.watches = WatchSet(agent)
        self.frames_pushed = 0
        self.frames_refused = 0
        self.error: str | None = None
        self.ended = False  # the source is exhausted and every caption and watch is done with it
        self.closed = False
        self.asks = 0
        self._lock = threading.Lock()

    @property
    def model(self) -> str:
        return f"streamvid/{self.id}"

    @property
    def is_push(self) -> bool:
        return self.source == PUSH

    @property
    def status(self) -> str:
        if self.closed:
            return "deleted"
        if self.error:
            return "failed"
        return "ended" if self.ended else "running"

    def finalise_if_done(self) -> None:
        """When a (non-push) source has ended: stop the agent (captions drain), score the last events."""
        if self.ended or self.closed or self.is_push or self.agent.is_running:
            return
        with self._lock:
            if self.ended or self.closed:
                return
            try:
                self.agent.stop()
            except StreamvidError as exc:
                self.error = str(exc)
            except Exception as exc:  # the source failed in an unexpected way: keep the session readable
                self.error = f"{type(exc).__name__}: {exc}"
            self.watches.drain()
            self.ended = True

    def push(self, rgb: np.ndarray, t: float | None) -> bool:
        if not self.is_push:
            raise APIError(409, f"session {self.id} reads from {self.source!r}; frames can only be pushed to a "
                                "session created with source \"push\"", code="not_a_push_session")
        with self._lock:
            if self.closed:
                raise not_found("session", self.id)
            try:
                accepted = self.agent.push(rgb, t)
            except StreamvidError as exc:
                self.frames_refused += 1
                raise from_streamvid(exc, param="t" if t is not None else None) from exc
            self.frames_pushed += 1
            return accepted

    def ask_stream(self, question: str, history: list[tuple[str, str, list]], **generation: Any):
        """The engine's streamed answer to ``question`` after the given (question, answer, citations) turns."""
        dialogue = Dialogue()
        for q, a, citations in history:
            dialogue.add(q, Answer(a, citations))
        self.asks += 1
        try:
            return self.agent.ask_stream(question, dialogue=dialogue, **generation)
        except StreamvidError as exc:
            raise from_streamvid(exc, param="messages") from exc

    def captions(self) -> list:
        """The captions so far. An ingestion error the agent raises here is kept as the session's error."""
        try:
            return list(self.agent.captions())
        except StreamvidError as exc:
            self.error = self.error or str(exc)
            return list(self.agent.captions())

    def ask(self, question: str, history: list[tuple[str, str, list]], **generation: Any) -> Answer:
        """The whole answer (see ``ask_stream``)."""
        stream = self.ask_stream(question, history, **generation)
        try:
            for _ in stream:
                pass
        except StreamvidError as exc:
            raise from_streamvid(exc, param="messages") from exc
        assert stream.answer is not None
        return stream.answer

    def stats(self) -> dict[str, Any]:
        memory = self.agent.memory.stats()
        return {
            "id": self.id, "object": "session", "model": self.model, "created": self.created,
            "source": self.source, "preset": self.agent.config.preset, "fps": self.agent.config.fps,
            "memory_dir": self.memory_dir, "status": self.status, "error": self.error,
            "frames_seen": memory["frames_seen"], "frames_kept": memory["frames_kept"], "events": memory["events"],
            "frames_pushed": self.frames_pushed, "frames_refused": self.frames_refused,
            "dropped_frames": self.agent.dropped_frames, "captions": len(self.captions()),
            "captions_skipped": self.agent.captions_skipped, "watches": len(self.watches.list()),
            "watch_events_skipped": self.watches.events_skipped, "asks": self.asks,
            "memory": {**memory, "max_ram_tokens": self.agent.config.max_ram_tokens,
                       "archive_max_bytes": self.agent.config.archive_max_bytes},
        }

    def close(self) -> dict[str, Any]:
        """Stop ingestion and watches and free the memory; returns the last stats."""
        with self._lock:
            if self.closed:
                return {}
            try:
                self.agent.stop()
            except StreamvidError as exc:
                self.error = self.error or str(exc)
            self.watches.drain()  # the events the stop closed reach the watches before their streams end
            stats = self.stats()
            self.closed = True
        self.watches.close()
        self.agent.close()
        return stats


class SessionManager:
    """Creates, finds and deletes sessions within the settings' caps."""

    def __init__(self, settings: ServeSettings, pool: ModelPool | None = None) -> None:
        self.settings = settings
        self.pool = pool or ModelPool()
        self._sessions: dict[str, Session] = {}
        self._lock = threading.Lock()
        self._starting = 0
        self._stop = threading.Event()
        self._reaper = threading.Thread(target=self._reap, name="streamvid-serve-reaper", daemon=True)
        self._reaper.start()

    def config_for(self, preset: str | None, **overrides: Any) -> AgentConfig:
        merged = {**self.settings.overrides, **{k: v for k, v in overrides.items() if v is not None}}
        merged.setdefault("max_ram_tokens", self.settings.session_ram_tokens)
        merged.setdefault("archive_max_bytes", self.settings.session_archive_bytes)
        try:
            return preset_config(preset or self.settings.preset, **merged)
        except StreamvidError as exc:
            raise from_streamvid(exc, param="preset") from exc

    def preload(self) -> None:
        """Load the default preset's models now (the server does this before it listens)."""
        self.pool.agent(self.config_for(None)).close()

    def check_path(self, path: str, param: str) -> str:
        """``path`` resolved; with ``files_root`` set, it must lie inside it."""
        root = self.settings.files_root
        if root is None:
            return path
        resolved = Path(path).expanduser().resolve()
        if not resolved.is_relative_to(Path(root).resolve()):
            raise APIError(403, f"{path}: only paths inside the server's files root are allowed", param=param,
                           code="path_not_allowed", type="permission_error")
        return str(resolved)

    def create(self, *, source: str = PUSH, fps: float | None = None, preset: str | None = None,
               memory: str | None = None, max_ram_tokens: int | None = None,
               watches: Sequence[Mapping[str, Any]] = ()) -> Session:
        """A started session. ``watches``: WatchSet.add keyword sets, added before ingestion starts so
        they see every event."""
        if max_ram_tokens is not None and max_ram_tokens > self.settings.session_ram_tokens:
            raise APIError(400, f"max_ram_tokens {max_ram_tokens} is above the server's per-session budget of "
                                f"{self.settings.session_ram_tokens}", param="max_ram_tokens", code="above_limit")
        if fps is not None and not 0 < fps <= self.settings.max_fps:
            raise APIError(400, f"fps must be in (0, {self.settings.max_fps}], got {fps}", param="fps")
        with self._lock:
            if len(self._sessions) + self._starting >= self.settings.max_sessions:
                raise APIError(429, f"the server already holds {self.settings.max_sessions} sessions, its limit; "
                                    "delete one first", type="rate_limit_error", code="session_limit_reached")
            self._starting += 1
        try:
            session = self._build(source, fps, preset, memory, max_ram_tokens, watches)
            with self._lock:
                self._sessions[session.id] = session
            return session
        finally:
            with self._lock:
                self._starting -= 1

    def _build(self, source: str, fps: float | None, preset: str | None, memory: str | None,
               max_ram_tokens: int | None, watches: Sequence[Mapping[str, Any]]) -> Session:
        from streamvid.sources import open_source

        config = self.config_for(preset, fps=fps, max_ram_tokens=max_ram_tokens)
        src = None
        if source != PUSH:
            if "://" not in source:
                source = self.check_path(source, "source")
            try:  # open before loading models: a bad source fails fast
                src = open_source(source, fps=config.fps, size=config.frame_size)
            except StreamvidError as exc:
                raise from_streamvid(exc, param="source") from exc
        try:
            if memory is not None:
                memory = self.check_path(memory, "memory")
                overrides = {k: getattr(config, k) for k in ("fps", "max_ram_tokens", "archive_max_bytes")}
                agent = self.pool.agent_from_memory(memory, config, overrides)
            else:
                agent = self.pool.agent(config)
        except StreamvidError as exc:
            if src is not None:
                src.close()
            raise from_streamvid(exc, param="memory" if memory else "preset") from exc
        session = Session("sess_" + secrets.token_hex(8), agent, source, memory)
        param = "watches"
        try:
            for i, watch in enumerate(watches):
                param = f"watches.{i}"
                session.watches.add(**watch)
            param = "source"
            agent.start(src, fps=fps)
        except StreamvidError as exc:
            if src is not None:
                src.close()
            session.close()
            raise from_streamvid(exc, param=param) from exc
        log.info("session %s started from %s", session.id, source)
        return session

    def get(self, session_id: str) -> Session:
        with self._lock:
            session = self._sessions.get(session_id)
        if session is None:
            raise not_found("session", session_id)
        return session

    def by_model(self, model: str) -> Session:
        prefix = "streamvid/"
        if not model.startswith(prefix):
            raise APIError(404, f"the model {model!r} does not exist; use \"streamvid/<session id>\" (GET /v1/models "
                                "lists them)", param="model", code="model_not_found")
        with self._lock:
            session = self._sessions.get(model[len(prefix):])
        if session is None:
            raise APIError(404, f"the model {model!r} does not exist: no session {model[len(prefix):]!r}",
                           param="model", code="model_not_found")
        return session

    def list(self) -> list[Session]:
        with self._lock:
            return list(self._sessions.values())

    def delete(self, session_id: str) -> dict[str, Any]:
        with self._lock:
            session = self._sessions.pop(session_id, None)
        if session is None:
            raise not_found("session", session_id)
        return session.close()

    def close(self) -> None:
        self._stop.set()
        self._reaper.join(timeout=5)
        with self._lock:
            sessions, self._sessions = list(self._sessions.values()), {}
        for session in sessions:
            try:
                session.close()
            except Exception:
                log.exception("closing session %s failed", session.id)

    def _reap(self) -> None:
        while not self._stop.wait(0.1):
            for session in self.list():
                try:
                    session.finalise_if_done()
                except Exception:
                    log.exception("finalising session %s failed", session.id)
