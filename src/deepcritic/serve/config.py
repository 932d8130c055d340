"""The serve stage's typed config: where the critic comes from, how it is batched, what is refused."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar, Literal

from deepcritic.generation import BackendConfig

OpenAIRoute = Literal["auto", "on", "off"]


@dataclass
class BatchingConfig:
    """Dynamic batching: concurrent requests are collected into one ``backend.generate`` call."""

    enabled: bool = True  # off = one generate call per request, served one at a time
    max_batch_size: int = 32  # prompts per generate call (samples k count once per prompt)
    max_wait_ms: float = 2.0  # how long the first request of a batch may wait for company
    max_queue: int = 1024  # requests waiting beyond this get 503 (back-pressure, not a crash)

    def __post_init__(self) -> None:
        if self.max_batch_size < 1:
            raise ValueError(f"batching.max_batch_size must be >= 1, got {self.max_batch_size}")
        if self.max_wait_ms < 0:
            raise ValueError(f"batching.max_wait_ms must be >= 0, got {self.max_wait_ms}")
        if self.max_queue < 1:
            raise ValueError(f"batching.max_queue must be >= 1, got {self.max_queue}")


@dataclass
class LimitsConfig:
    """What a request may ask for; anything beyond gets a 4xx naming the field."""

    max_body_bytes: int = 1_000_000  # 413 above this (checked before the body is read)
    max_instances: int = 32  # v1 ``instances`` / v2 batch dimension per request
    max_steps: int = 64  # steps per solution
    max_problem_chars: int = 20_000
    max_step_chars: int = 20_000
    max_prompt_tokens: int = 6_144  # the rendered critique prompt, counted with the tokenizer
    max_new_tokens: int = 8_192  # upper bound a request may set as max_tokens
    max_samples: int = 16  # samples k per request (majority vote when k > 1)
    max_temperature: float = 2.0

    def __post_init__(self) -> None:
        for name in ("max_body_bytes", "max_instances", "max_steps", "max_prompt_tokens"):
            if getattr(self, name) < 1:
                raise ValueError(f"limits.{name} must be >= 1, got {getattr(self, name)}")
        if self.max_new_tokens < 1 or self.max_samples < 1:
            raise ValueError("limits.max_new_tokens and limits.max_samples must be >= 1")


@dataclass
class ServeConfig:
    """``deepcritic serve``: a KServe model server for the critic."""

    CLI_ALIASES: ClassVar[dict[str, str]] = {"backend": "generation.kind"}

    model_uri: str = "models:/deepcritic@champion"  # MLflow registry URI, local dir, tiny/default
    model_name: str = "deepcritic"  # endpoint path /v1/models/<model_name>
    host: str = "127.0.0.1"  # never 0.0.0.0 unless asked (the container sets it explicitly)
    port: int = 8080
    enable_grpc: bool = False
    grpc_port: int = 8081
    tracking_uri: str | None = None  # MLflow server for models:/ URIs ($MLFLOW_TRACKING_URI)
    download_dir: str | None = None  # where registry/storage artifacts go (temp dir if unset)
    generation: BackendConfig = field(default_factory=BackendConfig)
    # Defaults a request may override.
    temperature: float = 0.0  # greedy single critique; k > 1 samples use vote_temperature
    vote_temperature: float = 1.0  # default when samples k > 1 (greedy samples would all agree)
    top_p: float = 1.0
    max_tokens: int = 4_096  # critiques are long: every step is re-derived before the verdict
    batching: BatchingConfig = field(default_factory=BatchingConfig)
    limits: LimitsConfig = field(default_factory=LimitsConfig)
    # auto = on with the vLLM backend where KServe's OpenAI types import (kserve 0.21 needs
    # vllm <= 0.28; the images' vllm 0.31 turns it off with a warning); on = fail if unavailable
    openai_route: OpenAIRoute = "auto"
    enable_docs: bool = False

    def __post_init__(self) -> None:
        if not 0 < self.port < 65536:
            raise ValueError(f"port must be in 1..65535, got {self.port}")
        if not self.model_name or "/" in self.model_name:
            raise ValueError(
                f"model_name must be a non-empty path segment, got {self.model_name!r}"
            )
        if not 1 <= self.max_tokens <= self.limits.max_new_tokens:
            raise ValueError(
                f"max_tokens must be in 1..limits.max_new_tokens ({self.limits.max_new_tokens}), "
                f"got {self.max_tokens}"
            )

    @property
    def openai_enabled(self) -> bool:
        return self.openai_route == "on" or (
            self.openai_route == "auto" and self.generation.kind == "vllm"
        )
