"""One generation stack for every model streamvid decodes from.

- ``GenerationOptions``: the decoding knobs of one request, as faster-whisper's ``TranscriptionOptions``;
- ``logits_processors(options)``: the transformers logits processors and warpers those knobs stand
  for, ending in a seeded draw when sampling, so the next token is always the argmax of the
  processed scores (greedy vs sampling is decided in ``GenerationOptions.greedy`` only);
- ``TextStream`` + ``GenerationStats``: the streamed text pieces and the timings of one call;
- two loops feed a TextStream: ``decode_with_cache`` steps a Video-LLM over its KV cache after a
  prefill the caller ran (the prompt's M-RoPE positions of pruned tokens need that custom prefill),
  and ``generate_with_streamer`` runs ``model.generate`` with a ``TextIteratorStreamer`` for a
  plain text LLM. Both use the same processors and fill the same stats.
"""

from __future__ import annotations

import contextlib
import dataclasses
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import torch

from streamvid.errors import ConfigError


@dataclass(frozen=True)
class GenerationOptions:
    """Decoding settings of one generate call.

    max_new_tokens:       upper bound on generated tokens (the stop token is not counted)
    do_sample:            sample instead of taking the most likely token
    temperature, top_p:   the sampling distribution (only when sampling; temperature ≤ 0 is greedy)
    seed:                 the sampling generator's seed: the same seed gives the same text
    repetition_penalty:   > 1 lowers the logits of tokens already generated; 1 = off
    no_repeat_ngram_size: > 0 forbids repeating any n-gram of this size in the answer; 0 = off
    """

    max_new_tokens: int = 128
    do_sample: bool = False
    temperature: float = 0.7
    top_p: float = 0.9
    seed: int = 0
    repetition_penalty: float = 1.0
    no_repeat_ngram_size: int = 0

    def __post_init__(self) -> None:
        # max_new_tokens is checked by each generator, which names its model in the error.
        if not 0 < self.top_p <= 1:
            raise ConfigError(f"top_p must be in (0, 1], got {self.top_p}")
        if self.repetition_penalty <= 0:
            raise ConfigError(f"repetition_penalty must be > 0, got {self.repetition_penalty}")
        if self.no_repeat_ngram_size < 0:
            raise ConfigError(f"no_repeat_ngram_size must be ≥ 0, got {self.no_repeat_ngram_size}")

    @property
    def greedy(self) -> bool:
        """The one place that decides greedy decoding: no sampling asked, or a temperature of 0 (or less)."""
        return not self.do_sample or self.temperature <= 0

    def replace(self, **settings: Any) -> GenerationOptions:
        """A copy with the named settings replaced."""
        return dataclasses.replace(self, **settings) if settings else self


def _seeded_sampling(seed: int) -> Any:
    from transformers import LogitsProcessor

    class SeededSampling(LogitsProcessor):
        """Draw the next token from the (warped) scores with a private generator, and leave only that
        token finite, so the argmax is the draw. A private generator keeps a seeded answer the same
        whatever other threads do with torch's global random state."""

        def __init__(self) -> None:
            self.generator = torch.Generator().manual_seed(seed)

        def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
            probs = torch.softmax(scores.float(), dim=-1).cpu()
            choice = torch.multinomial(probs, 1, generator=self.generator).to(scores.device)
            return torch.full_like(scores, float("-inf")).scatter_(1, choice, 0.0)

    return SeededSampling()


def logits_processors(options: GenerationOptions) -> Any:
    """The ``LogitsProcessorList`` for ``options``: repetition controls, then (sampling only) temperature,
    top-p and a seeded draw. The next token is the argmax of its output, [B, V] scores → [B, V]."""
    from transformers import (
        LogitsProcessorList,
        NoRepeatNGramLogitsProcessor,
        RepetitionPenaltyLogitsProcessor,
        TemperatureLogitsWarper,
        TopPLogitsWarper,
    )

    out = LogitsProcessorList()
    if options.repetition_penalty != 1.0:
        out.append(RepetitionPenaltyLogitsProcessor(options.repetition_penalty))
    if options.no_repeat_ngram_size > 0:
        out.append(NoRepeatNGramLogitsProcessor(options.no_repeat_ngram_size))
    if not options.greedy:
        if options.temperature != 1.0:
            out.append(TemperatureLogitsWarper(options.temperature))
        if options.top_p < 1.0:
            out.append(TopPLogitsWarper(options.top_p))
        out.append(_seeded_sampling(options.seed))
    return out


@dataclass
class GenerationStats:
    """Timings of one generate call; final once its stream is exhausted (ms unless named otherwise)."""

    prompt_tokens: int = 0
    new_tokens: int = 0  # generated tokens, the stop token excluded
    prefill_ms: float = 0.0  # from the first next() to the end of the forward over the whole prompt
    ttft_ms: float = 0.0  # from the first next() to the first token chosen
    decode_ms: float = 0.0  # from the first token to the last
    decode_tok_s: float = 0.0  # tokens after the first, per second of decoding
    total_ms: float = 0.0
    stop_reason: str = ""  # "eos" or "length"

    def as_dict(self) -> dict[str, float]:
        return {"prompt_tokens": float(self.prompt_tokens), "new_tokens": float(self.new_tokens),
                "prefill_ms": self.prefill_ms, "ttft_ms": self.ttft_ms, "decode_ms": self.decode_ms,
                "decode_tok_s": self.decode_tok_s, "total_ms": self.total_ms}

    def finish(self, t0: float, t_first: float, t_end: float) -> None:
        """Fill the totals from perf_counter times: start, first token chosen, last token chosen."""
        self.total_ms = (t_end - t0) * 1000
        self.decode_ms = max(0.0, t_end - t_first) * 1000
        if self.new_tokens > 1 and t_end > t_first:
            self.decode_tok_s = (self.new_tokens - 1) / (t_end - t_first)


class TextStream(Iterator[str]):
    """Decoded text pieces as they are generated; generation starts on the first ``next()``.

    After exhaustion: ``text`` (the pieces joined), ``token_ids`` (generated ids, stop token
    excluded), ``stats`` (GenerationStats) and ``timings`` (``stats.as_dict()``).
    """

    def __init__(self, prompt_tokens: int, run: Callable[[TextStream], Iterator[str]]) -> None:
        self.stats = GenerationStats(prompt_tokens=prompt_tokens)
        self.token_ids: list[int] = []
        self.text = ""
        self._pieces = run(self)

    def __iter__(self) -> TextStream:
        return self

    def __next__(self) -> str:
        piece = next(self._pieces)
        self.text += piece
        return piece

    @property
    def timings(self) -> dict[str, float]:
        return self.stats.as_dict()

    def close(self) -> None:
        """Stop generating now (an unfinished stream that is garbage-collected stops too)."""
        self._pieces.close()

    def read(self) -> str:
        """Consume the rest and return the whole text."""
        for _ in self:
            pass
        return self.text


def _new_text(tokenizer: Any, ids: list[int], emitted: str, final: bool) -> str:
    """Text decoded since ``emitted``; holds back an incomplete UTF-8 sequence (U+FFFD) until final."""
    full = tokenizer.decode(ids, skip_special_tokens=True)
    if not final and full.endswith("\ufffd"):
        return ""
    return full[len(emitted):] if full.startswith(emitted) else ""


def decode_with_cache(stream: TextStream, *, prefill: Callable[[], Any], step: Callable[[int, int], Any],
                      tokenizer: Any, stop_ids: set[int], options: GenerationOptions) -> Iterator[str]:
    """The decode loop over a KV cache, for a prompt the caller prefills itself.

    prefill():          runs the prompt, returns the model output (``logits`` [1, T', V], ``past_key_values``)
    step(token, i):     feeds the ``i``-th generated token (0 = the first) back, with that cache
    Text pieces are yielded as they decode; ``stream`` gets ids and stats.
    """
    processors = logits_processors(options)
    t0 = time.perf_counter()
    # Each model call sits in its own inference_mode block: a yield inside one would leak the mode
    # into the caller's code between pieces.
    with torch.inference_mode():
        out = prefill()
    t_first = time.perf_counter()
    stream.stats.prefill_ms = (t_first - t0) * 1000
    stream.stats.stop_reason = "length"
    emitted = ""
    t_last = t_first
    for i in range(options.max_new_tokens):
        logits = out.logits[:, -1].float()  # [1, V]
        with torch.inference_mode():
            ids = torch.tensor([stream.token_ids], dtype=torch.long, device=logits.device)  # [1, generated]
            scores = processors(ids, logits)
        token = int(scores[0].argmax())
        t_last = time.perf_counter()
        if i == 0:
            t_first = t_last
            stream.stats.ttft_ms = (t_first - t0) * 1000
        if token in stop_ids:
            stream.stats.stop_reason = "eos"
            break
        stream.token_ids.append(token)
        stream.stats.new_tokens = len(stream.token_ids)
        piece = _new_text(tokenizer, stream.token_ids, emitted, final=False)
        if piece:
            emitted += piece
            yield piece
        if i + 1 == options.max_new_tokens:
            break
        with torch.inference_mode():
            out = step(token, i)
    rest = _new_text(tokenizer, stream.token_ids, emitted, final=True)
    if rest:
        yield rest
    stream.stats.finish(t0, t_first, t_last)


def generate_with_streamer(stream: TextStream, *, model: Any, tokenizer: Any, input_ids: torch.Tensor,
                           stop_ids: set[int], options: GenerationOptions,
                           lock: threading.Lock | None = None) -> Iterator[str]:
    """``model.generate`` on a worker thread with a ``TextIteratorStreamer``; pieces as they decode.

    input_ids: [1, T] on the model's device. ``lock``, when given, is held while the model runs. A
    consumer that stops early stops the generation at the next token. ttft_ms is the time to the first
    token chosen (the streamer may hold a piece back until a word ends).
    """
    from transformers import GenerationConfig, LogitsProcessor, StoppingCriteria, TextIteratorStreamer

    t0 = time.perf_counter()
    marks: dict[str, float] = {}
    stop = threading.Event()

    class FirstToken(LogitsProcessor):
        """Notes when the prefill forward is over: processors first run right after it."""

        def __call__(self, ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
            marks.setdefault("prefill", time.perf_counter())
            return scores

    class Chosen(StoppingCriteria):
        """Notes when each token has been chosen; ends generation when the consumer left."""

        def __call__(self, ids: torch.LongTensor, scores: torch.FloatTensor, **kwargs: Any) -> torch.BoolTensor:
            now = time.perf_counter()
            marks.setdefault("first", now)
            marks["last"] = now
            return torch.full((ids.shape[0],), stop.is_set(), dtype=torch.bool, device=ids.device)

    processors = logits_processors(options)
    processors.insert(0, FirstToken())
    streamer = TextIteratorStreamer(tokenizer, skip_prompt=True, skip_special_tokens=True)
    stops = sorted(stop_ids)
    # Greedy over our processors (a sampled token arrives as the only finite score); no processor from
    # the model's own generation config.
    config = GenerationConfig(max_new_tokens=options.max_new_tokens, do_sample=False, eos_token_id=stops,
                              pad_token_id=stops[0], repetition_penalty=1.0, no_repeat_ngram_size=0)
    result: dict[str, Any] = {}

    def run() -> None:
        try:
            with lock if lock is not None else contextlib.nullcontext(), torch.inference_mode():
                result["ids"] = model.generate(input_ids=input_ids, attention_mask=torch.ones_like(input_ids),
                                               generation_config=config, logits_processor=processors,
                                               stopping_criteria=[Chosen()], streamer=streamer)
        except BaseException as exc:  # raised in the consumer
            result["error"] = exc
            streamer.end()

    worker = threading.Thread(target=run, name="streamvid-generate", daemon=True)
    worker.start()
    try:
        for piece in streamer:
            if piece:
                yield piece
    finally:
        stop.set()
        worker.join()
    if "error" in result:
        raise result["error"]
    new = result["ids"][0, input_ids.shape[1]:].tolist()
    stream.stats.stop_reason = "eos" if new and new[-1] in stop_ids else "length"
    stream.token_ids = [t for t in new if t not in stop_ids]
    stream.stats.new_tokens = len(stream.token_ids)
    t_last = marks.get("last", time.perf_counter())
    stream.stats.prefill_ms = (marks.get("prefill", t_last) - t0) * 1000
    stream.stats.ttft_ms = (marks.get("first", t_last) - t0) * 1000
    stream.stats.finish(t0, marks.get("first", t_last), t_last)
