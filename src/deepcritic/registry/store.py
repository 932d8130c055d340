"""What the registry keeps in MLflow, and the small reads every registry operation shares.

Model version tags (one version = one checkpoint):

* ``checkpoint_sha256``: :func:`deepcritic.registry.integrity.hash_paths` of the checkpoint folder;
  promotion, pinning and serving verify the downloaded artifacts against it.
* ``metric.<name>``: the evaluation metrics (``avg_f1``, ``avg_parse_rate``, ``f1.<benchmark>``...).
* ``deepcritic.gate``: ``passed`` / ``failed`` (with ``deepcritic.gate.reason``).
* ``deepcritic.integrity``: set to ``failed: <why>`` once a version's artifacts were found broken.
* ``deepcritic.promotion.*``: the last promotion decision for the version and its reason.

Registered model tags (per alias, e.g. ``champion``):

* ``deepcritic.pin.<alias>`` (+ ``.reason``): an operator's pin; promotions leave the alias alone.
* ``deepcritic.alias.<alias>``: the version deepcritic last moved the alias to, and
  ``deepcritic.alias.<alias>.previous`` while such a move is in flight. An alias holder that is
  neither was moved by someone else (an operator in the UI), which is respected like a pin.
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from deepcritic import tracking

DEFAULT_MODEL_NAME = "deepcritic"  # serve: models:/deepcritic@champion
CHAMPION = "champion"
SHA256_TAG = "checkpoint_sha256"
METRIC_PREFIX = "metric."
GATE_TAG = "deepcritic.gate"
INTEGRITY_TAG = "deepcritic.integrity"


class RegistryError(ValueError):
    """A registry operation that cannot proceed; the message names the field or version."""


def client(uri: str | None) -> Any:
    """An MlflowClient for the tracking URI (which is also the registry URI)."""
    resolved = tracking.resolve_tracking_uri(uri)
    if resolved is None:
        raise RegistryError("tracking_uri: the registry needs MLflow tracking (it is 'off')")
    import mlflow
    from mlflow import MlflowClient

    mlflow.set_tracking_uri(resolved)
    return MlflowClient(tracking_uri=resolved, registry_uri=resolved)


def check_model_name(name: str) -> None:
    if not name or "'" in name or "\\" in name:
        raise RegistryError(
            f"model_name: {name!r} must be non-empty, without quotes or backslashes"
        )


def check_alias(alias: str) -> None:
    if not re.fullmatch(r"[A-Za-z][A-Za-z0-9_-]{0,63}", alias or ""):
        raise RegistryError(f"alias: {alias!r} must be a letter then letters, digits, _ or -")


def error_code(exc: BaseException) -> str:
    return str(getattr(exc, "error_code", "") or "")


def ensure_registered_model(mlflow_client: Any, name: str) -> None:
    from mlflow.exceptions import MlflowException

    try:
        mlflow_client.get_registered_model(name)
    except MlflowException:
        try:
            mlflow_client.create_registered_model(
                name, description="DeepCritic step-level math critic (HF checkpoint)"
            )
        except MlflowException:  # created concurrently
            mlflow_client.get_registered_model(name)


def get_version(mlflow_client: Any, name: str, version: str) -> Any:
    from mlflow.exceptions import MlflowException

    try:
        return mlflow_client.get_model_version(name, version)
    except MlflowException as e:
        raise RegistryError(f"version: {name} v{version} not found") from e


def alias_holder(mlflow_client: Any, name: str, alias: str) -> Any | None:
    """The model version the alias points at, or None."""
    from mlflow.exceptions import MlflowException

    try:
        return mlflow_client.get_model_version_by_alias(name, alias)
    except MlflowException:
        return None


def version_metrics(mv: Any) -> dict[str, float]:
    out = {}
    for k, v in mv.tags.items():
        if k.startswith(METRIC_PREFIX):
            try:
                out[k[len(METRIC_PREFIX) :]] = float(v)
            except ValueError:
                out[k[len(METRIC_PREFIX) :]] = math.nan
    return out


def score(mlflow_client: Any, mv: Any, metric: str) -> float | None:
    """The version's metric: its ``metric.<name>`` tag, else the metric of its source run."""
    tagged = mv.tags.get(f"{METRIC_PREFIX}{metric}")
    if tagged is not None:
        try:
            return float(tagged)
        except ValueError:
            return math.nan
    if mv.run_id:
        value = mlflow_client.get_run(mv.run_id).data.metrics.get(metric)
        if value is not None:
            return float(value)
    return None


def usable(value: float | None) -> bool:
    return value is not None and math.isfinite(value)


def set_version_tags(mlflow_client: Any, mv: Any, tags: dict[str, str]) -> None:
    """Write the tags whose values differ from what ``mv`` (as read) already has."""
    for k, v in tags.items():
        if mv.tags.get(k) != v:
            mlflow_client.set_model_version_tag(mv.name, str(mv.version), k, v)


def pin_tag(alias: str) -> str:
    return f"deepcritic.pin.{alias}"


def expected_tag(alias: str) -> str:
    return f"deepcritic.alias.{alias}"


@dataclass(frozen=True)
class AliasState:
    """The alias and the bookkeeping around it, read together."""

    holder: str | None  # the version the alias points at
    expected: str | None  # the version deepcritic last moved it to (None: never)
    previous: str | None  # set only while a move is in flight (or was cut off)
    pinned: str | None  # an operator's pin
    pin_reason: str

    @property
    def moved_outside(self) -> bool:
        """The holder was set by someone else (an operator), not by a deepcritic move."""
        return (
            self.holder is not None
            and self.expected is not None
            and self.holder not in (self.expected, self.previous)
        )


def read_alias_state(mlflow_client: Any, name: str, alias: str) -> AliasState:
    rm = mlflow_client.get_registered_model(name)
    tags = dict(rm.tags or {})
    holder = (rm.aliases or {}).get(alias)
    return AliasState(
        holder=str(holder) if holder is not None else None,
        expected=tags.get(expected_tag(alias)) or None,
        previous=tags.get(f"{expected_tag(alias)}.previous") or None,
        pinned=tags.get(pin_tag(alias)) or None,
        pin_reason=tags.get(f"{pin_tag(alias)}.reason", ""),
    )


def set_alias(mlflow_client: Any, name: str, alias: str, version: str, attempts: int = 5) -> None:
    """Set the alias, retrying transient store errors (e.g. SQLite busy under concurrent writers)."""
    from mlflow.exceptions import MlflowException

    for attempt in range(attempts):
        try:
            mlflow_client.set_registered_model_alias(name, alias, version)
            return
        except MlflowException as e:
            if attempt == attempts - 1 or error_code(e) in ("PERMISSION_DENIED", "UNAUTHENTICATED"):
                raise
            time.sleep(0.05 * 2**attempt)


def move_alias(
    mlflow_client: Any,
    name: str,
    alias: str,
    version: str,
    state: AliasState,
    fence: Callable[[], None],
) -> None:
    """Move the alias (holding the lock): record the move, fence, set, verify, close the record."""
    previous = f"{expected_tag(alias)}.previous"
    mlflow_client.set_registered_model_tag(name, expected_tag(alias), version)
    mlflow_client.set_registered_model_tag(name, previous, state.holder or "")
    fence()
    set_alias(mlflow_client, name, alias, version)
    holder = alias_holder(mlflow_client, name, alias)
    now = str(holder.version) if holder is not None else None
    if now != version:
        raise RegistryError(f"alias: {name}@{alias} is v{now} right after setting it to v{version}")
    mlflow_client.set_registered_model_tag(name, previous, "")


def record_operator_move(mlflow_client: Any, name: str, alias: str, state: AliasState) -> None:
    """An alias moved outside deepcritic becomes an explicit pin (visible, lifted by unpin)."""
    reason = f"moved to v{state.holder} outside deepcritic (deepcritic had set v{state.expected})"
    mlflow_client.set_registered_model_tag(name, pin_tag(alias), state.holder or "")
    mlflow_client.set_registered_model_tag(name, f"{pin_tag(alias)}.reason", reason)
    mlflow_client.set_registered_model_tag(name, expected_tag(alias), state.holder or "")
