"""MLflow model registry: register a trained critic checkpoint, and gate its promotion to ``@champion``.

``register(RegisterConfig)`` logs an HF checkpoint folder (safetensors + tokenizer) as artifacts of
an MLflow run and creates a model version whose ``source`` is that artifact folder. (We do not use
``mlflow.register_model("runs:/...")`` or ``mlflow.transformers.log_model``: both break with this
transformers/mlflow stack.) The version is tagged with the run id, base model, data hash, checkpoint
hash and metrics (``avg_f1``...). Registering the same checkpoint twice reuses its version.

``promote(PromoteConfig)`` compares the candidate's metric (default ``avg_f1``) with the version
holding the ``@champion`` alias and moves the alias only when the candidate is strictly better by
``margin`` (no champion -> promote). The decision and its reason are written as tags on the candidate
version and returned. Reruns are idempotent: a champion stays champion, a rejected candidate is
rejected again with the same reason. No deprecated registry stages are used.

Concurrency guarantee (two promotions of different candidates at the same time):

* Every promotion holds a lock while it reads the champion, decides and sets the alias: an
  in-process lock plus an ``fcntl`` file lock next to the store for ``sqlite``/``file`` tracking
  URIs (the local default), so promotions through one store are serialized and each compares with
  the champion as it is at that moment. A worse candidate can therefore never replace a better one.
* Against a remote tracking server (no shared file system) the file lock is unavailable. Then a
  candidate that passes the gate is first tagged ``deepcritic.gate=passed``; the champion is re-read
  right before ``set_registered_model_alias``; and after setting, the promoter re-checks and, if the
  alias holder is not the best gate-passed version, moves the alias to that best one. Whichever
  promoter finishes last therefore leaves the best gate-passed version as champion.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import logging
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from deepcritic import tracking
from deepcritic.config import add_dataclass_arguments, config_from_args, to_dict

log = logging.getLogger(__name__)

DEFAULT_MODEL_NAME = "deepcritic"  # serve: models:/deepcritic@champion
CHAMPION = "champion"
GATE_TAG = "deepcritic.gate"
_THREAD_LOCK = threading.Lock()


class RegistryError(ValueError):
    """A registry operation that cannot proceed (missing metric, missing version, tracking off)."""


@dataclass
class RegisterConfig:
    checkpoint: str = ""  # HF checkpoint folder (config.json + *.safetensors + tokenizer)
    model_name: str = DEFAULT_MODEL_NAME
    base_model: str = ""  # what the critic was fine-tuned from (e.g. "default")
    data_hash: str = ""  # hash of the training data (stage outputs carry it)
    data_paths: list[str] = field(default_factory=list)  # hashed into data_hash when given
    metrics: dict[str, float] = field(default_factory=dict)  # e.g. {"avg_f1": 0.41}
    metrics_json: str | None = None  # JSON file with metrics (numeric top-level keys are used)
    tags: dict[str, str] = field(default_factory=dict)
    tracking_uri: str | None = None


@dataclass
class RegisterResult:
    model_name: str
    version: str
    run_id: str
    source: str
    checkpoint_sha256: str
    metrics: dict[str, float]
    reused: bool  # True when this checkpoint was already registered (idempotent rerun)


@dataclass
class PromoteConfig:
    model_name: str = DEFAULT_MODEL_NAME
    version: str = ""  # candidate version; "" = the latest version
    metric: str = "avg_f1"  # paper: DeepCritic compares critics by average F1 over benchmarks
    margin: float = 0.0  # candidate must beat the champion by strictly more than this
    alias: str = CHAMPION
    tracking_uri: str | None = None


@dataclass
class PromoteResult:
    model_name: str
    version: str
    promoted: bool  # the alias points to the candidate after this call
    changed: bool  # this call moved the alias
    reason: str
    candidate_score: float
    champion_version: str | None  # alias holder before the decision
    champion_score: float | None
    alias: str = CHAMPION


# ---------------------------------------------------------------- helpers


def _client(uri: str | None) -> Any:
    resolved = tracking.resolve_tracking_uri(uri)
    if resolved is None:
        raise RegistryError("tracking_uri: the registry needs MLflow tracking (it is 'off')")
    import mlflow
    from mlflow import MlflowClient

    mlflow.set_tracking_uri(resolved)
    return MlflowClient(tracking_uri=resolved, registry_uri=resolved)


def hash_paths(paths: list[str | Path]) -> str:
    """sha256 over the files (sorted relative paths + bytes) of the given files/folders."""
    h = hashlib.sha256()
    for root in sorted(Path(p) for p in paths):
        if not root.exists():
            raise FileNotFoundError(f"{root} does not exist")
        files = sorted(f for f in root.rglob("*") if f.is_file()) if root.is_dir() else [root]
        for f in files:
            h.update(str(f.relative_to(root) if root.is_dir() else f.name).encode())
            with f.open("rb") as fh:
                while chunk := fh.read(1 << 20):
                    h.update(chunk)
    return h.hexdigest()


def _load_metrics(config: RegisterConfig) -> dict[str, float]:
    metrics = {k: float(v) for k, v in config.metrics.items()}
    if config.metrics_json:
        data = json.loads(Path(config.metrics_json).read_text(encoding="utf-8"))
        if not isinstance(data, dict):
            raise RegistryError(f"metrics_json: {config.metrics_json} must hold a JSON object")
        for k, v in data.items():
            if isinstance(v, (int, float)) and not isinstance(v, bool):
                metrics.setdefault(k, float(v))
            elif isinstance(v, dict):  # per-benchmark {"gsm8k": {"f1": ...}} -> f1/gsm8k
                for sub, val in v.items():
                    if isinstance(val, (int, float)) and not isinstance(val, bool):
                        metrics.setdefault(f"{sub}/{k}", float(val))
    return metrics


def _check_checkpoint(path: Path) -> None:
    if not path.is_dir():
        raise FileNotFoundError(f"checkpoint: {path} is not a folder")
    if not (path / "config.json").is_file():
        raise RegistryError(f"checkpoint: {path} has no config.json (not an HF checkpoint)")
    if not list(path.glob("*.safetensors")):
        raise RegistryError(f"checkpoint: {path} has no *.safetensors weights")


def _find_version_by_tag(client: Any, name: str, key: str, value: str) -> Any | None:
    for mv in client.search_model_versions(f"name='{name}'", max_results=1000):
        if mv.tags.get(key) == value:
            return mv
    return None


def _ensure_registered_model(client: Any, name: str) -> None:
    from mlflow.exceptions import MlflowException

    try:
        client.get_registered_model(name)
    except MlflowException:
        try:
            client.create_registered_model(
                name, description="DeepCritic step-level math critic (HF checkpoint)"
            )
        except MlflowException:  # created concurrently
            client.get_registered_model(name)


# ---------------------------------------------------------------- register


def register(config: RegisterConfig) -> RegisterResult:
    """Log ``config.checkpoint`` as run artifacts and create a model version from them."""
    ckpt = Path(config.checkpoint)
    _check_checkpoint(ckpt)
    client = _client(config.tracking_uri)
    sha = hash_paths([ckpt])
    metrics = _load_metrics(config)
    data_hash = config.data_hash or (
        hash_paths(list(config.data_paths)) if config.data_paths else ""
    )
    _ensure_registered_model(client, config.model_name)
    existing = _find_version_by_tag(client, config.model_name, "checkpoint_sha256", sha)
    if existing is not None:
        log.info("checkpoint already registered as %s v%s", config.model_name, existing.version)
        return RegisterResult(
            config.model_name, str(existing.version), existing.run_id or "", existing.source, sha,
            _version_metrics(existing), reused=True,
        )  # fmt: skip
    with tracking.stage_run("register", config, tracking_uri=config.tracking_uri) as t:
        import mlflow

        t.log_artifact(ckpt, "checkpoint")
        t.log_metrics(metrics)
        source = mlflow.get_artifact_uri("checkpoint")
        run_id = str(t.run_id)
    tags = {
        "run_id": run_id,
        "base_model": config.base_model,
        "data_hash": data_hash,
        "checkpoint_sha256": sha,
        **{f"metric.{k}": f"{v:.6f}" for k, v in metrics.items()},
        **config.tags,
    }
    if config.metrics_json is None and not metrics:
        log.warning("registering %s without metrics: promotion will refuse it", ckpt)
    mv = client.create_model_version(config.model_name, source=source, run_id=run_id, tags=tags)
    log.info("registered %s v%s from %s", config.model_name, mv.version, source)
    return RegisterResult(config.model_name, str(mv.version), run_id, source, sha, metrics, False)


def _version_metrics(mv: Any) -> dict[str, float]:
    return {k[len("metric.") :]: float(v) for k, v in mv.tags.items() if k.startswith("metric.")}


# ---------------------------------------------------------------- promote


def _score(client: Any, mv: Any, metric: str) -> float | None:
    """The version's metric: its ``metric.<name>`` tag, else the metric of its source run."""
    tagged = mv.tags.get(f"metric.{metric}")
    if tagged is not None:
        return float(tagged)
    if mv.run_id:
        value = client.get_run(mv.run_id).data.metrics.get(metric)
        if value is not None:
            return float(value)
    return None


def _champion(client: Any, name: str, alias: str) -> Any | None:
    from mlflow.exceptions import MlflowException

    try:
        return client.get_model_version_by_alias(name, alias)
    except MlflowException:
        return None


def _lock_path(uri: str | None) -> Path | None:
    resolved = tracking.resolve_tracking_uri(uri) or ""
    parsed = urlparse(resolved)
    if parsed.scheme == "sqlite":
        db = resolved.split(":///", 1)[-1]
        return Path(db).with_suffix(".promote.lock") if db and db != ":memory:" else None
    if parsed.scheme in ("", "file"):
        root = Path(parsed.path or resolved)
        return root / ".promote.lock" if root.is_dir() else None
    return None


@contextlib.contextmanager
def promotion_lock(uri: str | None, timeout_s: float = 120.0) -> Iterator[bool]:
    """Serialize promotions: a thread lock plus an fcntl file lock for local stores.

    Yields True when promotions are fully serialized (local store), False for a remote server.
    """
    with _THREAD_LOCK:
        path = _lock_path(uri)
        if path is None:
            yield False
            return
        import fcntl

        path.parent.mkdir(parents=True, exist_ok=True)
        deadline = time.monotonic() + timeout_s
        with path.open("a") as fh:
            while True:
                try:
                    fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if time.monotonic() > deadline:
                        raise RegistryError(f"could not lock {path} in {timeout_s}s") from None
                    time.sleep(0.05)
            try:
                yield True
            finally:
                fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


def _candidate(client: Any, config: PromoteConfig) -> Any:
    from mlflow.exceptions import MlflowException

    if config.version:
        try:
            return client.get_model_version(config.model_name, config.version)
        except MlflowException as e:
            raise RegistryError(f"version: {config.model_name} v{config.version} not found") from e
    versions = client.search_model_versions(f"name='{config.model_name}'", max_results=1000)
    if not versions:
        raise RegistryError(f"model_name: no versions registered under {config.model_name!r}")
    return max(versions, key=lambda v: int(v.version))


def decide(
    candidate: float, champion: float | None, margin: float, *, champion_version: str | None = None
) -> tuple[bool, str]:
    """The gate: (promote?, why). Strictly better than champion + margin, or no champion."""
    if champion is None:
        return True, "no champion yet" if champion_version is None else "champion has no score"
    if candidate > champion + margin:
        return True, f"better: {candidate:.4f} > {champion:.4f} + margin {margin:g}"
    if candidate == champion:
        return False, f"equal: {candidate:.4f} == {champion:.4f} (not strictly better)"
    if candidate > champion:
        return False, f"within margin: {candidate:.4f} <= {champion:.4f} + margin {margin:g}"
    return False, f"worse: {candidate:.4f} < {champion:.4f}"


def _record(client: Any, name: str, version: str, tags: dict[str, str]) -> None:
    for k, v in tags.items():
        client.set_model_version_tag(name, version, k, v)


def _best_gate_passed(client: Any, name: str, metric: str) -> Any | None:
    scored = []
    for mv in client.search_model_versions(f"name='{name}'", max_results=1000):
        if mv.tags.get(GATE_TAG) == "passed":
            score = _score(client, mv, metric)
            if score is not None:
                scored.append((score, -int(mv.version), mv))
    return max(scored, key=lambda s: s[:2])[2] if scored else None


def _set_alias(client: Any, name: str, alias: str, version: str, attempts: int = 5) -> None:
    """Set the alias, retrying when a concurrent writer collides with us (the store then raises,
    e.g. a unique-constraint error while both insert the alias row); bounded, then re-raised."""
    import time

    from mlflow.exceptions import MlflowException

    for attempt in range(attempts):
        try:
            client.set_registered_model_alias(name, alias, version)
            return
        except MlflowException:
            if attempt == attempts - 1:
                raise
            log.warning("setting %s@%s collided with another writer; retrying", name, alias)
            time.sleep(0.05 * 2**attempt)


def _repair(client: Any, config: PromoteConfig) -> None:
    """Remote stores: make sure the alias holds the best gate-passed version (see module doc)."""
    for _ in range(3):  # bounded: each pass only ever moves the alias to a better version
        best = _best_gate_passed(client, config.model_name, config.metric)
        holder = _champion(client, config.model_name, config.alias)
        if best is None or (holder is not None and holder.version == best.version):
            return
        log.warning("alias %s moved concurrently; restoring v%s", config.alias, best.version)
        _set_alias(client, config.model_name, config.alias, str(best.version))


def promote(config: PromoteConfig) -> PromoteResult:
    """Move ``@alias`` to the candidate iff it beats the current holder by more than ``margin``."""
    client = _client(config.tracking_uri)
    cand = _candidate(client, config)
    version = str(cand.version)
    score = _score(client, cand, config.metric)
    if score is None:
        raise RegistryError(
            f"metric: {config.model_name} v{version} has no {config.metric!r} (tag or run metric)"
        )
    with promotion_lock(config.tracking_uri) as serialized:
        champ = _champion(client, config.model_name, config.alias)
        champ_version = str(champ.version) if champ is not None else None
        champ_score = _score(client, champ, config.metric) if champ is not None else None
        if champ_version == version:
            ok, why, changed = True, f"already {config.alias}", False
        else:
            ok, why = decide(score, champ_score, config.margin, champion_version=champ_version)
            changed = ok
        if changed:
            client.set_model_version_tag(config.model_name, version, GATE_TAG, "passed")
            latest = _champion(client, config.model_name, config.alias)  # re-read right before set
            if latest is not None and str(latest.version) != champ_version:
                latest_score = _score(client, latest, config.metric)
                ok, why = decide(score, latest_score, config.margin, champion_version="?")
                changed = ok
                champ_version, champ_score = str(latest.version), latest_score
            if changed:
                _set_alias(client, config.model_name, config.alias, version)
        _record(client, config.model_name, version, _decision_tags(config, ok, why, champ_version))
        if changed and not serialized:
            _repair(client, config)
    log.info("promotion of %s v%s: %s (%s)", config.model_name, version, ok, why)
    return PromoteResult(
        config.model_name,
        version,
        ok,
        changed,
        why,
        score,
        champ_version,
        champ_score,
        config.alias,
    )


def _decision_tags(
    config: PromoteConfig, ok: bool, why: str, champ_version: str | None
) -> dict[str, str]:
    tags = {
        "deepcritic.promotion.decision": "promoted" if ok else "rejected",
        "deepcritic.promotion.reason": why,
        "deepcritic.promotion.metric": config.metric,
        "deepcritic.promotion.margin": f"{config.margin:g}",
    }
    if champ_version is not None:
        tags["deepcritic.promotion.compared_to"] = champ_version
    return tags


# ---------------------------------------------------------------- CLI


def _run_register(args: argparse.Namespace) -> int:
    result = register(config_from_args(RegisterConfig, args))
    print(json.dumps(to_dict(result), indent=1))
    return 0


def _run_promote(args: argparse.Namespace) -> int:
    result = promote(config_from_args(PromoteConfig, args))
    print(json.dumps(to_dict(result), indent=1))
    return 0


def register_cli(subparsers: Any) -> None:
    """Add ``deepcritic register`` and ``deepcritic promote``."""
    p = subparsers.add_parser(
        "register", help="register an HF checkpoint as an MLflow model version"
    )
    add_dataclass_arguments(p, RegisterConfig)
    p.set_defaults(func=_run_register)
    q = subparsers.add_parser("promote", help="move @champion to a version if it is better")
    add_dataclass_arguments(q, PromoteConfig)
    q.set_defaults(func=_run_promote)
