"""How text is generated, for every model streamvid decodes from: the options of one request.

``GenerationOptions`` plays the part of faster-whisper's ``TranscriptionOptions``: one frozen record
of the decoding knobs, built once by the caller and passed down unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass

from streamvid.errors import ConfigError


@dataclass(frozen=True)
class GenerationOptions:
    """Decoding settings of one generate call.

    max_new_tokens:       upper bound on generated tokens (the stop token is not counted)
    do_sample:            sample instead of taking the most likely token
    temperature, top_p:   the sampling distribution (only when sampling; temperature ≤ 0 is greedy)
    seed:                 the sampling generator's seed: the same seed gives the same text
    repetition_penalty:   > 1 lowers the logits of tokens already in the prompt or answer; 1 = off
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
