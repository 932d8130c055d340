"""Prometheus metrics of the critique endpoint, in the default registry KServe serves at /metrics.

KServe already exports ``request_{preprocess,predict,postprocess}_seconds`` per model; these add
request outcomes, end-to-end critique latency, batch sizes, queue depth, token counts and the
prompts of clients that disconnected (dropped while queued, or already generating).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache

from prometheus_client import Counter, Gauge, Histogram

from deepcritic.generation import Completion

_LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 40, 80, 160)
_BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128)


@dataclass(frozen=True)
class ServeMetrics:
    requests: Counter
    latency: Histogram
    batch_size: Histogram
    batch_seconds: Histogram
    queue_depth: Gauge
    prompt_tokens: Counter
    completion_tokens: Counter
    cancelled: Counter

    def observe_batch(
        self, size: int, seconds: float, outs: Sequence[Sequence[Completion]], model: str
    ) -> None:
        self.batch_size.labels(model_name=model).observe(size)
        self.batch_seconds.labels(model_name=model).observe(seconds)
        prompt = sum(group[0].prompt_tokens for group in outs if group)
        completion = sum(c.completion_tokens for group in outs for c in group)
        self.prompt_tokens.labels(model_name=model).inc(prompt)
        self.completion_tokens.labels(model_name=model).inc(completion)


@cache
def serve_metrics() -> ServeMetrics:
    """Create (once per process) and register the metrics."""
    labels = ["model_name"]
    return ServeMetrics(
        requests=Counter(
            "deepcritic_requests", "critique requests by outcome", [*labels, "protocol", "code"]
        ),
        latency=Histogram(
            "deepcritic_request_seconds",
            "critique latency (validation to response)",
            labels,
            buckets=_LATENCY_BUCKETS,
        ),
        batch_size=Histogram(
            "deepcritic_batch_size", "prompts per generate call", labels, buckets=_BATCH_BUCKETS
        ),
        batch_seconds=Histogram(
            "deepcritic_batch_seconds",
            "seconds per generate call",
            labels,
            buckets=_LATENCY_BUCKETS,
        ),
        queue_depth=Gauge("deepcritic_queue_depth", "prompts waiting or generating", labels),
        prompt_tokens=Counter("deepcritic_prompt_tokens", "prompt tokens processed", labels),
        completion_tokens=Counter("deepcritic_completion_tokens", "tokens generated", labels),
        cancelled=Counter(
            "deepcritic_cancelled_prompts",
            "prompts of clients that went away: dropped from the queue, or already generating",
            [*labels, "stage"],
        ),
    )
