"""What turns frames into memory and memory into answers, per kind of preset.

A backend gives the StreamAgent four things: a frame pipeline (``process(frames) → KeptFrame``),
the encoders memory searches with, a caption for a closed event, and a streamed answer from the
blocks retrieval chose. ``VLMBackend`` does this with a Video-LLM reading stored visual tokens;
``streamvid.offline.OfflineBackend`` with perception captions read by a small text LLM.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import torch

from streamvid.config import AgentConfig
from streamvid.pipeline import FramePipeline, Step
from streamvid.prompt import PromptBlock
from streamvid.types import Event, Frame

CAPTION_INSTRUCTION = "Describe what happens in this clip in one short factual sentence."


@dataclass
class AnswerRun:
    """A started answer: text pieces to iterate, and the timings once they are exhausted."""

    pieces: Iterator[str]
    timings: Callable[[], dict[str, float]]
    # answer text → ids of the prompt's blocks the answer drew on (None: all of them are cited)
    used: Callable[[str], set[int]] | None = None


class Backend(Protocol):
    key_dim: int
    token_dim: int
    image_encoder: Callable[[np.ndarray], torch.Tensor] | None  # None: memory is not searchable by image
    # True: every event gets its caption stored (it is memory content, cheap to make); the captions
    # feed still follows the speak/silence policy. False: only the events the policy speaks for.
    caption_every_event: bool

    def process(self, frames: Sequence[Frame]) -> list[Step]: ...

    def encode_text(self, texts: list[str]) -> torch.Tensor: ...

    def query_tokens(self, question: str) -> torch.Tensor | None: ...

    def caption(self, event: Event) -> str: ...

    def answer(self, blocks: Sequence[PromptBlock], question: str, *, history: Sequence[tuple[str, str]],
               now: float | None, max_new_tokens: int, do_sample: bool, temperature: float, top_p: float,
               seed: int, captions: Mapping[int, str] | None = None,
               scores: Mapping[int, float] | None = None) -> AnswerRun: ...


def event_block(event: Event) -> PromptBlock:
    """An event's stored tokens as a prompt block (the tokens must be in RAM)."""
    return PromptBlock(t_start=event.t_start, t_end=event.t_end, tokens=event.tokens,
                       token_times=event.token_times, positions=event.token_positions, grid=event.grid,
                       event_id=event.id)


class VLMBackend:
    """A Video-LLM (vision tower tokens in memory) with an open_clip retrieval encoder."""

    caption_every_event = False

    def __init__(self, config: AgentConfig, llm: Any = None, encoder: Any = None) -> None:
        from streamvid.encoders import RetrievalEncoder
        from streamvid.models import load_video_llm

        self.config = config
        self.llm = llm or load_video_llm(config.model, device=config.device, dtype=config.dtype, seed=config.seed)
        self.encoder = encoder or RetrievalEncoder(config.clip_model, config.clip_pretrained, device=config.device,
                                                   dtype=config.dtype, seed=config.seed)
        self.pipeline = FramePipeline(config, self.encoder, self.llm)
        self.key_dim = self.encoder.dim
        self.token_dim = self.llm.hidden_size
        self.image_encoder = self.encoder.encode_frames

    def process(self, frames: Sequence[Frame]) -> list[Step]:
        return self.pipeline.process(frames)

    def encode_text(self, texts: list[str]) -> torch.Tensor:
        return self.encoder.encode_text(texts)

    def query_tokens(self, question: str) -> torch.Tensor:
        return self.llm.embed_text(question)

    def caption(self, event: Event) -> str:
        inputs = self.llm.build_prompt([event_block(event)], CAPTION_INSTRUCTION)
        text, _ = self.llm.generate_text(inputs, max_new_tokens=self.config.caption_tokens)
        return " ".join(text.split())

    def answer(self, blocks: Sequence[PromptBlock], question: str, *, history: Sequence[tuple[str, str]],
               now: float | None, max_new_tokens: int, do_sample: bool, temperature: float, top_p: float,
               seed: int, captions: Mapping[int, str] | None = None,
               scores: Mapping[int, float] | None = None) -> AnswerRun:
        inputs = self.llm.build_prompt(blocks, question, history=history, now=now)
        stream = self.llm.generate(inputs, max_new_tokens=max_new_tokens, do_sample=do_sample,
                                   temperature=temperature, top_p=top_p, seed=seed)
        return AnswerRun(pieces=iter(stream), timings=lambda: stream.stats.as_dict())


def make_backend(config: AgentConfig, llm: Any = None, encoder: Any = None) -> Backend:
    if config.model == "offline":
        from streamvid.offline import OfflineBackend

        return OfflineBackend(config)
    return VLMBackend(config, llm=llm, encoder=encoder)
