"""``python -m streamvid_ui [--host H] [--port P] [--preset NAME] [--set KEY=VALUE ...]``."""

from __future__ import annotations

import argparse
import ast
import logging
import sys
from typing import Any

from streamvid.errors import StreamvidError


def parse_setting(text: str) -> tuple[str, Any]:
    """"key=value" → (key, value) with value read as a Python literal when it is one (8, 0.5, None)."""
    key, sep, raw = text.partition("=")
    if not sep or not key.strip():
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    try:
        value: Any = ast.literal_eval(raw)
    except (ValueError, SyntaxError):
        value = raw
    return key.strip(), value


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m streamvid_ui", description="Serve the streamvid browser app.")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=7860)
    parser.add_argument("--preset", default="auto")
    parser.add_argument("--max-upload-mb", type=float, default=4096)
    parser.add_argument("--stream-every", type=float, default=0.5, help="seconds between webcam frames")
    parser.add_argument("--allow-dir", action="append", default=[], help="a directory the player may serve")
    parser.add_argument("--set", action="append", default=[], type=parse_setting, metavar="KEY=VALUE",
                        help="override an AgentConfig field, e.g. --set device=cpu")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    from streamvid_ui.app import launch

    try:
        launch(args.host, args.port, args.preset, max_upload_mb=args.max_upload_mb, allowed_dirs=args.allow_dir,
               stream_every=args.stream_every, **dict(args.set))
    except StreamvidError as exc:
        print(f"streamvid ui: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
