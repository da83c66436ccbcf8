"""Write deterministic test videos with known content, and a JSON manifest of what is where.

Every frame is a pure function of its timestamp: a background colour per scene (so scene cuts
are at known times), an optional shape per scene (a door, a car, or a ball that moves on a
known path), large on-screen text during given intervals, and "needle" frames (a magenta/green
checkerboard with "NEEDLE k") at given times. Frame times can be constant-rate or variable
(explicit PTS), and can start at a non-zero time.

Containers/codecs (picked from the file suffix): .mp4/.mkv/.mov/.ts → H.264 (libx264),
.avi → MPEG-4 part 2, .webm → VP9.

The bundled demo clip was made with exactly:

    .venv/bin/python scripts/make_sample_video.py --preset sample assets/sample.mp4 \
        --manifest assets/sample.json

Other examples:

    python scripts/make_sample_video.py out.mkv --duration 6 --fps 25 --size 320x240 --cuts 2,4 \
        --text "1:3:HELLO" --needle 4.5 --vfr --start-time 10
    python -c "from streamvid_bench.samples import write_video; print(write_video('a.avi', duration=2))"

As a module (``streamvid_bench.samples``): ``write_video(path, **options) -> manifest dict``;
``sample_clip(path)`` writes the demo clip; ``write_empty_video(path)`` writes a container with a
video stream and no frames; ``ensure_video(cache, name, **options)`` writes one once into a cache.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np

PALETTE = [(40, 70, 160), (50, 140, 60), (170, 50, 50), (200, 170, 40), (110, 50, 150), (40, 150, 160),
           (120, 120, 120), (230, 120, 40)]
CODECS = {".mp4": "libx264", ".mkv": "libx264", ".mov": "libx264", ".ts": "libx264", ".avi": "mpeg4",
          ".webm": "libvpx-vp9"}
NEEDLE_COLOURS = ((255, 0, 255), (0, 255, 0))


@dataclass(frozen=True)
class Scene:
    """[t_start, t_end) seconds (relative to the first frame) with one background and one shape.

    shape: None | "door" | "car" | "ball" (the ball moves left→right across the scene)."""

    t_start: float
    t_end: float
    colour: tuple[int, int, int]
    label: str = ""
    shape: str | None = None
    shape_colour: tuple[int, int, int] = (240, 220, 40)


@dataclass(frozen=True)
class Text:
    """Large centred text on screen during [t_start, t_end)."""

    t_start: float
    t_end: float
    text: str


def scenes_from_cuts(duration: float, cuts: Sequence[float], shape: str | None = "ball") -> list[Scene]:
    """Scenes separated at ``cuts``, coloured from a fixed palette, each with a moving ball."""
    bounds = [0.0, *sorted(c for c in cuts if 0 < c < duration), duration]
    return [Scene(a, b, PALETTE[i % len(PALETTE)], f"scene {i}", shape)
            for i, (a, b) in enumerate(zip(bounds[:-1], bounds[1:], strict=True))]


def frame_times(duration: float, fps: float, vfr: bool = False, seed: int = 0) -> list[float]:
    """Frame times in seconds from 0. VFR: each gap is 1, 2 or 3 nominal frame intervals, in
    runs, rounded to whole milliseconds (exact in both 1/1000 and 1/90000 time bases)."""
    if not vfr:
        return [i / fps for i in range(max(1, math.ceil(duration * fps - 1e-9)))]
    rng = np.random.default_rng(seed)
    times, t = [], 0.0
    while t < duration - 1e-9:
        times.append(round(t, 3))
        step = int(rng.integers(1, 4))
        t = round(t + step / fps, 3)
    return times


def ball_position(scene: Scene, t: float, width: int, height: int) -> tuple[int, int]:
    """Centre (x, y) in pixels of the ball at time t: left to right across the scene, on a sine."""
    u = (t - scene.t_start) / max(scene.t_end - scene.t_start, 1e-6)
    r = ball_radius(width, height)
    x = r + u * (width - 2 * r)
    y = height / 2 + 0.25 * height * math.sin(2 * math.pi * u)
    return int(round(x)), int(round(y))


def ball_radius(width: int, height: int) -> int:
    return max(3, min(width, height) // 10)


def _draw_shape(img: np.ndarray, scene: Scene, t: float) -> None:
    h, w = img.shape[:2]
    c = scene.shape_colour
    if scene.shape == "ball":
        cv2.circle(img, ball_position(scene, t, w, h), ball_radius(w, h), c, -1, cv2.LINE_AA)
    elif scene.shape == "door":
        x0, x1, y0, y1 = int(w * 0.38), int(w * 0.62), int(h * 0.12), h
        cv2.rectangle(img, (x0, y0), (x1, y1), c, -1)
        cv2.rectangle(img, (x0, y0), (x1, y1), (30, 30, 30), max(1, w // 160))
        cv2.circle(img, (x1 - (x1 - x0) // 6, (y0 + y1) // 2), max(2, w // 80), (230, 200, 60), -1)
    elif scene.shape == "car":
        road = int(h * 0.78)
        cv2.rectangle(img, (0, road), (w, h), (60, 60, 60), -1)
        x0, x1 = int(w * 0.2), int(w * 0.8)
        cv2.rectangle(img, (x0, int(h * 0.5)), (x1, road - h // 20), c, -1)
        cv2.rectangle(img, (int(w * 0.33), int(h * 0.33)), (int(w * 0.66), int(h * 0.5)), c, -1)
        for cx in (int(w * 0.32), int(w * 0.68)):
            cv2.circle(img, (cx, road - h // 20), max(3, h // 10), (20, 20, 20), -1)
    elif scene.shape is not None:
        raise ValueError(f"unknown shape {scene.shape!r}; use door, car, ball or None")


def draw_text(img: np.ndarray, text: str, *, height: float = 0.25, top: float | None = 0.12) -> None:
    """White text with a black outline, centred across, at most 80 % of the width and ``height`` of the
    frame's height; its top at ``top`` × the height (None: centred vertically)."""
    h, w = img.shape[:2]
    font = cv2.FONT_HERSHEY_DUPLEX
    (tw, th), _ = cv2.getTextSize(text, font, 1.0, 2)
    scale = min(0.8 * w / tw, height * h / th)
    thick = max(1, int(round(2 * scale)))
    (tw, th), _ = cv2.getTextSize(text, font, scale, thick)
    org = ((w - tw) // 2, (h + th) // 2 if top is None else int(h * top) + th)
    cv2.putText(img, text, org, font, scale, (0, 0, 0), thick + max(2, thick), cv2.LINE_AA)
    cv2.putText(img, text, org, font, scale, (255, 255, 255), thick, cv2.LINE_AA)


def needle_image(width: int, height: int, k: int) -> np.ndarray:
    """The k-th needle frame: a magenta/green checkerboard with "NEEDLE k" on it. [H, W, 3] uint8."""
    cell = max(4, min(width, height) // 8)
    yy, xx = np.mgrid[0:height, 0:width]
    board = ((yy // cell + xx // cell) % 2).astype(bool)
    img = np.empty((height, width, 3), np.uint8)
    img[board], img[~board] = NEEDLE_COLOURS
    draw_text(img, f"NEEDLE {k}")
    return img


def render_frame(t: float, width: int, height: int, scenes: Sequence[Scene],
                 texts: Sequence[Text]) -> np.ndarray:
    """The (non-needle) frame at time t: [height, width, 3] uint8 RGB."""
    scene = next((s for s in scenes if s.t_start <= t < s.t_end), scenes[-1])
    img = np.empty((height, width, 3), np.uint8)
    img[:] = scene.colour
    _draw_shape(img, scene, t)
    for text in texts:
        if text.t_start <= t < text.t_end:
            draw_text(img, text.text)
    return img


def write_video(path: str | Path, *, duration: float = 4.0, fps: float = 30.0, width: int = 320,
                height: int = 240, cuts: Sequence[float] = (), scenes: Sequence[Scene] | None = None,
                texts: Sequence[Text] = (), needles: Sequence[float] = (), vfr: bool = False,
                start_time: float = 0.0, codec: str | None = None, crf: int = 23, gop: int | None = None,
                faststart: bool = False, threads: int = 1, seed: int = 0, progress: bool = False) -> dict:
    """Encode a video at ``path`` and return its manifest (all times relative to the first frame;
    the container's first PTS is ``start_time``)."""
    path = Path(path)
    codec = codec or CODECS.get(path.suffix.lower())
    if codec is None:
        raise ValueError(f"no default codec for {path.suffix!r}; pass codec= or use one of {sorted(CODECS)}")
    if width % 2 or height % 2:
        raise ValueError("width and height must be even (yuv420p)")
    if codec == "mpeg4" and (vfr or start_time * fps != int(start_time * fps)):
        raise ValueError("MPEG-4/AVI here is constant-rate only: no vfr, start_time a multiple of 1/fps")
    scenes = list(scenes) if scenes is not None else scenes_from_cuts(duration, cuts)
    times = frame_times(duration, fps, vfr, seed)
    needle_frames = {}
    for k, t_needle in enumerate(needles):
        i = next((i for i, t in enumerate(times) if t >= t_needle - 1e-9), None)
        if i is None:
            raise ValueError(f"needle at {t_needle} s is past the end ({duration} s)")
        needle_frames[i] = k

    # mpeg4 needs a time base under 2^16; the others take 1/90000 so VFR times are exact.
    time_base = Fraction(1, round(fps)) if codec == "mpeg4" else Fraction(1, 90000)
    container_options = {"movflags": "+faststart"} if faststart else {}
    path.parent.mkdir(parents=True, exist_ok=True)
    container = av.open(str(path), "w", container_options=container_options)
    stream = container.add_stream(codec, rate=Fraction(fps).limit_denominator(1001))
    stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
    stream.codec_context.time_base = time_base
    stream.codec_context.thread_count = threads
    if gop is not None:
        stream.codec_context.gop_size = gop
    if codec == "libx264":
        stream.options = {"preset": "veryfast", "crf": str(crf), "threads": str(threads)}
    elif codec == "libvpx-vp9":
        stream.options = {"deadline": "realtime", "cpu-used": "8", "crf": str(crf + 10), "b": "0",
                          "threads": str(threads)}
    elif codec == "mpeg4":
        stream.bit_rate = int(width * height * fps * 0.15)

    iterator = enumerate(times)
    if progress:
        from tqdm import tqdm

        iterator = tqdm(iterator, total=len(times), desc=path.name, unit="frame")
    for i, t in iterator:
        img = needle_image(width, height, needle_frames[i]) if i in needle_frames else \
            render_frame(t, width, height, scenes, texts)
        frame = av.VideoFrame.from_ndarray(img, format="rgb24")
        frame.pts = round((t + start_time) / time_base)
        frame.time_base = time_base
        for packet in stream.encode(frame):
            container.mux(packet)
    for packet in stream.encode():
        container.mux(packet)
    container.close()

    ball_scenes = [s for s in scenes if s.shape == "ball"]
    return {
        "path": str(path),
        "codec": codec,
        "container": path.suffix.lower().lstrip("."),
        "width": width,
        "height": height,
        "fps": fps,
        "vfr": vfr,
        "start_time": start_time,
        "duration": duration,
        "frame_count": len(times),
        "frame_times": times,
        "cuts": [s.t_start for s in scenes[1:]],
        "scenes": [asdict(s) for s in scenes],
        "texts": [asdict(t) for t in texts],
        "needles": [{"k": k, "t": times[i], "frame_index": i} for i, k in sorted(needle_frames.items())],
        "moving_object": [{"scene": s.label, "t_start": s.t_start, "t_end": s.t_end, "radius":
                           ball_radius(width, height), "positions": [
                               [t, *ball_position(s, t, width, height)]
                               for t in np.arange(s.t_start, s.t_end, 1.0).tolist()]}
                          for s in ball_scenes],
    }


def write_empty_video(path: str | Path, width: int = 64, height: int = 64) -> None:
    """A container with an H.264 video stream header and no frames (a zero-length video)."""
    container = av.open(str(path), "w")
    stream = container.add_stream("libx264", rate=30)
    stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
    container.start_encoding()
    container.close()


SAMPLE_SCENES = [
    Scene(0.0, 10.0, (225, 215, 185), "hallway with a blue door", "door", (30, 70, 200)),
    Scene(10.0, 15.0, (40, 120, 60), "green field, a yellow ball rolls", "ball", (245, 220, 40)),
    Scene(15.0, 20.0, (110, 50, 150), "purple room, a white ball rolls", "ball", (245, 245, 245)),
    Scene(20.0, 30.0, (150, 190, 225), "street with a red car", "car", (210, 30, 30)),
    Scene(30.0, 36.0, (20, 20, 20), "dark end card", None),
]
SAMPLE_TEXTS = [Text(0.0, 10.0, "BLUE DOOR"), Text(20.0, 30.0, "RED CAR"), Text(30.0, 36.0, "THE END")]


def sample_clip(path: str | Path, progress: bool = False) -> dict:
    """The README's demo clip: 36 s, 480×270, 25 fps H.264, five scenes, text and one needle."""
    return write_video(path, duration=36.0, fps=25.0, width=480, height=270, scenes=SAMPLE_SCENES,
                       texts=SAMPLE_TEXTS, needles=[25.0], crf=26, gop=50, faststart=True, progress=progress)


def ensure_video(cache: str | Path, name: str, progress: bool = False, **options) -> Path:
    """A generated video in ``cache``, written once (the file name encodes ``options``; ``cuts`` excluded)."""
    cache = Path(cache)
    cache.mkdir(parents=True, exist_ok=True)
    tag = "_".join(f"{k}{v}" for k, v in sorted(options.items()) if k != "cuts")
    path = cache / f"{name}_{tag}.mp4"
    if not path.exists():
        tmp = path.with_suffix(".part.mp4")
        write_video(tmp, progress=progress, threads=2, **options)
        tmp.rename(path)
    return path


def _parse_text(spec: str) -> Text:
    start, end, text = spec.split(":", 2)
    return Text(float(start), float(end), text)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("output", help="video path; the suffix picks container and codec")
    parser.add_argument("--preset", choices=["sample"], help="'sample': the bundled demo clip")
    parser.add_argument("--duration", type=float, default=4.0)
    parser.add_argument("--fps", type=float, default=30.0)
    parser.add_argument("--size", default="320x240", help="WIDTHxHEIGHT, both even")
    parser.add_argument("--cuts", default="", help="comma-separated scene-cut times in seconds")
    parser.add_argument("--text", action="append", default=[], help="START:END:TEXT (repeatable)")
    parser.add_argument("--needle", type=float, action="append", default=[], help="needle time (repeatable)")
    parser.add_argument("--vfr", action="store_true", help="variable frame rate (explicit PTS)")
    parser.add_argument("--start-time", type=float, default=0.0, help="PTS of the first frame in seconds")
    parser.add_argument("--codec", help="override the codec the suffix picks")
    parser.add_argument("--crf", type=int, default=23)
    parser.add_argument("--gop", type=int, help="keyframe interval in frames")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--manifest", help="also write the manifest JSON here")
    parser.add_argument("--full", action="store_true", help="print frame_times in the manifest too")
    args = parser.parse_args(argv)

    if args.preset == "sample":
        manifest = sample_clip(args.output, progress=True)
    else:
        width, height = (int(v) for v in args.size.lower().split("x"))
        manifest = write_video(
            args.output, duration=args.duration, fps=args.fps, width=width, height=height,
            cuts=[float(c) for c in args.cuts.split(",") if c], texts=[_parse_text(s) for s in args.text],
            needles=args.needle, vfr=args.vfr, start_time=args.start_time, codec=args.codec, crf=args.crf,
            gop=args.gop, threads=args.threads, seed=args.seed, progress=True)
    if args.manifest:
        Path(args.manifest).write_text(json.dumps(manifest, indent=1) + "\n")
    shown = manifest if args.full else {k: v for k, v in manifest.items() if k != "frame_times"}
    print(json.dumps(shown, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
