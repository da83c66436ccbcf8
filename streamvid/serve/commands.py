"""The ``streamvid serve`` and ``streamvid watch`` commands (cli.py parses, these run)."""

from __future__ import annotations

import argparse
import json
import os
import socket
import sys
from typing import Any

from streamvid.errors import StreamvidError
from streamvid.types import format_span, format_time

API_KEY_ENV = "STREAMVID_API_KEY"


def check_port_free(host: str, port: int) -> None:
    """StreamvidError naming --port when nothing can listen on (host, port); checked before models load."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise StreamvidError(f"cannot listen on {host!r}: {exc.strerror}; give another --host") from exc
    family, _, _, _, address = infos[0]
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn does: TIME_WAIT is no obstacle
        try:
            s.bind(address)
        except OSError as exc:
            raise StreamvidError(f"port {port} on {host} is not free ({exc.strerror}); "
                                 f"pick another with --port") from exc


def run_serve(args: argparse.Namespace, overrides: dict[str, Any]) -> int:
    import uvicorn

    from streamvid.serve import ServeSettings, create_app
    from streamvid.serve.sessions import SessionManager

    key = args.api_key or os.environ.get(API_KEY_ENV) or None
    settings = ServeSettings(host=args.host, port=args.port, preset=args.preset, api_key=key, overrides=overrides,
                             max_sessions=args.max_sessions, max_upload_bytes=int(args.max_upload_mb * 1024 * 1024),
                             session_ram_tokens=args.session_tokens or ServeSettings.session_ram_tokens,
                             files_root=args.files_root)
    check_port_free(settings.host, settings.port)
    print(f"Loading models for the {settings.preset} preset.", file=sys.stderr)
    manager = SessionManager(settings)
    manager.preload()
    app = create_app(settings, manager=manager)
    auth = "a bearer token is required" if key else "no API key (anyone who can reach it may use it)"
    print(f"Serving the OpenAI-compatible API on http://{settings.host}:{settings.port}/v1; {auth}. "
          "Ctrl-C stops.", file=sys.stderr)
    uvicorn.run(app, host=settings.host, port=settings.port, log_level="warning")
    return 0


def run_watch(args: argparse.Namespace, agent_factory, source) -> int:
    """Read SOURCE, print one line per event that matches the query (JSON lines with --json)."""
    from streamvid.serve.watches import WatchSet

    agent = agent_factory()
    watches = WatchSet(agent)
    count, interrupted, stats = 0, False, {}
    try:
        watch = watches.add(args.query, threshold=args.threshold, verify=not args.no_verify)
        agent.start(source)
        for m in watches.follow(watch, done=lambda: not agent.is_running):
            count += 1
            if args.json:
                print(json.dumps(m.to_dict(thumbnail=False)), flush=True)
            else:
                print(f"{format_time(m.t)} {args.query} (score {m.score:.2f}, event "
                      f"{format_span(m.t_start, m.t_end)})", flush=True)
    except KeyboardInterrupt:
        interrupted = True
    finally:
        try:
            stats = agent.stop()
        finally:
            watches.close()
            agent.memory.close()
    end = "stopped" if interrupted else "done"
    print(f"streamvid: {end}: {count} match{'' if count == 1 else 'es'} in {stats.get('events', 0)} events from "
          f"{stats.get('frames_seen', 0)} frames.", file=sys.stderr)
    return 0
