"""Backends by name: ``AgentConfig.backend`` picks one, presets set it.

A backend registers a factory ``(config) -> Backend``, or a "module:Class" path that is imported
only when that backend is built (so ``import streamvid`` does not load OpenCV or torch models).
"""

from __future__ import annotations

from collections.abc import Callable
from importlib import import_module

from streamvid.backends.base import Backend
from streamvid.config import AgentConfig
from streamvid.errors import ConfigError

BackendFactory = Callable[[AgentConfig], Backend]

_REGISTRY: dict[str, BackendFactory | str] = {
    "vlm": "streamvid.backends.vlm:VLMBackend",
    "offline": "streamvid.backends.offline:OfflineBackend",
}


def register_backend(name: str, factory: BackendFactory | str) -> None:
    """Make ``AgentConfig(backend=name)`` build its backend with ``factory`` (replacing any before)."""
    _REGISTRY[name] = factory


def backend_names() -> list[str]:
    """The registered backend names, sorted."""
    return sorted(_REGISTRY)


def backend_factory(name: str) -> BackendFactory:
    """The factory registered as ``name``; ConfigError naming the registered ones if there is none."""
    if name not in _REGISTRY:
        raise ConfigError(f"unknown backend {name!r}; registered: {', '.join(backend_names())}")
    factory = _REGISTRY[name]
    if isinstance(factory, str):
        module, _, attr = factory.partition(":")
        factory = getattr(import_module(module), attr)
    return factory


def make_backend(config: AgentConfig) -> Backend:
    """The backend ``config.backend`` names, built with the models ``config`` picks."""
    return backend_factory(config.backend)(config)
