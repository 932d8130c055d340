"""Operator actions on the alias: pin (roll back or hold a version), unpin, status, verify.

``deepcritic registry pin --version 3 --reason "v4 regressed on olympiad"`` verifies v3 (download +
sha256), requires that it once passed the promotion gate, then, under the alias lock, tags the
registered model ``deepcritic.pin.champion=3`` and moves ``@champion`` to v3. Promotions leave a
pinned alias alone (their candidates get ``promoted=False`` with the pin as the reason) until
``deepcritic registry unpin``, after which the pinned version is the champion new candidates must
beat. Moving the alias by hand in the MLflow UI is detected by the next promotion and kept as a pin.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from deepcritic.registry import lease
from deepcritic.registry import store as st
from deepcritic.registry.integrity import IntegrityError, Verifier


@dataclass
class OperatorConfig:
    model_name: str = st.DEFAULT_MODEL_NAME  # registered model to act on
    alias: str = st.CHAMPION  # the alias to pin, unpin or verify
    version: str = ""  # pin / verify: the version
    reason: str = ""  # pin: why (kept in the deepcritic.pin.<alias>.reason tag)
    require_gate: bool = True  # pin: only versions that once passed the promotion gate
    scratch_dir: str | None = None  # where versions are downloaded to be verified
    lock_ttl_s: float = 120.0  # a crashed operator command blocks others at most this long
    lock_timeout_s: float = 600.0  # give up waiting for the alias lock after this
    tracking_uri: str | None = None  # MLflow server (default: $MLFLOW_TRACKING_URI)


@dataclass
class AliasStatus:
    model_name: str
    alias: str
    holder: str | None
    pinned: str | None
    pin_reason: str
    moved_outside: bool  # the holder was set by hand, not by deepcritic (respected as a pin)
    holder_sha256: str | None


def _status(client: Any, config: OperatorConfig) -> AliasStatus:
    state = st.read_alias_state(client, config.model_name, config.alias)
    sha = None
    if state.holder is not None:
        mv = st.get_version(client, config.model_name, state.holder)
        sha = mv.tags.get(st.SHA256_TAG)
    return AliasStatus(
        config.model_name, config.alias, state.holder, state.pinned, state.pin_reason,
        state.moved_outside, sha,
    )  # fmt: skip


def status(config: OperatorConfig) -> AliasStatus:
    return _status(st.client(config.tracking_uri), config)


def _hold(client: Any, config: OperatorConfig) -> Any:
    st.check_model_name(config.model_name)
    st.check_alias(config.alias)
    return lease.hold(
        client, config.model_name, config.alias,
        ttl_s=config.lock_ttl_s, timeout_s=config.lock_timeout_s,
    )  # fmt: skip


def verify(config: OperatorConfig) -> dict[str, str]:
    """Download a version and check its sha256; IntegrityError when it is broken."""
    client = st.client(config.tracking_uri)
    if not config.version:
        raise st.RegistryError("version: which version to verify")
    mv = st.get_version(client, config.model_name, config.version)
    problem = Verifier(config.scratch_dir).problem(client, mv)
    if problem is not None:
        raise IntegrityError(f"version: {config.model_name} v{mv.version} is not intact: {problem}")
    return {"version": str(mv.version), st.SHA256_TAG: mv.tags[st.SHA256_TAG], "status": "intact"}


def pin(config: OperatorConfig) -> AliasStatus:
    """Pin the alias to ``config.version`` (verified, gate-passed) and move it there."""
    client = st.client(config.tracking_uri)
    if not config.version:
        raise st.RegistryError("version: which version to pin the alias to")
    name, alias, version = config.model_name, config.alias, config.version
    mv = st.get_version(client, name, version)
    if config.require_gate and mv.tags.get(st.GATE_TAG) != "passed":
        raise st.RegistryError(
            f"version: {name} v{version} has not passed the promotion gate "
            f"({mv.tags.get(f'{st.GATE_TAG}.reason') or 'never gated'}); --require-gate false overrides"
        )
    verify(config)
    with _hold(client, config) as lk:
        state = st.read_alias_state(client, name, alias)
        client.set_registered_model_tag(name, st.pin_tag(alias), version)
        client.set_registered_model_tag(
            name, f"{st.pin_tag(alias)}.reason", config.reason or "pinned"
        )
        if state.holder != version:
            st.move_alias(client, name, alias, version, state, lk.fence)
        else:
            client.set_registered_model_tag(name, st.expected_tag(alias), version)
    return _status(client, config)


def unpin(config: OperatorConfig) -> AliasStatus:
    """Lift the pin; the version the alias holds stays, and new candidates must beat it."""
    client = st.client(config.tracking_uri)
    name, alias = config.model_name, config.alias
    with _hold(client, config):
        state = st.read_alias_state(client, name, alias)
        client.set_registered_model_tag(name, st.pin_tag(alias), "")
        client.set_registered_model_tag(name, f"{st.pin_tag(alias)}.reason", "")
        client.set_registered_model_tag(name, st.expected_tag(alias), state.holder or "")
        client.set_registered_model_tag(name, f"{st.expected_tag(alias)}.previous", "")
    return _status(client, config)
