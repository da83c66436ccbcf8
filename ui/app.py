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
    format_progress,
    format_stats,
    human_bytes,
    player_can_show,
    timeline_items,
)
from streamvid_ui.sessions import AgentFactory, LiveSession, SharedModelFactory, VideoSession

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
"""

Message = dict[str, str]


class StreamvidApp:
    """The app's callbacks and state. ``build()`` lays out the gradio page around them; tests can
    call the callbacks directly (they are plain methods returning what the page shows)."""

    def __init__(self, agent_factory: AgentFactory | str | None = None, *,
                 max_upload_bytes: int = DEFAULT_MAX_UPLOAD_BYTES, stream_every: float = 0.5,
                 refresh_s: float = 1.0, allowed_dirs: Sequence[str] = ()) -> None:
        if agent_factory is None or isinstance(agent_factory, str):
            agent_factory = SharedModelFactory(agent_factory or "auto")
        if max_upload_bytes <= 0:
            raise UploadError(f"max_upload_bytes must be > 0, got {max_upload_bytes}")
        if stream_every <= 0 or refresh_s <= 0:
            raise StreamvidError(f"stream_every and refresh_s must be > 0, got {stream_every}, {refresh_s}")
        self.live = LiveSession(agent_factory)
        self.video = VideoSession(agent_factory)
        self.max_upload_bytes = int(max_upload_bytes)
        self.stream_every = float(stream_every)
        self.refresh_s = float(refresh_s)
        self.allowed_dirs = tuple(str(d) for d in allowed_dirs)

    # ------------------------------------------------------------------ live tab
    def on_frame(self, rgb: np.ndarray | None) -> None:
        """The webcam stream's callback: hand the frame to the agent and return at once.

        Errors go to the log and the stats panel's status rather than stopping the stream."""
        try:
            self.live.push(rgb)
        except StreamvidError as exc:
            log.warning("live frame refused: %s", exc)

    def refresh_live(self) -> tuple[str, str]:
        """(stats HTML, captions text) for the timer."""
        return format_stats(self.live.stats()), format_captions(self.live.captions())

    def stop_live(self) -> tuple[str, str]:
        try:
            self.live.stop()
        except StreamvidError as exc:
            raise gr.Error(str(exc)) from exc
        return self.refresh_live()

    def reset_live(self) -> tuple[str, str, list[Message], str]:
        """Forget the live memory: (stats, captions, chat, citations)."""
        self.live.reset()
        stats, captions = self.refresh_live()
        return stats, captions, [], format_citations([], seekable=False)

    def ask_live(self, question: str, history: list[Message] | None) -> Iterator[tuple[list[Message], str, str]]:
        """Stream the answer into the chat: yields (chat, question box, citations HTML)."""
        yield from self._answer(self.live, question, history, seekable=False)

    # ------------------------------------------------------------------ video tab
    def index_video(self, upload: str | None, path_text: str | None) -> Iterator[tuple[Any, ...]]:
        """Index an uploaded file (preferred) or a path on this machine; yields
        (progress markdown, player, timeline, chat, citations) as indexing goes."""
        try:
            if upload:
                name = Path(upload).name
                path = check_video_file(upload, max_bytes=self.max_upload_bytes, display_name=name)
            elif path_text and path_text.strip():
                name = path_text.strip()
                path = check_video_file(name, max_bytes=None)
            else:
                raise UploadError("no video given: upload a file or type a path on this machine")
            job = self.video.start_indexing(path, name=Path(name).name)
        except StreamvidError as exc:
            raise gr.Error(str(exc)) from exc
        player = str(path) if player_can_show(path, self.allowed_dirs) else None
        note = "" if player else f"\n\n(The player cannot show {path.suffix} files here; citations still list times.)"
        no_cites = format_citations([], seekable=True)
        yield (format_progress(job.name, 0, job.total_frames, 0.0, 0) + note, player, [], [], no_cites)
        shown_events = 0
        while not job.done.wait(0.5):
            frames, fps, events = job.progress()
            timeline: Any = gr.update()
            if events != shown_events:
                shown_events = events
                timeline = timeline_items(self.video.events())
            yield (format_progress(job.name, frames, job.total_frames, fps, events) + note, gr.update(), timeline,
                   gr.update(), gr.update())
        frames, fps, events = job.progress()
        if job.error is not None:
            raise gr.Error(f"indexing {job.name} stopped: {job.error}; the {frames} frames read before "
                           "that are in memory")
        yield (format_progress(job.name, frames, job.total_frames, fps, events, finished=True) + note,
               gr.update(), timeline_items(self.video.events()), gr.update(), gr.update())

    def cancel_index(self) -> str:
        job = self.video.job
        if job is None or job.done.is_set():
            return "Nothing is being indexed."
        job.cancel()
        return f"Stopping {job.name}; what was read so far stays in memory."

    def ask_video(self, question: str, history: list[Message] | None) -> Iterator[tuple[list[Message], str, str]]:
        """Stream the answer into the chat: yields (chat, question box, seekable citations HTML)."""
        yield from self._answer(self.video, question, history, seekable=True)

    # ------------------------------------------------------------------ shared
    def _answer(self, session: LiveSession | VideoSession, question: str, history: list[Message] | None, *,
                seekable: bool) -> Iterator[tuple[list[Message], str, str]]:
        chat = list(history or [])
        t0 = time.perf_counter()
        try:
            stream = session.ask_stream(question)
        except StreamvidError as exc:
            raise gr.Error(str(exc)) from exc
        cites = format_citations(stream.citations, seekable=seekable)
        chat.append({"role": "user", "content": question.strip()})
        chat.append({"role": "assistant", "content": "…"})
        yield chat, "", cites
        text = ""
        ttft_ms: float | None = None
        try:
            for piece in stream:
                if ttft_ms is None:
                    ttft_ms = (time.perf_counter() - t0) * 1000.0
                    if isinstance(session, LiveSession):
                        session.last_ttft_ms = ttft_ms
                text += piece
                chat[-1] = {"role": "assistant", "content": text}
                yield chat, "", cites
        except StreamvidError as exc:
            raise gr.Error(str(exc)) from exc
        answer = stream.answer
        body = (answer.text if answer is not None else text).strip() or "(the model returned no text)"
        citations = answer.citations if answer is not None else stream.citations
        chat[-1] = {"role": "assistant", "content": f"{body}\n\n{citations_text(citations)}"}
        yield chat, "", cites

    def close(self) -> None:
        """Stop both agents and release their memories."""
        try:
            self.live.close()
        finally:
            self.video.close()

    # ------------------------------------------------------------------ layout
    def build(self) -> gr.Blocks:
        """The gradio page wired to this app's callbacks."""
        with gr.Blocks(title="streamvid", analytics_enabled=False) as demo:
            gr.Markdown("## streamvid — streaming video understanding")
            with gr.Tab("Live", id="live"):
                with gr.Row():
                    with gr.Column(scale=1):
                        cam = gr.Image(sources=["webcam"], streaming=True, type="numpy", label="Webcam",
                                       webcam_options=gr.WebcamOptions(mirror=False), elem_id="sv-webcam",
                                       height=360)
                        with gr.Row():
                            stop_btn = gr.Button("Stop ingesting", size="sm")
                            reset_btn = gr.Button("Reset memory", size="sm", variant="stop")
                        stats = gr.HTML(format_stats(self.live.stats()), elem_id="sv-live-stats",
                                        js_on_load=None)
                        captions = gr.Textbox(label="Live captions", lines=8, max_lines=8, interactive=False,
                                              autoscroll=True, elem_id="sv-live-captions")
                    with gr.Column(scale=1):
                        live_chat = gr.Chatbot(label="Ask about what the camera saw", height=380,
                                               elem_id="sv-live-chat", feedback_options=None)
                        with gr.Row():
                            live_q = gr.Textbox(placeholder="What did I just hold up?", show_label=False,
                                                scale=4, elem_id="sv-live-question", max_lines=3)
                            live_send = gr.Button("Ask", variant="primary", scale=1, elem_id="sv-live-ask")
                        live_cites = gr.HTML(format_citations([], seekable=False), elem_id="sv-live-citations",
                                             js_on_load=None)
                cam.stream(self.on_frame, inputs=[cam], outputs=None, stream_every=self.stream_every,
                           time_limit=None, show_progress="hidden", concurrency_limit=1,
                           concurrency_id="live-frames")
                timer = gr.Timer(self.refresh_s)
                timer.tick(self.refresh_live, outputs=[stats, captions], show_progress="hidden",
                           concurrency_limit=1, concurrency_id="live-refresh")
                stop_btn.click(self.stop_live, outputs=[stats, captions])
                reset_btn.click(self.reset_live, outputs=[stats, captions, live_chat, live_cites])
                for trigger in (live_q.submit, live_send.click):
                    trigger(self.ask_live, inputs=[live_q, live_chat], outputs=[live_chat, live_q, live_cites],
                            concurrency_limit=1, concurrency_id="live-ask")

            with gr.Tab("Video", id="video"):
                with gr.Row():
                    with gr.Column(scale=1):
                        upload = gr.File(label=f"Upload a video (up to {human_bytes(self.max_upload_bytes)})",
                                         file_types=list(VIDEO_EXTENSIONS), type="filepath",
                                         elem_id="sv-upload")
                        path_box = gr.Textbox(label="…or a path on this machine", placeholder="/videos/movie.mp4",
                                              elem_id="sv-path", max_lines=1)
                        with gr.Row():
                            index_btn = gr.Button("Index", variant="primary", elem_id="sv-index")
                            cancel_btn = gr.Button("Cancel", elem_id="sv-cancel")
                        progress = gr.Markdown("Give a video and press **Index**.", elem_id="sv-progress")
                        player = gr.Video(label="Player", interactive=False, elem_id="sv-video")
                    with gr.Column(scale=1):
                        video_chat = gr.Chatbot(label="Ask about the video", height=380, elem_id="sv-video-chat",
                                                feedback_options=None)
                        with gr.Row():
                            video_q = gr.Textbox(placeholder="Who opened the door?", show_label=False, scale=4,
                                                 elem_id="sv-video-question", max_lines=3)
                            video_send = gr.Button("Ask", variant="primary", scale=1, elem_id="sv-video-ask")
                        video_cites = gr.HTML(format_citations([], seekable=True), elem_id="sv-video-citations",
                                              js_on_load=SEEK_JS)
                        timeline = gr.Gallery(label="Memory timeline", columns=4, height=320,
                                              elem_id="sv-timeline", allow_preview=True, object_fit="cover")
                index_btn.click(self.index_video, inputs=[upload, path_box],
                                outputs=[progress, player, timeline, video_chat, video_cites],
                                concurrency_limit=1, concurrency_id="video-index")
                cancel_btn.click(self.cancel_index, outputs=[progress], queue=False)
                for trigger in (video_q.submit, video_send.click):
                    trigger(self.ask_video, inputs=[video_q, video_chat], outputs=[video_chat, video_q, video_cites],
                            concurrency_limit=1, concurrency_id="video-ask")
        demo.streamvid_app = self  # type: ignore[attr-defined]
        return demo


def build_app(agent_factory: AgentFactory | str | None = None, *, max_upload_bytes: int = DEFAULT_MAX_UPLOAD_BYTES,
              stream_every: float = 0.5, refresh_s: float = 1.0, allowed_dirs: Sequence[str] = ()) -> gr.Blocks:
    """The app's gradio Blocks. ``agent_factory``: a callable returning a new StreamAgent, or a preset
    name (None = "auto"). The StreamvidApp behind it is ``blocks.streamvid_app``.

    Pass ``css=APP_CSS`` and ``max_file_size=max_upload_bytes`` to ``blocks.launch`` (``launch``
    below does), since gradio 6 takes page CSS and the upload limit at launch."""
    return StreamvidApp(agent_factory, max_upload_bytes=max_upload_bytes, stream_every=stream_every,
                        refresh_s=refresh_s, allowed_dirs=allowed_dirs).build()


def launch(host: str = "127.0.0.1", port: int = 7860, preset: str = "auto", *, max_upload_mb: float = 4096,
           allowed_dirs: Sequence[str] = (), stream_every: float = 0.5, block: bool = True,
           **overrides: Any) -> gr.Blocks:
    """Build the models for ``preset`` (``overrides`` replace AgentConfig fields by name), then serve
    the app on host:port. Blocks until Ctrl-C unless ``block=False`` (then call ``.close()`` on the
    returned Blocks). A model that cannot load raises its StreamvidError before anything listens."""
    if host not in ("127.0.0.1", "localhost", "::1"):
        log.warning("serving on %s: anyone who can reach this address can use the camera feed and "
                    "read videos given by path", host)
    app = StreamvidApp(SharedModelFactory(preset, **overrides), max_upload_bytes=int(max_upload_mb * 1024**2),
                       stream_every=stream_every, allowed_dirs=allowed_dirs)
    app.live.agent()  # load the models now, so the first webcam frame does not wait for them
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
