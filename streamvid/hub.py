"""Quick, bounded questions about the Hugging Face hub that never hang a machine with no network."""

from __future__ import annotations

import os
import socket
import threading
from collections.abc import Sequence
from urllib.parse import urlparse


def hub_reachable(timeout_s: float = 3.0) -> bool:
    """Whether the hub endpoint answers a TCP connect within ``timeout_s``.

    huggingface_hub retries a failing name lookup for close to a minute, and getaddrinfo has no
    timeout of its own, so the probe runs on a thread that is abandoned after ``timeout_s``.
    """
    endpoint = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co"))
    host = endpoint.hostname or "huggingface.co"
    port = endpoint.port or (443 if endpoint.scheme == "https" else 80)
    result: list[bool] = []

    def probe() -> None:
        try:
            with socket.create_connection((host, port), timeout=timeout_s):
                result.append(True)
        except OSError:
            result.append(False)

    worker = threading.Thread(target=probe, daemon=True)
    worker.start()
    worker.join(timeout_s + 0.5)
    return bool(result and result[0])


def cached_hub_file(repo_id: str, filenames: Sequence[str]) -> str | None:
    """The local path of the first of ``filenames`` in the hub cache for ``repo_id``, else None."""
    from huggingface_hub import try_to_load_from_cache

    for name in filenames:
        path = try_to_load_from_cache(repo_id, name)
        if isinstance(path, str) and os.path.isfile(path):
            return path
    return None
