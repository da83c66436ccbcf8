"""`streamvid serve` against a live server on 127.0.0.1 (uvicorn in a thread, a free port), through the
official `openai` client and httpx. Sessions use the tiny-random preset (random weights: answers are
noise, but times, citations, limits, errors and isolation are real); the watch tests use the offline
preset, whose frame keys are real MiniLM embeddings of real OCR, and test the key-similarity stage."""

from __future__ import annotations

import io
import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import numpy as np
import openai
import pytest
from media import free_port
from PIL import Image
from streamvid_bench import samples

from streamvid.serve import ServeSettings, create_app
from streamvid.serve.sessions import ModelPool, SessionManager

KEY = "sk-test-streamvid"
Scene, Text = samples.Scene, samples.Text


@contextmanager
def live_server(settings: ServeSettings, pool: ModelPool) -> Iterator[str]:
    import uvicorn

    app = create_app(settings, manager=SessionManager(settings, pool))
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=settings.port, log_level="warning",
                                           lifespan="on"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "the server did not start"
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{settings.port}"
    finally:
        server.should_exit = True
        thread.join(timeout=60)


@pytest.fixture(scope="module")
def pool():
    return ModelPool()


@pytest.fixture(scope="module")
def base(pool):
    settings = ServeSettings(port=free_port(), preset="tiny-random", max_sessions=4, max_upload_bytes=200_000,
                             session_ram_tokens=4096)
    with live_server(settings, pool) as url:
        yield url


@pytest.fixture()
def http(base):
    with httpx.Client(base_url=base, timeout=120) as client:
        yield client


@pytest.fixture()
def client(base):
    return openai.OpenAI(base_url=base + "/v1", api_key="unused", max_retries=0, timeout=120)


@pytest.fixture(scope="module")
def clip(make_video):
    path, manifest = make_video("serve.mp4", duration=6.0, fps=10.0, width=160, height=120, cuts=[2.0, 4.0])
    return str(path), manifest


def jpeg(rgb: np.ndarray, fmt: str = "JPEG") -> bytes:
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format=fmt)
    return buf.getvalue()


def frame(colour: tuple[int, int, int], size: int = 96) -> np.ndarray:
    img = np.zeros((size, size, 3), np.uint8)
    img[:] = colour
    img[size // 4: size // 2, size // 4: size // 2] = 255 - np.array(colour, np.uint8)
    return img


def wait_for(http: httpx.Client, sid: str, ok, timeout: float = 120) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        stats = http.get(f"/v1/sessions/{sid}").json()
        if ok(stats):
            return stats
        assert time.monotonic() < deadline, stats
        time.sleep(0.1)


def file_session(http: httpx.Client, path: str, **extra) -> dict:
    r = http.post("/v1/sessions", json={"source": path, "fps": 4, **extra})
    assert r.status_code == 201, r.text
    return wait_for(http, r.json()["id"], lambda s: s["status"] != "running")


def push_session(http: httpx.Client, colours, t0: float = 0.0, step: float = 0.5) -> tuple[str, dict]:
    r = http.post("/v1/sessions", json={"source": "push"})
    assert r.status_code == 201, r.text
    sid = r.json()["id"]
    for i, colour in enumerate(colours):
        for k in range(3):
            t = t0 + (3 * i + k) * step
            r = http.post(f"/v1/sessions/{sid}/frames", params={"t": t}, content=jpeg(frame(colour)),
                          headers={"Content-Type": "image/jpeg"})
            assert r.status_code == 200, r.text
            # each frame is ingested before the next arrives, so newest-frame-wins drops none here
            wait_for(http, sid, lambda s, n=3 * i + k + 1: s["frames_seen"] + s["dropped_frames"] >= n)
    return sid, wait_for(http, sid, lambda s: s["frames_seen"] == 3 * len(colours))


def sse_events(response: httpx.Response) -> Iterator[tuple[str, str]]:
    """(event name, data) of a server-sent-event stream."""
    name, data = "message", []
    for line in response.iter_lines():
        if line == "":
            if data:
                yield name, "\n".join(data)
            name, data = "message", []
        elif line.startswith("event:"):
            name = line[6:].strip()
        elif line.startswith("data:"):
            data.append(line[5:].strip())


# ---- sessions, chat, citations --------------------------------------------------------------------
def test_file_session_answers_with_and_without_streaming(http, client, clip):
    path, manifest = clip
    stats = file_session(http, path)
    assert stats["status"] == "ended" and stats["error"] is None, stats
    assert stats["frames_seen"] >= 20 and stats["events"] >= 1 and stats["preset"] == "tiny-random"
    sid = stats["id"]
    assert f"streamvid/{sid}" in [m.id for m in client.models.list()]

    question = [{"role": "user", "content": "What happens in the video?"}]
    resp = client.chat.completions.create(model=f"streamvid/{sid}", messages=question)
    message = resp.choices[0].message
    assert resp.object == "chat.completion" and message.role == "assistant" and isinstance(message.content, str)
    citations = message.model_extra["citations"]
    assert citations and citations == resp.model_extra["citations"]
    for c in citations:
        assert 0.0 <= c["t_start"] <= c["t_end"] <= manifest["duration"] + 0.5, c
        assert isinstance(c["event_id"], int)
    assert resp.usage.prompt_tokens > 0 and 0 < resp.usage.completion_tokens <= 16
    assert resp.choices[0].finish_reason in ("stop", "length")

    # Streaming: chat.completion.chunk pieces that add up to the same (greedy) answer, citations last.
    chunks = list(client.chat.completions.create(model=f"streamvid/{sid}", messages=question, stream=True,
                                                 stream_options={"include_usage": True}))
    assert all(c.object == "chat.completion.chunk" for c in chunks)
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text.strip() == message.content
    final = [c for c in chunks if c.choices and c.choices[0].finish_reason][-1]
    assert final.model_extra["citations"] == citations
    assert chunks[-1].usage.completion_tokens == resp.usage.completion_tokens

    # The raw stream ends with [DONE].
    with http.stream("POST", "/v1/chat/completions", json={"model": f"streamvid/{sid}", "messages": question,
                                                           "stream": True}) as r:
        assert r.headers["content-type"].startswith("text/event-stream")
        events = [data for _, data in sse_events(r)]
    assert events[-1] == "[DONE]" and json.loads(events[-2])["citations"] == citations

    # Earlier turns of the messages list enter the prompt: a longer conversation, a longer prompt.
    turns = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "What is first?"},
             {"role": "assistant", "content": "A blue scene.", "citations": citations[:1]}, *question]
    longer = client.chat.completions.create(model=f"streamvid/{sid}", messages=turns)
    assert longer.usage.prompt_tokens > resp.usage.prompt_tokens
    assert http.delete(f"/v1/sessions/{sid}").json()["deleted"] is True


def test_pushed_frames_session_and_captions_stream(http, client):
    sid, stats = push_session(http, [(200, 30, 30), (30, 200, 30), (30, 30, 200)], step=0.5)
    assert stats["frames_pushed"] == 9 and stats["dropped_frames"] == 0 and stats["status"] == "running"
    resp = client.chat.completions.create(model=f"streamvid/{sid}",
                                          messages=[{"role": "user", "content": "What is on screen right now?"}])
    citations = resp.choices[0].message.model_extra["citations"]
    assert citations and all(0.0 <= c["t_start"] <= c["t_end"] <= 4.0 for c in citations), citations
    # Captions of the closed events so far, as server-sent events (follow=false ends the stream).
    with http.stream("GET", f"/v1/sessions/{sid}/captions", params={"follow": "false"}) as r:
        events = list(sse_events(r))
    assert events[-1][0] == "end"
    caps = [json.loads(d) for name, d in events if name == "message"]
    assert all(0.0 <= c["t_start"] <= c["t_end"] <= 4.0 for c in caps)
    assert [c["t_start"] for c in caps] == sorted(c["t_start"] for c in caps)
    # Deleting stops the session and frees it; the id is gone afterwards.
    gone = http.delete(f"/v1/sessions/{sid}").json()
    assert gone["stats"]["frames_seen"] == 9
    r = http.get(f"/v1/sessions/{sid}")
    assert r.status_code == 404 and r.json()["error"]["code"] == "session_not_found"


def test_memory_saved_from_a_session_starts_another(http, client, clip, tmp_path):
    stats = file_session(http, clip[0])
    target = tmp_path / "mem"
    r = http.post(f"/v1/sessions/{stats['id']}/memory/save", json={"path": str(target)})
    assert r.status_code == 200, r.text
    # A folder streamvid did not write is never replaced.
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    r = http.post(f"/v1/sessions/{stats['id']}/memory/save", json={"path": str(foreign)})
    assert r.status_code == 409 and r.json()["error"]["code"] == "memory_folder_refused", r.text
    assert (foreign / "notes.txt").read_text() == "mine"

    r = http.post("/v1/sessions", json={"source": "push", "memory": str(target)})
    assert r.status_code == 201, r.text
    restored = r.json()
    assert restored["events"] == stats["events"] and restored["frames_seen"] == stats["frames_seen"]
    q = [{"role": "user", "content": "What happens?"}]
    a = client.chat.completions.create(model=f"streamvid/{stats['id']}", messages=q)
    b = client.chat.completions.create(model=f"streamvid/{restored['id']}", messages=q)
    assert a.model_extra["citations"] == b.model_extra["citations"]
    for sid in (stats["id"], restored["id"]):
        http.delete(f"/v1/sessions/{sid}")


# ---- isolation -------------------------------------------------------------------------------------
def test_two_sessions_are_isolated(http, client):
    a, sa = push_session(http, [(220, 40, 40), (40, 220, 40)], t0=0.0)
    b, sb = push_session(http, [(40, 40, 220), (220, 220, 40), (40, 220, 220)], t0=100.0)
    assert (sa["frames_seen"], sb["frames_seen"]) == (6, 9)
    q = [{"role": "user", "content": "What is happening right now?"}]
    ca = client.chat.completions.create(model=f"streamvid/{a}", messages=q).model_extra["citations"]
    cb = client.chat.completions.create(model=f"streamvid/{b}", messages=q).model_extra["citations"]
    assert ca and all(c["t_end"] <= 3.0 for c in ca), ca  # a's own times only
    assert cb and all(c["t_start"] >= 100.0 for c in cb), cb  # b's own times only
    with http.stream("GET", f"/v1/sessions/{a}/captions", params={"follow": "false"}) as r:
        caps = [json.loads(d) for name, d in sse_events(r) if name == "message"]
    assert all(c["t_end"] <= 3.0 for c in caps)
    # A watch on one session never scores the other's events.
    w = http.post(f"/v1/sessions/{a}/watches", json={"query": "anything", "threshold": -1.0, "verify": False})
    assert w.status_code == 201, w.text
    http.post(f"/v1/sessions/{b}/frames", params={"t": 110.0}, content=jpeg(frame((10, 10, 10))))
    wait_for(http, b, lambda s: s["frames_seen"] == 10)
    assert http.get(f"/v1/sessions/{a}/watches").json()["data"][0]["events_scored"] == 0
    # Deleting one leaves the other whole.
    http.delete(f"/v1/sessions/{a}")
    assert http.get(f"/v1/sessions/{b}").json()["frames_seen"] == 10
    r = http.post(f"/v1/sessions/{a}/frames", content=jpeg(frame((1, 2, 3))))
    assert r.status_code == 404
    http.delete(f"/v1/sessions/{b}")


def test_watch_with_model_check_reports_only_what_the_model_confirmed(http):
    """Every event passes the key stage (threshold −1), so the model's yes/no alone decides: each event
    gets one check, and a match exists only where the model said yes (with tiny-random's random weights
    the answers themselves are noise, so their number is not asserted)."""
    colours = [(220, 40, 40), (40, 220, 40), (40, 40, 220), (220, 220, 40)]
    r = http.post("/v1/sessions", json={"source": "push",
                                        "watches": [{"query": "a coloured square", "threshold": -1.0}]})
    sid = r.json()["id"]
    for i, colour in enumerate(colours):
        for k in range(4):
            http.post(f"/v1/sessions/{sid}/frames", params={"t": 4 * i + k}, content=jpeg(frame(colour)))
            wait_for(http, sid, lambda s, n=4 * i + k + 1: s["frames_seen"] + s["dropped_frames"] >= n)
    wid = http.get(f"/v1/sessions/{sid}/watches").json()["data"][0]["id"]
    session = None
    with http.stream("GET", f"/v1/sessions/{sid}/watches/{wid}/matches") as resp:
        def close_later() -> None:
            time.sleep(0.5)
            nonlocal session
            session = http.delete(f"/v1/sessions/{sid}").json()
        closer = threading.Thread(target=close_later)
        closer.start()
        events = list(sse_events(resp))
        closer.join()
    end = json.loads(events[-1][1])
    matches = [json.loads(d) for name, d in events if name == "message"]
    assert session["stats"]["events"] >= 1
    assert end["events_scored"] == session["stats"]["events"] == end["model_checks"]
    assert all(m["verified"] is True for m in matches)
    assert len(matches) <= end["events_scored"]


# ---- limits and errors --------------------------------------------------------------------------------
def error_of(r: httpx.Response, status: int) -> dict:
    assert r.status_code == status, (r.status_code, r.text)
    err = r.json()["error"]
    assert set(err) == {"message", "type", "param", "code"} and err["message"]
    return err


def test_errors_come_in_openai_shape_with_http_codes(http, client, tmp_path):
    sid = http.post("/v1/sessions", json={"source": "push"}).json()["id"]
    err = error_of(http.post(f"/v1/sessions/{sid}/frames", content=b"not an image"), 415)
    assert err["code"] == "unsupported_media_type"
    err = error_of(http.post(f"/v1/sessions/{sid}/frames", content=b"\xff" * 300_000), 413)
    assert err["code"] == "upload_too_large"
    error_of(http.post(f"/v1/sessions/{sid}/frames", content=jpeg(frame((9, 9, 9)), "BMP")), 415)
    http.post(f"/v1/sessions/{sid}/frames", params={"t": 5.0}, content=jpeg(frame((9, 9, 9)), "PNG"))
    err = error_of(http.post(f"/v1/sessions/{sid}/frames", params={"t": 1.0}, content=jpeg(frame((9, 9, 9)))), 400)
    assert err["param"] == "t" and "earlier" in err["message"]
    err = error_of(http.post("/v1/sessions", json={"source": str(tmp_path / "missing.mp4")}), 400)
    assert err["param"] == "source" and "missing.mp4" in err["message"]
    err = error_of(http.post("/v1/sessions", json={"source": "push", "fps": -1}), 400)
    assert err["param"] == "fps"
    err = error_of(http.post("/v1/sessions", json={"source": "push", "max_ram_tokens": 10**6}), 400)
    assert err["param"] == "max_ram_tokens"
    err = error_of(http.post("/v1/sessions", json={"source": "push", "preset": "no-such"}), 400)
    assert err["param"] == "preset"
    with pytest.raises(openai.NotFoundError) as e:
        client.chat.completions.create(model="streamvid/nope", messages=[{"role": "user", "content": "hi"}])
    assert e.value.body["code"] == "model_not_found"
    with pytest.raises(openai.BadRequestError) as e:
        client.chat.completions.create(model=f"streamvid/{sid}", messages=[{"role": "user", "content": "  "}])
    assert e.value.body["param"] == "messages"
    with pytest.raises(openai.BadRequestError):
        client.chat.completions.create(model=f"streamvid/{sid}", messages=[{"role": "assistant", "content": "x"}])
    with pytest.raises(openai.BadRequestError) as e:
        client.chat.completions.create(model=f"streamvid/{sid}", n=2, messages=[{"role": "user", "content": "x"}])
    assert e.value.body["param"] == "n"
    # The session cap: the fixture's server holds at most 4.
    others = [http.post("/v1/sessions", json={"source": "push"}) for _ in range(4)]
    made = [r.json()["id"] for r in others if r.status_code == 201]
    assert error_of(others[-1], 429)["code"] == "session_limit_reached"
    # The pushed frame before the refused ones is still in memory.
    assert http.get(f"/v1/sessions/{sid}").json()["frames_seen"] == 1
    for s in [sid, *made]:
        http.delete(f"/v1/sessions/{s}")


def test_files_root_confines_paths_and_sessions_get_the_budget_asked(pool, clip, tmp_path):
    from streamvid.serve.errors import APIError

    settings = ServeSettings(preset="tiny-random", files_root=str(tmp_path), session_ram_tokens=2048)
    manager = SessionManager(settings, pool)
    try:
        with pytest.raises(APIError) as e:  # the clip lives outside tmp_path
            manager.create(source=clip[0])
        assert e.value.status == 403 and e.value.param == "source"
        with pytest.raises(APIError) as e:
            manager.create(source="push", memory=str(tmp_path / ".." / "elsewhere"))
        assert e.value.status == 403 and e.value.param == "memory"
        inside = tmp_path / "clip.mp4"
        inside.write_bytes(Path(clip[0]).read_bytes())
        session = manager.create(source=str(inside), max_ram_tokens=512)
        assert session.stats()["memory"]["max_ram_tokens"] == 512
        assert manager.create(source="push").stats()["memory"]["max_ram_tokens"] == 2048  # the default budget
    finally:
        manager.close()


def test_requests_without_the_key_are_refused(pool):
    settings = ServeSettings(port=free_port(), preset="tiny-random", api_key=KEY)
    with live_server(settings, pool) as url:
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": KEY}):
            err = error_of(httpx.get(url + "/v1/models", headers=headers), 401)
            assert err["code"] == "invalid_api_key"
            error_of(httpx.post(url + "/v1/sessions", json={"source": "push"}, headers=headers), 401)
        with pytest.raises(openai.AuthenticationError):
            openai.OpenAI(base_url=url + "/v1", api_key="wrong", max_retries=0).models.list()
        good = openai.OpenAI(base_url=url + "/v1", api_key=KEY, max_retries=0)
        assert good.models.list().data == []
        r = httpx.post(url + "/v1/sessions", json={"source": "push"}, headers={"Authorization": f"Bearer {KEY}"})
        assert r.status_code == 201


# ---- watches (offline preset: real MiniLM keys of real OCR) ------------------------------------------
WATCH_SCENES = [Scene(0, 6, (40, 70, 160), "blue", None), Scene(6, 12, (50, 140, 60), "green", None),
                Scene(12, 18, (170, 50, 50), "red", None)]
ALARM_AT = 9.0


@pytest.fixture(scope="module")
def watch_clips(make_video):
    common = dict(duration=18.0, fps=10.0, width=320, height=240, scenes=WATCH_SCENES)
    pos, _ = make_video("alarm.mp4", texts=[Text(2, 5, "WELCOME"), Text(ALARM_AT, 16, "FIRE ALARM")], **common)
    neg, _ = make_video("no_alarm.mp4", texts=[Text(2, 5, "WELCOME"), Text(ALARM_AT, 16, "OPEN DAILY")], **common)
    return str(pos), str(neg)


def watched(http: httpx.Client, path: str) -> list[dict]:
    """Matches of the watch "FIRE ALARM", set when the session starts, streamed until the file ends."""
    r = http.post("/v1/sessions", json={"source": path, "preset": "offline",
                                        "watches": [{"query": "FIRE ALARM", "verify": False}]})
    assert r.status_code == 201, r.text
    session = r.json()
    wid = session["watch_list"][0]["id"]
    with http.stream("GET", f"/v1/sessions/{session['id']}/watches/{wid}/matches") as resp:
        events = list(sse_events(resp))
    assert events[-1][0] == "end", events
    assert json.loads(events[-1][1])["events_scored"] >= 3
    http.delete(f"/v1/sessions/{session['id']}")
    return [json.loads(d) for name, d in events if name == "message"]


@pytest.mark.slow
def test_watch_reports_the_thing_when_it_appears_and_not_otherwise(http, watch_clips):
    pos, neg = watch_clips
    matches = watched(http, pos)
    assert matches, "the watch missed the FIRE ALARM text"
    first = matches[0]
    assert abs(first["t"] - ALARM_AT) <= 2.0, first
    assert first["t_start"] <= first["t"] <= first["t_end"] and first["verified"] is None
    assert Image.open(io.BytesIO(__import__("base64").b64decode(first["thumbnail"]))).format == "JPEG"
    assert watched(http, neg) == []


@pytest.mark.slow
def test_watch_stream_from_post_on_pushed_frames(http):
    """The stream=true form: POST …/watches answers with the match stream itself."""
    sid = http.post("/v1/sessions", json={"source": "push", "preset": "offline"}).json()["id"]
    got: list[dict] = []

    def listen() -> None:
        with http.stream("POST", f"/v1/sessions/{sid}/watches",
                         json={"query": "FIRE ALARM", "verify": False, "stream": True}) as r:
            for name, data in sse_events(r):
                if name == "message":
                    got.append(json.loads(data))
                    return

    listener = threading.Thread(target=listen, daemon=True)
    listener.start()
    deadline = time.monotonic() + 30
    while not http.get(f"/v1/sessions/{sid}/watches").json()["data"]:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    for t in range(0, 12):
        rgb = samples.render_frame(float(t), 320, 240, WATCH_SCENES, [Text(ALARM_AT, 16, "FIRE ALARM")])
        http.post(f"/v1/sessions/{sid}/frames", params={"t": float(t)}, content=jpeg(rgb))
        wait_for(http, sid, lambda s, n=t + 1: s["frames_seen"] + s["dropped_frames"] >= n)
    http.delete(f"/v1/sessions/{sid}")  # closes the last event
    listener.join(timeout=60)
    assert got and abs(got[0]["t"] - ALARM_AT) <= 2.0, got


# ---- the commands ----------------------------------------------------------------------------------------
def streamvid_cmd(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "streamvid.cli", *args], capture_output=True, text=True,
                          env={**os.environ, "HF_HUB_OFFLINE": "1"}, timeout=timeout)


def test_cli_serve_refuses_a_busy_port_before_loading_models():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        out = streamvid_cmd("serve", "--port", str(s.getsockname()[1]), "--preset", "tiny-random", timeout=60)
    assert out.returncode == 1, out
    assert "--port" in out.stderr and "Loading models" not in out.stderr and "Traceback" not in out.stderr


def test_cli_serve_answers_with_its_key():
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "streamvid.cli", "serve", "--port", str(port), "--preset",
                             "tiny-random"], env={**os.environ, "HF_HUB_OFFLINE": "1", "STREAMVID_API_KEY": KEY},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 180
        while True:
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "streamvid serve did not come up"
            try:
                if httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.2)
        assert httpx.get(f"http://127.0.0.1:{port}/v1/models").status_code == 401
        ok = httpx.get(f"http://127.0.0.1:{port}/v1/models", headers={"Authorization": f"Bearer {KEY}"})
        assert ok.status_code == 200 and ok.json() == {"object": "list", "data": []}
    finally:
        proc.terminate()
        _, err = proc.communicate(timeout=60)
    assert "Serving the OpenAI-compatible API on http://127.0.0.1" in err and "bearer token is required" in err


@pytest.mark.slow
def test_cli_watch_prints_one_line_per_match(watch_clips):
    pos, neg = watch_clips
    out = streamvid_cmd("watch", pos, "FIRE ALARM", "--preset", "offline", "--no-verify", "--json")
    assert out.returncode == 0, out.stderr
    lines = [json.loads(line) for line in out.stdout.splitlines()]
    assert lines and abs(lines[0]["t"] - ALARM_AT) <= 2.0, lines
    assert f"done: {len(lines)} match" in out.stderr
    text = streamvid_cmd("watch", neg, "FIRE ALARM", "--preset", "offline", "--no-verify")
    assert text.returncode == 0 and text.stdout == "", text
    assert "done: 0 matches" in text.stderr
