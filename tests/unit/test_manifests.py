"""Manifests: kustomize builds for base and overlays; every object validates against its schema.

Core kinds: kubernetes-validate (strict, Kubernetes 1.32 schemas). KServe kinds: the CRDs' OpenAPI
schemas in shared/schemas/kserve. Kubeflow Trainer kinds: an embedded minimal schema (no CRD here).
"""

from __future__ import annotations

import functools
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from deepcritic.platform.images import IMAGES

ROOT = Path(__file__).resolve().parents[2]
MANIFESTS = ROOT / "manifests"
KSERVE_CRDS = ROOT.parent / "shared" / "schemas" / "kserve"
TARGETS = ["base", "overlays/dev", "overlays/prod", "overlays/standalone"]
K8S_VERSION = "1.32"
SECRETISH = ("PASSWORD", "SECRET", "TOKEN", "ACCESS_KEY", "BACKEND_STORE_URI")

TRAINING_RUNTIME_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["apiVersion", "kind", "metadata", "spec"],
    "properties": {
        "spec": {
            "type": "object",
            "required": ["mlPolicy", "template"],
            "properties": {
                "mlPolicy": {
                    "type": "object",
                    "required": ["numNodes"],
                    "properties": {"numNodes": {"type": "integer", "minimum": 1}},
                },
                "template": {
                    "type": "object",
                    "required": ["spec"],
                    "properties": {
                        "spec": {
                            "type": "object",
                            "required": ["replicatedJobs"],
                            "properties": {"replicatedJobs": {"type": "array", "minItems": 1}},
                        }
                    },
                },
            },
        }
    },
}


GENERIC_CR_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["apiVersion", "kind", "metadata", "spec"],
    "properties": {
        "metadata": {"type": "object", "required": ["name"]},
        "spec": {"type": "object"},
    },
}


def _tree(tmp_path: Path) -> Path:
    """The manifests tree; without serving/ (not written yet) build a copy that leaves it out."""
    if (MANIFESTS / "base" / "serving" / "kustomization.yaml").is_file():
        return MANIFESTS
    copy = tmp_path / "manifests"
    shutil.copytree(MANIFESTS, copy)
    kust = copy / "base" / "kustomization.yaml"
    data = yaml.safe_load(kust.read_text())
    data["resources"] = [r for r in data["resources"] if r != "serving"]
    kust.write_text(yaml.safe_dump(data))
    return copy


def _load_kustomization(folder: Path) -> Iterator[dict[str, Any]]:
    """Fallback without kubectl: the resource files a kustomization lists (no transforms)."""
    data = yaml.safe_load((folder / "kustomization.yaml").read_text())
    for res in data.get("resources", []):
        path = folder / res
        if path.is_dir():
            yield from _load_kustomization(path)
        else:
            yield from (d for d in yaml.safe_load_all(path.read_text()) if d)


def build(target: str, tmp_path: Path) -> list[dict[str, Any]]:
    tree = _tree(tmp_path) / target
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        return list(_load_kustomization(tree))
    proc = subprocess.run(
        [kubectl, "kustomize", str(tree)], capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0, proc.stderr
    return [d for d in yaml.safe_load_all(proc.stdout) if d]


@pytest.fixture(scope="module", params=TARGETS)
def objects(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> list[dict[str, Any]]:
    return build(request.param, tmp_path_factory.mktemp("kust"))


def _crd_schema(kind: str, version: str) -> dict[str, Any]:
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    for path in KSERVE_CRDS.glob(f"*_{kind.lower()}s.yaml"):
        crd = yaml.load(path.read_text(), Loader=loader)  # noqa: S506 (safe loader)
        if crd["spec"]["names"]["kind"] == kind:
            for v in crd["spec"]["versions"]:
                if v["name"] == version:
                    return dict(v["schema"]["openAPIV3Schema"])
    raise AssertionError(f"no CRD schema for {kind}/{version} in {KSERVE_CRDS}")


@functools.cache
def _validator(kind: str, version: str) -> Any:
    import jsonschema

    schema = TRAINING_RUNTIME_SCHEMA if kind == "TrainingRuntime" else _crd_schema(kind, version)
    return jsonschema.Draft7Validator(schema)  # CRD schemas are trusted: skip check_schema


def validate(obj: dict[str, Any]) -> None:
    import jsonschema

    group, _, version = obj["apiVersion"].rpartition("/")
    if group.endswith(".istio.io"):  # no CRD schema here: the generic object shape only
        error = jsonschema.exceptions.best_match(
            jsonschema.Draft7Validator(GENERIC_CR_SCHEMA).iter_errors(obj)
        )
        if error is not None:
            raise error
    elif group in ("serving.kserve.io", "trainer.kubeflow.org"):
        error = jsonschema.exceptions.best_match(_validator(obj["kind"], version).iter_errors(obj))
        if error is not None:
            raise error
    else:
        kubernetes_validate = pytest.importorskip("kubernetes_validate")
        kubernetes_validate.validate(obj, K8S_VERSION, strict=True)


def test_every_object_validates(objects: list[dict[str, Any]]) -> None:
    assert objects
    for obj in objects:
        try:
            validate(obj)
        except Exception as e:  # name the object in the failure
            raise AssertionError(f"{obj['kind']}/{obj['metadata']['name']}: {e}") from e


def test_validator_rejects_bad_objects() -> None:
    import jsonschema

    bad_deploy = {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "x"},
                  "spec": {"replicas": "two", "selector": {}, "template": {}}}  # fmt: skip
    with pytest.raises(Exception, match="replicas|two"):
        validate(bad_deploy)
    bad_isvc = {"apiVersion": "serving.kserve.io/v1beta1", "kind": "InferenceService",
                "metadata": {"name": "x"}, "spec": {"predictor": {"minReplicas": "one"}}}  # fmt: skip
    with pytest.raises(jsonschema.ValidationError):
        validate(bad_isvc)


def test_one_namespace_and_expected_kinds(objects: list[dict[str, Any]]) -> None:
    kinds = {o["kind"] for o in objects}
    assert {"ServiceAccount", "Role", "RoleBinding", "Deployment", "Service", "ConfigMap",
            "TrainingRuntime", "PersistentVolumeClaim"} <= kinds  # fmt: skip
    names = [o["metadata"]["name"] for o in objects if o["kind"] == "Namespace"]
    # standalone KFP: the platform goes into the existing `kubeflow` namespace (not created here)
    (ns,) = names or {o["metadata"].get("namespace") for o in objects}
    for o in objects:
        if o["kind"] != "Namespace" and shutil.which("kubectl"):
            assert o["metadata"].get("namespace") == ns, o["metadata"]["name"]
    for rb in (o for o in objects if o["kind"] == "RoleBinding"):
        assert all(s["namespace"] == ns for s in rb["subjects"])


def test_no_inline_secrets(objects: list[dict[str, Any]]) -> None:
    assert not [o for o in objects if o["kind"] == "Secret"]
    for o in objects:
        if o["kind"] == "ConfigMap":
            assert not [k for k in o.get("data", {}) if any(s in k for s in SECRETISH)]
        for c in _containers(o):
            for env in c.get("env", []):
                if any(s in env["name"] for s in SECRETISH):
                    assert "secretKeyRef" in env.get("valueFrom", {}), env["name"]


def _containers(obj: dict[str, Any]) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            for k, v in node.items():
                if k in ("containers", "initContainers") and isinstance(v, list):
                    found.extend(v)
                else:
                    walk(v)
        elif isinstance(node, list):
            for v in node:
                walk(v)

    walk(obj.get("spec", {}))
    return found


def test_mlflow_uses_postgres_and_s3_secrets(objects: list[dict[str, Any]]) -> None:
    (dep,) = [o for o in objects if o["kind"] == "Deployment" and o["metadata"]["name"] == "mlflow"]
    (c,) = dep["spec"]["template"]["spec"]["containers"]
    refs = {e["name"]: e["valueFrom"]["secretKeyRef"]["name"] for e in c["env"] if "valueFrom" in e}
    assert refs["MLFLOW_BACKEND_STORE_URI"] == "mlflow-postgres"
    assert refs["AWS_ACCESS_KEY_ID"] == refs["AWS_SECRET_ACCESS_KEY"] == "mlflow-s3"
    (cm,) = [
        o for o in objects if o["kind"] == "ConfigMap" and o["metadata"]["name"] == "mlflow-config"
    ]
    assert cm["data"]["MLFLOW_ARTIFACTS_DESTINATION"].startswith("s3://")
    (svc,) = [o for o in objects if o["kind"] == "Service" and o["metadata"]["name"] == "mlflow"]
    labels = dep["spec"]["template"]["metadata"]["labels"]
    assert all(labels.get(k) == v for k, v in svc["spec"]["selector"].items())
    assert dep["spec"]["template"]["spec"]["securityContext"]["runAsNonRoot"] is True


def test_runner_may_create_inferenceservices_and_trainjobs(objects: list[dict[str, Any]]) -> None:
    (role,) = [o for o in objects if o["kind"] == "Role"]
    grants = {(g, r) for rule in role["rules"] if "create" in rule["verbs"]
              for g in rule["apiGroups"] for r in rule["resources"]}  # fmt: skip
    assert ("serving.kserve.io", "inferenceservices") in grants
    assert ("trainer.kubeflow.org", "trainjobs") in grants
    assert not any("*" in rule["verbs"] or "*" in rule["resources"] for rule in role["rules"])


def test_runner_binding_is_the_account_kfp_runs_pods_as(tmp_path: Path) -> None:
    """Multi-user Kubeflow runs pipeline pods as default-editor in the profile namespace;
    standalone KFP as pipeline-runner in kubeflow. The Role must be bound to that account."""
    for target, subject in (("overlays/prod", ("default-editor", "deepcritic")),
                            ("overlays/dev", ("default-editor", "deepcritic-dev")),
                            ("overlays/standalone", ("pipeline-runner", "kubeflow"))):  # fmt: skip
        objs = build(target, tmp_path / target.replace("/", "-"))
        (rb,) = [o for o in objs if o["kind"] == "RoleBinding"]
        assert [(s["name"], s["namespace"]) for s in rb["subjects"]] == [subject], target
        (pvc,) = [o for o in objs if o["kind"] == "PersistentVolumeClaim"]
        assert pvc["spec"]["accessModes"] == ["ReadWriteMany"]
        (cm,) = [o for o in objs if o["kind"] == "ConfigMap" and o["metadata"]["name"] ==
                 "deepcritic-mlflow-client"]  # fmt: skip
        assert cm["data"]["tracking_uri"].startswith("http://")


def test_gpu_training_runtime_tolerates_gpu_pool(objects: list[dict[str, Any]]) -> None:
    (rt,) = [o for o in objects if o["kind"] == "TrainingRuntime"]
    pod = rt["spec"]["template"]["spec"]["replicatedJobs"][0]["template"]["spec"]["template"][
        "spec"
    ]
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in pod[
        "tolerations"
    ]
    assert pod["nodeSelector"]
    assert int(pod["containers"][0]["resources"]["limits"]["nvidia.com/gpu"]) >= 1
    assert {"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": "32Gi"}} in pod["volumes"]


def test_images_come_from_the_pinned_table(objects: list[dict[str, Any]]) -> None:
    refs = {img.ref for img in IMAGES.values()}
    for o in objects:
        for c in _containers(o):
            image = c.get("image", "")
            if image.endswith(":set-by-overlay"):  # serving base placeholder; overlays pin it
                continue
            if image.startswith("ghcr.io/deepcritic/"):
                assert image in refs, image
            assert not c.get("image", "x:1").endswith(":latest")


def test_overlays_differ_where_intended(tmp_path: Path) -> None:
    dev, prod = build("overlays/dev", tmp_path / "d"), build("overlays/prod", tmp_path / "p")
    ns = {o["metadata"]["name"] for o in dev if o["kind"] == "Namespace"}
    assert ns == {"deepcritic-dev"}
    (dep,) = [o for o in prod if o["kind"] == "Deployment" and o["metadata"]["name"] == "mlflow"]
    assert dep["spec"]["replicas"] == 2
    assert any(o["kind"] == "PodDisruptionBudget" for o in prod)
    for objs in (dev, prod):  # overlays pin the serving image to the table's tag
        images = {c.get("image") for o in objs for c in _containers(o)}
        assert IMAGES["serve"].ref in images
        assert not [i for i in images if i and i.endswith(":set-by-overlay")]
