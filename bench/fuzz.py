"""A seeded corpus of damaged videos, and a runner that decodes each with every file backend.

``make_corpus(folder, n, seed)`` encodes a few tiny clips with streamvid_bench.samples (H.264 in MP4,
MP4 with its index first, Matroska and MPEG-TS; MPEG-4 Part 2 in AVI; VP9 in WebM), gives each a
metadata title, then writes ``n`` mutants: bit flips (anywhere, in the header, in the tail where an
MP4 keeps its index), truncations, header garbage, metadata bytes that are not UTF-8, container box
sizes and counts set to odd values, and swapped or duplicated chunks. The same seed gives the same
bytes.

``run_corpus(files, backends)`` decodes each file with each backend in worker processes (a crash
or a hang in FFmpeg cannot take the caller with it) and sorts every run into ``frames`` (decoded,
maybe after a TruncatedVideoWarning), ``source_error`` (a SourceError) or ``raw`` (anything else:
the bug this corpus looks for), ``timeout`` or ``crash``.

    python scripts/fuzz_sources.py --files 700 --seed 0      # 700 files × 3 backends = 2,100 runs
"""

from __future__ import annotations

import multiprocessing as mp
import random
import struct
import time
import warnings
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

MARKER = b"streamvid-fuzz-title-0123456789"
STARTUP_S = 300.0
BASES = (  # (file name, write_video options)
    ("h264.mp4", {}),
    ("faststart.mp4", {"faststart": True}),
    ("h264.mkv", {}),
    ("h264.ts", {}),
    ("mpeg4.avi", {}),
    ("vp9.webm", {}),
)
MUTATIONS = ("bitflip", "bitflip_head", "bitflip_tail", "truncate", "head_garbage", "prepend_garbage",
             "metadata_utf8", "box_size", "box_field", "swap_chunks", "duplicate_chunk", "zero_run", "combo")
# MP4/MOV boxes whose size or first fields are worth breaking (sizes, counts, offsets, dimensions).
MP4_BOXES = (b"ftyp", b"moov", b"mvhd", b"trak", b"tkhd", b"mdia", b"mdhd", b"hdlr", b"minf", b"stbl", b"stsd",
             b"stts", b"ctts", b"stss", b"stsc", b"stsz", b"stco", b"co64", b"mdat", b"avcC", b"udta", b"meta",
             b"ilst", b"elst", b"edts")


def write_bases(folder: Path, seconds: float = 1.0, fps: float = 10.0) -> list[Path]:
    """The intact clips the mutants start from (64×48), each with MARKER as its metadata title."""
    import av
    from streamvid_bench.samples import write_video

    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for name, options in BASES:
        plain = folder / f"plain-{name}"
        write_video(plain, duration=seconds, fps=fps, width=64, height=48, gop=5, **options)
        titled = folder / f"base-{name}"
        # Remux (no re-encode) with a title, so a metadata mutation has known bytes to damage.
        # bitexact: no random Matroska UIDs or dates, so a seed always gives the same bytes.
        muxer = {"movflags": "+faststart"} if options.get("faststart") else {}
        with av.open(str(plain)) as src, av.open(str(titled), "w", options={"fflags": "+bitexact"},
                                                 container_options=muxer) as dst:
            dst.metadata["title"] = MARKER.decode()
            dst.metadata["comment"] = MARKER.decode()
            in_stream = src.streams.video[0]
            out_stream = dst.add_stream_from_template(in_stream)
            for packet in src.demux(in_stream):
                if packet.dts is None:
                    continue
                packet.stream = out_stream
                dst.mux(packet)
        plain.unlink()
        out.append(titled)
    return out


def _flip(data: bytearray, rng: random.Random, lo: int, hi: int, count: int) -> None:
    hi = max(lo + 1, min(hi, len(data)))
    for _ in range(count):
        pos = rng.randrange(lo, hi)
        data[pos] ^= 1 << rng.randrange(8)


def _box_offsets(data: bytes) -> list[int]:
    """Offsets of the 4-byte type names of the MP4 boxes in ``data`` (their size field is 4 bytes before)."""
    found = []
    for name in MP4_BOXES:
        start = data.find(name)
        while start >= 4:
            found.append(start)
            start = data.find(name, start + 4)
    return sorted(found)


def mutate(data: bytes, kind: str, rng: random.Random) -> bytes:
    """One damaged copy of ``data`` (a whole file) by mutation ``kind``."""
    out = bytearray(data)
    n = len(out)
    if kind == "bitflip":
        _flip(out, rng, 0, n, rng.choice((1, 2, 8, 32, 128)))
    elif kind == "bitflip_head":
        _flip(out, rng, 0, min(n, 2048), rng.choice((1, 2, 4, 16)))
    elif kind == "bitflip_tail":
        _flip(out, rng, max(0, n - 4096), n, rng.choice((1, 2, 4, 16)))
    elif kind == "truncate":
        cut = rng.choice((rng.randrange(1, max(2, min(n, 512))), rng.randrange(1, n)))
        del out[cut:]
    elif kind == "head_garbage":
        k = rng.choice((4, 16, 64, 512))
        out[:k] = rng.randbytes(k)
    elif kind == "prepend_garbage":
        out[:0] = rng.randbytes(rng.choice((1, 7, 188, 1000)))
    elif kind == "metadata_utf8":
        # Bytes that are not UTF-8 where the container keeps its title/comment strings.
        bad = bytes(rng.choice((0xFF, 0xFE, 0xC0, 0xC3, 0xE2, 0x80, 0xED, 0xA0)) for _ in range(len(MARKER)))
        start = out.find(MARKER)
        while start >= 0:
            out[start:start + len(MARKER)] = bad if rng.random() < 0.8 else bad[: rng.randrange(1, len(bad))].ljust(
                len(MARKER), b"\x00")
            start = out.find(MARKER, start + 1)
    elif kind == "box_size":
        offsets = _box_offsets(bytes(out))
        for pos in rng.sample(offsets, min(len(offsets), rng.choice((1, 1, 2)))) if offsets else ():
            value = rng.choice((0, 1, 7, 8, 0x7FFFFFFF, 0xFFFFFFFF, rng.randrange(1 << 32)))
            out[pos - 4:pos] = struct.pack(">I", value)
    elif kind == "box_field":
        offsets = _box_offsets(bytes(out))
        for pos in rng.sample(offsets, min(len(offsets), rng.choice((1, 2, 3)))) if offsets else ():
            at = pos + 4 + 4 * rng.randrange(0, 6)  # a field just after the box header
            if at + 4 <= len(out):
                out[at:at + 4] = struct.pack(">I", rng.choice((0, 1, 0xFFFF, 0x7FFFFFFF, 0xFFFFFFFF,
                                                               rng.randrange(1 << 32))))
    elif kind == "swap_chunks":
        size = rng.choice((64, 256, 1024))
        if n > 2 * size:
            a, b = sorted(rng.sample(range(0, n - size), 2))
            if b - a >= size:
                out[a:a + size], out[b:b + size] = out[b:b + size], out[a:a + size]
    elif kind == "duplicate_chunk":
        size = rng.choice((16, 188, 1024))
        a = rng.randrange(0, max(1, n - size))
        b = rng.randrange(0, n)
        out[b:b] = out[a:a + size]
    elif kind == "zero_run":
        size = rng.choice((4, 64, 512, 4096))
        a = rng.randrange(0, max(1, n - 1))
        out[a:a + size] = bytes(len(out[a:a + size]))
    elif kind == "combo":
        data2 = bytes(out)
        for sub in rng.sample(MUTATIONS[:-1], 2):
            data2 = mutate(data2, sub, rng)
        return data2
    else:
        raise ValueError(f"unknown mutation {kind!r}")
    return bytes(out)


def make_corpus(folder: str | Path, n: int, seed: int = 0, bases: Sequence[Path] | None = None) -> list[Path]:
    """``n`` mutated files under ``folder``, cycling through the bases (made by write_bases unless
    given) and the mutations. The same bases and seed give the same files (the encoders themselves
    may differ by a few bytes between runs, so a repeat that must match passes ``bases``)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    bases = list(bases) if bases is not None else write_bases(folder / "bases")
    rng = random.Random(seed)
    datas = [(p, p.read_bytes()) for p in bases]
    files = []
    for i in range(n):
        base, data = datas[i % len(datas)]
        kind = MUTATIONS[(i // len(datas)) % len(MUTATIONS)]
        path = folder / f"{i:05d}-{kind}-{base.name.removeprefix('base-')}"
        path.write_bytes(mutate(data, kind, rng))
        files.append(path)
    return files


@dataclass
class Report:
    """Counts per outcome, and the runs that were neither frames nor a SourceError."""

    counts: Counter = field(default_factory=Counter)
    by_backend: dict[str, Counter] = field(default_factory=dict)
    bad: list[tuple[str, str, str, str]] = field(default_factory=list)  # (file, backend, outcome, detail)
    slowest_s: float = 0.0

    @property
    def runs(self) -> int:
        return sum(self.counts.values())


def decode_one(path: str, backend: str) -> tuple[str, str, float]:
    """Decode every frame of ``path`` with ``backend`` ("auto": streamvid's own choice and fallbacks)
    → (outcome, detail, seconds)."""
    from streamvid.errors import SourceError
    from streamvid.sources import open_source

    t0 = time.perf_counter()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            frames = 0
            with open_source(path, backend=None if backend == "auto" else backend) as src:
                for _ in src:
                    frames += 1
        return "frames", str(frames), time.perf_counter() - t0
    except SourceError as exc:
        return "source_error", str(exc)[:300], time.perf_counter() - t0
    except Exception as exc:  # the bug this corpus hunts: anything that is not a SourceError
        return "raw", f"{type(exc).__module__}.{type(exc).__name__}: {str(exc)[:300]}", time.perf_counter() - t0


def installed_backends() -> list[str]:
    from streamvid.sources.decoders import backend_available

    return [b for b in ("decord", "pyav", "opencv") if backend_available(b)]


def _worker(jobs: list[tuple[str, str]], conn) -> None:
    import streamvid.sources  # noqa: F401 (imports first, so a job's time is its decoding alone)

    conn.send("ready")
    for path, backend in jobs:
        conn.send(decode_one(path, backend))
    conn.close()


def _run_share(jobs: list[tuple[str, str]], timeout_s: float, results: list) -> None:
    """Run ``jobs`` in one spawned worker at a time, in order; a hang (no result in ``timeout_s``)
    or a crash (the worker died) is recorded for that job and a new worker takes the rest."""
    ctx = mp.get_context("spawn")
    i = 0
    while i < len(jobs):
        parent, child = ctx.Pipe(duplex=False)
        proc = ctx.Process(target=_worker, args=(jobs[i:], child), daemon=True)
        proc.start()
        child.close()
        try:
            # A new worker imports torch, FFmpeg bindings, …: minutes on a loaded machine, not a hang.
            if not parent.poll(STARTUP_S) or parent.recv() != "ready":
                raise RuntimeError(f"a decoding worker did not start within {STARTUP_S:g} s")
            while i < len(jobs):
                if not parent.poll(timeout_s):
                    results.append((jobs[i], ("timeout", f"no result within {timeout_s:g} s", timeout_s)))
                    i += 1
                    break
                try:
                    results.append((jobs[i], parent.recv()))
                except EOFError:
                    proc.join(5)
                    results.append((jobs[i], ("crash", f"the decoding process died (exit code {proc.exitcode})",
                                              0.0)))
                    i += 1
                    break
                i += 1
        finally:
            proc.kill()
            proc.join()
            parent.close()


def run_corpus(files: Sequence[str | Path], backends: Sequence[str] | None = None, workers: int = 2,
               timeout_s: float = 20.0) -> Report:
    """Decode every file with every backend in ``workers`` spawned processes; see the module docstring."""
    import threading

    backends = list(backends or installed_backends())
    jobs = [(str(f), b) for f in files for b in backends]
    results: list = []
    threads = [threading.Thread(target=_run_share, args=(jobs[w::workers], timeout_s, results))
               for w in range(max(1, workers))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    report = Report(by_backend={b: Counter() for b in backends})
    for (path, backend), (outcome, detail, seconds) in results:
        if outcome in ("frames", "source_error") and seconds > timeout_s:
            outcome, detail = "timeout", f"took {seconds:.1f} s"
        report.slowest_s = max(report.slowest_s, seconds)
        report.counts[outcome] += 1
        report.by_backend[backend][outcome] += 1
        if outcome not in ("frames", "source_error"):
            report.bad.append((path, backend, outcome, detail))
    return report
