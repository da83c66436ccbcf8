"""The VideoLLM protocol and the family-independent half of every adapter.

An adapter wraps one Hugging Face Video-LLM (its model and its own processor) and offers:

* ``frame_tokens(rgb)``  — what the LM reads for each frame: vision tower + connector/projector
  output, ``[B, n, d_llm]`` on a fixed per-frame grid, on the model's device. ``rgb`` is uint8
  ``[B, H, W, 3]`` (a torch tensor on the CPU, pinned, or already on the device; or numpy); the
  frames are uploaded (pinned, non-blocking on CUDA), resized and normalised on the model's
  device, and go through the tower ``batch_size`` frames at a time;
* ``embed_text(text)``   — the mean input embedding of a text's tokens, ``[d_llm]``;
* ``build_prompt(...)``  — stored blocks + question → :class:`streamvid.prompt.PromptInputs`;
* ``generate(inputs)``   — a :class:`TextStream` of decoded text pieces, greedy by default, whose
  ``stats`` (a :class:`GenerationStats`) hold prefill ms, time to first token, decode tok/s,
  prompt and new token counts once the stream is exhausted.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import torch

from streamvid.device import Frames, default_batch_size, frame_batches, upload_frames
from streamvid.errors import ModelError, QuestionError
from streamvid.prompt import MRopeSpec, PromptBlock, PromptInputs, VisualSlot, assemble_prompt


@dataclass
class VisualTokens:
    """Per-frame visual tokens exactly as the LM reads them.

    tokens:         [B, n, d_llm] (n = grid_h · grid_w), model dtype, model device
    grid:           (grid_h, grid_w); token i sits at row i // grid_w, column i % grid_w
    rope_positions: [B, n, 3] long (t, h, w) M-RoPE positions for Qwen2.5-VL (t from the frame
                    time when times were given, else 0), None for other families
    """

    tokens: torch.Tensor
    grid: tuple[int, int]
    rope_positions: torch.Tensor | None = None


@dataclass
class GenerationStats:
    """Timings of one generate() call; final once its stream is exhausted."""

    prompt_tokens: int = 0
    new_tokens: int = 0
    prefill_ms: float = 0.0  # the prefill forward over the whole prompt
    ttft_ms: float = 0.0  # from the first next() on the stream to the first token chosen
    decode_tok_s: float = 0.0  # tokens after the first, per second of decoding
    total_ms: float = 0.0
    stop_reason: str = ""  # "eos" or "length"

    def as_dict(self) -> dict[str, float]:
        return {
            "prompt_tokens": float(self.prompt_tokens), "new_tokens": float(self.new_tokens),
            "prefill_ms": self.prefill_ms, "ttft_ms": self.ttft_ms, "decode_tok_s": self.decode_tok_s,
            "generate_ms": self.total_ms,
        }


@runtime_checkable
class VideoLLM(Protocol):
    """What the agent needs from a Video-LLM, whatever its family."""

    family: str
    hidden_size: int
    grid: tuple[int, int]
    tokens_per_frame: int
    batch_size: int  # frames per tower call; streamvid.device.default_batch_size(device) unless set

    def frame_tokens(self, rgb: Frames, times: Sequence[float] | None = None) -> VisualTokens: ...

    def embed_text(self, text: str) -> torch.Tensor: ...

    def build_prompt(self, blocks: Sequence[PromptBlock], question: str, *,
                     history: Sequence[tuple[str, str]] = (), now: float | None = None,
                     instruction: str | None = None) -> PromptInputs: ...

    def generate(self, inputs: PromptInputs, max_new_tokens: int = 128, do_sample: bool = False,
                 temperature: float = 0.7, top_p: float = 0.9, seed: int = 0) -> TextStream: ...


class BaseVideoLLM:
    """Shared machinery; a family subclass sets the attributes below and implements ``_encode``.

    Subclass contract: ``family``, ``grid``, ``slot`` (VisualSlot), ``mrope`` (MRopeSpec or None),
    ``stop_token_ids``, ``pixels(x) -> tower inputs`` (device-side preprocessing of uint8
    [B, 3, H, W] on the model's device, equal to the family's HF processor output) and
    ``tower(inputs) -> [B, n, d]``.
    """

    family: str = ""
    mrope: MRopeSpec | None = None

    def __init__(self, model: Any, processor: Any, *, name: str, device: str, dtype: torch.dtype,
                 batch_size: int | None = None) -> None:
        self.model = model.eval()
        self.processor = processor
        self.tokenizer = processor.tokenizer
        self.name = name
        self.device = torch.device(device)
        self.dtype = dtype
        self.hidden_size = int(model.get_input_embeddings().weight.shape[1])
        self.grid: tuple[int, int] = (0, 0)
        self.slot: VisualSlot
        self.stop_token_ids: set[int] = set()
        self.batch_size = int(batch_size) if batch_size else default_batch_size(self.device)
        if self.batch_size < 1:
            raise ModelError(f"batch_size must be ≥ 1, got {batch_size}")

    @property
    def tokens_per_frame(self) -> int:
        return self.grid[0] * self.grid[1]

    def __repr__(self) -> str:
        return (f"{type(self).__name__}({self.name!r}, d_llm={self.hidden_size}, grid={self.grid}, "
                f"device={self.device}, dtype={self.dtype})")

    # ----------------------------------------------------------------- vision
    def pixels(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """uint8 [B, 3, H, W] on the model's device → the tower's inputs (resized, normalised)."""
        raise NotImplementedError

    def tower(self, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        """The vision tower + connector/projector on ``pixels`` output → tokens [B, n, d_llm]."""
        raise NotImplementedError

    def frame_tokens(self, rgb: Frames, times: Sequence[float] | None = None) -> VisualTokens:
        """Vision tower + projector output per frame: tokens [B, n, d_llm] on the fixed grid, on the
        model's device.

        rgb: uint8 RGB frames, [B, H, W, 3] torch (CPU, pinned or on the device) or numpy, or a list
        of [H, W, 3] frames (sizes may differ). Upload, resize and normalise run on the model's
        device (see ``pixels``), ``batch_size`` frames per tower call. ``times`` (seconds, one per
        frame) only feed the M-RoPE t of Qwen2.5-VL's rope_positions.
        """
        runs = frame_batches(rgb)
        n = sum(int(r.shape[0]) for r in runs)
        if times is not None and len(times) != n:
            raise ModelError(f"frame_tokens got {n} frames but {len(times)} times")
        out = []
        with torch.inference_mode():
            for run in runs:
                for i in range(0, int(run.shape[0]), self.batch_size):
                    x = upload_frames(run[i : i + self.batch_size], self.device).permute(0, 3, 1, 2)
                    out.append(self.tower(self.pixels(x)))
        tokens = out[0] if len(out) == 1 else torch.cat(out)
        rope = None
        if self.mrope is not None:
            gh, gw = self.grid
            idx = torch.arange(gh * gw)
            t = torch.zeros(n, dtype=torch.long) if times is None else torch.floor(
                torch.tensor(list(times), dtype=torch.float64) * self.mrope.tokens_per_second).long()
            rope = torch.stack([t[:, None].expand(-1, gh * gw), (idx // gw).expand(n, -1),
                                (idx % gw).expand(n, -1)], dim=-1)
        return VisualTokens(tokens=tokens, grid=self.grid, rope_positions=rope)

    # ------------------------------------------------------------------ text
    def embed_text(self, text: str) -> torch.Tensor:
        """Mean of the LM's input embeddings over the text's tokens. [d_llm] float32 on the model device."""
        if not isinstance(text, str) or not text.strip():
            raise QuestionError("cannot embed an empty text")
        ids = torch.tensor(self.tokenizer(text, add_special_tokens=False)["input_ids"], dtype=torch.long)
        with torch.inference_mode():
            emb = self.model.get_input_embeddings()(ids.to(self.device))
        return emb.float().mean(0)

    def _tokenize(self, text: str) -> list[int]:
        return list(self.tokenizer(text, add_special_tokens=False)["input_ids"]) if text else []

    def _apply_template(self, messages: list[dict]) -> str:
        return self.processor.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)

    def _embed_ids(self, ids: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode():
            return self.model.get_input_embeddings()(ids.to(self.device))

    def build_prompt(self, blocks: Sequence[PromptBlock], question: str, *,
                     history: Sequence[tuple[str, str]] = (), now: float | None = None,
                     instruction: str | None = None) -> PromptInputs:
        """Stored blocks (any order) + question → PromptInputs under this family's chat template.

        history: earlier (user, assistant) turns; now: the live stream's current time in seconds;
        instruction: a system message.
        """
        return assemble_prompt(
            blocks, question, apply_template=self._apply_template, tokenize=self._tokenize,
            embed=self._embed_ids, slot=self.slot, hidden_size=self.hidden_size, mrope=self.mrope,
            history=history, now=now, instruction=instruction,
        )

    # ------------------------------------------------------------- generation
    def _forward(self, *, inputs_embeds: torch.Tensor | None = None, input_ids: torch.Tensor | None = None,
                 position_ids: torch.Tensor | None, past_key_values: Any) -> Any:
        return self.model(inputs_embeds=inputs_embeds, input_ids=input_ids, position_ids=position_ids,
                          past_key_values=past_key_values, use_cache=True, logits_to_keep=1)

    def step_position_ids(self, inputs: PromptInputs, step: int) -> torch.Tensor:
        """Position ids of the ``step``-th generated token (0 = the first) when it is fed back: [3, 1, 1] for
        M-RoPE, else [1, 1]."""
        p = torch.tensor([[inputs.next_position + step]], device=self.device)
        return p.expand(3, 1, 1) if self.mrope is not None else p

    def generate(self, inputs: PromptInputs, max_new_tokens: int = 128, do_sample: bool = False,
                 temperature: float = 0.7, top_p: float = 0.9, seed: int = 0) -> TextStream:
        """Stream decoded text pieces (greedy unless ``do_sample``); timings land in ``stream.stats``."""
        if max_new_tokens < 1:
            raise ModelError(f"max_new_tokens must be ≥ 1, got {max_new_tokens}")
        return TextStream(self, inputs, max_new_tokens, do_sample, temperature, top_p, seed)

    def generate_text(self, inputs: PromptInputs, **kwargs: Any) -> tuple[str, GenerationStats]:
        """The whole answer at once: (text, stats)."""
        stream = self.generate(inputs, **kwargs)
        text = "".join(stream)
        return text, stream.stats


def pick_token(logits: torch.Tensor, do_sample: bool, temperature: float, top_p: float,
               generator: torch.Generator | None) -> int:
    """Next token from [V] logits: argmax, or nucleus sampling at ``temperature`` / ``top_p``."""
    if not do_sample or temperature <= 0:
        return int(torch.argmax(logits))
    probs = torch.softmax(logits.float() / temperature, dim=-1).cpu()
    sorted_p, sorted_i = torch.sort(probs, descending=True)
    keep = torch.cumsum(sorted_p, 0) - sorted_p < top_p  # always keeps the most likely token
    sorted_p = torch.where(keep, sorted_p, torch.zeros_like(sorted_p))
    choice = torch.multinomial(sorted_p / sorted_p.sum(), 1, generator=generator)
    return int(sorted_i[choice])


class TextStream(Iterator[str]):
    """An iterator of decoded text pieces. Prefill runs on the first ``next()``.

    After exhaustion: ``stats`` (GenerationStats), ``token_ids`` (generated ids, stop token
    excluded) and ``text`` (all pieces joined).
    """

    def __init__(self, llm: BaseVideoLLM, inputs: PromptInputs, max_new_tokens: int, do_sample: bool,
                 temperature: float, top_p: float, seed: int) -> None:
        self.stats = GenerationStats(prompt_tokens=inputs.n_prompt_tokens)
        self.token_ids: list[int] = []
        self.text = ""
        self._pieces = self._run(llm, inputs, max_new_tokens, do_sample, temperature, top_p, seed)

    def __iter__(self) -> TextStream:
        return self

    def __next__(self) -> str:
        return next(self._pieces)

    def _run(self, llm: BaseVideoLLM, inputs: PromptInputs, max_new_tokens: int, do_sample: bool,
             temperature: float, top_p: float, seed: int) -> Iterator[str]:
        # Each model call sits in its own inference_mode block: a yield inside one would leak the
        # mode into the caller's code between pieces.
        generator = torch.Generator().manual_seed(seed) if do_sample else None
        t0 = time.perf_counter()
        with torch.inference_mode():
            out = llm._forward(inputs_embeds=inputs.inputs_embeds, position_ids=inputs.position_ids,
                               past_key_values=None)
        t_prefill = time.perf_counter()
        self.stats.prefill_ms = (t_prefill - t0) * 1000
        cache = out.past_key_values
        logits = out.logits[0, -1]
        t_first = t_prefill
        self.stats.stop_reason = "length"
        for step in range(max_new_tokens):
            token = pick_token(logits, do_sample, temperature, top_p, generator)
            if step == 0:
                t_first = time.perf_counter()
                self.stats.ttft_ms = (t_first - t0) * 1000
            if token in llm.stop_token_ids:
                self.stats.stop_reason = "eos"
                break
            self.token_ids.append(token)
            self.stats.new_tokens = len(self.token_ids)
            piece = self._new_text(llm, final=False)
            if piece:
                yield piece
            if step + 1 == max_new_tokens:
                break
            with torch.inference_mode():
                out = llm._forward(input_ids=torch.tensor([[token]], device=llm.device),
                                   position_ids=llm.step_position_ids(inputs, step), past_key_values=cache)
            cache = out.past_key_values
            logits = out.logits[0, -1]
        t_end = time.perf_counter()
        rest = self._new_text(llm, final=True)
        if rest:
            yield rest
        self.stats.total_ms = (t_end - t0) * 1000
        if self.stats.new_tokens > 1 and t_end > t_first:
            self.stats.decode_tok_s = (self.stats.new_tokens - 1) / (t_end - t_first)

    def _new_text(self, llm: BaseVideoLLM, final: bool) -> str:
        """Text decoded since the last piece; holds back an incomplete UTF-8 sequence until final."""
        full = llm.tokenizer.decode(self.token_ids, skip_special_tokens=True)
        if not final and full.endswith("\ufffd"):
            return ""
        piece = full[len(self.text):] if full.startswith(self.text) else ""
        self.text += piece
        return piece
