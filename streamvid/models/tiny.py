"""Tiny, randomly initialised builds of the real architecture classes (the ``tiny:<family>`` models).

They use the real tokenizers and processors from the shared model folder (SmolVLM-256M's for
``tiny:smolvlm``; Qwen2.5-VL's for ``tiny:qwen2_5_vl`` and, with ``<image>``/``<video>`` added,
for ``tiny:llava_onevision``, whose LM is Qwen2) with small vision inputs. Built in-process,
seeded, in a second or two; their text output is meaningless: they serve plumbing and tests.
"""

from __future__ import annotations

from typing import Any

from streamvid.models.paths import shared_model_dir

TINY_FAMILIES = ("smolvlm", "qwen2_5_vl", "llava_onevision")

SMOL_DIR = "HuggingFaceTB__SmolVLM-256M-Instruct"
QWEN_DIR = "Qwen__Qwen2.5-VL-3B-Instruct"

# LLaVA-OneVision's own hub template writes every visual item of a turn before its text, which
# would separate each block from its time label; this one keeps the order of the content list
# in the same ChatML format.
LLAVA_OV_CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{% if loop.first and message['role'] != 'system' %}<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
    "{% endif %}<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}{% else %}"
    "{% for content in message['content'] %}"
    "{% if content['type'] == 'image' %}<image>{% elif content['type'] == 'video' %}<video>"
    "{% elif content['type'] == 'text' %}{{ content['text'] }}{% endif %}"
    "{% endfor %}{% endif %}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

# A wider init than the real models' 0.02: with it, greedy decoding of a random tiny LM does not
# collapse onto one token, so decode tests see varied tokens.
_TEXT = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
             num_key_value_heads=2, head_dim=16, initializer_range=0.2)


def tiny_smolvlm() -> tuple[Any, Any]:
    """(SmolVLMConfig, Idefics3Processor): 128² frames, 16-px patches, scale 2 → 4×4 = 16 tokens, d_llm 64."""
    from transformers import AutoProcessor, SmolVLMConfig

    d = shared_model_dir(SMOL_DIR)
    processor = AutoProcessor.from_pretrained(d, image_seq_len=16)
    processor.image_processor.max_image_size = {"longest_edge": 128}
    processor.image_processor.size = {"longest_edge": 128}
    config = SmolVLMConfig(
        text_config=dict(model_type="llama", vocab_size=49280, max_position_embeddings=8192, rms_norm_eps=1e-5,
                         rope_theta=100000.0, pad_token_id=2, bos_token_id=1, eos_token_id=2,
                         tie_word_embeddings=False, **_TEXT),
        vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                           image_size=128, patch_size=16),
        scale_factor=2, image_token_id=processor.tokenizer.convert_tokens_to_ids("<image>"),
        tie_word_embeddings=False,
    )
    return config, processor


def tiny_qwen2_5_vl() -> tuple[Any, Any]:
    """(Qwen2_5_VLConfig, Qwen2_5_VLProcessor): 14-px patches, merge 2, d_llm 64 (frames 112² → 4×4)."""
    from transformers import AutoProcessor, Qwen2_5_VLConfig

    d = shared_model_dir(QWEN_DIR)
    processor = AutoProcessor.from_pretrained(d)
    config = Qwen2_5_VLConfig(
        text_config=dict(vocab_size=151936, max_position_embeddings=32768, rms_norm_eps=1e-6,
                         rope_parameters={"rope_type": "default", "rope_theta": 1000000.0, "mrope_section": [2, 3, 3]},
                         tie_word_embeddings=True, bos_token_id=151643, eos_token_id=151645, **_TEXT),
        vision_config=dict(depth=2, hidden_size=32, intermediate_size=64, num_heads=2, out_hidden_size=64,
                           patch_size=14, spatial_merge_size=2, temporal_patch_size=2, window_size=56,
                           fullatt_block_indexes=[1], tokens_per_second=2),
        image_token_id=151655, video_token_id=151656, vision_start_token_id=151652, vision_end_token_id=151653,
        tie_word_embeddings=True,
    )
    return config, processor


def llava_onevision_processor(tokenizer_dir: str, image_size: int, chat_template: str = LLAVA_OV_CHAT_TEMPLATE) -> Any:
    """A LlavaOnevisionProcessor over the Qwen2 tokenizer in ``tokenizer_dir`` with <image>/<video> added."""
    from transformers import AutoTokenizer, LlavaOnevisionImageProcessor, LlavaOnevisionProcessor
    from transformers.models.llava_onevision.video_processing_llava_onevision import LlavaOnevisionVideoProcessor

    tok = AutoTokenizer.from_pretrained(tokenizer_dir)
    tok.add_special_tokens({"additional_special_tokens": ["<image>", "<video>"]})
    size = {"height": image_size, "width": image_size}
    return LlavaOnevisionProcessor(
        image_processor=LlavaOnevisionImageProcessor(size=size, image_grid_pinpoints=[[image_size, image_size]]),
        tokenizer=tok, video_processor=LlavaOnevisionVideoProcessor(size=size),
        num_image_tokens=(image_size // 14) ** 2, vision_feature_select_strategy="full", chat_template=chat_template,
    )


def tiny_llava_onevision() -> tuple[Any, Any]:
    """(LlavaOnevisionConfig, processor): SigLIP 112², 14-px patches → 8×8, pooled → 4×4 = 16 tokens, d_llm 64."""
    from transformers import LlavaOnevisionConfig

    processor = llava_onevision_processor(shared_model_dir(QWEN_DIR), 112)
    tok = processor.tokenizer
    config = LlavaOnevisionConfig(
        vision_config=dict(model_type="siglip_vision_model", hidden_size=32, intermediate_size=64,
                           num_hidden_layers=2, num_attention_heads=2, image_size=112, patch_size=14),
        text_config=dict(model_type="qwen2", vocab_size=151936, max_position_embeddings=32768, rms_norm_eps=1e-6,
                         rope_theta=1000000.0, tie_word_embeddings=True, bos_token_id=151643,
                         eos_token_id=151645, **_TEXT),
        image_token_index=tok.convert_tokens_to_ids("<image>"), video_token_index=tok.convert_tokens_to_ids("<video>"),
        vision_feature_select_strategy="full", vision_feature_layer=-1,
        image_grid_pinpoints=[[112, 112]], tie_word_embeddings=True,
    )
    return config, processor


TINY_BUILDERS = {"smolvlm": tiny_smolvlm, "qwen2_5_vl": tiny_qwen2_5_vl, "llava_onevision": tiny_llava_onevision}
