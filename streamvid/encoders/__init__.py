"""Retrieval encoders: open_clip frame/text keys and a sentence embedder for caption text."""

from streamvid.encoders.clip import TINY_CLIP_CONFIG, RetrievalEncoder, preprocess_frames
from streamvid.encoders.text import TextEmbedder

__all__ = ["TINY_CLIP_CONFIG", "RetrievalEncoder", "TextEmbedder", "preprocess_frames"]
