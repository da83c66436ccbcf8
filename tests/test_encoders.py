"""Retrieval encoders: the open_clip encoder (tiny, seeded) and the real all-MiniLM-L6-v2 sentence embedder."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from streamvid import ModelError
from streamvid.encoders import RetrievalEncoder, TextEmbedder, preprocess_frames


def _frames(n: int, h: int = 96, w: int = 128, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=(n, h, w, 3), dtype=np.uint8)


@pytest.fixture(scope="module")
def tiny() -> RetrievalEncoder:
    return RetrievalEncoder("tiny", pretrained="", seed=0)


def test_tiny_shapes_and_unit_norm(tiny):
    keys = tiny.encode_frames(_frames(3))
    assert keys.shape == (3, tiny.dim) and keys.dtype == torch.float32 and keys.device.type == "cpu"
    assert torch.allclose(keys.norm(dim=1), torch.ones(3), atol=1e-5)
    text = tiny.encode_text(["a red car", "a blue door"])
    assert text.shape == (2, tiny.dim)
    assert torch.allclose(text.norm(dim=1), torch.ones(2), atol=1e-5)
    single = tiny.encode_frames(_frames(1)[0])  # one H×W×3 frame
    assert single.shape == (1, tiny.dim)


def test_same_seed_same_keys_other_seed_other_keys(tiny):
    again = RetrievalEncoder("tiny", pretrained="", seed=0)
    other = RetrievalEncoder("tiny", pretrained="", seed=1)
    frames = _frames(2)
    assert torch.equal(tiny.encode_frames(frames), again.encode_frames(frames))
    assert torch.equal(tiny.encode_text(["hello"]), again.encode_text(["hello"]))
    assert not torch.allclose(tiny.encode_frames(frames), other.encode_frames(frames), atol=1e-3)


def test_batched_equals_one_by_one(tiny):
    frames = _frames(5, seed=3)
    batched = tiny.encode_frames(frames)
    single = torch.cat([tiny.encode_frames(f[None]) for f in frames])
    assert torch.allclose(batched, single, atol=1e-5)
    small_batches = RetrievalEncoder("tiny", pretrained="", seed=0, batch_size=2).encode_frames(frames)
    assert torch.allclose(batched, small_batches, atol=1e-5)


def test_list_of_differently_sized_frames_keeps_order(tiny):
    a, b = _frames(1, 96, 128, seed=1)[0], _frames(1, 240, 320, seed=2)[0]
    keys = tiny.encode_frames([a, b, a])
    assert keys.shape == (3, tiny.dim)
    assert torch.allclose(keys[0], keys[2], atol=1e-6)
    assert torch.allclose(keys[1], tiny.encode_frames(b[None])[0], atol=1e-5)


def test_different_images_give_different_keys(tiny):
    black = np.zeros((1, 64, 64, 3), np.uint8)
    stripes = np.zeros((1, 64, 64, 3), np.uint8)
    stripes[:, :, ::8] = 255
    k = tiny.encode_frames(np.concatenate([black, stripes, _frames(1, 64, 64)]))
    sims = k @ k.T
    assert sims[0, 1] < 0.999 and sims[0, 2] < 0.999 and sims[1, 2] < 0.999


def test_local_checkpoint_round_trip(tiny, tmp_path):
    path = tmp_path / "tiny_clip.pt"
    torch.save(tiny.model.state_dict(), path)
    loaded = RetrievalEncoder("tiny", pretrained=str(path), seed=123)  # the seed must not matter now
    frames = _frames(2, seed=9)
    assert torch.allclose(loaded.encode_frames(frames), tiny.encode_frames(frames), atol=1e-6)


def test_preprocess_resizes_crops_and_normalises():
    frame = np.full((1, 90, 160, 3), 128, np.uint8)
    mean, std = (0.5, 0.4, 0.3), (0.2, 0.25, 0.5)
    x = preprocess_frames(torch.from_numpy(frame), 64, mean, std)
    assert x.shape == (1, 3, 64, 64)
    expected = (128 / 255 - torch.tensor(mean)) / torch.tensor(std)
    assert torch.allclose(x.mean(dim=(0, 2, 3)), expected, atol=1e-4)


def test_bad_frames_raise_model_error(tiny):
    with pytest.raises(ModelError, match="uint8"):
        tiny.encode_frames(np.zeros((1, 32, 32, 3), np.float32))
    with pytest.raises(ModelError, match="list of strings"):
        tiny.encode_text("not a list")


@pytest.mark.timeout(30)
def test_pretrained_tag_offline_fails_fast_naming_the_model(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty-hub-cache"))
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_CACHE", str(tmp_path / "empty-hub-cache"))
    with pytest.raises(ModelError, match=r"ViT-B-32/laion2b_s34b_b79k.*HF_HUB_OFFLINE"):
        RetrievalEncoder("ViT-B-32", pretrained="laion2b_s34b_b79k")


def test_unknown_model_or_tag_raises_model_error():
    with pytest.raises(ModelError, match="unknown open_clip model"):
        RetrievalEncoder("ViT-Nonexistent", pretrained="")
    with pytest.raises(ModelError, match="neither a known pretrained tag nor a file"):
        RetrievalEncoder("ViT-B-32", pretrained="no_such_tag")


@pytest.fixture(scope="module")
def minilm() -> TextEmbedder:
    return TextEmbedder()


def test_text_embedder_ranks_matching_caption_first(minilm):
    captions = [
        "three people walking left; mostly grey.",
        "the text 'BLUE DOOR' on screen; mostly blue.",
        "one person moving; the text 'RED CAR' on screen; mostly red.",
        "nothing recognised.",
    ]
    q = minilm.encode_text(["red car"])
    c = minilm.encode_text(captions)
    assert minilm.dim == 384 and c.shape == (4, 384)
    assert torch.allclose(c.norm(dim=1), torch.ones(4), atol=1e-5)
    assert int(torch.argmax(q @ c.T)) == 2
    assert int(torch.argmax(minilm.encode_text(["a blue door"]) @ c.T)) == 1


def test_text_embedder_batch_matches_single_and_is_deterministic(minilm):
    texts = ["short", "a much longer sentence about people walking through a hall", ""]
    batched = minilm.encode_text(texts)
    single = torch.cat([minilm.encode_text([t]) for t in texts])
    assert torch.allclose(batched, single, atol=1e-5)
    assert torch.equal(batched, minilm.encode_text(texts))
    assert minilm.encode_text([]).shape == (0, 384)
