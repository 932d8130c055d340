"""``register``: log an HF checkpoint folder as run artifacts and make it one model version.

The version's ``source`` is the artifact folder (we do not use ``mlflow.register_model("runs:/...")``
or ``mlflow.transformers.log_model``: both break with this transformers/mlflow stack). It is tagged
with the run id, base model, data hash, ``checkpoint_sha256`` and the metrics (``metric.avg_f1``...).

One checkpoint, one version: a checkpoint whose sha256 is already registered reuses that version
when its artifacts are intact (downloaded and re-hashed); a broken one is tagged and a new version
is made. Concurrent registrations of one checkpoint upload in parallel but create the version under
the registry's ``register`` lock (:mod:`deepcritic.registry.lease`), so exactly one version exists;
the losers delete their upload run and reuse it. Re-registering with other metrics updates the
version's ``metric.*`` tags and reports each change (``metrics_changed``) rather than keeping the
old values silently.

Metrics come from ``metrics`` (highest priority), ``metrics_json`` (the evaluate stage's
``metrics.json``: top-level numbers, and per-benchmark objects flattened to ``<metric>.<benchmark>``
like ``f1.gsm8k``) and the evaluate stage's ``predictions/*.jsonl``: ``parse_rate.<benchmark>``
(% of items with a readable verdict, the one grader's parse), ``unparsed.<benchmark>`` and their mean
``avg_parse_rate``, which the promotion gate reads. NaN or infinite metrics are refused.
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from deepcritic import tracking
from deepcritic.records import DataError, iter_jsonl
from deepcritic.registry import lease
from deepcritic.registry import store as st
from deepcritic.registry.integrity import Verifier, hash_paths

log = logging.getLogger(__name__)

PARSE_RATE = (
    "avg_parse_rate"  # % of items whose critique has a readable verdict (mean over benchmarks)
)


@dataclass
class RegisterConfig:
    checkpoint: str = ""  # HF checkpoint folder (config.json + *.safetensors + tokenizer)
    model_name: str = st.DEFAULT_MODEL_NAME  # registered model to add the version to
    base_model: str = ""  # what the critic was fine-tuned from (e.g. "default")
    data_hash: str = ""  # hash of the training data (stage outputs carry it)
    data_paths: list[str] = field(default_factory=list)  # hashed into data_hash when given
    metrics: dict[str, float] = field(default_factory=dict)  # e.g. {"avg_f1": 41.0}
    metrics_json: str | None = None  # the evaluate stage's metrics.json
    predictions_dir: str | None = None  # evaluate's predictions/ (default: next to metrics_json)
    tags: dict[str, str] = field(default_factory=dict)  # extra version tags, e.g. {"run": "r1"}
    scratch_dir: str | None = None  # where an existing version is downloaded to be verified
    tracking_uri: str | None = None  # MLflow server (default: $MLFLOW_TRACKING_URI)


@dataclass
class RegisterResult:
    model_name: str
    version: str
    run_id: str
    source: str
    checkpoint_sha256: str
    metrics: dict[str, float]
    reused: bool  # True when this checkpoint was already registered (intact)
    metrics_changed: dict[str, list[float | None]] = field(default_factory=dict)  # k: [old, new]


# ---------------------------------------------------------------- metrics


def _finite(key: str, value: Any, where: str) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise st.RegistryError(f"{where}: metric {key!r} is not a number ({value!r})") from None
    if not math.isfinite(number):
        raise st.RegistryError(f"{where}: metric {key!r} is {number} (must be a finite number)")
    return number


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _metrics_from_json(path: str) -> dict[str, float]:
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as e:
        raise st.RegistryError(f"metrics_json: cannot read {path} ({e})") from e
    if not isinstance(data, dict):
        raise st.RegistryError(f"metrics_json: {path} must hold a JSON object")
    where = f"metrics_json {path}"
    out: dict[str, float] = {}
    for key, value in data.items():
        if _is_number(value):
            out[key] = _finite(key, value, where)
        elif isinstance(value, dict):  # {"gsm8k": {"f1": ..}} or {"benchmarks": {"gsm8k": {..}}}
            benches = value if key == "benchmarks" else {key: value}
            for bench, per in benches.items():
                for metric, v in per.items() if isinstance(per, dict) else []:
                    if _is_number(v):
                        out[f"{metric}.{bench}"] = _finite(f"{metric}.{bench}", v, where)
    return out


def parse_rates(predictions_dir: str | Path) -> dict[str, float]:
    """Per-benchmark % of items with a readable verdict (``prediction`` not null), and the mean."""
    out: dict[str, float] = {}
    rates = []
    for path in sorted(Path(predictions_dir).glob("*.jsonl")):
        n = parsed = 0
        for line, row in iter_jsonl(path):
            if not isinstance(row, dict) or "prediction" not in row:
                raise DataError(str(path), line, "prediction", "missing (not an evaluate row)")
            n += 1
            parsed += row["prediction"] is not None
        if n == 0:
            log.warning("%s has no rows; no parse rate for it", path)
            continue
        out[f"parse_rate.{path.stem}"] = 100.0 * parsed / n
        out[f"unparsed.{path.stem}"] = float(n - parsed)
        rates.append(100.0 * parsed / n)
        if parsed < n:
            log.info("%s: %d of %d critiques without a readable verdict", path.stem, n - parsed, n)
    if rates:
        out[PARSE_RATE] = sum(rates) / len(rates)
    return out


def load_metrics(config: RegisterConfig) -> dict[str, float]:
    """Derived parse rates < metrics_json < explicit metrics; all finite, else RegistryError."""
    metrics: dict[str, float] = {}
    pred_dir = config.predictions_dir
    if pred_dir is None and config.metrics_json:
        pred_dir = str(Path(config.metrics_json).parent / "predictions")
    if pred_dir and Path(pred_dir).is_dir():
        metrics.update(parse_rates(pred_dir))
    elif config.predictions_dir:
        raise st.RegistryError(f"predictions_dir: {config.predictions_dir} is not a folder")
    if config.metrics_json:
        metrics.update(_metrics_from_json(config.metrics_json))
    metrics.update({k: _finite(k, v, "metrics") for k, v in config.metrics.items()})
    return metrics


# ---------------------------------------------------------------- versions


def _check_checkpoint(path: Path) -> None:
    if not path.is_dir():
        raise FileNotFoundError(f"checkpoint: {path} is not a folder")
    if not (path / "config.json").is_file():
        raise st.RegistryError(f"checkpoint: {path} has no config.json (not an HF checkpoint)")
    if not list(path.glob("*.safetensors")):
        raise st.RegistryError(f"checkpoint: {path} has no *.safetensors weights")


def _versions_with_sha(client: Any, name: str, sha: str) -> list[Any]:
    found = client.search_model_versions(f"name='{name}'", max_results=10000)
    return sorted(
        (mv for mv in found if mv.tags.get(st.SHA256_TAG) == sha), key=lambda mv: int(mv.version)
    )


def _intact_version(client: Any, name: str, sha: str, verifier: Verifier) -> Any | None:
    """The oldest version of this checkpoint whose artifacts verify (others get tagged broken)."""
    for mv in _versions_with_sha(client, name, sha):
        failed = str(mv.tags.get(st.INTEGRITY_TAG, "")).startswith("failed")
        if not failed and verifier.problem(client, mv) is None:
            return mv
    return None


def _reuse(client: Any, mv: Any, sha: str, metrics: dict[str, float], name: str) -> RegisterResult:
    old = st.version_metrics(mv)
    changed: dict[str, list[float | None]] = {}
    for k, v in metrics.items():
        if k not in old or f"{old[k]:.6f}" != f"{v:.6f}":  # as the tags store them
            changed[k] = [old.get(k), v]
    if changed:
        st.set_version_tags(
            client, mv, {f"{st.METRIC_PREFIX}{k}": f"{metrics[k]:.6f}" for k in changed}
        )
        log.warning("%s v%s re-registered with new metrics: %s", name, mv.version, changed)
    else:
        log.info("checkpoint already registered as %s v%s (same metrics)", name, mv.version)
    return RegisterResult(
        name, str(mv.version), mv.run_id or "", mv.source, sha, {**old, **metrics}, True, changed
    )


def _upload(config: RegisterConfig, ckpt: Path, metrics: dict[str, float]) -> tuple[str, str]:
    with tracking.stage_run("register", config, tracking_uri=config.tracking_uri) as t:
        import mlflow

        t.log_artifact(ckpt, "checkpoint")
        t.log_metrics(metrics)
        return str(t.run_id), str(mlflow.get_artifact_uri("checkpoint"))


def register(config: RegisterConfig) -> RegisterResult:
    """Log ``config.checkpoint`` as run artifacts and create (or reuse) its model version."""
    name = config.model_name
    st.check_model_name(name)
    ckpt = Path(config.checkpoint)
    _check_checkpoint(ckpt)
    metrics = load_metrics(config)
    client = st.client(config.tracking_uri)
    sha = hash_paths([ckpt])
    st.ensure_registered_model(client, name)
    verifier = Verifier(config.scratch_dir)
    existing = _intact_version(client, name, sha, verifier)
    if existing is not None:
        return _reuse(client, existing, sha, metrics, name)
    if not metrics:
        log.warning("registering %s without metrics: promotion will refuse it", ckpt)
    run_id, source = _upload(config, ckpt, metrics)
    data_hash = config.data_hash or (
        hash_paths(list(config.data_paths)) if config.data_paths else ""
    )
    tags = {
        "run_id": run_id,
        "base_model": config.base_model,
        "data_hash": data_hash,
        st.SHA256_TAG: sha,
        **{f"{st.METRIC_PREFIX}{k}": f"{v:.6f}" for k, v in metrics.items()},
        **config.tags,
    }
    with lease.hold(client, name, "register"):
        raced = [  # made by a concurrent registration meanwhile (trusted: it was just uploaded)
            mv for mv in _versions_with_sha(client, name, sha)
            if not str(mv.tags.get(st.INTEGRITY_TAG, "")).startswith("failed")
            and not verifier.known_broken(mv)
        ]  # fmt: skip
        mv = None if raced else client.create_model_version(name, source, run_id, tags=tags)
    if mv is None:
        log.info(
            "%s was registered concurrently as v%s; dropping run %s", ckpt, raced[0].version, run_id
        )
        client.delete_run(run_id)
        return _reuse(client, raced[0], sha, metrics, name)
    log.info("registered %s v%s from %s", name, mv.version, source)
    return RegisterResult(name, str(mv.version), run_id, source, sha, metrics, False)
