"""``promote``: the gate, then move ``@champion`` to the candidate only when it is better.

The invariant kept under any interleaving of registrations, promotions and operator actions: the
alias only ever points at an intact (artifacts present, sha256 verified), gate-passed version whose
metric beats the floor; a promotion never moves it to a version worse than the one it holds (a
holder whose artifacts are broken counts as no holder); an operator's pin or manual move is left
alone until ``deepcritic registry unpin``.

1. **Gate** (no lock): the candidate's metric must be finite (else an error) and strictly above
   ``floor_f1`` (the pipeline passes the base model's F1 on the same benchmarks); its parseable-
   verdict rate (``avg_parse_rate``, written at registration) at least ``min_parse_rate``; its
   artifacts must download and hash to ``checkpoint_sha256``. Failing candidates are tagged
   ``deepcritic.gate=failed`` with the reason and return ``promoted=False``.
2. **Compare and move** under the alias lock (:mod:`deepcritic.registry.lease`, an MLflow-side
   lock that also works against a remote server): the current holder is verified (downloaded and
   hashed) *before* the lock; under it the alias state is re-read (a holder that moved meanwhile
   means: release, verify the new one, retry), the pin is honoured, scores are re-read, and the
   alias moves only when the candidate beats the holder by more than ``margin``. The move is fenced
   (the lock must still be ours) and read back. Losers get ``promoted=False``.

Decisions and reasons are tags on the candidate version (``deepcritic.promotion.*``); reruns are
idempotent. No deprecated registry stages are used.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from deepcritic.registry import lease
from deepcritic.registry import store as st
from deepcritic.registry.integrity import Verifier
from deepcritic.registry.registering import PARSE_RATE

log = logging.getLogger(__name__)
OnLocked = Callable[[lease.Lease], None]  # called with the alias lock held, before the decision


@dataclass
class PromoteConfig:
    model_name: str = st.DEFAULT_MODEL_NAME  # registered model whose alias may move
    version: str = ""  # candidate version; "" = the latest version
    metric: str = "avg_f1"  # paper: DeepCritic compares critics by average F1 over benchmarks
    margin: float = 0.0  # candidate must beat the champion by strictly more than this (>= 0)
    floor_f1: float = 0.0  # ours: metric must be strictly above it (pipeline: the base model's F1)
    parse_rate_metric: str = PARSE_RATE  # % of items with a readable verdict (see registering)
    min_parse_rate: float = 50.0  # ours: a critic must give a readable verdict on half the items
    alias: str = st.CHAMPION  # the alias that points at the serving version
    verify_champion: bool = True  # also re-hash the current holder (downloads it) before comparing
    scratch_dir: str | None = None  # where versions are downloaded to be verified (temp if unset)
    lock_ttl_s: float = 120.0  # a crashed promoter blocks others at most this long
    lock_timeout_s: float = 600.0  # give up waiting for the alias lock after this
    tracking_uri: str | None = None  # MLflow server (default: $MLFLOW_TRACKING_URI)


NO_FLOOR = -1.0  # below any F1: "none" (a wiring check, never a production setting)


def floor_value(spec: str, base_f1: float) -> float:
    """The promotion floor from a pipeline setting: ``base`` (the base model's avg F1 on the same
    benchmarks, evaluated in the run), ``none`` (no floor) or a number."""
    spec = str(spec).strip().lower()
    if spec == "base":
        if not math.isfinite(base_f1):
            raise st.RegistryError(f"promote_floor=base: the base model's F1 is {base_f1}")
        return float(base_f1)
    if spec == "none":
        return NO_FLOOR
    try:
        value = float(spec)
    except ValueError:
        raise st.RegistryError(f"promote_floor: 'base', 'none' or a number, got {spec!r}") from None
    if not math.isfinite(value):
        raise st.RegistryError(f"promote_floor: must be finite, got {spec!r}")
    return value


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
    alias: str = st.CHAMPION
    gate: str = ""  # "passed" or "failed: <why>"
    pinned_version: str | None = None  # an operator's pin that held the alias


@dataclass
class _Outcome:
    promoted: bool
    changed: bool
    reason: str
    champion_version: str | None
    champion_score: float | None
    pinned: str | None = None


def _validate(config: PromoteConfig) -> None:
    st.check_model_name(config.model_name)
    st.check_alias(config.alias)
    if not math.isfinite(config.margin) or config.margin < 0:
        raise st.RegistryError(f"margin: must be a finite number >= 0, got {config.margin}")
    if not math.isfinite(config.floor_f1):
        raise st.RegistryError(f"floor_f1: must be a finite number, got {config.floor_f1}")
    if not 0.0 <= config.min_parse_rate <= 100.0:
        raise st.RegistryError(f"min_parse_rate: a % in [0, 100], got {config.min_parse_rate}")
    if config.lock_ttl_s <= 0 or config.lock_timeout_s <= 0:
        raise st.RegistryError("lock_ttl_s, lock_timeout_s: must be positive")


def decide(
    candidate: float, champion: float | None, margin: float, *, champion_version: str | None = None
) -> tuple[bool, str]:
    """The comparison: (promote?, why). Strictly better than champion + margin, or no champion."""
    if not math.isfinite(candidate):
        return False, f"candidate score is {candidate}"
    if champion is None or not math.isfinite(champion):
        if champion_version is None:
            return True, "no champion yet"
        return True, f"champion v{champion_version} has no usable score ({champion})"
    if candidate > champion + margin:
        return True, f"better: {candidate:.4f} > {champion:.4f} + margin {margin:g}"
    if candidate == champion:
        return False, f"equal: {candidate:.4f} == {champion:.4f} (not strictly better)"
    if candidate > champion:
        return False, f"within margin: {candidate:.4f} <= {champion:.4f} + margin {margin:g}"
    return False, f"worse: {candidate:.4f} < {champion:.4f}"


def _candidate(client: Any, config: PromoteConfig) -> Any:
    if config.version:
        return st.get_version(client, config.model_name, config.version)
    versions = client.search_model_versions(f"name='{config.model_name}'", max_results=10000)
    if not versions:
        raise st.RegistryError(f"model_name: no versions registered under {config.model_name!r}")
    return max(versions, key=lambda v: int(v.version))


def _candidate_score(client: Any, cand: Any, config: PromoteConfig) -> float:
    value = st.score(client, cand, config.metric)
    where = f"{config.model_name} v{cand.version}"
    if value is None:
        raise st.RegistryError(f"metric: {where} has no {config.metric!r} (tag or run metric)")
    if not math.isfinite(value):
        raise st.RegistryError(f"metric: {where} has {config.metric}={value} (must be finite)")
    return value


def _gate(
    client: Any, cand: Any, score: float, config: PromoteConfig, verifier: Verifier
) -> str | None:
    """None when the candidate passes the gate, else why it does not."""
    if score <= config.floor_f1:
        return f"below the floor: {config.metric} {score:.4f} <= floor {config.floor_f1:.4f}"
    if config.min_parse_rate > 0:
        rate = st.score(client, cand, config.parse_rate_metric)
        if not st.usable(rate):
            return (
                f"no usable {config.parse_rate_metric!r} to check min_parse_rate against ({rate})"
            )
        assert rate is not None
        if rate < config.min_parse_rate:
            return (
                f"too few readable verdicts: {config.parse_rate_metric} {rate:.1f} < "
                f"min_parse_rate {config.min_parse_rate:g}"
            )
    problem = verifier.problem(client, cand)
    return None if problem is None else f"not intact: {problem}"


def _compare(
    config: PromoteConfig,
    score: float,
    holder: str | None,
    champ: float | None,
    problem: str | None,
) -> tuple[bool, str]:
    if holder is not None and problem is not None:
        return True, f"champion v{holder} is not intact ({problem})"
    return decide(score, champ, config.margin, champion_version=holder)


def _decide_locked(
    client: Any,
    config: PromoteConfig,
    version: str,
    state: st.AliasState,
    holder_problem: str | None,
    lk: lease.Lease,
) -> _Outcome:
    name, alias = config.model_name, config.alias
    score = st.score(client, st.get_version(client, name, version), config.metric)  # fresh
    champ = None
    if state.holder is not None:
        champ = st.score(client, st.get_version(client, name, state.holder), config.metric)
    base = (state.holder, champ)
    if not st.usable(score) or score is None or score <= config.floor_f1:
        return _Outcome(False, False, f"{config.metric} changed during the gate: {score}", *base)
    if state.pinned is not None:
        ok = state.pinned == version == state.holder
        why = f"already {alias} (pinned)" if ok else (
            f"{alias} is pinned to v{state.pinned} by an operator "
            f"({state.pin_reason or 'no reason given'}); `deepcritic registry unpin` lifts it"
        )  # fmt: skip
        return _Outcome(ok, False, why, *base, pinned=state.pinned)
    if state.moved_outside:
        st.record_operator_move(client, name, alias, state)
        why = (f"{alias} was moved to v{state.holder} outside deepcritic (it had set "
               f"v{state.expected}): kept as a pin until `deepcritic registry unpin`")  # fmt: skip
        return _Outcome(state.holder == version, False, why, *base, pinned=state.holder)
    if state.holder == version:
        return _Outcome(True, False, f"already {alias}", *base)
    ok, why = _compare(config, score, state.holder, champ, holder_problem)
    if ok:
        st.move_alias(client, name, alias, version, state, lk.fence)
    return _Outcome(ok, ok, why, *base)


def _compare_and_move(
    client: Any, config: PromoteConfig, version: str, verifier: Verifier, on_locked: OnLocked | None
) -> _Outcome:
    name, alias = config.model_name, config.alias
    for _ in range(10):
        holder = st.alias_holder(client, name, alias)
        problem = None
        if holder is not None and str(holder.version) != version and config.verify_champion:
            problem = verifier.problem(client, holder)  # slow (download): before the lock
        seen = str(holder.version) if holder is not None else None
        with lease.hold(
            client, name, alias, ttl_s=config.lock_ttl_s, timeout_s=config.lock_timeout_s
        ) as lk:
            if on_locked is not None:
                on_locked(lk)
            state = st.read_alias_state(client, name, alias)
            if state.holder == seen:
                return _decide_locked(client, config, version, state, problem, lk)
        log.info("%s@%s moved while verifying v%s; looking again", name, alias, seen)
    raise st.RegistryError(f"alias: {name}@{alias} kept moving; promotion of v{version} gave up")


def _decision_tags(failure: str | None, out: _Outcome) -> dict[str, str]:
    return {
        st.GATE_TAG: "passed" if failure is None else "failed",
        f"{st.GATE_TAG}.reason": (failure or "")[:4000],
        "deepcritic.promotion.decision": "promoted" if out.promoted else "rejected",
        "deepcritic.promotion.reason": out.reason[:4000],
        "deepcritic.promotion.compared_to": out.champion_version or "",
    }


def promote(config: PromoteConfig, *, on_locked: OnLocked | None = None) -> PromoteResult:
    """Gate the candidate, then move ``@alias`` to it iff it beats the holder by ``margin``.

    ``on_locked`` (for observers and fault tests) is called each time the alias lock is taken,
    before the alias state is read under it."""
    _validate(config)
    client = st.client(config.tracking_uri)
    cand = _candidate(client, config)
    version = str(cand.version)
    score = _candidate_score(client, cand, config)
    verifier = Verifier(config.scratch_dir)
    failure = _gate(client, cand, score, config, verifier)
    gate = "passed" if failure is None else f"failed: {failure}"
    if failure is None and cand.tags.get(st.GATE_TAG) != "passed":  # before the alias may move
        client.set_model_version_tag(config.model_name, version, st.GATE_TAG, "passed")
        cand.tags[st.GATE_TAG] = "passed"
    if failure is not None:
        holder = st.alias_holder(client, config.model_name, config.alias)
        held = str(holder.version) if holder is not None else None
        champ = st.score(client, holder, config.metric) if holder is not None else None
        out = _Outcome(False, False, f"gate: {failure}", held, champ)
    else:
        out = _compare_and_move(client, config, version, verifier, on_locked)
    st.set_version_tags(client, cand, _decision_tags(failure, out))
    log.info("promotion of %s v%s: %s (%s)", config.model_name, version, out.promoted, out.reason)
    return PromoteResult(
        config.model_name, version, out.promoted, out.changed, out.reason, score,
        out.champion_version, out.champion_score, config.alias, gate, out.pinned,
    )  # fmt: skip
