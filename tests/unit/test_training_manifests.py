"""manifests/base/training: the Trainer runtime validates against its CRD, takes its nodes / GPUs /
GPU product from the kustomize parameters (overlays change them), runs non-root without privilege
escalation under its own token-less service account, and matches what the launcher submits."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from deepcritic.platform.images import IMAGES
from deepcritic.platform.trainjob import CONTAINER, DEFAULT_RUNTIME
from support.trainer_crd import validate

MANIFESTS = Path(__file__).resolve().parents[2] / "manifests"


def build(target: str) -> list[dict[str, Any]]:
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl (kustomize) is not installed")
    proc = subprocess.run([kubectl, "kustomize", str(MANIFESTS / target)],
                          capture_output=True, text=True, timeout=60)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    return [d for d in yaml.safe_load_all(proc.stdout) if d]


def runtime(objects: list[dict[str, Any]]) -> dict[str, Any]:
    (rt,) = [o for o in objects if o["kind"] == "TrainingRuntime"]
    return rt


def pod(rt: dict[str, Any]) -> dict[str, Any]:
    (rj,) = rt["spec"]["template"]["spec"]["replicatedJobs"]
    assert rj["name"] == CONTAINER
    return dict(rj["template"]["spec"]["template"]["spec"])


@pytest.mark.parametrize("target", ["base/training", "base", "overlays/dev", "overlays/prod"])
def test_runtime_validates_against_the_crd_and_is_locked_down(target: str) -> None:
    objects = build(target)
    rt = runtime(objects)
    validate(rt)
    assert rt["metadata"]["name"] == DEFAULT_RUNTIME  # what the launcher's TrainJobs reference
    assert not [o for o in objects if o["kind"] == "TrainingParameters"]  # local config only
    spec = pod(rt)
    assert spec["serviceAccountName"] == "deepcritic-trainer"
    assert spec["automountServiceAccountToken"] is False
    assert spec["securityContext"]["runAsNonRoot"] is True
    (c,) = spec["containers"]
    assert c["name"] == CONTAINER and c["image"] == IMAGES["train"].ref
    assert c["securityContext"]["allowPrivilegeEscalation"] is False
    assert c["securityContext"]["capabilities"]["drop"] == ["ALL"]
    limits, requests = c["resources"]["limits"], c["resources"]["requests"]
    assert {"cpu", "memory", "nvidia.com/gpu"} <= set(limits)
    assert int(limits["nvidia.com/gpu"]) == int(requests["nvidia.com/gpu"]) >= 1
    assert "nvidia.com/gpu.product" in spec["nodeSelector"]  # the KFP tasks' label convention
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in spec[
        "tolerations"
    ]
    (sa,) = [o for o in objects if o["kind"] == "ServiceAccount"
             and o["metadata"]["name"] == "deepcritic-trainer"]  # fmt: skip
    assert sa["automountServiceAccountToken"] is False
    bound = [s["name"] for o in objects if o["kind"] in ("RoleBinding", "ClusterRoleBinding")
             for s in o.get("subjects", [])]  # fmt: skip
    assert "deepcritic-trainer" not in bound  # no API permissions


def test_parameters_reach_the_runtime_per_overlay() -> None:
    def shape(target: str) -> tuple[int, int, str]:
        spec = pod(rt := runtime(build(target)))
        (c,) = spec["containers"]
        gpus = int(c["resources"]["limits"]["nvidia.com/gpu"])
        return (
            rt["spec"]["mlPolicy"]["numNodes"],
            gpus,
            spec["nodeSelector"]["nvidia.com/gpu.product"],
        )

    assert shape("base") == (1, 8, "NVIDIA-H100-80GB-HBM3")
    assert shape("overlays/prod") == (2, 8, "NVIDIA-H100-80GB-HBM3")
    assert shape("overlays/dev") == (1, 1, "NVIDIA-L4")


def test_a_changed_parameter_changes_the_runtime(tmp_path: Path) -> None:
    copy = tmp_path / "training"
    shutil.copytree(MANIFESTS / "base" / "training", copy)
    params = yaml.safe_load((copy / "parameters.yaml").read_text())
    params["spec"].update(numNodes=4, gpusPerNode=2, gpuProduct="NVIDIA-A100-SXM4-80GB")
    (copy / "parameters.yaml").write_text(yaml.safe_dump(params))
    proc = subprocess.run([shutil.which("kubectl") or "kubectl", "kustomize", str(copy)],
                          capture_output=True, text=True, timeout=60)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    rt = runtime([d for d in yaml.safe_load_all(proc.stdout) if d])
    spec = pod(rt)
    assert rt["spec"]["mlPolicy"]["numNodes"] == 4
    assert spec["containers"][0]["resources"]["requests"]["nvidia.com/gpu"] == 2
    assert spec["nodeSelector"]["nvidia.com/gpu.product"] == "NVIDIA-A100-SXM4-80GB"
