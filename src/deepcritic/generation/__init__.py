"""Generation backends behind one interface (:class:`~deepcritic.generation.base.Backend`).

``make_backend(BackendConfig(kind="hf", model="default"))`` is how every stage gets one.
Backends are imported lazily, so vLLM is only needed where it is used.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

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

BackendKind = Literal["hf", "vllm", "openai"]


@dataclass
class BackendConfig:
    """Which model, on which engine. One of these sits inside every stage config."""

    kind: BackendKind = "hf"
    model: str = "default"  # "default" = SmolLM2-135M-Instruct from PyPI; "tiny" = random 2-layer
    # HF transformers
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    dtype: str = "auto"  # auto = bf16 on GPU, fp32 on CPU
    # prompts decoding together: on GPU a length-sorted, left-padded batch; on CPU the rows of
    # continuous batching (32 decode at 7 ms/token vs 10 at 16 with SmolLM2 on 2 cores)
    batch_size: int = 32
    # vLLM offline engine
    tensor_parallel_size: int = 1
    gpu_memory_utilization: float = 0.85
    enable_prefix_caching: bool = True
    max_model_len: int | None = None
    # OpenAI-compatible HTTP endpoint
    base_url: str = "http://127.0.0.1:8000/v1"
    api_key_env: str = "OPENAI_API_KEY"  # the key is read from this env var, never from config
    max_concurrency: int = 8
    timeout_s: float = 120.0
    max_retries: int = 4
    # shared
    trust_remote_code: bool = False


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
