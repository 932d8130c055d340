"""Which model, on which engine: the ``generation`` block of every stage config."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

BackendKind = Literal["hf", "vllm", "openai"]


@dataclass
class BackendConfig:
    """Which model, on which engine. One of these sits inside every stage config."""

    kind: BackendKind = "hf"  # engine: hf (transformers), vllm (offline) or openai (HTTP endpoint)
    model: str = "default"  # "default" = SmolLM2-135M-Instruct from PyPI; "tiny" = random 2-layer
    # HF transformers
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    dtype: str = "auto"  # auto = bf16 on GPU, fp32 on CPU
    # prompts decoding together: on GPU a length-sorted, left-padded batch; on CPU the rows of
    # continuous batching (32 decode at 7 ms/token vs 10 at 16 with SmolLM2 on 2 cores)
    batch_size: int = 32
    # vLLM offline engine
    tensor_parallel_size: int = 1  # GPUs one vLLM engine shards the model over
    gpu_memory_utilization: float = 0.85  # vLLM: share of GPU memory for weights + KV cache
    enable_prefix_caching: bool = True  # vLLM: reuse the KV cache of shared prompt prefixes
    max_model_len: int | None = None  # vLLM: context length (None = the model's own)
    # OpenAI-compatible HTTP endpoint
    base_url: str = "http://127.0.0.1:8000/v1"  # the OpenAI-compatible endpoint (kind=openai)
    api_key_env: str = "OPENAI_API_KEY"  # the key is read from this env var, never from config
    max_concurrency: int = 8  # openai: requests in flight at once
    timeout_s: float = 120.0  # openai: seconds one HTTP request may take
    max_retries: int = 4  # openai: retries of a failed request (with backoff)
    # shared
    trust_remote_code: bool = False  # run model code shipped with the checkpoint (hf, vllm)
