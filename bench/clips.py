"""Generated evaluation clips with known content: textured scenes joined by cuts and fades, camera pans,
lighting drift, on-screen text, counted shapes, greyscale. Every frame is a pure function of (clip, t).

``Clip`` is the specification; ``render(clip, t)`` draws one frame; ``write_clip(clip, path)`` encodes it
(H.264) so the agent ingests it through its real file path; ``clip.cuts()`` lists the true boundaries
(a fade counts once, at its middle).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

import cv2
import numpy as np
from streamvid_bench.samples import draw_text

# Named scene colours, far apart in hue, each a (name, RGB) pair.
COLOURS = {
    "red": (200, 40, 40), "green": (40, 160, 60), "blue": (40, 70, 200), "yellow": (220, 200, 40),
    "purple": (120, 50, 160), "orange": (230, 120, 30), "cyan": (40, 170, 180), "pink": (230, 110, 170),
}


@dataclass(frozen=True)
class Overlay:
    """Something drawn over a scene during [t_start, t_end): text (centred, large) or ``count`` circles."""

    t_start: float
    t_end: float
    text: str = ""
    count: int = 0
    colour: str = "white"


@dataclass(frozen=True)
class Scene:
    """[t_start, t_end) of one shot.

    colour:  the scene's dominant colour name (a key of COLOURS)
    motion:  "static" | "pan" (the camera slides across a texture wider than the frame) |
             "drift" (lighting rises and falls by 15 % over the scene)
    enter:   how the scene starts: "cut", "fade" (cross-fade over ``fade_s``) or "black" (fade through black)
    """

    t_start: float
    t_end: float
    colour: str
    motion: str = "static"
    enter: str = "cut"
    fade_s: float = 1.0
    seed: int = 0


@dataclass(frozen=True)
class Clip:
    name: str
    scenes: tuple[Scene, ...]
    overlays: tuple[Overlay, ...] = ()
    grey: bool = False
    width: int = 320
    height: int = 240
    fps: float = 4.0
    meta: dict = field(default_factory=dict, compare=False)

    @property
    def duration(self) -> float:
        return self.scenes[-1].t_end

    def cuts(self) -> list[float]:
        """True event boundaries in seconds: each scene start after the first (a fade at its middle)."""
        out = []
        for s in self.scenes[1:]:
            out.append(s.t_start + (s.fade_s / 2 if s.enter in ("fade", "black") else 0.0))
        return out


def texture(colour: str, seed: int, width: int, height: int) -> np.ndarray:
    """A scene's texture [height, width, 3] uint8: blobs of shades of ``colour`` over a darker base."""
    rng = np.random.default_rng(seed)
    base = np.asarray(COLOURS[colour], dtype=np.float32)
    img = np.empty((height, width, 3), np.float32)
    img[:] = base * 0.8
    for _ in range(max(8, width * height // 3000)):
        shade = np.clip(base * rng.uniform(0.55, 1.2), 0, 255)
        centre = (int(rng.integers(0, width)), int(rng.integers(0, height)))
        axes = (int(rng.integers(6, max(8, width // 8))), int(rng.integers(6, max(8, height // 6))))
        cv2.ellipse(img, centre, axes, float(rng.uniform(0, 180)), 0, 360, shade.tolist(), -1, cv2.LINE_AA)
    noise = rng.normal(0, 6, size=img.shape).astype(np.float32)
    return np.clip(img + noise, 0, 255).astype(np.uint8)


_TEXTURES: dict[tuple, np.ndarray] = {}


def _scene_texture(scene: Scene, clip: Clip) -> np.ndarray:
    wide = 3 if scene.motion == "pan" else 1
    key = (scene.colour, scene.seed, clip.width * wide, clip.height)
    if key not in _TEXTURES:
        _TEXTURES[key] = texture(scene.colour, scene.seed, clip.width * wide, clip.height)
    return _TEXTURES[key]


def _scene_image(scene: Scene, clip: Clip, t: float) -> np.ndarray:
    tex = _scene_texture(scene, clip)
    u = (t - scene.t_start) / max(scene.t_end - scene.t_start, 1e-6)
    if scene.motion == "pan":
        x = int(round(u * (tex.shape[1] - clip.width)))
        return tex[:, x:x + clip.width].copy()
    img = tex.copy()
    if scene.motion == "drift":
        gain = 1.0 + 0.15 * math.sin(2 * math.pi * u)
        img = np.clip(img.astype(np.float32) * gain, 0, 255).astype(np.uint8)
    return img


def _draw_circles(img: np.ndarray, n: int, colour: str) -> None:
    h, w = img.shape[:2]
    r = max(4, min(w, h) // 14)
    rgb = (250, 250, 250) if colour == "white" else COLOURS[colour]
    for i in range(n):
        cx = int((i + 0.5) * w / n)
        cv2.circle(img, (cx, int(h * 0.78)), r, rgb, -1, cv2.LINE_AA)
        cv2.circle(img, (cx, int(h * 0.78)), r, (10, 10, 10), 2, cv2.LINE_AA)


def render(clip: Clip, t: float) -> np.ndarray:
    """The frame at time t: [height, width, 3] uint8 RGB."""
    i = next((k for k, s in enumerate(clip.scenes) if s.t_start <= t < s.t_end), len(clip.scenes) - 1)
    scene = clip.scenes[i]
    img = _scene_image(scene, clip, t)
    if i > 0 and scene.enter in ("fade", "black") and t < scene.t_start + scene.fade_s:
        a = (t - scene.t_start) / scene.fade_s  # 0 → 1 across the fade
        prev = _scene_image(clip.scenes[i - 1], clip, t)
        if scene.enter == "fade":
            img = cv2.addWeighted(prev, 1.0 - a, img, a, 0.0)
        else:
            img = (prev * max(0.0, 1 - 2 * a) if a < 0.5 else img * min(1.0, 2 * a - 1)).astype(np.uint8)
    for o in clip.overlays:
        if o.t_start <= t < o.t_end:
            if o.text:
                draw_text(img, o.text, height=0.2, top=None)
            if o.count:
                _draw_circles(img, o.count, o.colour)
    if clip.grey:
        img = cv2.cvtColor(cv2.cvtColor(img, cv2.COLOR_RGB2GRAY), cv2.COLOR_GRAY2RGB)
    return img


def frames(clip: Clip, fps: float | None = None) -> list[tuple[float, np.ndarray]]:
    """(t, rgb) at ``fps`` (default the clip's) from 0 to the end."""
    fps = fps or clip.fps
    n = int(math.floor(clip.duration * fps + 1e-9))
    return [(i / fps, render(clip, i / fps)) for i in range(n)]


def write_clip(clip: Clip, path: str | Path) -> Path:
    """Encode the clip as H.264 at ``clip.fps`` (constant rate, exact PTS). Returns the path."""
    import av

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    rate = Fraction(clip.fps).limit_denominator(1000)
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=rate)
        stream.width, stream.height, stream.pix_fmt = clip.width, clip.height, "yuv420p"
        stream.options = {"crf": "18", "preset": "veryfast", "tune": "stillimage"}
        for _, rgb in frames(clip):
            frame = av.VideoFrame.from_ndarray(rgb, format="rgb24")
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return path
