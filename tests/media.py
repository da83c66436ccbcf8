"""Test helpers: paths to shared media and scripted local HTTP servers."""

from __future__ import annotations

import contextlib
import os
import re
import socket
import socketserver
import threading
import time
from pathlib import Path

# The shared footage (vtest.avi …) lives in $STREAMVID_SHARED/media; tests that need it skip without it.
SHARED_MEDIA = Path(os.environ.get("STREAMVID_SHARED") or "/nonexistent-STREAMVID_SHARED-unset") / "media"




def free_port() -> int:
    """A port nothing listens on (bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ScriptedHTTPServer:
    """Serves one byte string over HTTP on 127.0.0.1 in a thread, misbehaving on request.

    mode: "full"         answers GET and Range requests correctly (Content-Length, 206)
          "stall_head"   accepts the request, then never answers
          "stall_body"   sends the headers and the first ``cut`` bytes, then goes silent
          "close_body"   sends the headers (full Content-Length) and ``cut`` bytes, then closes;
                         later requests for bytes past ``cut`` are closed unanswered
          "live"         no Content-Length, paces ``body`` over ``live_seconds``, then closes
    """

    def __init__(self, body: bytes, mode: str = "full", cut: int | None = None,
                 live_seconds: float = 2.0) -> None:
        self.body, self.mode, self.live_seconds = body, mode, live_seconds
        self.cut = len(body) // 2 if cut is None else cut
        self.stop = threading.Event()
        self.requests: list[str] = []
        owner = self

        class Handler(socketserver.BaseRequestHandler):
            def handle(self) -> None:
                owner._handle(self.request)

        socketserver.ThreadingTCPServer.allow_reuse_address = True
        self._server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}/video"

    def __enter__(self) -> ScriptedHTTPServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self._server.shutdown()
        self._server.server_close()

    def _handle(self, conn: socket.socket) -> None:
        conn.settimeout(10)
        request = b""
        while b"\r\n\r\n" not in request:
            chunk = conn.recv(4096)
            if not chunk:
                return
            request += chunk
        text = request.decode("latin-1")
        self.requests.append(text)
        match = re.search(r"Range: bytes=(\d+)-", text, re.IGNORECASE)
        start = int(match.group(1)) if match else 0
        n = len(self.body)
        try:
            if self.mode == "stall_head":
                self.stop.wait(30)
                return
            if self.mode == "live":
                conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: video/mp2t\r\nConnection: close\r\n\r\n")
                chunks = 50
                step = -(-n // chunks)
                for i in range(0, n, step):
                    if self.stop.is_set():
                        return
                    conn.sendall(self.body[i:i + step])
                    time.sleep(self.live_seconds / chunks)
                return
            if self.mode == "close_body" and start >= self.cut:
                return
            status = "206 Partial Content" if match else "200 OK"
            head = (f"HTTP/1.1 {status}\r\nContent-Type: video/x-matroska\r\nAccept-Ranges: bytes\r\n"
                    f"Content-Length: {n - start}\r\nConnection: close\r\n")
            if match:
                head += f"Content-Range: bytes {start}-{n - 1}/{n}\r\n"
            conn.sendall((head + "\r\n").encode())
            if self.mode == "full":
                conn.sendall(self.body[start:])
            else:
                conn.sendall(self.body[start:max(start, self.cut)])
                if self.mode == "stall_body":
                    self.stop.wait(30)
        except OSError:
            return
        finally:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
