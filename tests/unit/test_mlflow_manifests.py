"""manifests/base/mlflow: MLflow behind basic auth (settings from a Secret) and a NetworkPolicy
that admits only deepcritic's pipeline, training and serving pods."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
MLFLOW = ROOT / "manifests" / "base" / "mlflow"


def _objects() -> list[dict[str, Any]]:
    """The kustomize build of manifests/base/mlflow (the raw files without kubectl)."""
    kubectl = shutil.which("kubectl")
    if kubectl is not None:
        out = subprocess.run([kubectl, "kustomize", str(MLFLOW)], capture_output=True, text=True,
                             timeout=60, check=True).stdout  # fmt: skip
        return [d for d in yaml.safe_load_all(out) if d]
    kust = yaml.safe_load((MLFLOW / "kustomization.yaml").read_text())
    return [d for r in kust["resources"] for d in yaml.safe_load_all((MLFLOW / r).read_text()) if d]


def _one(kind: str) -> dict[str, Any]:
    (obj,) = [o for o in _objects() if o["kind"] == kind and o["metadata"]["name"] == "mlflow"]
    return obj


def _selects(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    """Kubernetes label-selector semantics (matchLabels AND every matchExpression)."""
    if any(labels.get(k) != v for k, v in selector.get("matchLabels", {}).items()):
        return False
    for e in selector.get("matchExpressions", []):
        key, op, values = e["key"], e["operator"], e.get("values", [])
        ok = {"In": key in labels and labels[key] in values,
              "NotIn": key not in labels or labels[key] not in values,
              "Exists": key in labels, "DoesNotExist": key not in labels}[op]  # fmt: skip
        if not ok:
            return False
    return True


def _admitted(policy: dict[str, Any], labels: dict[str, str], port: int) -> bool:
    """Whether a pod in the same namespace with these labels may connect to the port."""
    for rule in policy["spec"].get("ingress", []):
        ports = [_port_number(p["port"]) for p in rule.get("ports", [])] or [port]
        sources = rule.get("from")
        if port in ports and (
            not sources or any(_selects(s["podSelector"], labels) for s in sources)
        ):
            return True
    return False


def _port_number(port: int | str) -> int:
    if isinstance(port, int):
        return port
    container = _one("Deployment")["spec"]["template"]["spec"]["containers"][0]
    (number,) = [p["containerPort"] for p in container["ports"] if p["name"] == port]
    return int(number)


def test_mlflow_runs_the_basic_auth_app_configured_from_a_secret() -> None:
    pod = _one("Deployment")["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    args = container["args"]
    assert args[args.index("--app-name") + 1] == "basic-auth"
    env = {e["name"]: e for e in container["env"]}
    config_path = Path(env["MLFLOW_AUTH_CONFIG_PATH"]["value"])
    (mount,) = [m for m in container["volumeMounts"] if Path(m["mountPath"]) == config_path.parent]
    (volume,) = [v for v in pod["volumes"] if v["name"] == mount["name"]]
    assert mount["readOnly"] and volume["secret"]["secretName"] == "mlflow-auth"
    assert [i["path"] for i in volume["secret"]["items"]] == [config_path.name]
    for name in ("MLFLOW_AUTH_ADMIN_PASSWORD", "MLFLOW_FLASK_SERVER_SECRET_KEY"):
        assert env[name]["valueFrom"]["secretKeyRef"]["name"] == "mlflow-auth", name
    assert not [o for o in _objects() if o["kind"] == "Secret"]


def test_documented_auth_settings_are_what_the_registry_needs() -> None:
    """The basic_auth.ini the deployment documents (the auth app reads it with configparser;
    tests/component/test_mlflow_auth.py starts a server with it)."""
    import configparser

    from support.mlflow_server import documented_auth_ini

    ini = configparser.ConfigParser()
    ini.read_string(documented_auth_ini(MLFLOW / "deployment.yaml"))
    cfg = ini["mlflow"]
    assert cfg["default_permission"] == "READ"  # promoters must see each other's lock models
    assert cfg["database_uri"].startswith("postgresql://")  # one user store for every replica
    assert "admin_password" not in cfg  # only from the Secret, never in a file
    assert cfg["authorization_function"] == "mlflow.server.auth:authenticate_request_basic_auth"
    assert int(cfg["auth_cache_ttl_seconds"]) > 0


@pytest.mark.parametrize(
    ("labels", "admitted"),
    [
        ({"deepcritic.io/mlflow-client": "true"}, True),  # pipeline and training pods
        ({"serving.kserve.io/inferenceservice": "deepcritic", "component": "predictor"}, True),
        ({"serving.kserve.io/inferenceservice": "someone-else"}, False),
        ({"deepcritic.io/mlflow-client": "false"}, False),
        ({"app.kubernetes.io/name": "mlflow"}, False),
        ({}, False),
    ],
)
def test_network_policy_admits_only_deepcritic_clients(
    labels: dict[str, str], admitted: bool
) -> None:
    policy = _one("NetworkPolicy")
    assert policy["spec"]["policyTypes"] == ["Ingress"]
    pod_labels = _one("Deployment")["spec"]["template"]["metadata"]["labels"]
    assert _selects(policy["spec"]["podSelector"], pod_labels)  # it guards the MLflow pods
    for rule in policy["spec"]["ingress"]:
        assert rule.get("from"), "an ingress rule without `from` admits everyone"
        assert all(set(s) == {"podSelector"} for s in rule["from"]), "no namespace/ipBlock peers"
    assert _admitted(policy, labels, 5000) is admitted
    assert not _admitted(policy, {"deepcritic.io/mlflow-client": "true"}, 22)
