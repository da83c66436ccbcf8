"""Device-side preprocessing equals each model's own processor (CPU; no weights needed).

The adapters and the key encoder resize and normalise uint8 frames with torch on the model's
device (streamvid.imageops). Per family, their pixel values are compared here with the Hugging
Face processor's (or open_clip's transform's) own output for the same frames, from the real
configs in ../shared/models and the tiny configs. Bounds are in grey levels (1/255 of the range
before normalisation):

| family / path | reference | max | mean |
|---|---|---|---|
| SmolVLM, the adapter's processor setting (square size) | its processor | exact (1e-5) | |
| SmolVLM, the shipped setting (long side to 2048, then squared) | its processor | 16 | 0.35 |
| SmolVLM on a GPU (BICUBIC stands in for LANCZOS, as in the processor) | its processor on the CPU | 24 | 0.6 |
| Qwen2.5-VL, frames already at frame_hw | its processor | exact (1e-5) | |
| Qwen2.5-VL, frames resized to frame_hw | PIL bicubic, then its processor | 2 | 0.1 |
| LLaVA-OneVision | its video processor | exact (1e-5) | |
| CLIP key encoder | open_clip's own eval transform (PIL) | 2.5 | 0.1 |

The SmolVLM maxima sit on sharp edges of small frames, which the shipped setting first enlarges
to 2048 px with LANCZOS (ringing) and then shrinks; one direct resize does not ring.
"""

from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from PIL import Image
from torchvision.transforms import InterpolationMode

from streamvid.device import cpu_has_native_bf16, default_batch_size, resolve_dtype, upload_frames
from streamvid.errors import ConfigError, ModelError
from streamvid.imageops import interpolation
from streamvid.models import llava_onevision, qwen2_5_vl, shared_models_root, smolvlm

os.environ.setdefault("HF_HUB_OFFLINE", "1")
SAMPLE = Path(__file__).resolve().parents[1] / "assets" / "sample.mp4"  # the project's own demo clip

SMOL_DIR = shared_models_root() / "HuggingFaceTB__SmolVLM-256M-Instruct"
QWEN_DIR = shared_models_root() / "Qwen__Qwen2.5-VL-3B-Instruct"
needs_shared = pytest.mark.skipif(not SMOL_DIR.is_dir() or not QWEN_DIR.is_dir(),
                                  reason="../shared/models not present")


def clip_frames() -> list[np.ndarray]:
    """Real footage at its own size (480×270), enlarged to 720p, a small crop, and noise (the hardest case)."""
    cap = cv2.VideoCapture(str(SAMPLE))
    cap.set(cv2.CAP_PROP_POS_FRAMES, 120)
    ok, bgr = cap.read()
    cap.release()
    assert ok
    rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
    noise = np.random.default_rng(0).integers(0, 256, (90, 120, 3), dtype=np.uint8)
    return [rgb, cv2.resize(rgb, (1280, 720), interpolation=cv2.INTER_CUBIC), rgb[40:100, 60:140].copy(), noise]


def chw(frame: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(frame).permute(2, 0, 1)[None]


def grey_levels(ours: torch.Tensor, ref: torch.Tensor, std) -> tuple[float, float]:
    """(max, mean) |ours − ref| in grey levels, undoing the normalisation by std (per channel)."""
    assert ours.shape == ref.shape, (ours.shape, ref.shape)
    diff = (ours.float() - ref.float()).abs()
    scale = torch.tensor(std, dtype=torch.float32) * 255.0
    shape = [1] * diff.ndim
    c = list(diff.shape).index(3)
    shape[c] = 3
    levels = diff * scale.view(shape)
    return float(levels.max()), float(levels.mean())


@needs_shared
def test_smolvlm_pixels_equal_its_processor():
    from transformers import AutoProcessor

    shipped = AutoProcessor.from_pretrained(SMOL_DIR).image_processor
    squared = AutoProcessor.from_pretrained(SMOL_DIR).image_processor
    squared.size = {"height": 512, "width": 512}  # what SmolVLMAdapter sets
    for f in clip_frames():
        ours = smolvlm.preprocess(chw(f), shipped, 512)
        assert ours.shape == (1, 3, 512, 512) and ours.dtype == torch.float32
        same = squared(images=[[f]], do_image_splitting=False, return_tensors="pt")["pixel_values"][:, 0]
        torch.testing.assert_close(ours, same, rtol=0, atol=1e-5)
        ref = shipped(images=[[f]], do_image_splitting=False, return_tensors="pt")["pixel_values"][:, 0]
        worst, mean = grey_levels(ours, ref, shipped.image_std)
        assert worst <= 16 and mean <= 0.35, (f.shape, worst, mean)


@needs_shared
def test_smolvlm_gpu_filter_stays_close_to_the_cpu_processor():
    """On CUDA torchvision has no LANCZOS; BICUBIC stands in (as in the HF processor). Same bound for both."""
    from transformers import AutoProcessor

    from streamvid.imageops import resize_normalize

    ip = AutoProcessor.from_pretrained(SMOL_DIR).image_processor
    assert interpolation(ip.resample, torch.device("cpu")) == InterpolationMode.LANCZOS
    mode = interpolation(ip.resample, torch.device("cuda"))
    assert mode == InterpolationMode.BICUBIC
    for f in clip_frames()[:3]:
        ours = resize_normalize(chw(f), (512, 512), ip.image_mean, ip.image_std, mode)
        ref = ip(images=[[f]], do_image_splitting=False, return_tensors="pt")["pixel_values"][:, 0]
        worst, mean = grey_levels(ours, ref, ip.image_std)
        assert worst <= 24 and mean <= 0.6, (f.shape, worst, mean)


@needs_shared
def test_qwen_pixels_equal_its_processor():
    from transformers import AutoProcessor

    ip = AutoProcessor.from_pretrained(QWEN_DIR).image_processor
    hw = (336, 448)
    for f in clip_frames():
        ours, grid = qwen2_5_vl.preprocess(chw(f), ip, hw)
        assert grid.tolist() == [[1, 24, 32]]
        resized = np.asarray(Image.fromarray(f).resize(hw[::-1], Image.BICUBIC))
        ref = ip(images=[resized], return_tensors="pt")
        assert ref["image_grid_thw"].tolist() == grid.tolist()
        # [n, C·T·p·p] → [n, C, T·p·p] so that the channel axis is explicit
        a, b = ours.view(ours.shape[0], 3, -1), ref["pixel_values"].view(ours.shape[0], 3, -1)
        worst, mean = grey_levels(a, b, ip.image_std)
        assert worst <= 2 and mean <= 0.1, (f.shape, worst, mean)
        # once at frame_hw, everything after the resize is the processor's own arithmetic
        exact, _ = qwen2_5_vl.preprocess(chw(resized), ip, hw)
        torch.testing.assert_close(exact, ref["pixel_values"], rtol=0, atol=1e-5)


def test_qwen_batch_lays_frames_out_one_after_another():
    from streamvid.models.tiny import build_tiny

    _, _, proc, _ = build_tiny("qwen2_5_vl")
    f = clip_frames()[0]
    x = torch.from_numpy(np.stack([f, f[::-1].copy()])).permute(0, 3, 1, 2)
    both, grid = qwen2_5_vl.preprocess(x, proc.image_processor, (112, 112))
    assert grid.tolist() == [[1, 8, 8]] * 2
    one, _ = qwen2_5_vl.preprocess(x[1:], proc.image_processor, (112, 112))
    torch.testing.assert_close(both[64:], one, rtol=0, atol=0)


@needs_shared
@pytest.mark.parametrize("size", [112, 384])
def test_llava_onevision_pixels_equal_its_video_processor(size):
    vp = llava_onevision.load_processor(QWEN_DIR, image_size=size).video_processor
    for f in clip_frames():
        ours = llava_onevision.preprocess(chw(f), vp)
        ref = vp(videos=[f[None]], return_tensors="pt")["pixel_values_videos"][:, 0]
        torch.testing.assert_close(ours, ref, rtol=0, atol=1e-5)


def test_clip_pixels_equal_open_clips_own_transform():
    import open_clip

    from streamvid.encoders.clip import preprocess_frames

    model, _, transform = open_clip.create_model_and_transforms("ViT-B-32", pretrained=None)
    cfg = open_clip.get_model_preprocess_cfg(model)
    for f in clip_frames():
        ours = preprocess_frames(torch.from_numpy(f)[None], 224, cfg["mean"], cfg["std"], cfg["interpolation"])
        ref = transform(Image.fromarray(f))[None]
        worst, mean = grey_levels(ours, ref, cfg["std"])
        assert worst <= 2.5 and mean <= 0.1, (f.shape, worst, mean)


def test_frame_tokens_take_a_uint8_tensor_batch_like_numpy():
    from streamvid.models import load_video_llm

    llm = load_video_llm("tiny:smolvlm", seed=0)
    frames = np.random.default_rng(1).integers(0, 256, (3, 90, 120, 3), dtype=np.uint8)
    from_numpy = llm.frame_tokens(frames).tokens
    from_tensor = llm.frame_tokens(torch.from_numpy(frames)).tokens
    assert from_tensor.device == llm.device
    torch.testing.assert_close(from_tensor, from_numpy, rtol=0, atol=0)
    llm.batch_size = 1  # three tower calls instead of one: the same tokens
    torch.testing.assert_close(llm.frame_tokens(torch.from_numpy(frames)).tokens, from_numpy, rtol=1e-4, atol=1e-4)


def test_upload_frames_shapes_and_errors():
    frames = np.zeros((2, 4, 6, 3), np.uint8)
    x = upload_frames(frames, "cpu")
    assert x.shape == (2, 4, 6, 3) and x.dtype == torch.uint8 and x.device.type == "cpu"
    assert upload_frames(list(frames), "cpu").shape == (2, 4, 6, 3)
    assert upload_frames(frames[0], "cpu").shape == (1, 4, 6, 3)
    t = torch.from_numpy(frames)
    assert upload_frames(t, "cpu") is t  # already there: no copy
    with pytest.raises(ModelError, match="uint8"):
        upload_frames(frames.astype(np.float32), "cpu")
    with pytest.raises(ModelError, match="one size"):
        upload_frames([frames[0], np.zeros((5, 6, 3), np.uint8)], "cpu")
    with pytest.raises(ModelError, match="no frames"):
        upload_frames([], "cpu")


def test_auto_dtype_and_batch_size_follow_the_device():
    assert resolve_dtype("auto", "cpu") == (torch.bfloat16 if cpu_has_native_bf16() else torch.float32)
    assert resolve_dtype("bf16", "cpu") == torch.bfloat16 and resolve_dtype("float32", "cuda") == torch.float32
    assert resolve_dtype("half", "cpu") == torch.float16  # the config's one dtype map
    assert resolve_dtype(torch.float16, "cpu") == torch.float16
    with pytest.raises(ConfigError, match="unknown dtype"):
        resolve_dtype("int8", "cpu")
    assert not cpu_has_native_bf16(frozenset({"avx2", "fma"}))
    if torch.backends.cpu.get_cpu_capability() in ("AVX512", "AMX"):
        assert cpu_has_native_bf16(frozenset({"avx512f", "avx512_bf16"}))
        assert cpu_has_native_bf16(frozenset({"amx_bf16", "amx_tile"}))
    assert default_batch_size("cuda") > default_batch_size("cpu") >= 1


def test_l2_normalise_numpy_and_torch_agree():
    from streamvid.tensorops import l2_normalise

    x = np.array([[3.0, 4.0], [0.0, 0.0]])
    out = l2_normalise(x)
    assert out.dtype == np.float32 and np.allclose(out, [[0.6, 0.8], [0.0, 0.0]])
    t = l2_normalise(torch.tensor(x, dtype=torch.float64))
    assert t.dtype == torch.float64 and torch.allclose(t, torch.tensor([[0.6, 0.8], [0.0, 0.0]], dtype=torch.float64))
    assert np.allclose(l2_normalise([0.0, 2.0]), [0.0, 1.0])


def test_resize_short_side_keeps_aspect_and_never_enlarges_when_asked():
    from streamvid.imageops import resize_short_side

    frame = np.random.default_rng(0).integers(0, 256, (90, 160, 3), dtype=np.uint8)
    assert resize_short_side(frame, 45).shape == (45, 80, 3)
    assert resize_short_side(frame, 180).shape == (180, 320, 3)
    assert resize_short_side(frame, 180, enlarge=False) is frame
    assert resize_short_side(frame, None) is frame
    copy = resize_short_side(frame, 180, enlarge=False, copy=True)
    assert copy is not frame and np.array_equal(copy, frame) and not np.shares_memory(copy, frame)
    tall = resize_short_side(frame.transpose(1, 0, 2).copy(), 45)
    assert tall.shape == (80, 45, 3) and tall.flags["C_CONTIGUOUS"]
