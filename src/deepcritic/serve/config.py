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
    max_problem_chars: int = 20_000  # characters of the problem text
    max_step_chars: int = 20_000  # characters of one step
    max_prompt_tokens: int = 6_144  # the rendered critique prompt, counted with the tokenizer
    max_new_tokens: int = 8_192  # upper bound a request may set as max_tokens
    max_samples: int = 16  # samples k per request (majority vote when k > 1)
    # The cost of one request: the sum over its instances of samples x max_tokens. The default is
    # one full majority vote at the longest critique (16 x 8192), not 32 of them.
    max_request_tokens: int = 131_072
    max_temperature: float = 2.0  # highest temperature a request may set
    # The chat route (docs/serving.md, "Limits"): everything a chat request can make the server do.
    max_messages: int = 64  # messages per chat request
    max_message_chars: int = 60_000  # all messages' text together (tokens: max_prompt_tokens)
    max_stop_strings: int = 4  # OpenAI's own limit
    # Characters per stop string. The HF backend builds a stop-string matcher for every request
    # with stop strings, which costs about 1.2 s + 0.11 s per stop character (measured on 2 shared
    # CPU cores, SmolLM2's 49k-token vocabulary): 4 x 16 characters ~3 s; 4 x 1000 took 32 s.
    # Once per distinct stop-string set: the backend keeps the last 16 matchers.
    max_stop_chars: int = 16

    def __post_init__(self) -> None:
        names = ("max_body_bytes", "max_instances", "max_steps", "max_prompt_tokens",
                 "max_new_tokens", "max_samples", "max_request_tokens", "max_messages",
                 "max_message_chars", "max_stop_strings", "max_stop_chars")  # fmt: skip
        for name in names:
            if getattr(self, name) < 1:
                raise ValueError(f"limits.{name} must be >= 1, got {getattr(self, name)}")
        if self.max_request_tokens < self.max_new_tokens:
            raise ValueError(
                f"limits.max_request_tokens ({self.max_request_tokens}) must be >= "
                f"limits.max_new_tokens ({self.max_new_tokens}): one sample must fit"
            )


@dataclass
class ServeConfig:
    """``deepcritic serve``: a KServe model server for the critic."""

    CLI_ALIASES: ClassVar[dict[str, str]] = {"backend": "generation.kind"}

    model_uri: str = "models:/deepcritic@champion"  # MLflow registry URI, local dir, tiny/default
    model_name: str = "deepcritic"  # endpoint path /v1/models/<model_name>
    host: str = "127.0.0.1"  # never 0.0.0.0 unless asked (the container sets it explicitly)
    port: int = 8080  # HTTP port (KServe expects 8080)
    tracking_uri: str | None = None  # MLflow server for models:/ URIs ($MLFLOW_TRACKING_URI)
    # Cache of downloaded checkpoints, one folder per registry version (reused by restarts, other
    # versions removed); default $DEEPCRITIC_CACHE/serve.
    download_dir: str | None = None
    generation: BackendConfig = field(default_factory=BackendConfig)
    # Defaults a request may override.
    temperature: float = 0.0  # greedy single critique; k > 1 samples use vote_temperature
    vote_temperature: float = 1.0  # default when samples k > 1 (greedy samples would all agree)
    top_p: float = 1.0  # nucleus sampling (1.0 = off)
    max_tokens: int = 4_096  # critiques are long: every step is re-derived before the verdict
    batching: BatchingConfig = field(default_factory=BatchingConfig)
    limits: LimitsConfig = field(default_factory=LimitsConfig)
    openai_route: OpenAIRoute = "auto"  # auto = on with the vLLM backend
    # The critique prompt the v1/v2 routes build from (problem, steps); serve the set the critic
    # was trained with. deepcritic = the project's (prompts/critique_*.md); reference = the
    # authors' (their template, Qwen's default system message, eval.py's step numbering). The
    # chat route sends the client's messages as given.
    prompt_set: str = "deepcritic"

    def __post_init__(self) -> None:
        from deepcritic.reference import check_prompt_set

        check_prompt_set(self.prompt_set)
        if not self.host.strip():
            raise ValueError("host is empty (an empty host would listen on every interface)")
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
