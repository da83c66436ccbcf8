"""The app's agents, one set per browser session: a live webcam agent and an indexed-video agent.

Every browser tab is a session (gradio's session hash). ``SessionRegistry`` gives each its own
``UserSession`` (a ``LiveSession`` and a ``VideoSession``, so its own memories), built around the
models that ``SharedModelFactory`` loads once. A session is closed, and its memories freed, when
its tab goes away (gradio's unload event calls ``SessionRegistry.end``) or after
``idle_timeout_s`` without anything from the user (frames, questions, indexing, buttons).

gradio runs callbacks on worker threads, so a webcam frame, a question, a stats refresh and a
reset can arrive at once. Each session's lock covers creating, starting, stopping, pushing to
and replacing its agent (all quick); answering runs outside the lock, because the engine lets
``ask`` read memory while ingestion goes on.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from streamvid_ui.render import RateMeter

from streamvid.errors import StreamvidError

if TYPE_CHECKING:
    from streamvid.agent import AnswerStream, StreamAgent
    from streamvid.backends import Backend
    from streamvid.config import AgentConfig
    from streamvid.serve.watches import WatchMatch, WatchSet
    from streamvid.types import Caption, Event

log = logging.getLogger("streamvid_ui")

AgentFactory = Callable[[], "StreamAgent"]
# After this long without a webcam frame the live status reads "waiting for the camera".
LIVE_IDLE_S = 3.0
# How long the status line keeps showing the last error (a refused frame, a failed ingestion) when no
# frame is accepted after it; an accepted frame clears it at once.
LIVE_ERROR_SHOW_S = 10.0
# A session with no user activity for this long is closed and its memories freed.
DEFAULT_IDLE_TIMEOUT_S = 30 * 60.0


class SharedModelFactory:
    """Agents from one preset that share one copy of its models: the first call builds the agent and
    its models, later calls get fresh agents over the same models (``Backend.share``), so every
    session holds the same weights. Only the models are kept here, never a session's memory."""

    def __init__(self, preset: str = "auto", **overrides: Any) -> None:
        self.preset = preset
        self.overrides = overrides
        self._lock = threading.Lock()
        self._models: tuple[AgentConfig, Backend] | None = None  # the first agent's config and backend

    def __call__(self) -> StreamAgent:
        from streamvid.agent import StreamAgent

        with self._lock:
            if self._models is not None:
                config, backend = self._models
                return StreamAgent(config, backend=backend.share(config))
            agent = StreamAgent.from_preset(self.preset, **self.overrides)
            self._models = (agent.config, agent.backend)
            return agent


class LiveSession:
    """The webcam's agent: started by the first pushed frame. ``stop()`` stops ingesting until
    ``start()``: frames the webcam keeps sending meanwhile are counted and dropped."""

    def __init__(self, factory: AgentFactory, clock: Callable[[], float] = time.monotonic) -> None:
        self._factory = factory
        self._clock = clock
        self._lock = threading.Lock()
        self._agent: StreamAgent | None = None
        self.stopped = False
        self.frames_ignored = 0
        self.meter = RateMeter(window_s=5.0)
        self.frames_received = 0
        self.last_frame_at: float | None = None
        self.last_ttft_ms: float | None = None
        self.last_error: str | None = None
        self.last_error_at = 0.0
        self._captions: list[Caption] = []
        # The standing query ("tell me when …"): kept across resets, scored by a WatchSet on the agent.
        self.watch_spec: dict[str, Any] | None = None
        self._watches: WatchSet | None = None

    def _note_error(self, exc: BaseException) -> None:
        self.last_error = str(exc)
        self.last_error_at = self._clock()

    def agent(self) -> StreamAgent:
        """The live agent, built on first use."""
        with self._lock:
            return self._agent_locked()

    def _agent_locked(self) -> StreamAgent:
        if self._agent is None:
            self._agent = self._factory()
            if self.watch_spec is not None:
                self._watches = self._new_watches(self._agent, self.watch_spec)
        return self._agent

    @staticmethod
    def _new_watches(agent: StreamAgent, spec: dict[str, Any]) -> WatchSet:
        from streamvid.serve.watches import WatchSet

        watches = WatchSet(agent)
        try:
            watches.add(**spec)
        except BaseException:
            watches.close()
            raise
        return watches

    def watch(self, query: str | None, *, threshold: float | None = None, verify: bool = True) -> None:
        """Watch the live stream for ``query`` from now on, replacing the previous watch (its matches
        go with it); an empty query stops watching. See streamvid.serve.watches for the scoring."""
        with self._lock:
            if self._watches is not None:
                self._watches.close()
                self._watches = None
            self.watch_spec = None
            if query and query.strip():
                from streamvid.serve.watches import check_query

                self.watch_spec = {"query": check_query(query), "threshold": threshold, "verify": verify}
            if self.watch_spec is not None and self._agent is not None:
                try:
                    self._watches = self._new_watches(self._agent, self.watch_spec)
                except StreamvidError:
                    self.watch_spec = None
                    raise

    def watch_matches(self) -> list[WatchMatch]:
        """The current watch's matches, oldest first."""
        watches = self._watches
        return [] if watches is None else [m for w in watches.list() for m in w.matches]

    def push(self, rgb: np.ndarray | None) -> bool:
        """Give one webcam frame (H×W×3 uint8 RGB) to the agent, starting ingestion if it is not running.

        Returns False for no frame, or while stopped (the frame is dropped and counted in
        ``frames_ignored``). Never waits for an answer. Errors are raised, and kept in ``last_error``
        for the status line (a streaming callback has no other way to reach the page); an accepted
        frame clears the error.
        """
        if rgb is None:
            return False
        try:
            with self._lock:
                if self.stopped:
                    self.frames_ignored += 1
                    return False
                agent = self._agent_locked()
                if not agent.is_running:
                    agent.start()
                agent.push(rgb)
                self.frames_received += 1
                self.last_frame_at = self._clock()
                self.last_error = None
        except StreamvidError as exc:
            self._note_error(exc)
            raise
        return True

    def stop(self) -> dict[str, Any] | None:
        """Stop ingesting until ``start()`` (the open event closes, memory stays), however many frames
        the webcam keeps sending. Returns the agent's stats, or None when nothing had started."""
        with self._lock:  # pushes wait for the lock, so no frame slips in between
            try:
                return None if self._agent is None else self._agent.stop()
            finally:
                self.stopped = True  # set last: the status says "stopped" once the memory is final

    def start(self) -> None:
        """Ingest again: the next webcam frame restarts the agent over the same memory."""
        with self._lock:
            self.stopped = False

    def has_memory(self) -> bool:
        """Whether any frame has been written to the live memory (so a question has something to read)."""
        agent = self._agent
        return agent is not None and int(agent.memory.stats()["frames_kept"]) > 0

    def reset(self) -> None:
        """Forget everything: close the agent; the next frame or question builds a fresh one. A stopped
        session stays stopped, and the watch stays set (its matches are forgotten)."""
        with self._lock:
            agent, self._agent = self._agent, None
            if self._watches is not None:
                self._watches.close()
                self._watches = None
            self.meter = RateMeter(window_s=5.0)
            self.frames_received = 0
            self.frames_ignored = 0
            self.last_frame_at = None
            self.last_ttft_ms = None
            self.last_error = None
            self._captions = []
        if agent is not None:
            agent.close()

    def ask_stream(self, question: str) -> AnswerStream:
        """Answer from the live memory while frames keep arriving."""
        return self.agent().ask_stream(question)

    def captions(self) -> list[Caption]:
        """Captions so far. A background error the agent reports here goes to the status line
        and the captions already shown stay."""
        agent = self._agent
        if agent is None:
            return []
        try:
            self._captions = list(agent.captions(follow=False))
        except StreamvidError as exc:
            self._note_error(exc)
        return self._captions

    def status(self) -> str:
        if self.last_error and self._clock() - self.last_error_at <= LIVE_ERROR_SHOW_S:
            return f"error: {self.last_error}"
        if self.stopped:
            return "stopped (press Start to ingest)"
        agent = self._agent
        if agent is None or not agent.is_running:
            return "idle"
        if self.last_frame_at is None or self._clock() - self.last_frame_at > LIVE_IDLE_S:
            return "waiting for the camera"
        return "streaming"

    def stats(self) -> dict[str, Any]:
        """Memory stats plus ingest fps, dropped frames, last time to first token and a status word."""
        agent = self._agent
        out: dict[str, Any] = {"status": self.status(), "last_ttft_ms": self.last_ttft_ms,
                               "frames_received": self.frames_received, "frames_ignored": self.frames_ignored}
        if agent is None:
            return out
        mem = agent.memory.stats()
        self.meter.add(self._clock(), int(mem["frames_seen"]))
        out.update(mem)
        out["ingest_fps"] = self.meter.rate()
        out["dropped_frames"] = agent.dropped_frames
        return out

    def close(self) -> None:
        self.reset()


@dataclass
class IndexJob:
    """One video being indexed on a worker thread; poll ``done`` and ``progress()``."""

    name: str
    path: Path
    agent: StreamAgent
    total_frames: int | None
    started: float = field(default_factory=time.monotonic)
    done: threading.Event = field(default_factory=threading.Event)
    error: BaseException | None = None
    final_stats: dict[str, Any] | None = None
    thread: threading.Thread | None = None
    source: Any = None
    cancelled: bool = False

    def cancel(self) -> None:
        """Stop reading the video; what was indexed so far stays in memory (a partial index)."""
        self.cancelled = True
        if self.source is not None:
            self.source.close()

    def progress(self) -> tuple[int, float, int]:
        """(frames read so far, frames per second since the start, events so far)."""
        stats = self.agent.memory.stats()
        elapsed = max(1e-6, time.monotonic() - self.started)
        return int(stats["frames_seen"]), stats["frames_seen"] / elapsed, int(stats["events"])


class VideoSession:
    """The video tab's agent: one indexed video at a time; indexing another replaces it."""

    def __init__(self, factory: AgentFactory) -> None:
        self._factory = factory
        self._lock = threading.Lock()
        self._agent: StreamAgent | None = None
        self._job: IndexJob | None = None

    @property
    def job(self) -> IndexJob | None:
        return self._job

    def start_indexing(self, path: Path, name: str | None = None) -> IndexJob:
        """Open the video and index it on a worker thread. A video that cannot be opened raises
        SourceError and leaves the previously indexed video's memory in place."""
        from streamvid.sources import open_source

        with self._lock:
            if self._job is not None and not self._job.done.is_set():
                raise StreamvidError(f"still indexing {self._job.name}; wait until it finishes")
            agent = self._factory()
            try:
                src = open_source(str(path), fps=agent.config.fps, size=agent.config.frame_size)
            except BaseException:
                agent.close()
                raise
            old, self._agent = self._agent, agent
            duration = getattr(src, "duration", None)
            total = int(duration * agent.config.fps) + 1 if duration else None
            job = IndexJob(name=name or path.name, path=path, agent=agent, total_frames=total, source=src)
            job.thread = threading.Thread(target=self._run, args=(job, src), name="streamvid-ui-index", daemon=True)
            self._job = job
        if old is not None:
            old.close()
        job.thread.start()
        return job

    @staticmethod
    def _run(job: IndexJob, src: Any) -> None:
        try:
            job.final_stats = job.agent.ingest(src, progress=False)
        except BaseException as exc:  # shown on the page by the polling callback
            if job.cancelled and isinstance(exc, StreamvidError):  # the source closed under the reader: a cancel
                log.info("indexing %s cancelled: %s", job.name, exc)
            else:
                log.exception("indexing %s failed", job.name)
                job.error = exc
        finally:
            job.done.set()

    def agent(self) -> StreamAgent:
        """The agent over the indexed video; StreamvidError before any video was given."""
        agent = self._agent
        if agent is None:
            raise StreamvidError("no video yet: upload one or give a path, then press Index")
        return agent

    def ask_stream(self, question: str) -> AnswerStream:
        return self.agent().ask_stream(question)

    def events(self) -> list[Event]:
        agent = self._agent
        return [] if agent is None else agent.memory.events()

    def close(self) -> None:
        with self._lock:
            agent, self._agent = self._agent, None
            job = self._job
        if job is not None and job.thread is not None and not job.done.is_set():
            job.cancel()
            job.thread.join(timeout=10)
        if agent is not None:
            agent.close()


class UserSession:
    """One browser session's agents: its live memory and its indexed video, nobody else's."""

    def __init__(self, session_id: str, factory: AgentFactory, clock: Callable[[], float] = time.monotonic) -> None:
        self.id = session_id
        self.live = LiveSession(factory, clock=clock)
        self.video = VideoSession(factory)
        self._clock = clock
        self.last_active = clock()

    def touch(self) -> None:
        """Note user activity now (keeps the session from timing out)."""
        self.last_active = self._clock()

    def idle_s(self) -> float:
        return self._clock() - self.last_active

    def busy(self) -> bool:
        """Whether work is going on that counts as activity: a video being indexed."""
        job = self.video.job
        return job is not None and not job.done.is_set()

    def close(self) -> None:
        """Stop both agents and free their memories."""
        try:
            self.live.close()
        finally:
            self.video.close()


class SessionRegistry:
    """The ``UserSession`` of each browser session, by id (gradio's session hash).

    ``get`` builds a session on first use; ``end`` closes one (its tab went away); ``sweep`` closes
    those idle for longer than ``idle_timeout_s`` (a session indexing a video is not idle). With
    ``sweep_every_s`` a daemon thread sweeps on its own until ``close``.
    """

    def __init__(self, factory: AgentFactory, *, idle_timeout_s: float = DEFAULT_IDLE_TIMEOUT_S,
                 sweep_every_s: float | None = None, clock: Callable[[], float] = time.monotonic) -> None:
        if idle_timeout_s <= 0:
            raise StreamvidError(f"the session idle timeout must be > 0 seconds, got {idle_timeout_s}")
        self._factory = factory
        self.idle_timeout_s = float(idle_timeout_s)
        self._clock = clock
        self._lock = threading.Lock()
        self._sessions: dict[str, UserSession] = {}
        self._closed = threading.Event()
        self._sweeper: threading.Thread | None = None
        if sweep_every_s is not None:
            self._sweeper = threading.Thread(target=self._sweep_loop, args=(float(sweep_every_s),),
                                             name="streamvid-ui-sessions", daemon=True)
            self._sweeper.start()

    def get(self, session_id: str, *, create: bool = True) -> UserSession | None:
        """The session ``session_id``, built on first use when ``create``; None when absent and not ``create``."""
        with self._lock:
            if self._closed.is_set():
                raise StreamvidError("the app is shutting down")
            session = self._sessions.get(session_id)
            if session is None and create:
                session = self._sessions[session_id] = UserSession(session_id, self._factory, clock=self._clock)
                log.info("session %s started (%d open)", session_id[:8], len(self._sessions))
            return session

    def ids(self) -> list[str]:
        with self._lock:
            return list(self._sessions)

    def end(self, session_id: str, reason: str = "ended") -> bool:
        """Close ``session_id`` and free its memories; False when there was no such session."""
        with self._lock:
            session = self._sessions.pop(session_id, None)
        if session is None:
            return False
        try:
            session.close()
        except StreamvidError as exc:  # a background error surfaced while stopping: the memories are freed anyway
            log.warning("session %s: %s", session_id[:8], exc)
        log.info("session %s %s: its memories were freed (%d open)", session_id[:8], reason, len(self._sessions))
        return True

    def sweep(self) -> list[str]:
        """Close the sessions idle for longer than the timeout; returns their ids."""
        with self._lock:
            stale = [sid for sid, s in self._sessions.items() if s.idle_s() > self.idle_timeout_s and not s.busy()]
        return [sid for sid in stale if self.end(sid, reason=f"timed out after {self.idle_timeout_s:.0f} s idle")]

    def _sweep_loop(self, every_s: float) -> None:
        while not self._closed.wait(every_s):
            try:
                self.sweep()
            except Exception:  # keep sweeping; a failure to close one session must not stop the others'
                log.exception("closing idle sessions failed")

    def close(self) -> None:
        """Close every session and stop sweeping."""
        self._closed.set()
        if self._sweeper is not None:
            self._sweeper.join(timeout=5)
        with self._lock:
            sessions, self._sessions = list(self._sessions.values()), {}
        for session in sessions:
            session.close()
