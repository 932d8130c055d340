"""manifests/base/serving: valid against the KServe CRDs, and the settings issue 6 asks for."""

from __future__ import annotations

import re
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
SERVING = ROOT / "manifests" / "base" / "serving"
CRDS = ROOT.parent / "shared" / "schemas" / "kserve"
CRD_FILES = {
    "InferenceService": "serving.kserve.io_inferenceservices.yaml",
    "ServingRuntime": "serving.kserve.io_servingruntimes.yaml",
}
SECRETISH = re.compile(r"PASSWORD|SECRET|TOKEN|KEY|CREDENTIAL", re.IGNORECASE)


def _docs() -> list[dict[str, Any]]:
    kust = yaml.safe_load((SERVING / "kustomization.yaml").read_text())
    docs = []
    for name in kust["resources"]:
        docs.extend(d for d in yaml.safe_load_all((SERVING / name).read_text()) if d)
    # the InferenceService is created by the pipeline's deploy step, pinned to a version
    from deepcritic.platform.deploy import DeploySpec, isvc_manifest

    docs.append(isvc_manifest(DeploySpec(), "models:/deepcritic/1"))
    return docs


def _by_kind(kind: str) -> dict[str, Any]:
    (doc,) = [d for d in _docs() if d["kind"] == kind]
    return doc


@cache
def _crd(path: Path) -> dict[str, Any]:
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # the CRDs are megabytes of YAML
    return yaml.load(path.read_text(), Loader=loader)  # noqa: S506 - a safe loader


def _validate(doc: dict[str, Any], schema: dict[str, Any]) -> None:
    """jsonschema.validate would first meta-check the huge CRD schema (a minute); skip that."""
    import jsonschema

    jsonschema.Draft7Validator(schema).validate(doc)


def _schema(kind: str, api_version: str) -> dict[str, Any]:
    path = CRDS / CRD_FILES[kind]
    if not path.is_file():
        pytest.skip(f"{path} not present")
    crd = _crd(path)
    version = api_version.split("/")[1]
    (v,) = [v for v in crd["spec"]["versions"] if v["name"] == version]
    assert v["served"], f"{kind} {version} is not served by this KServe"
    return v["schema"]["openAPIV3Schema"]


@pytest.mark.parametrize("kind", sorted(CRD_FILES))
def test_valid_against_crd_schema(kind: str) -> None:
    doc = _by_kind(kind)
    assert doc["apiVersion"].startswith("serving.kserve.io/")
    _validate(doc, _schema(kind, doc["apiVersion"]))


def test_schema_check_catches_a_bad_field() -> None:
    import jsonschema

    doc = _by_kind("InferenceService")
    bad = {**doc, "spec": {"predictor": {**doc["spec"]["predictor"], "scaleMetric": "gpu"}}}
    with pytest.raises(jsonschema.ValidationError):
        _validate(bad, _schema("InferenceService", doc["apiVersion"]))
    runtime = _by_kind("ServingRuntime")
    with pytest.raises(jsonschema.ValidationError):  # containers is required
        _validate(
            {**runtime, "spec": {"supportedModelFormats": []}},
            _schema("ServingRuntime", runtime["apiVersion"]),
        )


def test_runtime_runs_this_server_with_gpu_and_probes() -> None:
    rt = _by_kind("ServingRuntime")
    (c,) = rt["spec"]["containers"]
    assert c["image"].startswith("ghcr.io/deepcritic/serve:")
    assert c["command"] == ["deepcritic", "serve"]
    assert "--host=0.0.0.0" in c["args"] and "--backend=vllm" in c["args"]
    assert c["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert c["readinessProbe"]["httpGet"]["path"] == "/v1/models/deepcritic"
    assert c["livenessProbe"]["httpGet"]["path"] == "/"
    assert c["startupProbe"]["httpGet"]["port"] == 8080
    assert rt["spec"]["supportedModelFormats"][0]["name"] == "deepcritic-critic"


def test_every_flag_is_a_serve_config_field() -> None:
    """The args in the manifests parse with the real ``deepcritic serve`` parser."""
    from deepcritic.cli import build_parser
    from deepcritic.config import config_from_args
    from deepcritic.serve.config import ServeConfig

    rt, isvc = _by_kind("ServingRuntime"), _by_kind("InferenceService")
    argv = rt["spec"]["containers"][0]["args"] + isvc["spec"]["predictor"]["model"]["args"]
    args = build_parser().parse_args(["serve", *argv])
    config = config_from_args(ServeConfig, args)
    assert config.host == "0.0.0.0" and config.generation.kind == "vllm"
    assert config.model_uri == "models:/deepcritic/1"  # pinned, never the moving alias
    assert config.openai_enabled


def test_autoscaling_and_auth() -> None:
    isvc = _by_kind("InferenceService")
    p = isvc["spec"]["predictor"]
    assert 1 <= p["minReplicas"] < p["maxReplicas"]
    assert p["scaleMetric"] == "concurrency" and p["scaleTarget"] > 0
    assert p["model"]["runtime"] == _by_kind("ServingRuntime")["metadata"]["name"]
    assert isvc["metadata"]["annotations"]["sidecar.istio.io/inject"] == "true"
    label = {"serving.kserve.io/inferenceservice": isvc["metadata"]["name"]}
    ra, ap = _by_kind("RequestAuthentication"), _by_kind("AuthorizationPolicy")
    assert ra["spec"]["selector"]["matchLabels"] == label
    assert ap["spec"]["selector"]["matchLabels"] == label
    assert ap["spec"]["action"] == "ALLOW"
    principals = [
        s["source"].get("requestPrincipals") for r in ap["spec"]["rules"] for s in r.get("from", [])
    ]
    assert ["*"] in principals
    for rule in ap["spec"]["rules"]:  # unauthenticated rules may only read health/metrics
        for op in rule.get("to", []):
            assert op["operation"]["methods"] == ["GET"]
            assert not any(
                ":predict" in path or "infer" in path for path in op["operation"]["paths"]
            )


def test_no_secrets_inline() -> None:
    for doc in _docs():
        assert doc["kind"] != "Secret"
        for c in doc.get("spec", {}).get("containers", []):
            for env in c.get("env", []):
                if SECRETISH.search(env["name"]):
                    assert "value" not in env, f"{env['name']} is inline"
                    assert "secretKeyRef" in env["valueFrom"], env["name"]
