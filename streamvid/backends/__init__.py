"""What turns frames into memory and memory into answers, per kind of preset.

- ``base``: the ``Backend`` protocol, ``AnswerContext`` and ``AnswerRun``;
- ``vlm``: ``VLMBackend``, a Video-LLM reading stored vision-tower tokens;
- ``offline``: ``OfflineBackend``, perception captions read by a small text LLM;
- ``registry``: backends by name (``AgentConfig.backend``).

The two backends live in their own modules and are imported only when built.
"""

from streamvid.backends.base import AnswerContext, AnswerRun, Backend, GenerationOptions, event_block
from streamvid.backends.registry import backend_names, make_backend, register_backend

__all__ = ["AnswerContext", "AnswerRun", "Backend", "GenerationOptions", "backend_names", "event_block",
           "make_backend", "register_backend"]
