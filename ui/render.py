"""Pure formatting for the browser app: stats, captions, citations, timeline, upload checks.

Nothing here touches gradio or a running agent, so every function is testable on plain data.
"""

from __future__ import annotations

import base64
import html
import os
import tempfile
from collections import deque
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from streamvid.errors import StreamvidError
from streamvid.types import Caption, Citation, Event, format_span, format_time

VIDEO_EXTENSIONS: tuple[str, ...] = (".mp4", ".m4v", ".mov", ".mkv", ".webm", ".avi", ".mpg", ".mpeg", ".ts",
                                     ".flv", ".wmv", ".ogv", ".3gp", ".y4m")
# Containers a browser's <video> plays as is; others are indexed but not shown in the player.
BROWSER_PLAYABLE: tuple[str, ...] = (".mp4", ".m4v", ".mov", ".webm", ".ogv")
DEFAULT_MAX_UPLOAD_BYTES = 4 * 1024**3


class UploadError(StreamvidError):
    """A video the app refuses to index: wrong type, too large, or missing."""


def human_bytes(n: float) -> str:
    """Bytes → "512 B", "3.4 MB", "1.2 GB" (powers of 1024)."""
    n = float(n)
    for unit in ("B", "KB", "MB", "GB"):
        if abs(n) < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError("unreachable")


def check_video_file(path: str | os.PathLike[str], *, max_bytes: int | None = DEFAULT_MAX_UPLOAD_BYTES,
                     extensions: Sequence[str] = VIDEO_EXTENSIONS, display_name: str | None = None) -> Path:
    """The path, resolved, when it names an existing video file within the limits; else UploadError.

    ``display_name`` is what the message calls the file (an upload's original name rather than its
    temporary path). ``max_bytes=None`` skips the size check (a file already on this machine).
    """
    name = display_name or os.fspath(path)
    if not os.fspath(path).strip():
        raise UploadError("no video given: upload a file or type a path")
    p = Path(path).expanduser()
    suffix = Path(name).suffix.lower() or p.suffix.lower()
    if suffix not in extensions:
        shown = suffix or "no extension"
        raise UploadError(f"{name}: not a video file type ({shown}); accepted: {', '.join(extensions)}")
    if not p.exists():
        raise UploadError(f"{name}: no such file")
    if not p.is_file():
        raise UploadError(f"{name}: not a regular file")
    size = p.stat().st_size
    if size == 0:
        raise UploadError(f"{name}: the file is empty")
    if max_bytes is not None and size > max_bytes:
        raise UploadError(f"{name} is {human_bytes(size)}; the upload limit is {human_bytes(max_bytes)}")
    return p.resolve()


def player_can_show(path: Path, allowed_dirs: Iterable[str | os.PathLike[str]] = ()) -> bool:
    """Whether the player can serve this file: a browser-playable container in a directory gradio serves
    (the working directory, the temp directory where uploads land, or one passed to ``launch``)."""
    if path.suffix.lower() not in BROWSER_PLAYABLE:
        return False
    roots = [Path.cwd(), Path(tempfile.gettempdir()), *(Path(d) for d in allowed_dirs)]
    resolved = path.resolve()
    return any(resolved.is_relative_to(r.resolve()) for r in roots)


class RateMeter:
    """Events per second over a sliding window of (time, running count) samples."""

    def __init__(self, window_s: float = 5.0) -> None:
        if window_s <= 0:
            raise ValueError(f"window_s must be > 0, got {window_s}")
        self.window_s = window_s
        self._samples: deque[tuple[float, int]] = deque()

    def add(self, t: float, count: int) -> None:
        """Record that ``count`` things had happened by time ``t`` (seconds, any monotonic clock)."""
        if self._samples and count < self._samples[-1][1]:
            self._samples.clear()  # the counter restarted (a new agent): start measuring afresh
        self._samples.append((t, count))
        while len(self._samples) > 2 and t - self._samples[1][0] >= self.window_s:
            self._samples.popleft()

    def rate(self) -> float:
        """Mean rate across the window; 0.0 until two samples span some time."""
        if len(self._samples) < 2:
            return 0.0
        (t0, c0), (t1, c1) = self._samples[0], self._samples[-1]
        return (c1 - c0) / (t1 - t0) if t1 > t0 else 0.0


# (key in the stats dict, label shown, how to format the value)
_STAT_ROWS: tuple[tuple[str, str, str], ...] = (
    ("status", "status", "text"),
    ("ingest_fps", "ingest fps", "fps"),
    ("frames_seen", "frames ingested", "int"),
    ("frames_kept", "frames kept", "int"),
    ("dropped_frames", "dropped frames", "int"),
    ("frames_ignored", "frames ignored while stopped", "int"),
    ("events", "events", "int"),
    ("archived_events", "archived events", "int"),
    ("tokens_in_ram", "tokens in memory", "int"),
    ("bytes_in_ram", "memory size", "bytes"),
    ("last_ttft_ms", "last time to first token", "ms"),
)


def _stat_text(value: Any, kind: str) -> str:
    if value is None:
        return "–"
    if kind == "fps":
        return f"{float(value):.1f}"
    if kind == "int":
        return f"{int(value):,}"
    if kind == "bytes":
        return human_bytes(value)
    if kind == "ms":
        return f"{float(value):.0f} ms"
    return str(value)


def format_stats(stats: dict[str, Any]) -> str:
    """Stats as an HTML list. Each row carries ``data-key`` and ``data-value`` (the raw number) so a
    script or a test can read it without parsing the shown text; keys missing from ``stats`` show "–"."""
    rows = []
    for key, label, kind in _STAT_ROWS:
        value = stats.get(key)
        raw = "" if value is None else str(value)
        rows.append(f'<div class="sv-stat" data-key="{key}" data-value="{html.escape(raw, quote=True)}">'
                    f'<span class="sv-stat-label">{label}</span>'
                    f'<span class="sv-stat-value">{html.escape(_stat_text(value, kind))}</span></div>')
    return '<div class="sv-stats">' + "".join(rows) + "</div>"


def format_captions(captions: Sequence[Caption], limit: int = 200) -> str:
    """The last ``limit`` captions, oldest first, one "[hh:mm:ss–hh:mm:ss] text" line each."""
    shown = captions[-limit:] if limit > 0 else []
    return "\n".join(f"{format_span(c.t_start, c.t_end)} {c.text or '(no caption)'}" for c in shown)


def thumbnail_data_uri(rgb: np.ndarray | None, max_side: int = 160) -> str | None:
    """An RGB uint8 image [H, W, 3] as a JPEG ``data:`` URI, downscaled to ``max_side``; None for None."""
    if rgb is None:
        return None
    if not isinstance(rgb, np.ndarray) or rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ValueError(f"a thumbnail must be an H×W×3 array, got {getattr(rgb, 'shape', type(rgb).__name__)}")
    h, w = rgb.shape[:2]
    scale = max_side / max(h, w)
    img = np.ascontiguousarray(rgb, dtype=np.uint8)
    if scale < 1:
        img = cv2.resize(img, (max(1, round(w * scale)), max(1, round(h * scale))), interpolation=cv2.INTER_AREA)
    ok, buf = cv2.imencode(".jpg", cv2.cvtColor(img, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 80])
    if not ok:
        raise ValueError("could not encode the thumbnail as JPEG")
    return "data:image/jpeg;base64," + base64.b64encode(buf.tobytes()).decode("ascii")


def format_watch(query: str | None, matches: Sequence[Any], limit: int = 12) -> str:
    """The Live tab's watch panel: the query, how many matches, the newest ``limit`` with time, score
    and thumbnail (each match has .t, .t_start, .t_end, .score, .thumbnail, as WatchMatch)."""
    if not query:
        return '<div id="sv-watch-panel">No watch set: type what to look for, e.g. "a person enters".</div>'
    n = len(matches)
    rows = []
    for m in reversed(matches[-limit:] if limit > 0 else []):
        uri = thumbnail_data_uri(m.thumbnail, max_side=96)
        img = f'<img src="{uri}" alt="" style="height:48px;vertical-align:middle"> ' if uri else ""
        rows.append(f'<div class="sv-match" data-t="{m.t:.3f}" data-t-start="{m.t_start:.3f}" '
                    f'data-t-end="{m.t_end:.3f}">{img}{format_time(m.t)} — score {m.score:.2f} '
                    f'{html.escape(format_span(m.t_start, m.t_end))}</div>')
    head = f"Watching for “{html.escape(query)}”: {n} match{'' if n == 1 else 'es'}."
    return f'<div id="sv-watch-panel"><div>{head}</div>{"".join(rows)}</div>'


def citations_text(citations: Sequence[Citation]) -> str:
    """A one-line list of cited spans for the chat transcript, e.g. "Cited: [00:00:01–00:00:04], …"."""
    if not citations:
        return "Cited: nothing (no moment in memory matched the question)"
    return "Cited: " + ", ".join(format_span(c.t_start, c.t_end) for c in citations)


CITATIONS_LABEL = "Cited in the answer"


def format_citations(citations: Sequence[Citation] | None, *, seekable: bool) -> str:
    """The citations panel: under the label "Cited in the answer", the moments the answer cites, a
    thumbnail and the time span each; with ``seekable`` each is a button whose ``data-seek``
    (seconds) the page script uses to move the video player there. ``None``: no answer yet, or one
    still being written (its citations are shown when it is complete).

    Every item carries ``data-t-start`` / ``data-t-end`` with the exact seconds."""
    label = f'<div class="sv-cite-label">{CITATIONS_LABEL}</div>'
    if citations is None:
        return (f'<div class="sv-citations-panel">{label}<div class="sv-citations sv-empty">'
                "No cited moments yet.</div></div>")
    if not citations:
        return (f'<div class="sv-citations-panel">{label}<div class="sv-citations sv-empty">'
                "No cited moments: the answer cites nothing from memory.</div></div>")
    items = []
    for c in citations:
        uri = thumbnail_data_uri(c.thumbnail)
        img = f'<img src="{uri}" alt="frame at {format_span(c.t_start, c.t_end)}">' if uri else ""
        span = html.escape(format_span(c.t_start, c.t_end))
        attrs = f'class="sv-cite" data-event="{c.event_id}" data-t-start="{c.t_start:.3f}" data-t-end="{c.t_end:.3f}"'
        if seekable:
            items.append(f'<button type="button" {attrs} data-seek="{c.t_start:.3f}" '
                         f'title="play from {span}">{img}<span>{span}</span></button>')
        else:
            items.append(f"<div {attrs}>{img}<span>{span}</span></div>")
    return f'<div class="sv-citations-panel">{label}<div class="sv-citations">' + "".join(items) + "</div></div>"


def format_notice(message: str | None) -> str:
    """A tab's error notice: the message in a red alert box, or nothing (the next success clears it)."""
    if not message:
        return ""
    return f'<div class="sv-error" role="alert">{html.escape(message)}</div>'


def timeline_items(events: Sequence[Event]) -> list[tuple[np.ndarray, str]]:
    """(thumbnail, "[span] caption") per event with a thumbnail, oldest first, for a gr.Gallery."""
    out = []
    for e in sorted(events, key=lambda e: (e.t_start, e.t_end)):
        if e.thumbnail is None:
            continue
        out.append((e.thumbnail, f"{format_span(e.t_start, e.t_end)} {e.caption}".rstrip()))
    return out


def format_progress(name: str, frames_done: int, frames_total: int | None, fps: float, events: int,
                    finished: bool = False, partial: bool = False) -> str:
    """One line of indexing progress: frames, percent, rate, events and ETA when the total is known.

    ``frames_total`` is an estimate (duration × fps), so a finished run shows only the frames read.
    ``partial``: indexing was cancelled, so the memory holds only the frames read until then."""
    parts = [f"**{html.escape(name)}**:"]
    if frames_total and not finished:  # the total is an estimate from the duration; at the end, the count is exact
        pct = min(100.0, 100.0 * frames_done / frames_total)
        parts.append(f"{frames_done:,}/{frames_total:,} frames ({pct:.0f}%)")
    else:
        parts.append(f"{frames_done:,} frames")
    parts.append(f"{fps:.1f} frames/s")
    parts.append(f"{events:,} events")
    if finished and partial:
        parts.append("cancelled: the index is partial (only these frames are in memory); ask away or Index again")
    elif finished:
        parts.append("done, ask away")
    elif frames_total and fps > 0:
        left = max(0, frames_total - frames_done) / fps
        parts.append(f"ETA {format_time(left)}")
    return " · ".join(parts[:1]) + " " + " · ".join(parts[1:])
