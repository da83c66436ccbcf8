"""The ``serve`` benchmark section: ``streamvid serve`` on a live in-process server (tiny-random).

* API overhead per ask: POST /v1/chat/completions against the same session's in-process
  ``ask_stream`` (fresh dialogue each, greedy, the same few tokens), interleaved in alternating
  order; the fixed cost as min(API) − min(in process), and the median and p90 of the pair differences;
* concurrency: N push sessions each pushing JPEG frames at 2 fps for S seconds from its own client
  thread, one more thread asking questions round-robin in between: errors, frames pushed against
  frames ingested + dropped by the newest-frame-wins policy, tokens_in_ram against each session's
  budget, RSS over the run;
* watch latency: every session has a watch that passes every event (threshold −1, no model check);
  from an event closing (the agent's on_event hook, in this process) to its match arriving at the
  client over server-sent events: p50/p95; plus the model yes/no check's own time per event.

Captions are off (as in the other sections): they compete for the same cores.
"""

from __future__ import annotations

import io
import json
import threading
import time
from contextlib import contextmanager
from typing import Any

import numpy as np
from streamvid_bench.report import _table, load_average, median, rss_mb
from streamvid_bench.sources import Scenery

QUESTION = "What is happening right now?"


def _pct(values: list[float], q: float) -> float | None:
    if not values:
        return None
    return round(float(np.percentile(np.asarray(values), q)), 1)


def _jpeg(rgb: np.ndarray) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format="JPEG", quality=85)
    return buf.getvalue()


@contextmanager
def _server(settings: Any):
    import uvicorn

    from streamvid.serve import create_app
    from streamvid.serve.sessions import SessionManager

    manager = SessionManager(settings)
    app = create_app(settings, manager=manager)
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=settings.port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        if not thread.is_alive():
            raise RuntimeError("the benchmark server did not start")
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{settings.port}", manager
    finally:
        server.should_exit = True
        thread.join(timeout=120)


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def api_overhead(base: str, manager: Any, reps: int, new_tokens: int) -> dict[str, Any]:
    """Median wall ms of an ask through the API against the same ask in process (same session)."""
    import httpx

    from streamvid.agent import Dialogue

    with httpx.Client(base_url=base, timeout=120) as http:
        sid = http.post("/v1/sessions", json={"source": "push"}).json()["id"]
        scenery = Scenery(duration=30.0, width=160, height=120, seed=7, scene_s=(3.0, 6.0))
        for k in range(24):
            http.post(f"/v1/sessions/{sid}/frames", params={"t": k * 0.5}, content=_jpeg(scenery(k * 0.5)))
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            s = http.get(f"/v1/sessions/{sid}").json()
            if s["frames_seen"] + s["dropped_frames"] >= 24:
                break
            time.sleep(0.05)
        agent = manager.get(sid).agent
        body = {"model": f"streamvid/{sid}", "messages": [{"role": "user", "content": QUESTION}],
                "max_tokens": new_tokens}

        def in_process() -> float:
            t0 = time.perf_counter()
            stream = agent.ask_stream(QUESTION, max_new_tokens=new_tokens, dialogue=Dialogue())
            for _ in stream:
                pass
            return (time.perf_counter() - t0) * 1e3

        def over_api() -> float:
            t0 = time.perf_counter()
            r = http.post("/v1/chat/completions", json=body)
            r.raise_for_status()
            return (time.perf_counter() - t0) * 1e3

        def stats_roundtrip() -> float:
            t0 = time.perf_counter()
            http.get("/health").raise_for_status()
            return (time.perf_counter() - t0) * 1e3

        in_process(), over_api()  # warm-up
        local, api, trip = [], [], []
        for i in range(reps):  # interleaved in alternating order, so load changes and order effects hit both
            if i % 2:
                api.append(over_api())
                local.append(in_process())
            else:
                local.append(in_process())
                api.append(over_api())
            trip.append(stats_roundtrip())
        http.delete(f"/v1/sessions/{sid}")
    diffs = [a - b for a, b in zip(api, local, strict=True)]
    return {"reps": reps, "new_tokens": new_tokens, "in_process_ms_min": round(min(local), 2),
            "api_ms_min": round(min(api), 2), "overhead_ms_min": round(min(api) - min(local), 2),
            "in_process_ms_p50": round(median(local), 2),
            "api_ms_p50": round(median(api), 2), "overhead_ms_p50": round(median(diffs), 2),
            "overhead_ms_p90": _pct(diffs, 90), "health_roundtrip_ms_p50": round(median(trip), 2),
            "target_ms": 10.0}


def concurrency(base: str, manager: Any, *, sessions: int, seconds: float, push_fps: float,
                budget: int) -> dict[str, Any]:
    """``sessions`` push sessions at ``push_fps`` for ``seconds``, asks in between, a pass-all watch each."""
    import httpx

    errors: list[str] = []
    closed: dict[tuple[str, int], float] = {}
    latencies: list[float] = []
    ask_ms: list[float] = []
    max_tokens: dict[str, int] = {}
    rss: list[float] = [rss_mb()]
    stop = threading.Event()
    lock = threading.Lock()

    with httpx.Client(base_url=base, timeout=120) as http:
        sids = []
        for _ in range(sessions):
            r = http.post("/v1/sessions", json={"source": "push", "watches": [
                {"query": "anything", "threshold": -1.0, "verify": False}]})
            r.raise_for_status()
            sid = r.json()["id"]
            sids.append((sid, r.json()["watch_list"][0]["id"]))
            manager.get(sid).agent.on_event(
                lambda e, sid=sid: closed.__setitem__((sid, e.id), time.monotonic()))

    n_frames = int(seconds * push_fps)
    frames = {sid: [_jpeg(Scenery(duration=seconds + 10, width=160, height=120, seed=i, scene_s=(3.0, 8.0))(
        k / push_fps)) for k in range(n_frames)] for i, (sid, _) in enumerate(sids)}

    def push(sid: str) -> None:
        with httpx.Client(base_url=base, timeout=60) as c:
            t0 = time.monotonic()
            for k, body in enumerate(frames[sid]):
                wait = t0 + k / push_fps - time.monotonic()
                if wait > 0:
                    time.sleep(wait)
                try:
                    r = c.post(f"/v1/sessions/{sid}/frames", params={"t": k / push_fps}, content=body)
                    if r.status_code != 200:
                        errors.append(f"push {r.status_code}: {r.text[:200]}")
                except httpx.HTTPError as exc:
                    errors.append(f"push: {exc!r}")

    def listen(sid: str, wid: str) -> None:
        with httpx.Client(base_url=base, timeout=None) as c, \
                c.stream("GET", f"/v1/sessions/{sid}/watches/{wid}/matches") as r:
            for line in r.iter_lines():
                if line.startswith("data:"):
                    now = time.monotonic()
                    m = json.loads(line[5:])
                    t_closed = closed.get((sid, m.get("event_id", -1)))
                    if t_closed is not None:
                        with lock:
                            latencies.append((now - t_closed) * 1e3)

    def ask() -> None:
        with httpx.Client(base_url=base, timeout=120) as c:
            i = 0
            while not stop.is_set():
                sid = sids[i % len(sids)][0]
                i += 1
                t0 = time.perf_counter()
                try:
                    r = c.post("/v1/chat/completions", json={"model": f"streamvid/{sid}", "max_tokens": 8,
                                                             "messages": [{"role": "user", "content": QUESTION}]})
                    if r.status_code != 200:
                        errors.append(f"ask {r.status_code}: {r.text[:200]}")
                    ask_ms.append((time.perf_counter() - t0) * 1e3)
                except httpx.HTTPError as exc:
                    errors.append(f"ask: {exc!r}")
                stop.wait(0.5)

    def sample() -> None:
        while not stop.wait(1.0):
            rss.append(rss_mb())
            for sid, _ in sids:
                tokens = manager.get(sid).agent.memory.stats()["tokens_in_ram"]
                max_tokens[sid] = max(max_tokens.get(sid, 0), tokens)

    listeners = [threading.Thread(target=listen, args=s, daemon=True) for s in sids]
    pushers = [threading.Thread(target=push, args=(sid,), daemon=True) for sid, _ in sids]
    helpers = [threading.Thread(target=ask, daemon=True), threading.Thread(target=sample, daemon=True)]
    t_start = time.perf_counter()
    for t in [*listeners, *pushers, *helpers]:
        t.start()
    for t in pushers:
        t.join()
    push_wall = time.perf_counter() - t_start
    stop.set()
    for t in helpers:
        t.join()
    final = []
    with httpx.Client(base_url=base, timeout=120) as http:
        for sid, _ in sids:
            r = http.delete(f"/v1/sessions/{sid}")  # stops ingestion: the last event closes, the streams end
            if r.status_code != 200:
                errors.append(f"delete {r.status_code}")
            else:
                final.append(r.json()["stats"])
    for t in listeners:
        t.join(timeout=30)
    pushed = sum(s["frames_pushed"] for s in final)
    seen = sum(s["frames_seen"] for s in final)
    dropped = sum(s["dropped_frames"] for s in final)
    return {
        "sessions": sessions, "seconds": seconds, "push_fps": push_fps, "push_wall_s": round(push_wall, 1),
        "errors": len(errors), "error_samples": errors[:5], "pushed": pushed, "ingested": seen,
        "dropped_newest_wins": dropped, "unaccounted": pushed - seen - dropped,
        "dropped_pct": round(100.0 * dropped / pushed, 1) if pushed else None,
        "asks": len(ask_ms), "ask_ms_p50": _pct(ask_ms, 50), "ask_ms_p95": _pct(ask_ms, 95),
        "session_budget_tokens": budget, "max_tokens_in_ram": max(max_tokens.values(), default=0),
        "within_budget": all(v <= budget for v in max_tokens.values()),
        "rss_mb_start": round(rss[0], 1), "rss_mb_max": round(max(rss), 1), "rss_mb_end": round(rss[-1], 1),
        "events_closed": len(closed), "watch_notifications": len(latencies),
        "watch_latency_ms_p50": _pct(latencies, 50), "watch_latency_ms_p95": _pct(latencies, 95),
        "watch_latency_ms_max": _pct(latencies, 100), "watch_target_ms_p95": 1000.0,
    }


def verify_check_ms(manager: Any, base: str, events: int = 6) -> dict[str, Any]:
    """The model yes/no check alone on ``events`` closed events of one session (tiny-random: timing only)."""
    import httpx

    from streamvid.serve.watches import model_says_yes

    with httpx.Client(base_url=base, timeout=120) as http:
        sid = http.post("/v1/sessions", json={"source": "push"}).json()["id"]
        scenery = Scenery(duration=60.0, width=160, height=120, seed=3, scene_s=(2.0, 4.0))
        for k in range(60):
            http.post(f"/v1/sessions/{sid}/frames", params={"t": k * 0.5}, content=_jpeg(scenery(k * 0.5)))
            time.sleep(0.02)
        agent = manager.get(sid).agent
        time.sleep(1.0)
        evs = [e for e in agent.memory.events() if e.tokens is not None][:events]
        times = []
        for e in evs:
            t0 = time.perf_counter()
            model_says_yes(agent, e, "a ball")
            times.append((time.perf_counter() - t0) * 1e3)
        http.delete(f"/v1/sessions/{sid}")
    return {"events": len(times), "check_ms_p50": _pct(times, 50), "check_ms_max": _pct(times, 100)}


def serve_report(seconds: float, sessions: int, reps: int) -> dict[str, Any]:
    from streamvid.serve import ServeSettings

    budget = 256  # small, so that the 60 s run fills each session's budget and shows it holds
    settings = ServeSettings(port=_free_port(), preset="tiny-random", max_sessions=sessions + 4,
                             session_ram_tokens=budget, overrides={"captions": False})
    load0 = load_average()
    with _server(settings) as (base, manager):
        overhead = api_overhead(base, manager, reps=reps, new_tokens=4)
        conc = concurrency(base, manager, sessions=sessions, seconds=seconds, push_fps=2.0, budget=budget)
        check = verify_check_ms(manager, base)
    return {"api_overhead": overhead, "concurrency": conc, "verify_check": check,
            "load_average_before": load0, "load_average_after": load_average()}


def serve_markdown(r: dict[str, Any]) -> list[str]:
    o, c, v = r["api_overhead"], r["concurrency"], r["verify_check"]
    lines = ["## Serve (tiny-random, in-process server on 127.0.0.1, captions off)", ""]
    lines += _table(["ask in process ms min / p50", "ask over API ms min / p50", "overhead ms (min − min)",
                     "overhead p50 of pairs", "p90", "GET /health round trip ms", "target"],
                    [[f"{o['in_process_ms_min']} / {o['in_process_ms_p50']}", f"{o['api_ms_min']} / {o['api_ms_p50']}",
                      o["overhead_ms_min"], o["overhead_ms_p50"], o["overhead_ms_p90"], o["health_roundtrip_ms_p50"],
                      "≤ 10 ms"]])
    lines += ["The minimum is the fixed cost; pair medians swing with the machine's load (both sides share it).", ""]
    lines += [f"{c['sessions']} push sessions at {c['push_fps']:g} fps for {c['seconds']:g} s, asks in between:", ""]
    lines += _table(["errors", "pushed", "ingested", "dropped (newest wins) %", "unaccounted", "asks",
                     "ask p50 ms", "max tokens_in_ram / budget", "RSS start/max/end MB"],
                    [[c["errors"], c["pushed"], c["ingested"], c["dropped_pct"], c["unaccounted"], c["asks"],
                      c["ask_ms_p50"], f"{c['max_tokens_in_ram']} / {c['session_budget_tokens']}",
                      f"{c['rss_mb_start']} / {c['rss_mb_max']} / {c['rss_mb_end']}"]])
    lines += _table(["events closed", "notifications", "event close → client p50 ms", "p95 ms", "max ms",
                     "target p95", "model yes/no check ms p50"],
                    [[c["events_closed"], c["watch_notifications"], c["watch_latency_ms_p50"],
                      c["watch_latency_ms_p95"], c["watch_latency_ms_max"], "≤ 1000 ms", v["check_ms_p50"]]])
    return lines
