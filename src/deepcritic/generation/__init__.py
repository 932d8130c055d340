"""Generation backends behind one interface (:class:`~deepcritic.generation.base.Backend`).

``make_backend(BackendConfig(kind="hf", model="default"))`` is how every stage gets one.
Backends are imported lazily, so vLLM is only needed where it is used.
"""

from __future__ import annotations

from deepcritic.generation.base import (
    Backend,
    Completion,
    GenerationStats,
    Message,
    Prompt,
    SamplingParams,
    StopCheck,
    continues_assistant,
)
from deepcritic.generation.config import BackendConfig, BackendKind


def make_backend(config: BackendConfig) -> Backend:
    """Build the backend named by ``config.kind``."""
    if config.kind == "hf":
        from deepcritic.generation.hf import HFBackend

        return HFBackend(config)
    if config.kind == "vllm":
        from deepcritic.generation.vllm import VLLMBackend

        return VLLMBackend(config)
    if config.kind == "openai":
        from deepcritic.generation.openai import OpenAIBackend

        return OpenAIBackend(config)
    raise ValueError(f"generation.kind must be hf, vllm or openai, got {config.kind!r}")


__all__ = [
    "Backend",
    "BackendConfig",
    "BackendKind",
    "Completion",
    "GenerationStats",
    "Message",
    "Prompt",
    "SamplingParams",
    "StopCheck",
    "continues_assistant",
    "make_backend",
]
