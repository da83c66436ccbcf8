"""The FastAPI app: OpenAI-compatible chat over video sessions, sessions, frames, captions, watches.

Every /v1 route needs ``Authorization: Bearer <key>`` when the settings carry a key. Errors come back
in OpenAI's shape, ``{"error": {"message", "type", "param", "code"}}``. Streams are server-sent events.
"""

import asyncio
import io
import json
import logging
import secrets
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from typing import Annotated, Any

import numpy as np
from fastapi import APIRouter, Depends, FastAPI, Header, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, StreamingResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

import streamvid
from streamvid.errors import StreamvidError
from streamvid.serve import schemas
from streamvid.serve.errors import APIError, from_streamvid, not_found
from streamvid.serve.sessions import Session, SessionManager
from streamvid.serve.settings import ServeSettings
from streamvid.serve.watches import Watch
from streamvid.types import Citation

log = logging.getLogger("streamvid.serve")

POLL_S = 0.1  # how often an open stream looks for new captions or matches
PING_S = 15.0  # an SSE comment this often keeps idle connections alive through proxies


def sse(data: Any, event: str | None = None) -> bytes:
    """One server-sent event: ``data`` as JSON (a str is sent as is)."""
    text = data if isinstance(data, str) else json.dumps(data, separators=(",", ":"))
    head = f"event: {event}\n" if event else ""
    return (head + "".join(f"data: {line}\n" for line in text.split("\n")) + "\n").encode()


def sse_response(stream: AsyncIterator[bytes], status_code: int = 200) -> StreamingResponse:
    return StreamingResponse(stream, status_code=status_code, media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})


def decode_image(body: bytes, max_pixels: int) -> np.ndarray:
    """A JPEG or PNG body → RGB uint8 [H, W, 3]."""
    from PIL import Image, UnidentifiedImageError

    if not body:
        raise APIError(400, "the request body is empty; send one JPEG or PNG image", code="empty_body")
    try:
        img = Image.open(io.BytesIO(body))
    except (UnidentifiedImageError, OSError) as exc:
        raise APIError(415, "the body is not a JPEG or PNG image", code="unsupported_media_type") from exc
    if img.format not in ("JPEG", "PNG"):
        raise APIError(415, f"the body is a {img.format} image; send JPEG or PNG", code="unsupported_media_type")
    if img.width * img.height > max_pixels:
        raise APIError(413, f"the image is {img.width}x{img.height}, over the server's {max_pixels}-pixel limit",
                       code="image_too_large")
    try:
        return np.asarray(img.convert("RGB"), dtype=np.uint8)
    except (OSError, ValueError) as exc:
        raise APIError(400, f"the {img.format} image cannot be decoded: {exc}", code="bad_image") from exc


async def read_limited(request: Request, limit: int) -> bytes:
    """The request body; HTTP 413 once it passes ``limit`` bytes (without reading the rest)."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise APIError(413, f"the body is {declared} bytes; the server's upload limit is {limit}",
                       code="upload_too_large")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise APIError(413, f"the body is over the server's upload limit of {limit} bytes",
                           code="upload_too_large")
        chunks.append(chunk)
    return b"".join(chunks)


def message_text(message: schemas.ChatMessage, i: int) -> str:
    if message.content is None:
        return ""
    if isinstance(message.content, str):
        return message.content
    texts = []
    for part in message.content:
        if part.type != "text":
            raise APIError(400, f"messages[{i}] has a {part.type!r} part; the video comes from the session "
                                "(push frames to POST /v1/sessions/{id}/frames), messages carry text only",
                           param=f"messages.{i}.content", code="unsupported_content")
        texts.append(part.text or "")
    return "\n".join(texts)


def parse_citations(raw: list[dict[str, Any]] | None, i: int) -> list[Citation]:
    out = []
    for c in raw or []:
        try:
            out.append(Citation(int(c.get("event_id", -1)), float(c["t_start"]), float(c["t_end"])))
        except (KeyError, TypeError, ValueError) as exc:
            raise APIError(400, f"messages[{i}].citations needs t_start and t_end numbers", code="bad_citation",
                           param=f"messages.{i}.citations") from exc
    return out


def conversation(messages: list[schemas.ChatMessage]) -> tuple[str, list[tuple[str, str, list[Citation]]]]:
    """(the question: the last user message, earlier (question, answer, citations) turns). System and
    developer messages are skipped: the engine writes its own instructions around the video."""
    turns: list[tuple[str, str, list[Citation]]] = []
    pending: list[str] = []
    last_role = None
    for i, m in enumerate(messages):
        if m.role in ("system", "developer"):
            continue
        if m.role in ("tool", "function"):
            raise APIError(400, "tool messages are not supported", param=f"messages.{i}.role",
                           code="unsupported_role")
        text = message_text(m, i)
        if m.role == "user":
            pending.append(text)
        elif pending:  # an assistant turn answering the user text before it
            turns.append(("\n".join(pending), text, parse_citations(m.citations, i)))
            pending = []
        last_role = m.role
    if last_role != "user" or not pending:
        raise APIError(400, "the last message must be the user's question", param="messages", code="no_question")
    return "\n".join(pending), turns


def create_app(settings: ServeSettings | None = None, *, manager: SessionManager | None = None) -> FastAPI:
    """The API app. ``manager``: sessions to serve (default: a new SessionManager for ``settings``)."""
    settings = settings or ServeSettings()
    manager = manager or SessionManager(settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        yield
        await run_in_threadpool(manager.close)

    app = FastAPI(title="streamvid", version=streamvid.__version__, lifespan=lifespan,
                  description="OpenAI-compatible API over live video sessions.")
    app.state.settings = settings
    app.state.sessions = manager

    @app.exception_handler(APIError)
    async def api_error(request: Request, exc: APIError) -> JSONResponse:
        return JSONResponse(exc.body(), status_code=exc.status)

    @app.exception_handler(StreamvidError)
    async def engine_error(request: Request, exc: StreamvidError) -> JSONResponse:
        err = from_streamvid(exc)
        return JSONResponse(err.body(), status_code=err.status)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0] if exc.errors() else {}
        if tuple(first.get("loc", ())) == ("body",):
            kind = request.headers.get("content-type", "none")
            message = f"the request body must be a JSON object sent as Content-Type: application/json (got {kind})"
            return JSONResponse(APIError(400, message, code="invalid_json").body(), status_code=400)
        loc = [str(p) for p in first.get("loc", ()) if p not in ("body", "query", "path", "header")]
        where = ".".join(loc) or None
        message = f"{where}: {first.get('msg', 'invalid request')}" if where else first.get("msg", "invalid request")
        return JSONResponse(APIError(400, message, param=where, code="invalid_value").body(), status_code=400)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        kind = "invalid_request_error" if exc.status_code < 500 else "server_error"
        body = APIError(exc.status_code, str(exc.detail), type=kind, code=f"http_{exc.status_code}").body()
        return JSONResponse(body, status_code=exc.status_code, headers=getattr(exc, "headers", None))

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unexpected error on %s %s", request.method, request.url.path)
        body = APIError(500, f"internal error: {type(exc).__name__}: {exc}", type="server_error",
                        code="internal_error").body()
        return JSONResponse(body, status_code=500)

    def require_key(authorization: Annotated[str | None, Header()] = None) -> None:
        if settings.api_key is None:
            return
        scheme, _, token = (authorization or "").partition(" ")
        if scheme.lower() != "bearer" or not secrets.compare_digest(token.strip().encode(), settings.api_key.encode()):
            raise APIError(401, "missing or incorrect API key: send the header 'Authorization: Bearer <key>'",
                           code="invalid_api_key")

    def get_session(session_id: str) -> Session:
        return manager.get(session_id)

    SessionDep = Annotated[Session, Depends(get_session)]

    v1 = APIRouter(prefix="/v1", dependencies=[Depends(require_key)])

    @app.get("/health")
    def health() -> dict[str, Any]:
        return {"status": "ok", "sessions": len(manager.list())}

    # ---- models ----------------------------------------------------------------------------------
    def model_card(s: Session) -> dict[str, Any]:
        return {"id": s.model, "object": "model", "created": s.created, "owned_by": "streamvid",
                "source": s.source, "preset": s.agent.config.preset, "status": s.status}

    @v1.get("/models")
    def list_models() -> dict[str, Any]:
        return {"object": "list", "data": [model_card(s) for s in manager.list()]}

    @v1.get("/models/{model:path}")
    def get_model(model: str) -> dict[str, Any]:
        return model_card(manager.by_model(model))

    # ---- sessions --------------------------------------------------------------------------------
    @v1.post("/sessions", status_code=201)
    def create_session(body: schemas.SessionCreate) -> dict[str, Any]:
        watches = [w.model_dump(exclude={"stream"}) for w in body.watches]
        session = manager.create(source=body.source, fps=body.fps, preset=body.preset, memory=body.memory,
                                 max_ram_tokens=body.max_ram_tokens, watches=watches)
        return {**session.stats(), "watch_list": [w.to_dict() for w in session.watches.list()]}

    @v1.get("/sessions")
    def list_sessions() -> dict[str, Any]:
        return {"object": "list", "data": [s.stats() for s in manager.list()]}

    @v1.get("/sessions/{session_id}")
    def session_stats(session: SessionDep) -> dict[str, Any]:
        return session.stats()

    @v1.delete("/sessions/{session_id}")
    def delete_session(session_id: str) -> dict[str, Any]:
        stats = manager.delete(session_id)
        return {"id": session_id, "object": "session.deleted", "deleted": True, "stats": stats}

    @v1.post("/sessions/{session_id}/frames")
    async def push_frame(request: Request, session: SessionDep,
                         t: Annotated[float | None, Query(ge=0, allow_inf_nan=False)] = None) -> dict[str, Any]:
        body = await read_limited(request, settings.max_upload_bytes)
        rgb = await run_in_threadpool(decode_image, body, settings.max_frame_pixels)
        accepted = await run_in_threadpool(session.push, rgb, t)
        return {"accepted": accepted, "frames_pushed": session.frames_pushed,
                "dropped_frames": session.agent.dropped_frames}

    @v1.get("/sessions/{session_id}/captions")
    async def captions(session: SessionDep, follow: bool = True) -> StreamingResponse:
        async def stream() -> AsyncIterator[bytes]:
            i, last = 0, time.monotonic()
            while True:
                done = not follow or session.ended or session.closed
                caps = await run_in_threadpool(session.captions)
                for c in caps[i:]:
                    yield sse({"t_start": c.t_start, "t_end": c.t_end, "text": c.text, "event_id": c.event_id})
                    last = time.monotonic()
                i = max(i, len(caps))
                if done:
                    yield sse({"status": session.status, "captions": i}, event="end")
                    return
                if time.monotonic() - last > PING_S:
                    yield b": ping\n\n"
                    last = time.monotonic()
                await asyncio.sleep(POLL_S)

        return sse_response(stream())

    @v1.post("/sessions/{session_id}/memory/save")
    def save_memory(body: schemas.MemorySave, session: SessionDep) -> dict[str, Any]:
        path = manager.check_path(body.path, "path")
        try:
            session.agent.memory.save(path)
        except StreamvidError as exc:
            raise from_streamvid(exc, param="path") from exc
        return {"object": "memory", "path": path, "session": session.id, "stats": session.agent.memory.stats()}

    # ---- watches ---------------------------------------------------------------------------------
    def get_watch(watch_id: str, session: SessionDep) -> Watch:
        watch = session.watches.get(watch_id)
        if watch is None:
            raise not_found("watch", watch_id)
        return watch

    WatchDep = Annotated[Watch, Depends(get_watch)]

    def match_stream(session: Session, watch: Watch, remove_at_end: bool) -> AsyncIterator[bytes]:
        async def stream() -> AsyncIterator[bytes]:
            i, last = 0, time.monotonic()
            try:
                while True:
                    done = watch.closed or session.closed or (session.ended and session.watches.idle)
                    for m in watch.matches[i:]:
                        yield sse(await run_in_threadpool(m.to_dict))
                        i += 1
                        last = time.monotonic()
                    if done:
                        yield sse({"watch_id": watch.id, "matches": i, "events_scored": watch.events_scored,
                                   "model_checks": watch.checks, "status": session.status}, event="end")
                        return
                    if time.monotonic() - last > PING_S:
                        yield b": ping\n\n"
                        last = time.monotonic()
                    await asyncio.sleep(POLL_S)
            finally:
                if remove_at_end:
                    session.watches.remove(watch.id)

        return stream()

    @v1.post("/sessions/{session_id}/watches", status_code=201, response_model=None)
    async def add_watch(body: schemas.WatchCreate,
                        session: SessionDep) -> dict[str, Any] | StreamingResponse:
        try:
            watch = await run_in_threadpool(session.watches.add, body.query, body.threshold, body.verify,
                                            body.backfill)
        except StreamvidError as exc:
            raise from_streamvid(exc, param="query") from exc
        if body.stream:
            return sse_response(match_stream(session, watch, remove_at_end=True), status_code=201)
        return {**watch.to_dict(), "session": session.id}

    @v1.get("/sessions/{session_id}/watches")
    def list_watches(session: SessionDep) -> dict[str, Any]:
        return {"object": "list", "data": [w.to_dict() for w in session.watches.list()]}

    @v1.get("/sessions/{session_id}/watches/{watch_id}/matches")
    async def watch_matches(session: SessionDep,
                            watch: WatchDep) -> StreamingResponse:
        return sse_response(match_stream(session, watch, remove_at_end=False))

    @v1.delete("/sessions/{session_id}/watches/{watch_id}")
    def delete_watch(session: SessionDep, watch: WatchDep) -> dict[str, Any]:
        session.watches.remove(watch.id)
        return {"id": watch.id, "object": "watch.deleted", "deleted": True, "matches": len(watch.matches)}

    # ---- chat ------------------------------------------------------------------------------------
    @v1.post("/chat/completions", response_model=None)
    async def chat(body: schemas.ChatRequest) -> dict[str, Any] | StreamingResponse:
        session = manager.by_model(body.model)
        if body.n not in (None, 1):
            raise APIError(400, "only n=1 is supported", param="n", code="unsupported_value")
        if body.tools:
            raise APIError(400, "tools are not supported", param="tools", code="unsupported_value")
        if body.stop:
            raise APIError(400, "stop sequences are not supported", param="stop", code="unsupported_value")
        question, history = conversation(body.messages)
        max_new = body.max_completion_tokens or body.max_tokens or session.agent.config.max_new_tokens
        if max_new > settings.max_new_tokens:
            raise APIError(400, f"max_tokens {max_new} is above the server's limit of {settings.max_new_tokens}",
                           param="max_tokens", code="above_limit")
        sample = bool(body.temperature)
        generation = dict(max_new_tokens=max_new, do_sample=sample, temperature=body.temperature or 1.0,
                          top_p=body.top_p or 1.0)
        cid = schemas.completion_id()
        if not body.stream:  # one hop to a worker thread: retrieval and the whole answer
            answer = await run_in_threadpool(session.ask, question, history, **generation)
            return schemas.completion(cid, session.model, answer, max_new)
        answer_stream = await run_in_threadpool(session.ask_stream, question, history, **generation)
        include_usage = bool(body.stream_options and body.stream_options.include_usage)
        return sse_response(chat_chunks(cid, session.model, answer_stream, max_new, include_usage))

    app.include_router(v1)
    return app


_END = object()


async def _next(pieces: Iterator[str]) -> Any:
    return await run_in_threadpool(next, pieces, _END)


async def chat_chunks(cid: str, model: str, answer_stream: Any, max_new: int,
                      include_usage: bool) -> AsyncIterator[bytes]:
    """OpenAI's chat.completion.chunk stream: the role, the text pieces, a last chunk with the finish
    reason and the citations, optionally a usage chunk, then ``[DONE]``."""
    created = int(time.time())
    chunk: Callable[..., dict[str, Any]] = schemas.chunk
    yield sse(chunk(cid, model, created, {"role": "assistant", "content": ""}))
    pieces = iter(answer_stream)
    try:
        while (piece := await _next(pieces)) is not _END:
            if piece:
                yield sse(chunk(cid, model, created, {"content": piece}))
    except StreamvidError as exc:
        yield sse(from_streamvid(exc).body())
        yield sse("[DONE]")
        return
    answer = answer_stream.answer
    citations = [schemas.citation_dict(c) for c in answer.citations]
    yield sse(chunk(cid, model, created, {}, schemas.finish_reason(answer, max_new), citations=citations,
                    timings=answer.timings))
    if include_usage:
        yield sse({"id": cid, "object": "chat.completion.chunk", "created": created, "model": model, "choices": [],
                   "usage": schemas.usage(answer)})
    yield sse("[DONE]")
