"""KServe's OpenAI route is turned off, with the reason, where its vLLM types do not import."""

from __future__ import annotations

import logging
import sys

import pytest

from deepcritic.generation import BackendConfig
from deepcritic.serve.config import ServeConfig
from deepcritic.serve.server import build_model, openai_route_unavailable

pytest.importorskip("kserve")


def _vllm_config(route: str) -> ServeConfig:
    return ServeConfig(model_uri="tiny", generation=BackendConfig(kind="vllm"), openai_route=route)  # type: ignore[arg-type]


@pytest.fixture
def no_openai_types(monkeypatch: pytest.MonkeyPatch) -> None:
    """kserve's OpenAI types fail to import, as with vllm 0.31 (or no vllm)."""
    monkeypatch.setitem(sys.modules, "kserve.protocol.rest.openai.types", None)


def test_reason_names_the_versions(no_openai_types: None) -> None:
    reason = openai_route_unavailable()
    assert reason is not None
    assert "kserve 0.21" in reason and "vllm <= 0.28" in reason and "--openai-route off" in reason


def test_auto_serves_without_the_route_and_warns(
    no_openai_types: None, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="deepcritic.serve.server"):
        model = build_model(_vllm_config("auto"))
    assert type(model).__name__ == "CriticModel"
    assert any("OpenAI route off" in r.getMessage() for r in caplog.records)


def test_on_fails_with_the_reason(no_openai_types: None) -> None:
    with pytest.raises(ValueError, match="openai_route is 'on' but unavailable: .*vllm"):
        build_model(_vllm_config("on"))


def test_off_never_looks(no_openai_types: None, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING):
        model = build_model(_vllm_config("off"))
    assert type(model).__name__ == "CriticModel" and not caplog.records
