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


def test_autoscaling_and_auth_selectors() -> None:
    isvc = _by_kind("InferenceService")
    p = isvc["spec"]["predictor"]
    assert 1 <= p["minReplicas"] < p["maxReplicas"]
    assert p["scaleMetric"] == "concurrency" and p["scaleTarget"] > 0
    assert p["model"]["runtime"] == _by_kind("ServingRuntime")["metadata"]["name"]
    assert isvc["metadata"]["annotations"]["sidecar.istio.io/inject"] == "true"
    label = {"serving.kserve.io/inferenceservice": isvc["metadata"]["name"]}
    assert _by_kind("RequestAuthentication")["spec"]["selector"]["matchLabels"] == label
    policies = _policies()
    assert {d["spec"]["action"] for d in policies} == {"ALLOW", "DENY"}
    for doc in policies:
        assert doc["spec"]["selector"]["matchLabels"] == label


# ------------------------------------------------------------------ Istio authorization
# A small evaluator of Istio's AuthorizationPolicy semantics for the fields the manifests use
# (https://istio.io/latest/docs/reference/config/security/authorization-policy/): a rule matches
# when one of its sources and one of its operations match (a missing list matches anything); any
# matching DENY rule denies; otherwise, with ALLOW policies present, a matching ALLOW rule is
# needed. Requests are (principal or None, source namespace, method, path, port).

SOURCE_FIELDS = {"requestPrincipals", "notRequestPrincipals", "namespaces", "notNamespaces",
                 "principals", "notPrincipals", "ipBlocks", "notIpBlocks"}  # fmt: skip
OPERATION_FIELDS = {"methods", "notMethods", "paths", "notPaths", "ports", "notPorts", "hosts",
                    "notHosts"}  # fmt: skip
Request = tuple[str | None, str, str, str, str]


def _policies() -> list[dict[str, Any]]:
    return [d for d in _docs() if d["kind"] == "AuthorizationPolicy"]


def _glob(pattern: str, value: str | None) -> bool:
    if value is None:
        return False
    if pattern == "*":
        return True
    if pattern.startswith("*"):
        return value.endswith(pattern[1:])
    if pattern.endswith("*"):
        return value.startswith(pattern[:-1])
    return pattern == value


def _field(spec: dict[str, Any], name: str, value: str | None) -> bool:
    """``name`` / ``notName`` of ``spec`` against ``value`` (absent: matches)."""
    ok = True
    if name in spec:
        ok = any(_glob(p, value) for p in spec[name])
    neg = "not" + name[0].upper() + name[1:]
    if neg in spec:
        ok = ok and not any(_glob(p, value) for p in spec[neg])
    return ok


def _rule_matches(rule: dict[str, Any], req: Request) -> bool:
    principal, namespace, method, path, port = req
    sources = [f["source"] for f in rule.get("from", [])]
    operations = [t["operation"] for t in rule.get("to", [])]
    for src in sources:
        assert set(src) <= SOURCE_FIELDS, set(src) - SOURCE_FIELDS
    for op in operations:
        assert set(op) <= OPERATION_FIELDS, set(op) - OPERATION_FIELDS
    src_ok = not sources or any(
        _field(s, "requestPrincipals", principal) and _field(s, "namespaces", namespace)
        for s in sources
    )
    op_ok = not operations or any(
        _field(o, "methods", method) and _field(o, "paths", path) and _field(o, "ports", port)
        for o in operations
    )
    return src_ok and op_ok


def _allowed(policies: list[dict[str, Any]], req: Request) -> bool:
    assert all(pol["spec"]["action"] in ("ALLOW", "DENY") for pol in policies)
    if any(
        _rule_matches(r, req)
        for p in policies
        if p["spec"]["action"] == "DENY"
        for r in p["spec"]["rules"]
    ):
        return False
    allows = [p for p in policies if p["spec"]["action"] == "ALLOW"]
    return not allows or any(
        _rule_matches(r, req) for p in allows for r in p["spec"].get("rules", [])
    )


USER = "https://issuer.example.com/alice"
ACTIVATOR = "knative-serving"
PREDICT = "/v1/models/deepcritic:predict"
CASES: list[tuple[Request, bool, str]] = [
    ((None, ACTIVATOR, "POST", PREDICT, "8012"), False, "anonymous predict through the activator"),
    ((None, "team-a", "POST", PREDICT, "8012"), False, "anonymous predict from the namespace"),
    ((None, ACTIVATOR, "POST", "/v2/models/deepcritic/infer", "8012"), False, "anonymous v2"),
    ((None, ACTIVATOR, "POST", "/openai/v1/chat/completions", "8012"), False, "anonymous chat"),
    (
        (None, ACTIVATOR, "POST", "/v2/repository/models/deepcritic/unload", "8012"),
        False,
        "anonymous unload",
    ),  # fmt: skip
    ((None, "team-a", "GET", "/metrics", "8012"), False, "anonymous /metrics"),
    ((None, ACTIVATOR, "GET", "/metrics", "8012"), False, "the app's /metrics via the activator"),
    ((None, "team-a", "GET", "/metrics", "9090"), False, "autoscaler port from elsewhere"),
    ((None, ACTIVATOR, "POST", "/metrics", "9090"), False, "autoscaler port, not a scrape"),
    ((None, ACTIVATOR, "GET", "/v2/models/deepcritic", "8012"), False, "anonymous metadata"),
    ((None, "team-a", "POST", "/", "8012"), False, "anonymous POST to a probe path"),
    ((None, "team-a", "GET", "/?x=1", "8012"), False, "probe path with a query"),
    ((USER, ACTIVATOR, "POST", PREDICT, "8012"), True, "JWT predict through the activator"),
    ((USER, "team-a", "POST", "/v2/models/deepcritic/infer", "8012"), True, "JWT v2"),
    ((USER, "team-a", "GET", "/metrics", "8012"), True, "JWT /metrics"),
    ((None, "", "GET", "/", "8012"), True, "liveness probe"),
    ((None, "", "GET", "/v1/models/deepcritic", "8012"), True, "readiness probe"),
    ((None, ACTIVATOR, "GET", "/healthz", "8012"), True, "activator probe"),
    ((None, ACTIVATOR, "GET", "/metrics", "9090"), True, "autoscaler scrape of queue-proxy"),
]


@pytest.mark.parametrize("req,allowed,what", CASES, ids=[c[2] for c in CASES])
def test_authorization_cannot_be_bypassed(req: Request, allowed: bool, what: str) -> None:
    policies = _policies()
    assert _allowed(policies, req) is allowed, what
    # a namespace-wide ALLOW-all (as Kubeflow profiles add) must not open anything denied here
    allow_all = {"spec": {"action": "ALLOW", "rules": [{}]}}
    if not allowed:
        assert _allowed([*policies, allow_all], req) is False, what


def test_no_namespace_wide_allow_and_metrics_not_public() -> None:
    for pol in _policies():
        for rule in pol["spec"]["rules"]:
            sources = [f["source"] for f in rule.get("from", [])]
            if any(s.get("namespaces") for s in sources):  # a namespace rule must be narrow
                ops = [t["operation"] for t in rule.get("to", [])]
                assert ops and all(o.get("paths") and o.get("ports") for o in ops), rule
    allow = [p for p in _policies() if p["spec"]["action"] == "ALLOW"]
    for pol in allow:
        for rule in pol["spec"]["rules"]:
            if not rule.get("from"):  # unauthenticated rules: read-only probes
                for t in rule["to"]:
                    assert set(t["operation"]["methods"]) <= {"GET", "HEAD"}
                    assert "/metrics" not in t["operation"]["paths"]


def test_the_evaluator_can_fail() -> None:
    """The old policy (namespace-wide allow of knative-serving) is caught by the cases above."""
    old = [{"spec": {"action": "ALLOW", "rules": [
        {"from": [{"source": {"requestPrincipals": ["*"]}}]},
        {"from": [{"source": {"namespaces": ["knative-serving"]}}]},
        {"to": [{"operation": {"methods": ["GET"], "paths": ["/", "/metrics"]}}]},
    ]}}]  # fmt: skip
    assert _allowed(old, (None, ACTIVATOR, "POST", PREDICT, "8012")) is True
    assert _allowed(old, (None, "team-a", "GET", "/metrics", "8012")) is True


def test_no_secrets_inline() -> None:
    for doc in _docs():
        assert doc["kind"] != "Secret"
        for c in doc.get("spec", {}).get("containers", []):
            for env in c.get("env", []):
                if SECRETISH.search(env["name"]):
                    assert "value" not in env, f"{env['name']} is inline"
                    assert "secretKeyRef" in env["valueFrom"], env["name"]
