"""The VideoLLM protocol and the family-independent half of every adapter.

An adapter wraps one Hugging Face Video-LLM (its model and its own processor) and offers:

* ``frame_tokens(rgb)``  — what the LM reads for each frame: vision tower + connector/projector
  output, ``[B, n, d_llm]`` on a fixed per-frame grid, on the model's device. ``rgb`` is uint8
  ``[B, H, W, 3]`` (a torch tensor on the CPU, pinned, or already on the device; or numpy); the
  frames are uploaded (pinned, non-blocking on CUDA), resized and normalised on the model's
  device, and go through the tower ``batch_size`` frames at a time;
* ``embed_text(text)``   — the mean input embedding of a text's tokens, ``[d_llm]``;
* ``build_prompt(...)``  — stored blocks + question → :class:`streamvid.prompt.PromptInputs`;
* ``generate(inputs, options)`` — a :class:`streamvid.generation.TextStream` of decoded text pieces,
  greedy by default, whose ``stats`` (a :class:`streamvid.generation.GenerationStats`) hold prefill
  ms, time to first token, decode tok/s, prompt and new token counts once the stream is exhausted.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import torch

from streamvid.device import Frames, default_batch_size, frame_batches, upload_frames
from streamvid.errors import ModelError, QuestionError
from streamvid.generation import GenerationOptions, GenerationStats, TextStream, decode_with_cache
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

    def generate(self, inputs: PromptInputs, options: GenerationOptions | None = None,
                 **settings: Any) -> TextStream: ...


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

    def generate(self, inputs: PromptInputs, options: GenerationOptions | None = None,
                 **settings: Any) -> TextStream:
        """Stream decoded text pieces (greedy unless sampling is asked for); timings land in ``stream.stats``.

        options: the decoding settings (default GenerationOptions()); settings: fields of it to replace
        by name (``max_new_tokens=8, do_sample=True, seed=3``). The prompt is prefilled here, with its
        own position ids (pruned tokens keep their M-RoPE positions); the shared loop decodes.
        """
        options = (options or GenerationOptions()).replace(**settings)
        if options.max_new_tokens < 1:
            raise ModelError(f"max_new_tokens must be ≥ 1, got {options.max_new_tokens}")
        cache: list[Any] = [None]

        def prefill() -> Any:
            out = self._forward(inputs_embeds=inputs.inputs_embeds, position_ids=inputs.position_ids,
                                past_key_values=None)
            cache[0] = out.past_key_values
            return out

        def step(token: int, i: int) -> Any:
            out = self._forward(input_ids=torch.tensor([[token]], device=self.device),
                                position_ids=self.step_position_ids(inputs, i), past_key_values=cache[0])
            cache[0] = out.past_key_values
            return out

        return TextStream(inputs.n_prompt_tokens, lambda stream: decode_with_cache(
            stream, prefill=prefill, step=step, tokenizer=self.tokenizer, stop_ids=self.stop_token_ids,
            options=options))

    def generate_text(self, inputs: PromptInputs, options: GenerationOptions | None = None,
                      **settings: Any) -> tuple[str, GenerationStats]:
        """The whole answer at once: (text, stats)."""
        stream = self.generate(inputs, options, **settings)
        return stream.read(), stream.stats
