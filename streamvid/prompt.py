"""Prompt assembly: retrieved memory blocks + a question → the embeddings a Video-LLM reads.

Family-agnostic. Each model family describes how one visual item looks in its chat template
(a :class:`VisualSlot`); :func:`assemble_prompt` then

1. sorts the blocks chronologically,
2. writes one user turn under the family's OWN chat template: for each block its time label
   (``format_span``) followed by one visual item, then "Now: hh:mm:ss" for live streams,
   then the question,
3. tokenizes the templated text, expands each visual item to the block's token count of
   placeholder ids (plus the family's wrapper ids), looks up the text embeddings and puts the
   block's stored visual tokens where the placeholders are,
4. for M-RoPE models (Qwen2.5-VL), builds the 3×L (t, h, w) position ids itself: text tokens
   count up by one in all three axes; a visual token at grid (row, col) from a frame at time
   ``t`` gets ``(s + floor((t - block.t_start) · tokens_per_second), s + row, s + col)`` where
   ``s`` is the block's start position, so a token dropped from a frame never shifts the
   survivors (TimeChat-Online). Text after a block continues at the largest position used so
   far + 1, as Qwen2.5-VL's reference ``get_rope_index`` does.

Frames are never re-encoded here: the only visual input is the stored block tokens.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from streamvid.errors import ModelError, QuestionError
from streamvid.types import TokenSet, format_span, format_time


class PromptBlock(TokenSet):
    """One retrieved piece of memory to show the model: a TokenSet with its span and source.

    ``PromptBlock(t_start, t_end, tokens [n, d], token_times [n], positions [n], grid, event_id=-1,
    sizes=None)``; Dimensions and dtypes as :class:`~streamvid.types.TokenSet` (``token_times`` is
    its ``times``; sizes default to 1). event_id is the memory event the tokens came from (-1 for
    short-term frames). Times and positions given as arrays or lists are taken as tensors once, here.
    ``source`` names the video the block comes from when a prompt mixes videos (a library answer);
    it is written before the block's time label. "" (the default): the agent's own stream.
    """

    error = ModelError
    source = ""

    def __init__(self, t_start: float, t_end: float, tokens: torch.Tensor, token_times: torch.Tensor | np.ndarray,
                 positions: torch.Tensor | np.ndarray, grid: tuple[int, int], event_id: int = -1,
                 sizes: torch.Tensor | None = None) -> None:
        self.t_start, self.t_end, self.event_id = float(t_start), float(t_end), int(event_id)
        if not isinstance(tokens, torch.Tensor) or tokens.ndim != 2:
            raise ModelError(f"PromptBlock(event {self.event_id}): tokens must be [n, d], got "
                             f"{list(getattr(tokens, 'shape', []))}")
        device = tokens.device
        self.tokens = tokens
        self.times = torch.as_tensor(token_times, dtype=torch.float64, device=device)
        self.positions = torch.as_tensor(positions, device=device)
        self.sizes = torch.ones(tokens.shape[0], device=device) if sizes is None else sizes
        self.grid = grid
        self._check()
        gh, gw = self.grid
        if self.n and (int(self.positions.min()) < 0 or int(self.positions.max()) >= gh * gw):
            raise ModelError(f"PromptBlock(event {self.event_id}): positions outside the {gh}x{gw} grid")
        if self.t_end < self.t_start:
            raise ModelError(f"PromptBlock(event {self.event_id}): t_end {self.t_end} < t_start {self.t_start}")

    @classmethod
    def of(cls, visual: TokenSet, t_start: float, t_end: float, event_id: int = -1) -> PromptBlock:
        """A block showing ``visual`` for the span [t_start, t_end]."""
        return cls(t_start, t_end, visual.tokens, visual.times, visual.positions, visual.grid, event_id, visual.sizes)

    @property
    def token_times(self) -> torch.Tensor:
        """[n] float64 seconds of each token's frame (the TokenSet's ``times``)."""
        return self.times

    def __repr__(self) -> str:
        return f"PromptBlock(event {self.event_id}, {format_span(self.t_start, self.t_end)}, n={self.n})"


@dataclass(frozen=True)
class VisualSlot:
    """How one visual item appears in a family's prompt.

    marker:         the text the chat template writes for one visual content item
                    (e.g. "<image>", "<|video_pad|>", "<video>")
    content_type:   the message content type that makes the template write ``marker``
    placeholder_id: the token id whose embeddings are replaced by visual tokens
    prefix_ids:     token ids written before the visual tokens (e.g. <fake_token_around_image>)
    suffix_ids:     token ids written after them
    trailing:       [k, d] learned embeddings appended after each block's tokens
                    (LLaVA-OneVision's image_newline); they also sit on placeholder ids
    """

    marker: str
    content_type: str
    placeholder_id: int
    prefix_ids: tuple[int, ...] = ()
    suffix_ids: tuple[int, ...] = ()
    trailing: torch.Tensor | None = None


@dataclass(frozen=True)
class MRopeSpec:
    """Qwen2.5-VL's M-RoPE time scale: temporal position ids per second of video."""

    tokens_per_second: float


@dataclass(frozen=True)
class Segment:
    """A contiguous run of prompt positions.

    kind:   "text" (template, time labels, question), "visual" (a block's stored tokens) or
            "special" (learned non-text embeddings such as LLaVA-OneVision's image_newline)
    start:  index of its first position in the prompt; length: how many positions
    t_start, t_end, event_id: the block's, for visual segments (None / -1 otherwise)
    """

    kind: str
    start: int
    length: int
    t_start: float | None = None
    t_end: float | None = None
    event_id: int = -1


@dataclass
class PromptInputs:
    """Everything the LM needs for prefill, and the layout for inspection.

    inputs_embeds: [1, L, d_llm] in the model's dtype and device
    input_ids:     [1, L] long; visual positions hold the family's placeholder id
    position_ids:  [3, 1, L] long for M-RoPE models, else None (the model counts 0..L-1)
    next_position: the position id the first generated token takes
    segments:      the layout, in order, covering 0..L-1
    text:          the templated text with one marker per block (for reading, not for the model)
    blocks:        the blocks in the order they appear (chronological)
    """

    inputs_embeds: torch.Tensor
    input_ids: torch.Tensor
    position_ids: torch.Tensor | None
    next_position: int
    segments: list[Segment]
    text: str
    blocks: list[PromptBlock] = field(default_factory=list)

    @property
    def n_prompt_tokens(self) -> int:
        return int(self.inputs_embeds.shape[1])

    def visual_segments(self) -> list[Segment]:
        return [s for s in self.segments if s.kind == "visual"]


def sort_blocks(blocks: Sequence[PromptBlock]) -> list[PromptBlock]:
    """Blocks in chronological order (by start, then end, then event id), whatever order they came in;
    blocks of several videos (``source``) video by video, each in time order."""
    return sorted(blocks, key=lambda b: (b.source, b.t_start, b.t_end, b.event_id))


def order_block_tokens(block: PromptBlock) -> torch.Tensor:
    """Indices that put a block's tokens frame by frame in time, row-major inside a frame. [n] long."""
    by_position = torch.argsort(block.positions, stable=True)
    return by_position[torch.argsort(block.times[by_position], stable=True)]


def build_messages(
    blocks: Sequence[PromptBlock],
    question: str,
    content_type: str,
    *,
    history: Sequence[tuple[str, str]] = (),
    now: float | None = None,
    instruction: str | None = None,
) -> list[dict]:
    """Chat messages in the processor format: optional system turn, past (user, assistant) turns,
    and one user turn holding "[time] <visual>" per block (blocks already sorted), "Now: …", question."""
    messages: list[dict] = []
    if instruction:
        messages.append({"role": "system", "content": [{"type": "text", "text": instruction}]})
    for user_text, assistant_text in history:
        messages.append({"role": "user", "content": [{"type": "text", "text": user_text}]})
        messages.append({"role": "assistant", "content": [{"type": "text", "text": assistant_text}]})
    content: list[dict] = []
    for block in blocks:
        label = f"{block.source} " if block.source else ""
        content.append({"type": "text", "text": label + format_span(block.t_start, block.t_end) + " "})
        content.append({"type": content_type})
        content.append({"type": "text", "text": "\n"})
    if now is not None:
        content.append({"type": "text", "text": f"Now: {format_time(now)}\n"})
    content.append({"type": "text", "text": question})
    messages.append({"role": "user", "content": content})
    return messages


def assemble_prompt(
    blocks: Sequence[PromptBlock],
    question: str,
    *,
    apply_template: Callable[[list[dict]], str],
    tokenize: Callable[[str], list[int]],
    embed: Callable[[torch.Tensor], torch.Tensor],
    slot: VisualSlot,
    hidden_size: int,
    mrope: MRopeSpec | None = None,
    history: Sequence[tuple[str, str]] = (),
    now: float | None = None,
    instruction: str | None = None,
) -> PromptInputs:
    """Build :class:`PromptInputs` from stored blocks (see the module docstring for the layout).

    apply_template: messages → templated text (the family's chat template, generation prompt added)
    tokenize:       text → token ids without added special tokens
    embed:          [L] long ids → [L, d] input embeddings of the LM
    """
    if not isinstance(question, str) or not question.strip():
        raise QuestionError("the question is empty; ask something in words")
    ordered = sort_blocks(blocks)
    for b in ordered:
        if b.tokens.shape[1] != hidden_size:
            raise ModelError(
                f"block of event {b.event_id} has {b.tokens.shape[1]}-d tokens but this model reads "
                f"{hidden_size}-d tokens; the memory was written by another model"
            )
    text = apply_template(build_messages(ordered, question, slot.content_type, history=history, now=now,
                                         instruction=instruction))
    pieces = text.split(slot.marker)
    if len(pieces) != len(ordered) + 1:
        raise ModelError(
            f"the chat template wrote {len(pieces) - 1} visual markers {slot.marker!r} for {len(ordered)} blocks"
        )

    n_trailing = 0 if slot.trailing is None else int(slot.trailing.shape[0])
    ids: list[int] = []
    segments: list[Segment] = []
    visual_runs: list[tuple[int, PromptBlock, torch.Tensor]] = []  # (start, block, token order)

    def add_text(token_ids: Sequence[int]) -> None:
        if not token_ids:
            return
        if segments and segments[-1].kind == "text":
            last = segments.pop()
            segments.append(Segment("text", last.start, last.length + len(token_ids)))
        else:
            segments.append(Segment("text", len(ids), len(token_ids)))
        ids.extend(token_ids)

    for i, piece in enumerate(pieces):
        add_text(tokenize(piece))
        if i == len(ordered):
            break
        block = ordered[i]
        add_text(slot.prefix_ids)
        visual_runs.append((len(ids), block, order_block_tokens(block)))
        if block.n:
            segments.append(Segment("visual", len(ids), block.n, block.t_start, block.t_end, block.event_id))
            ids.extend([slot.placeholder_id] * block.n)
        if n_trailing:
            segments.append(Segment("special", len(ids), n_trailing, event_id=block.event_id))
            ids.extend([slot.placeholder_id] * n_trailing)
        add_text(slot.suffix_ids)

    input_ids = torch.tensor(ids, dtype=torch.long)
    embeds = embed(input_ids).clone()  # [L, d]
    for start, block, order in visual_runs:
        if block.n:
            embeds[start:start + block.n] = block.tokens[order].to(embeds.device, embeds.dtype)
        if n_trailing:
            embeds[start + block.n:start + block.n + n_trailing] = slot.trailing.to(embeds.device, embeds.dtype)

    position_ids = None
    next_position = len(ids)
    if mrope is not None:
        position_ids, next_position = mrope_position_ids(len(ids), segments, visual_runs, mrope)
        position_ids = position_ids.to(embeds.device)

    return PromptInputs(
        inputs_embeds=embeds.unsqueeze(0),
        input_ids=input_ids.unsqueeze(0).to(embeds.device),
        position_ids=position_ids,
        next_position=next_position,
        segments=segments,
        text=text,
        blocks=ordered,
    )


def block_rope_positions(block: PromptBlock, order: torch.Tensor, start: int, mrope: MRopeSpec) -> torch.Tensor:
    """(t, h, w) M-RoPE positions of a block's tokens in prompt order. [3, n] long.

    t = start + floor((token time − block start) · tokens_per_second), h = start + row,
    w = start + col; the same rule Qwen2.5-VL applies to a video (second_per_grid · tokens_per_second
    per temporal grid step), evaluated at each token's own frame time.
    """
    gw = block.grid[1]
    pos = block.positions[order]
    times = block.times[order] - block.t_start
    t = torch.floor(times.clamp_min(0) * mrope.tokens_per_second).long()
    return (torch.stack([t, pos // gw, pos % gw]) + start).cpu()


def mrope_position_ids(
    length: int,
    segments: Sequence[Segment],
    visual_runs: Sequence[tuple[int, PromptBlock, torch.Tensor]],
    mrope: MRopeSpec,
) -> tuple[torch.Tensor, int]:
    """3-axis position ids for a laid-out prompt. Returns ([3, 1, L] long, next free position)."""
    pos = torch.zeros(3, length, dtype=torch.long)
    runs = {start: (block, order) for start, block, order in visual_runs}
    cursor = 0
    for seg in segments:
        sl = slice(seg.start, seg.start + seg.length)
        if seg.kind == "visual":
            block, order = runs[seg.start]
            pos[:, sl] = block_rope_positions(block, order, cursor, mrope)
            cursor = int(pos[:, sl].max()) + 1
        else:
            pos[:, sl] = torch.arange(cursor, cursor + seg.length).expand(3, -1)
            cursor += seg.length
    return pos.unsqueeze(1), cursor


_SPAN_RE = re.compile(r"\[(\d\d:\d\d:\d\d)–(\d\d:\d\d:\d\d)\]")


def time_labels(text: str) -> list[tuple[str, str]]:
    """The "[hh:mm:ss–hh:mm:ss]" labels in a prompt text, in order (for inspection and tests)."""
    return _SPAN_RE.findall(text)
