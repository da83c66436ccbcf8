"""The Backend protocol: what the StreamAgent needs from a kind of preset, and nothing more.

A backend turns frames into memory (``process``), gives memory its encoders (``encode_text``,
``image_encoder``, ``query_tokens``), captions closed events and answers from the blocks
retrieval chose (``answer(context, options)``). It splits ``process`` into ``stages()`` for
staged ingestion, times them in ``timer`` (``stage_ms()`` reads it), and lends its loaded models
to a new backend with ``share(config)``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import numpy as np
import torch

from streamvid.config import AgentConfig
from streamvid.errors import ConfigError
from streamvid.generation import GenerationOptions
from streamvid.pipeline import StageTimer
from streamvid.prompt import PromptBlock
from streamvid.types import Event, Frame, FrameBatch

__all__ = ["AnswerContext", "AnswerRun", "Backend", "GenerationOptions", "check_same_models", "event_block"]

# Settings that pick the models: a backend is shared only under a config that agrees on all of them.
MODEL_FIELDS = ("backend", "model", "clip_model", "clip_pretrained", "device", "dtype")


@dataclass(frozen=True)
class AnswerContext:
    """What an answer is generated from (retrieval has already run).

    blocks:   the prompt's blocks, any order (the backend orders them)
    question: the user's question, stripped and checked
    history:  earlier (question, answer) turns of the dialogue, oldest first
    now:      the live stream's current time in seconds, or None for a file
    captions: event id → stored caption, for the events among the blocks that have one
    scores:   event id → retrieval score, for the events among the blocks that were searched for
    """

    blocks: Sequence[PromptBlock]
    question: str
    history: Sequence[tuple[str, str]] = ()
    now: float | None = None
    captions: Mapping[int, str] = field(default_factory=dict)
    scores: Mapping[int, float] = field(default_factory=dict)


@dataclass
class AnswerRun:
    """A started answer: text pieces to iterate, and the timings once they are exhausted."""

    pieces: Iterator[str]
    timings: Callable[[], dict[str, float]]
    # answer text → ids of the prompt's blocks the answer drew on (None: all of them are cited)
    used: Callable[[str], set[int]] | None = None
    # the (t0, t1) spans an extracted answer rests on: cite the events overlapping them (none: no citation)
    spans: list[tuple[float, float]] | None = None


@runtime_checkable
class Backend(Protocol):
    """One kind of preset (registered by name in ``streamvid.backends.registry``)."""

    key_dim: int  # retrieval keys: [key_dim], L2-normalised
    token_dim: int  # memory tokens: [n, token_dim]
    image_encoder: Callable[[np.ndarray], torch.Tensor] | None  # None: memory is not searchable by image
    # True: every event gets its caption stored (it is memory content, cheap to make); the captions
    # feed still follows the speak/silence policy. False: only the events the policy speaks for.
    caption_every_event: bool
    timer: StageTimer  # ingestion stage times; the agent adds its "memory" stage here

    def process(self, frames: Sequence[Frame]) -> FrameBatch:
        """Frames in source order → their kept frames and runs of dropped repeats, as one batch for
        ``MemoryBank.write_batch``."""
        ...

    def stages(self) -> list[tuple[str, Callable[[Any], Any]]]:
        """``process`` split into (name, function) stages that chain batch to batch, for staged ingestion
        (each may run on its own thread); one ("process", self.process) stage when it does not split."""
        ...

    def encode_text(self, texts: list[str]) -> torch.Tensor:
        """Texts → [len(texts), key_dim] L2-normalised retrieval keys."""
        ...

    def query_tokens(self, question: str) -> torch.Tensor | None:
        """The question in memory-token space, [token_dim], for read-time pruning (None: no pruning)."""
        ...

    def caption(self, event: Event) -> str:
        """One short caption of a closed event ("" when there is nothing to say)."""
        ...

    def answer(self, context: AnswerContext, options: GenerationOptions) -> AnswerRun:
        """Start streaming the answer to ``context.question`` from ``context.blocks``."""
        ...

    def stage_ms(self) -> dict[str, float]:
        """Mean ms per frame of each ingestion stage so far (e.g. key, gate, vision, compress, memory)."""
        ...

    def state(self) -> dict[str, Any]:
        """What this backend knows about the stream beyond the memory's tokens and keys, as JSON-able
        data that is saved with the memory (``MemoryBank.extra_state``); {} when there is nothing."""
        ...

    def load_state(self, state: dict[str, Any]) -> None:
        """Take back ``state()`` output from a saved memory; MemoryFormatError when it is malformed."""
        ...

    def share(self, config: AgentConfig) -> Backend:
        """A new backend of the same kind that uses this one's loaded models (weights are not loaded
        again) with fresh per-stream state, under ``config``, which must pick the same models.
        Backends are shared this way only; two agents never share one backend object."""
        ...


def check_same_models(old: AgentConfig, new: AgentConfig) -> None:
    """ConfigError unless ``new`` picks the same models as ``old`` (so sharing them is right)."""
    differ = [f for f in MODEL_FIELDS if getattr(old, f) != getattr(new, f)]
    if differ:
        raise ConfigError(f"cannot share models under settings that change {', '.join(differ)}; "
                          "build a new agent for other models")


def event_block(event: Event) -> PromptBlock:
    """An event's stored tokens as a prompt block (the tokens must be in RAM)."""
    return PromptBlock(t_start=event.t_start, t_end=event.t_end, tokens=event.tokens,
                       token_times=event.token_times, positions=event.token_positions, grid=event.grid,
                       event_id=event.id)
