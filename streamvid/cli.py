"""The ``streamvid`` command. Exit codes: 0 ok, 1 runtime error (one line naming the cause), 2 usage."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Sequence
from typing import Any

EXIT_OK, EXIT_ERROR, EXIT_USAGE = 0, 1, 2

log = logging.getLogger("streamvid.cli")


def _agent_overrides(args: argparse.Namespace) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if getattr(args, "model", None):
        out["model"] = args.model
    if getattr(args, "fps", None) is not None:
        out["fps"] = args.fps
    if getattr(args, "device", None):
        out["device"] = args.device
    return out


def positive_fps(text: str) -> float:
    """argparse type for --fps: a finite number > 0."""
    from streamvid.config import check_fps
    from streamvid.errors import ConfigError

    try:
        return check_fps(float(text))
    except (ValueError, ConfigError):
        raise argparse.ArgumentTypeError(f"must be a number of frames per second above 0, got {text!r}") from None


def check_output_dir(path: str, flag: str) -> None:
    """Before any work: ``path`` can become a directory streamvid writes (ConfigError naming ``flag`` if not)."""
    import tempfile
    from pathlib import Path

    from streamvid.errors import ConfigError
    from streamvid.memory.persist import check_save_target

    try:
        target = Path(path).expanduser().absolute()
        if target.exists() and not target.is_dir():
            raise ConfigError(f"{flag} {path}: exists and is not a directory")
        if target.parts[1:2] and target.parts[1] in ("proc", "sys", "dev"):
            raise ConfigError(f"{flag} {path}: is on a system filesystem (/{target.parts[1]}); "
                              "choose a folder of yours")
        parent = next(p for p in (target, *target.parents) if p.exists())
        if not parent.is_dir():
            raise ConfigError(f"{flag} {path}: {parent} is a file, so the folder cannot be made")
        with tempfile.TemporaryFile(dir=parent):  # the honest test: can a file be made there?
            pass
    except OSError as exc:
        raise ConfigError(f"{flag} {path}: cannot write there ({exc.strerror or exc})") from None
    check_save_target(path)  # a folder holding files streamvid did not write is refused too


def show_logs(verbosity: int) -> None:
    """streamvid's log records as plain one-line sentences on stderr: notes and warnings by default,
    debug detail with -v, warnings only with -q (errors are always printed by main)."""
    level = logging.DEBUG if verbosity > 0 else logging.WARNING if verbosity < 0 else logging.INFO
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("streamvid: %(message)s"))
    root = logging.getLogger("streamvid")
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    root.propagate = False


def quiet_libraries() -> None:
    """Plain short sentences only: no weight-loading progress bars or library log lines.

    Must run before transformers is imported (it reads these settings at import time).
    """
    import warnings

    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    logging.basicConfig(level=logging.ERROR)  # open_clip logs to the root logger
    logging.getLogger().setLevel(logging.ERROR)

    def show(message, category, filename, lineno, file=None, line=None) -> None:
        # streamvid's own warnings (e.g. a truncated video) as one line; others' stay silent.
        if category.__module__.startswith("streamvid") or "streamvid" in str(filename):
            print(f"streamvid: warning: {message}", file=sys.stderr)

    warnings.showwarning = show


def _config(args: argparse.Namespace):
    from streamvid.config import check_device_available, preset_config

    config = preset_config(args.preset, **_agent_overrides(args))
    check_device_available(config.device)
    return config


def _open_video(spec: Any, config) -> Any:
    """The source for a VIDEO argument, opened before any model loads so a bad path fails fast."""
    from streamvid.sources import open_source

    return open_source(sys.stdin.buffer if spec == "-" else spec, fps=config.fps, size=config.frame_size)


def _make_agent(args: argparse.Namespace, config=None):
    """An agent over the saved memory ``--memory`` (ask/chat without a video), else from the preset."""
    from streamvid.agent import StreamAgent

    if config is None and getattr(args, "memory", None):
        return StreamAgent.from_memory(args.memory, **_agent_overrides(args))
    return StreamAgent(config or _config(args))


def _span(t0: float, t1: float) -> str:
    from streamvid.types import format_span

    return format_span(t0, t1)


def _answer_payload(answer, stats: dict[str, Any]) -> dict[str, Any]:
    return {
        "answer": answer.text,
        "citations": [{"t_start": c.t_start, "t_end": c.t_end, "event_id": c.event_id} for c in answer.citations],
        "timings": answer.timings,
        "stats": stats,
    }


def _print_answer(answer, as_json: bool, stats: dict[str, Any]) -> None:
    if as_json:
        print(json.dumps(_answer_payload(answer, stats)))
        return
    print(answer.text or "(no answer)")
    if answer.citations:
        print("Cited: " + ", ".join(_span(c.t_start, c.t_end) for c in answer.citations))


def _ingest(agent, source, args: argparse.Namespace) -> dict[str, Any]:
    return agent.ingest(source, progress=not getattr(args, "json", False) and sys.stderr.isatty())


def cmd_ask(args: argparse.Namespace) -> int:
    if args.store:
        if len(args.items) != 1 or args.memory:
            return _usage(args, "ask --store needs one QUESTION (and no --memory)")
        from streamvid.agent import check_question
        from streamvid.library.commands import ask_store_command

        return ask_store_command(args, check_question(args.items[0]), _agent_overrides(args))
    if args.video:
        return _usage(args, "--video needs --store")
    if len(args.items) == 2 and not args.memory:
        video, question = args.items
    elif len(args.items) == 1 and args.memory:
        video, question = None, args.items[0]
    else:
        return _usage(args, "ask needs VIDEO and QUESTION, or --memory DIR and QUESTION")
    from streamvid.agent import check_question

    question = check_question(question)
    if video is None:
        agent = _make_agent(args)
    else:
        config = _config(args)
        source = _open_video(video, config)
        agent = _make_agent(args, config)
    with agent:
        if video is not None:
            _ingest(agent, source, args)
        answer = agent.ask(question)
        _print_answer(answer, args.json, agent.memory.stats())
    return EXIT_OK


def cmd_index(args: argparse.Namespace) -> int:
    check_output_dir(args.memory, "--memory")
    config = _config(args)
    source = _open_video(args.video, config)
    agent = _make_agent(args, config)
    with agent:
        stats = _ingest(agent, source, args)
        agent.memory.save(args.memory)
        if args.json:
            print(json.dumps({"memory": args.memory, "stats": stats}))
        else:
            print(f"Indexed {stats['frames_seen']} frames into {stats['events']} events. Saved to {args.memory}.")
    return EXIT_OK


def cmd_index_library(args: argparse.Namespace) -> int:
    from streamvid.library.commands import index_library_command

    return index_library_command(args, _agent_overrides(args))


def cmd_chat(args: argparse.Namespace) -> int:
    if bool(args.video) == bool(args.memory):
        return _usage(args, "chat needs VIDEO or --memory DIR (one of them)")
    if args.video:
        config = _config(args)
        source = _open_video(args.video, config)
        agent = _make_agent(args, config)
    else:
        agent = _make_agent(args)
    with agent:
        if args.video:
            _ingest(agent, source, args)
        print("Ask a question. An empty line or Ctrl-D ends the chat.")
        while True:
            try:
                question = input("> ").strip()
            except (EOFError, KeyboardInterrupt):
                print()
                break
            if not question:
                break
            stream = agent.ask_stream(question)
            for piece in stream:
                print(piece, end="", flush=True)
            print()
            if stream.answer is not None and stream.answer.citations:
                print("Cited: " + ", ".join(_span(c.t_start, c.t_end) for c in stream.answer.citations))
    return EXIT_OK


def cmd_caption(args: argparse.Namespace) -> int:
    config = _config(args)
    source = _open_video(args.source, config)
    agent = _make_agent(args, config)
    count = 0
    stats: dict[str, Any] = {}
    interrupted = False
    try:
        agent.start(source)
        for cap in agent.captions(follow=True):
            count += 1
            if args.json:
                print(json.dumps({"t_start": cap.t_start, "t_end": cap.t_end, "text": cap.text,
                                  "event_id": cap.event_id}), flush=True)
            else:
                print(f"{_span(cap.t_start, cap.t_end)} {cap.text}", flush=True)
    except KeyboardInterrupt:
        interrupted = True
    finally:
        try:
            stats = agent.stop()
        finally:
            agent.memory.close()
    end = "stopped" if interrupted else "done"
    log.info("%s: %d captions from %d frames, %d events.", end, count, stats["frames_seen"], stats["events"])
    return EXIT_OK


def cmd_ui(args: argparse.Namespace) -> int:
    from streamvid.config import check_device_available
    from streamvid.errors import StreamvidError

    try:
        from streamvid_ui.app import launch
    except ImportError as exc:
        raise StreamvidError(f"streamvid ui needs the browser app's extra ({exc.name} is not installed): "
                             "pip install 'streamvid[ui]'") from exc
    from streamvid.serve.commands import check_port_free

    check_port_free(args.host, args.port)
    if args.device:  # a bad --device fails here, before any model loads
        check_device_available(args.device)
    logging.getLogger("streamvid_ui").setLevel(logging.INFO)  # the server's log: sessions opening and closing
    log.info("Loading models for the %s preset, then serving http://%s:%s", args.preset, args.host, args.port)
    launch(args.host, args.port, args.preset, max_upload_mb=args.max_upload_mb, allowed_dirs=args.allow_dir,
           stream_every=args.stream_every, session_timeout_s=args.session_timeout * 60.0, **_agent_overrides(args))
    return EXIT_OK


def cmd_serve(args: argparse.Namespace) -> int:
    from streamvid.serve.commands import run_serve

    return run_serve(args, _agent_overrides(args))


def cmd_watch(args: argparse.Namespace) -> int:
    from streamvid.serve.commands import run_watch

    config = _config(args)
    source = _open_video(args.source, config)
    return run_watch(args, lambda: _make_agent(args, config), source)


def _bench_entry(module: str, command: str):
    """``main`` of a streamvid_bench module; a StreamvidError naming the extra when it is not installed."""
    import importlib

    from streamvid.errors import StreamvidError

    try:
        return importlib.import_module(module).main
    except ImportError as exc:
        raise StreamvidError(f"streamvid {command} needs the benchmark package ({exc.name} is not installed): "
                             "pip install 'streamvid[bench]'") from exc


def cmd_bench(args: argparse.Namespace) -> int:
    return _bench_entry("streamvid_bench", "bench")(args.rest)


def cmd_eval(args: argparse.Namespace) -> int:
    return _bench_entry("streamvid_bench.evaluate", "eval")(args.rest)


def cmd_presets(args: argparse.Namespace) -> int:
    from streamvid.config import PRESETS

    if args.json:
        print(json.dumps(PRESETS))
    else:
        for name, values in PRESETS.items():
            print(f"{name:16s} {values.get('model', '')}")
    return EXIT_OK


def cmd_info(args: argparse.Namespace) -> int:
    """Decode a source and report what it holds: backend, frames, times, size."""
    from streamvid.sources import open_source

    n, first, last, shape = 0, None, None, None
    with open_source(args.source, fps=args.fps, backend=args.backend) as src:
        backend = src.backend
        for frame in src:
            n += 1
            first = frame.t if first is None else first
            last, shape = frame.t, frame.rgb.shape
    info = {"source": str(args.source), "backend": backend, "frames": n, "first_t": first, "last_t": last,
            "height": shape[0] if shape else None, "width": shape[1] if shape else None}
    if args.json:
        print(json.dumps(info))
    else:
        print(f"{info['source']}: {n} frames from {first or 0:.3f} s to {last or 0:.3f} s, "
              f"{info['width']}x{info['height']}, decoded with {backend}.")
    return EXIT_OK


def _usage(args: argparse.Namespace, message: str) -> int:
    args.parser.print_usage(sys.stderr)
    print(f"streamvid: error: {message}", file=sys.stderr)
    return EXIT_USAGE


def output_args(p: argparse.ArgumentParser, top: bool = False) -> None:
    """--debug, -v and -q, accepted before or after the command (a command's copy defaults to
    SUPPRESS so that it keeps the top-level value unless given)."""

    def default(value: object) -> object:
        return value if top else argparse.SUPPRESS

    p.add_argument("--debug", action="store_true", default=default(False), help="show tracebacks")
    p.add_argument("-v", "--verbose", action="count", default=default(0), help="more detail on stderr")
    p.add_argument("-q", "--quiet", action="store_true", default=default(False),
                   help="only warnings and errors on stderr")


def build_parser() -> argparse.ArgumentParser:
    from streamvid import __version__
    from streamvid.config import PRESETS

    parser = argparse.ArgumentParser(prog="streamvid", description="Streaming video understanding agent.")
    parser.add_argument("--version", action="version", version=f"streamvid {__version__}")
    output_args(parser, top=True)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    def model_args(p: argparse.ArgumentParser) -> None:
        output_args(p)
        p.add_argument("--preset", default="auto", choices=["auto", *PRESETS], metavar="PRESET",
                       help="preset name: auto (default), " + ", ".join(PRESETS))
        p.add_argument("--model", help="hub id or local directory of the Video-LLM")
        p.add_argument("--fps", type=positive_fps, help="frames per second to sample")
        p.add_argument("--device", help="cpu, cuda, cuda:1 ...")
        p.add_argument("--json", action="store_true", help="machine-readable output")

    p = sub.add_parser("ask", help="answer a question about a video (or a saved memory)")
    p.add_argument("items", nargs="+", metavar="VIDEO QUESTION", help="VIDEO and QUESTION, or QUESTION with --memory")
    p.add_argument("--memory", help="a memory directory written by `streamvid index`")
    p.add_argument("--store", help="a library store written by `streamvid index-library` (milvus:///path/lib.db)")
    p.add_argument("--store-dir", help="the videos' memories, where they are not where the store recorded them "
                   "(a folder or an object-store URL, s3://bucket/prefix)")
    p.add_argument("--video", help="with --store: answer from this video only (id or path)")
    model_args(p)
    p.set_defaults(func=cmd_ask, parser=p)

    p = sub.add_parser("index-library", help="index many videos over Ray workers into a Milvus store")
    p.add_argument("paths", nargs="+", metavar="PATH", help="video files, folders or globs")
    p.add_argument("--store", required=True, help="milvus:///path/lib.db (Milvus Lite file) or milvus://host:19530")
    p.add_argument("--store-dir", help="the videos' memories: a folder (default: next to a .db store) or an "
                   "object-store URL (s3://bucket/prefix, gs://…, any fsspec URL)")
    p.add_argument("--workers", type=int, help="Ray actors (default: one per CPU, or per GPU share)")
    p.add_argument("--ray-address", help="an existing Ray cluster (default: start a local one)")
    p.add_argument("--gpus-per-worker", type=float, default=0.0, help="GPUs per actor (0: CPU workers)")
    model_args(p)
    p.set_defaults(func=cmd_index_library, parser=p)

    p = sub.add_parser("index", help="index a video into a memory directory")
    p.add_argument("video")
    p.add_argument("--memory", required=True, help="directory to save the memory to")
    model_args(p)
    p.set_defaults(func=cmd_index, parser=p)

    p = sub.add_parser("chat", help="multi-turn questions about a video or a saved memory")
    p.add_argument("video", nargs="?")
    p.add_argument("--memory")
    model_args(p)
    p.set_defaults(func=cmd_chat, parser=p)

    p = sub.add_parser("caption", help="print a timestamped caption per event as a stream goes")
    p.add_argument("source", help="file, camera:N, rtsp:// or http(s):// URL, or - for stdin")
    model_args(p)
    p.set_defaults(func=cmd_caption, parser=p)

    p = sub.add_parser("ui", help="the browser app: live webcam assistant and video QA")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default: this machine only)")
    p.add_argument("--port", type=int, default=7860)
    p.add_argument("--preset", default="auto", choices=["auto", *PRESETS], metavar="PRESET")
    p.add_argument("--model", help="hub id or local directory of the Video-LLM")
    p.add_argument("--fps", type=positive_fps, help="frames per second to sample from indexed videos")
    p.add_argument("--device", help="cpu, cuda, cuda:1 ...")
    p.add_argument("--max-upload-mb", type=float, default=4096, help="largest video upload (default 4096)")
    p.add_argument("--stream-every", type=float, default=0.5, help="seconds between webcam frames (default 0.5)")
    p.add_argument("--allow-dir", action="append", default=[], metavar="DIR",
                   help="a directory whose videos the player may serve (repeatable)")
    p.add_argument("--session-timeout", type=float, default=30.0, metavar="MINUTES",
                   help="free a browser session's memories after this long without activity (default 30)")
    output_args(p)
    p.set_defaults(func=cmd_ui, parser=p)

    p = sub.add_parser("serve", help="an OpenAI-compatible API over live video sessions (see docs/API.md)")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default: this machine only)")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--api-key", help="require 'Authorization: Bearer KEY' (default: $STREAMVID_API_KEY)")
    p.add_argument("--max-sessions", type=int, default=32, help="sessions open at once (default 32)")
    p.add_argument("--max-upload-mb", type=float, default=8.0, help="largest frame upload (default 8 MB)")
    p.add_argument("--session-tokens", type=int, help="each session's memory budget in tokens (max_ram_tokens)")
    p.add_argument("--files-root", help="file sources and memory folders must lie inside this folder")
    model_args(p)
    p.set_defaults(func=cmd_serve, parser=p)

    p = sub.add_parser("watch", help="a standing query: one line per event that matches it")
    p.add_argument("source", help="file, camera:N, rtsp:// or http(s):// URL, or - for stdin")
    p.add_argument("query", help="what to watch for, e.g. \"a person enters\"")
    p.add_argument("--threshold", type=float, help="key similarity a match needs (default: the preset's)")
    p.add_argument("--no-verify", action="store_true", help="skip the answering model's yes/no check")
    model_args(p)
    p.set_defaults(func=cmd_watch, parser=p)

    p = sub.add_parser("bench", help="run the benchmark suite (see docs/BENCHMARKS.md); --help for its options",
                       add_help=False)
    p.set_defaults(func=cmd_bench, parser=p, debug=False)
    p = sub.add_parser("eval", help="question-answering evaluation on generated videos, with baselines "
                       "(see docs/EVAL.md); --help for its options", add_help=False)
    p.set_defaults(func=cmd_eval, parser=p, debug=False)

    p = sub.add_parser("presets", help="list presets")
    p.add_argument("--json", action="store_true")
    output_args(p)
    p.set_defaults(func=cmd_presets, parser=p)

    p = sub.add_parser("info", help="decode a source and report its frames and times")
    p.add_argument("source")
    p.add_argument("--fps", type=positive_fps)
    p.add_argument("--backend", choices=["decord", "pyav", "opencv"])
    p.add_argument("--json", action="store_true")
    output_args(p)
    p.set_defaults(func=cmd_info, parser=p)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args, rest = parser.parse_known_args(argv)
    if rest and getattr(args, "command", None) not in ("bench", "eval"):
        parser.error(f"unrecognized arguments: {' '.join(rest)}")
    args.rest = rest
    if not getattr(args, "command", None):
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    from streamvid.errors import StreamvidError

    show_logs(args.verbose - int(args.quiet))
    if not args.debug:
        quiet_libraries()
    try:
        return args.func(args)
    except StreamvidError as exc:
        if args.debug:
            raise
        print(f"streamvid: {exc}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        return EXIT_ERROR
    except Exception as exc:  # an unexpected failure: one line unless --debug
        if args.debug:
            raise
        print(f"streamvid: unexpected error: {type(exc).__name__}: {exc} (run with --debug for details)",
              file=sys.stderr)
        return EXIT_ERROR


if __name__ == "__main__":
    sys.exit(main())
