"""The browser app: a live webcam assistant and video-file QA over one streamvid engine.

Live tab: the webcam streams frames into the agent (``gr.Image(streaming=True).stream``), a
timer refreshes stats and captions, and the chat answers while frames keep arriving.
Video tab: upload a file or give a path, watch indexing progress, ask; cited moments are
buttons that seek the player; the memory timeline shows each event's thumbnail and caption.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import gradio as gr
import numpy as np
from streamvid_ui.render import (
    DEFAULT_MAX_UPLOAD_BYTES,
    VIDEO_EXTENSIONS,
    UploadError,
    check_video_file,
    citations_text,
    format_captions,
    format_citations,
    format_notice,
    format_progress,
    format_stats,
    format_watch,
    human_bytes,
    player_can_show,
    timeline_items,
)
from streamvid_ui.sessions import (
    DEFAULT_IDLE_TIMEOUT_S,
    AgentFactory,
    LiveSession,
    SessionRegistry,
    SharedModelFactory,
    UserSession,
    VideoSession,
)

from streamvid.errors import StreamvidError

log = logging.getLogger("streamvid_ui")

# Moves the video player to a cited moment: gr.Video has no seek API, so the citations panel
# listens for clicks on its [data-seek] buttons (delegated, so re-rendered buttons work too).
SEEK_JS = """
element.addEventListener('click', (e) => {
  const b = e.target.closest('[data-seek]');
  if (!b) return;
  const v = document.querySelector('#sv-video video');
  if (!v) return;
  v.currentTime = parseFloat(b.dataset.seek);
  v.play().catch(() => {});
});
"""

APP_CSS = """
.sv-stats { display: grid; grid-template-columns: repeat(auto-fill, minmax(150px, 1fr)); gap: 6px; }
.sv-stat { display: flex; flex-direction: column; padding: 6px 8px; border-radius: 6px;
           background: var(--block-background-fill); border: 1px solid var(--border-color-primary); }
.sv-stat-label { font-size: 0.75em; opacity: 0.7; }
.sv-stat-value { font-size: 1.1em; font-weight: 600; font-variant-numeric: tabular-nums; }
.sv-citations { display: flex; flex-wrap: wrap; gap: 6px; }
.sv-cite { display: flex; flex-direction: column; align-items: center; gap: 2px; padding: 4px;
           border-radius: 6px; border: 1px solid var(--border-color-primary); font-size: 0.8em;
           background: var(--block-background-fill); font-variant-numeric: tabular-nums; }
button.sv-cite { cursor: pointer; }
button.sv-cite:hover { border-color: var(--color-accent); }
.sv-cite img { max-height: 64px; border-radius: 4px; }
.sv-cite-label { font-size: 0.8em; opacity: 0.7; margin-bottom: 4px; }
.sv-error { color: #fff; background: #c0392b; padding: 6px 10px; border-radius: 6px; }
"""

Message = dict[str, str]
NOTHING_SEEN = ("Nothing has been seen yet: the live memory is empty. Start the webcam (Record), let it "
                "stream for a moment, then ask.")
LOCAL_SESSION = "local"  # the session of callbacks called without a gradio request (tests, scripts)


def _session_id(request: gr.Request | None) -> str:
    return getattr(request, "session_hash", None) or LOCAL_SESSION


def _unexpected(exc: Exception, what: str) -> str:
    """The notice for an error streamvid did not raise on purpose (also logged with its traceback)."""
    log.exception("%s failed", what)
    return f"{what} failed: unexpected error {type(exc).__name__}: {exc}"


class StreamvidApp:
    """The app's callbacks and state. ``build()`` lays out the gradio page around them; tests can
    call the callbacks directly (they are plain methods returning what the page shows).

    Each browser session (``request.session_hash``) has its own agents and memories, in
    ``self.sessions``; the models are loaded once and shared. A session is freed when its tab
    closes (gradio's unload event) or after ``session_timeout_s`` without user activity.
    Failures never raise into gradio: each tab has a notice that shows the error and that the
    next successful action clears."""

    def __init__(self, agent_factory: AgentFactory | str | None = None, *,
                 max_upload_bytes: int = DEFAULT_MAX_UPLOAD_BYTES, stream_every: float = 0.5,
                 refresh_s: float = 1.0, allowed_dirs: Sequence[str] = (),
                 session_timeout_s: float = DEFAULT_IDLE_TIMEOUT_S, sweep_every_s: float | None = 30.0) -> None:
        if agent_factory is None or isinstance(agent_factory, str):
            agent_factory = SharedModelFactory(agent_factory or "auto")
        if max_upload_bytes <= 0:
            raise UploadError(f"max_upload_bytes must be > 0, got {max_upload_bytes}")
        if stream_every <= 0 or refresh_s <= 0:
            raise StreamvidError(f"stream_every and refresh_s must be > 0, got {stream_every}, {refresh_s}")
        self.factory = agent_factory
        self.sessions = SessionRegistry(agent_factory, idle_timeout_s=session_timeout_s,
                                        sweep_every_s=None if sweep_every_s is None else min(sweep_every_s,
                                                                                             session_timeout_s))
        self.max_upload_bytes = int(max_upload_bytes)
        self.stream_every = float(stream_every)
        self.refresh_s = float(refresh_s)
        self.allowed_dirs = tuple(str(d) for d in allowed_dirs)

    def session(self, request: gr.Request | None = None, *, touch: bool = True) -> UserSession:
        """The caller's session (built on first use); ``touch`` counts the call as user activity."""
        session = self.sessions.get(_session_id(request))
        assert session is not None
        if touch:
            session.touch()
        return session

    def end_session(self, request: gr.Request | None = None) -> None:
        """gradio's unload event: the tab closed or reloaded; free its memories."""
        self.sessions.end(_session_id(request), reason="ended (the page was closed)")

    # ------------------------------------------------------------------ live tab
    def on_frame(self, rgb: np.ndarray | None, request: gr.Request | None = None) -> None:
        """The webcam stream's callback: hand the frame to the session's agent and return at once.
        Dropped while the session is stopped. Errors go to the log and the stats panel's status line
        rather than stopping the stream."""
        try:
            self.session(request).live.push(rgb)
        except StreamvidError as exc:
            log.warning("live frame refused: %s", exc)

    def refresh_live(self, request: gr.Request | None = None) -> tuple[str, str]:
        """(stats HTML, captions text) for the timer. Does not count as activity, and does not build a
        session that does not exist (one that timed out shows empty)."""
        session = self.sessions.get(_session_id(request), create=False)
        if session is None:
            return format_stats({"status": "idle"}), ""
        return format_stats(session.live.stats()), format_captions(session.live.captions())

    def stop_live(self, request: gr.Request | None = None) -> tuple[str, str, str]:
        """Stop ingesting until Start, even while the webcam keeps streaming: (stats, captions, notice)."""
        notice = ""
        try:
            self.session(request).live.stop()
        except StreamvidError as exc:
            notice = str(exc)
        except Exception as exc:
            notice = _unexpected(exc, "stopping")
        return (*self.refresh_live(request), format_notice(notice))

    def start_live(self, request: gr.Request | None = None) -> tuple[str, str, str]:
        """Ingest webcam frames again (after Stop): (stats, captions, notice)."""
        self.session(request).live.start()
        return (*self.refresh_live(request), format_notice(None))

    def reset_live(self, request: gr.Request | None = None) -> tuple[str, str, list[Message], str, str]:
        """Forget the session's live memory: (stats, captions, chat, citations, notice)."""
        notice = None
        try:
            self.session(request).live.reset()
        except StreamvidError as exc:  # a background error surfaced while stopping; the memory is gone anyway
            notice = str(exc)
        except Exception as exc:
            notice = _unexpected(exc, "resetting")
        stats, captions = self.refresh_live(request)
        return stats, captions, [], format_citations(None, seekable=False), format_notice(notice)

    def ask_live(self, question: str, history: list[Message] | None,
                 request: gr.Request | None = None) -> Iterator[tuple[list[Message], str, str, str]]:
        """Stream the answer into the chat: yields (chat, question box, citations HTML, notice). With
        nothing in the live memory yet, says so instead of answering."""
        live = self.session(request).live
        if question and question.strip() and not live.has_memory():
            chat = [*(history or []), {"role": "user", "content": question.strip()},
                    {"role": "assistant", "content": NOTHING_SEEN}]
            yield chat, "", format_citations(None, seekable=False), format_notice(None)
            return
        yield from self._answer(live, question, history, seekable=False)

    def watch_live(self, query: str | None, request: gr.Request | None = None) -> tuple[str, str]:
        """Set the Live tab's standing query ("tell me when …"; empty stops it): (watch panel, notice)."""
        notice = None
        try:
            self.session(request).live.watch(query)
        except StreamvidError as exc:
            notice = str(exc)
        except Exception as exc:
            notice = _unexpected(exc, "setting the watch")
        return self.refresh_watch(request), format_notice(notice)

    def refresh_watch(self, request: gr.Request | None = None) -> str:
        """The watch panel for the timer (not activity; builds no session)."""
        session = self.sessions.get(_session_id(request), create=False)
        if session is None or session.live.watch_spec is None:
            return format_watch(None, [])
        return format_watch(session.live.watch_spec["query"], session.live.watch_matches())

    # ------------------------------------------------------------------ video tab
    def index_video(self, upload: str | None, path_text: str | None,
                    request: gr.Request | None = None) -> Iterator[tuple[Any, ...]]:
        """Index an uploaded file (preferred) or a path on this machine into the session's video memory;
        yields (progress markdown, player, timeline, chat, citations, notice) as indexing goes."""
        video = self.session(request).video
        try:
            if upload:
                name = Path(upload).name
                path = check_video_file(upload, max_bytes=self.max_upload_bytes, display_name=name)
            elif path_text and path_text.strip():
                name = path_text.strip()
                path = check_video_file(name, max_bytes=None)
            else:
                raise UploadError("no video given: upload a file or type a path on this machine")
            job = video.start_indexing(path, name=Path(name).name)
        except StreamvidError as exc:
            yield (gr.update(),) * 5 + (format_notice(str(exc)),)
            return
        except Exception as exc:
            yield (gr.update(),) * 5 + (format_notice(_unexpected(exc, "indexing")),)
            return
        player = str(path) if player_can_show(path, self.allowed_dirs) else None
        note = "" if player else f"\n\n(The player cannot show {path.suffix} files here; citations still list times.)"
        yield (format_progress(job.name, 0, job.total_frames, 0.0, 0) + note, player, [], [],
               format_citations(None, seekable=True), format_notice(None))
        shown_events = 0
        while not job.done.wait(0.5):
            frames, fps, events = job.progress()
            timeline: Any = gr.update()
            if events != shown_events:
                shown_events = events
                timeline = timeline_items(video.events())
            yield (format_progress(job.name, frames, job.total_frames, fps, events) + note, gr.update(), timeline,
                   gr.update(), gr.update(), gr.update())
        frames, fps, events = job.progress()
        notice = None
        if job.error is not None:
            notice = (f"indexing {job.name} stopped: {job.error}; the {frames} frames read before that are in "
                      "memory (a partial index)")
        yield (format_progress(job.name, frames, job.total_frames, fps, events, finished=True,
                               partial=job.cancelled or job.error is not None) + note,
               gr.update(), timeline_items(video.events()), gr.update(), gr.update(), format_notice(notice))

    def cancel_index(self, request: gr.Request | None = None) -> str:
        job = self.session(request).video.job
        if job is None or job.done.is_set():
            return "Nothing is being indexed."
        job.cancel()
        return f"Stopping {job.name}; what was read so far stays in memory (a partial index)."

    def ask_video(self, question: str, history: list[Message] | None,
                  request: gr.Request | None = None) -> Iterator[tuple[list[Message], str, str, str]]:
        """Stream the answer into the chat: yields (chat, question box, seekable citations HTML, notice)."""
        yield from self._answer(self.session(request).video, question, history, seekable=True)

    # ------------------------------------------------------------------ shared
    def _answer(self, part: LiveSession | VideoSession, question: str, history: list[Message] | None, *,
                seekable: bool) -> Iterator[tuple[list[Message], str, str, str]]:
        """(chat, question box, citations panel, notice) as the answer streams. The panel shows the
        finished answer's own citations; a failure keeps the chat and the question and shows a notice."""
        chat = list(history or [])
        t0 = time.perf_counter()
        try:
            stream = part.ask_stream(question)
        except StreamvidError as exc:
            yield chat, question, gr.update(), format_notice(str(exc))
            return
        except Exception as exc:
            yield chat, question, gr.update(), format_notice(_unexpected(exc, "answering"))
            return
        pending = format_citations(None, seekable=seekable)
        chat.append({"role": "user", "content": question.strip()})
        chat.append({"role": "assistant", "content": "…"})
        yield chat, "", pending, format_notice(None)
        text = ""
        ttft_ms: float | None = None
        try:
            for piece in stream:
                if ttft_ms is None:
                    ttft_ms = (time.perf_counter() - t0) * 1000.0
                    if isinstance(part, LiveSession):
                        part.last_ttft_ms = ttft_ms
                text += piece
                chat[-1] = {"role": "assistant", "content": text}
                yield chat, "", pending, format_notice(None)
        except StreamvidError as exc:
            chat[-1] = {"role": "assistant", "content": f"{text}…".lstrip()}
            yield chat, "", pending, format_notice(f"the answer stopped: {exc}")
            return
        answer = stream.answer
        body = (answer.text if answer is not None else text).strip() or "(the model returned no text)"
        citations = answer.citations if answer is not None else stream.citations
        chat[-1] = {"role": "assistant", "content": f"{body}\n\n{citations_text(citations)}"}
        yield chat, "", format_citations(citations, seekable=seekable), format_notice(None)

    def close(self) -> None:
        """Stop every session's agents and release their memories."""
        self.sessions.close()

    # ------------------------------------------------------------------ layout
    def build(self) -> gr.Blocks:
        """The gradio page wired to this app's callbacks."""
        with gr.Blocks(title="streamvid", analytics_enabled=False) as demo:
            gr.Markdown("## streamvid — streaming video understanding")
            with gr.Tab("Live", id="live"):
                self.build_live_tab()
            with gr.Tab("Video", id="video"):
                self.build_video_tab()
            demo.unload(self.end_session)
        demo.streamvid_app = self  # type: ignore[attr-defined]
        return demo

    def build_live_tab(self) -> dict[str, gr.components.Component]:
        """The Live tab's components and events; returns the components by name, so a feature can add
        its own panel and events beside them (call inside a ``gr.Tab``)."""
        c: dict[str, Any] = {}
        with gr.Row():
            with gr.Column(scale=1):
                c["cam"] = gr.Image(sources=["webcam"], streaming=True, type="numpy", label="Webcam",
                                    webcam_options=gr.WebcamOptions(mirror=False), elem_id="sv-webcam", height=360)
                with gr.Row():
                    c["start"] = gr.Button("Start ingesting", size="sm", elem_id="sv-live-start")
                    c["stop"] = gr.Button("Stop ingesting", size="sm", elem_id="sv-live-stop")
                    c["reset"] = gr.Button("Reset memory", size="sm", variant="stop", elem_id="sv-live-reset")
                c["stats"] = gr.HTML(format_stats({"status": "idle"}), elem_id="sv-live-stats", js_on_load=None)
                c["captions"] = gr.Textbox(label="Live captions", lines=8, max_lines=8, interactive=False,
                                           autoscroll=True, elem_id="sv-live-captions")
            with gr.Column(scale=1):
                c["chat"] = gr.Chatbot(label="Ask about what the camera saw", height=380, elem_id="sv-live-chat",
                                       feedback_options=None)
                with gr.Row():
                    c["question"] = gr.Textbox(placeholder="What did I just hold up?", show_label=False, scale=4,
                                               elem_id="sv-live-question", max_lines=3)
                    c["ask"] = gr.Button("Ask", variant="primary", scale=1, elem_id="sv-live-ask")
                c["notice"] = gr.HTML("", elem_id="sv-live-notice", js_on_load=None)
                c["citations"] = gr.HTML(format_citations(None, seekable=False), elem_id="sv-live-citations",
                                         js_on_load=None)
                with gr.Row():
                    c["watch_query"] = gr.Textbox(placeholder="Tell me when… (e.g. a person enters)", scale=4,
                                                  show_label=False, elem_id="sv-live-watch-query", max_lines=1)
                    c["watch"] = gr.Button("Watch", scale=1, elem_id="sv-live-watch")
                c["watch_matches"] = gr.HTML(format_watch(None, []), elem_id="sv-live-watch-matches",
                                             js_on_load=None)
        c["cam"].stream(self.on_frame, inputs=[c["cam"]], outputs=None, stream_every=self.stream_every,
                        time_limit=None, show_progress="hidden", concurrency_limit=1, concurrency_id="live-frames")
        timer = gr.Timer(self.refresh_s)
        timer.tick(self.refresh_live, outputs=[c["stats"], c["captions"]], show_progress="hidden",
                   concurrency_limit=1, concurrency_id="live-refresh")
        timer.tick(self.refresh_watch, outputs=[c["watch_matches"]], show_progress="hidden",
                   concurrency_limit=1, concurrency_id="live-watch-refresh")
        for trigger in (c["watch_query"].submit, c["watch"].click):
            trigger(self.watch_live, inputs=[c["watch_query"]], outputs=[c["watch_matches"], c["notice"]])
        c["stop"].click(self.stop_live, outputs=[c["stats"], c["captions"], c["notice"]])
        c["start"].click(self.start_live, outputs=[c["stats"], c["captions"], c["notice"]])
        c["reset"].click(self.reset_live, outputs=[c["stats"], c["captions"], c["chat"], c["citations"], c["notice"]])
        for trigger in (c["question"].submit, c["ask"].click):
            trigger(self.ask_live, inputs=[c["question"], c["chat"]],
                    outputs=[c["chat"], c["question"], c["citations"], c["notice"]],
                    concurrency_limit=1, concurrency_id="live-ask")
        return c

    def build_video_tab(self) -> dict[str, gr.components.Component]:
        """The Video tab's components and events (call inside a ``gr.Tab``); returns the components by name."""
        c: dict[str, Any] = {}
        with gr.Row():
            with gr.Column(scale=1):
                c["upload"] = gr.File(label=f"Upload a video (up to {human_bytes(self.max_upload_bytes)})",
                                      file_types=list(VIDEO_EXTENSIONS), type="filepath", elem_id="sv-upload")
                c["path"] = gr.Textbox(label="…or a path on this machine", placeholder="/videos/movie.mp4",
                                       elem_id="sv-path", max_lines=1)
                with gr.Row():
                    c["index"] = gr.Button("Index", variant="primary", elem_id="sv-index")
                    c["cancel"] = gr.Button("Cancel", elem_id="sv-cancel")
                c["progress"] = gr.Markdown("Give a video and press **Index**.", elem_id="sv-progress")
                c["player"] = gr.Video(label="Player", interactive=False, elem_id="sv-video")
            with gr.Column(scale=1):
                c["chat"] = gr.Chatbot(label="Ask about the video", height=380, elem_id="sv-video-chat",
                                       feedback_options=None)
                with gr.Row():
                    c["question"] = gr.Textbox(placeholder="Who opened the door?", show_label=False, scale=4,
                                               elem_id="sv-video-question", max_lines=3)
                    c["ask"] = gr.Button("Ask", variant="primary", scale=1, elem_id="sv-video-ask")
                c["notice"] = gr.HTML("", elem_id="sv-video-notice", js_on_load=None)
                c["citations"] = gr.HTML(format_citations(None, seekable=True), elem_id="sv-video-citations",
                                         js_on_load=SEEK_JS)
                c["timeline"] = gr.Gallery(label="Memory timeline", columns=4, height=320, elem_id="sv-timeline",
                                           allow_preview=True, object_fit="cover")
        c["index"].click(self.index_video, inputs=[c["upload"], c["path"]],
                         outputs=[c["progress"], c["player"], c["timeline"], c["chat"], c["citations"], c["notice"]],
                         concurrency_limit=4, concurrency_id="video-index")  # mostly waits on the session's indexer
        c["cancel"].click(self.cancel_index, outputs=[c["progress"]], queue=False)
        for trigger in (c["question"].submit, c["ask"].click):
            trigger(self.ask_video, inputs=[c["question"], c["chat"]],
                    outputs=[c["chat"], c["question"], c["citations"], c["notice"]],
                    concurrency_limit=1, concurrency_id="video-ask")
        return c


def build_app(agent_factory: AgentFactory | str | None = None, *, max_upload_bytes: int = DEFAULT_MAX_UPLOAD_BYTES,
              stream_every: float = 0.5, refresh_s: float = 1.0, allowed_dirs: Sequence[str] = (),
              session_timeout_s: float = DEFAULT_IDLE_TIMEOUT_S) -> gr.Blocks:
    """The app's gradio Blocks. ``agent_factory``: a callable returning a new StreamAgent, or a preset
    name (None = "auto"). The StreamvidApp behind it is ``blocks.streamvid_app``.

    Pass ``css=APP_CSS`` and ``max_file_size=max_upload_bytes`` to ``blocks.launch`` (``launch``
    below does), since gradio 6 takes page CSS and the upload limit at launch."""
    return StreamvidApp(agent_factory, max_upload_bytes=max_upload_bytes, stream_every=stream_every,
                        refresh_s=refresh_s, allowed_dirs=allowed_dirs, session_timeout_s=session_timeout_s).build()


def launch(host: str = "127.0.0.1", port: int = 7860, preset: str = "auto", *, max_upload_mb: float = 4096,
           allowed_dirs: Sequence[str] = (), stream_every: float = 0.5,
           session_timeout_s: float = DEFAULT_IDLE_TIMEOUT_S, block: bool = True, **overrides: Any) -> gr.Blocks:
    """Build the models for ``preset`` (``overrides`` replace AgentConfig fields by name), then serve
    the app on host:port. Blocks until Ctrl-C unless ``block=False`` (then call ``.close()`` on the
    returned Blocks). A model that cannot load raises its StreamvidError before anything listens.
    Each browser session gets its own memories around the shared models, freed when its tab closes
    or after ``session_timeout_s`` without activity."""
    if host not in ("127.0.0.1", "localhost", "::1"):
        log.warning("serving on %s: anyone who can reach this address can use the camera feed and "
                    "read videos given by path", host)
    factory = SharedModelFactory(preset, **overrides)
    app = StreamvidApp(factory, max_upload_bytes=int(max_upload_mb * 1024**2), stream_every=stream_every,
                       allowed_dirs=allowed_dirs, session_timeout_s=session_timeout_s)
    try:
        factory().close()  # load the models now, so neither the first webcam frame nor a bad model waits for a visitor
    except BaseException:
        app.close()
        raise
    demo = app.build()
    demo.queue(default_concurrency_limit=1)
    try:
        demo.launch(server_name=host, server_port=port, max_file_size=app.max_upload_bytes,
                    allowed_paths=list(allowed_dirs), css=APP_CSS, show_error=True, ssr_mode=False,
                    prevent_thread_lock=not block, footer_links=[])
    except BaseException:
        app.close()
        raise
    if block:  # launch returned: the server was stopped (Ctrl-C)
        app.close()
    return demo
