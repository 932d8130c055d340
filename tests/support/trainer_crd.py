"""Validate objects against the Kubeflow Trainer v2 CRDs in ``../shared/schemas/trainer``."""

from __future__ import annotations

import functools
import os
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

# ../shared beside the checkout (a git worktree elsewhere can point at it with the env var)
SHARED = Path(
    os.environ.get("DEEPCRITIC_SHARED_DIR", Path(__file__).resolve().parents[2].parent / "shared")
)
SCHEMAS = SHARED / "schemas" / "trainer"
DNS_1035 = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
FILES = {
    "TrainJob": "trainer.kubeflow.org_trainjobs.yaml",
    "TrainingRuntime": "trainer.kubeflow.org_trainingruntimes.yaml",
    "ClusterTrainingRuntime": "trainer.kubeflow.org_clustertrainingruntimes.yaml",
}


@functools.cache
def validator(kind: str) -> Any:
    jsonschema = pytest.importorskip("jsonschema")
    path = SCHEMAS / FILES[kind]
    if not path.is_file():
        pytest.skip(f"{path} not present")
    crd = yaml.load(path.read_text(), Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
    (version,) = [v for v in crd["spec"]["versions"] if v["name"] == "v1alpha1"]
    return jsonschema.Draft7Validator(version["schema"]["openAPIV3Schema"])


def validate(obj: dict[str, Any]) -> None:
    """jsonschema against the CRD, plus the CEL rules it cannot run for the fields we set."""
    import jsonschema

    error = jsonschema.exceptions.best_match(validator(obj["kind"]).iter_errors(obj))
    if error is not None:
        raise error
    name = obj["metadata"]["name"]
    assert DNS_1035.match(name) and len(name) <= 63, name
    if obj["kind"] == "TrainJob":
        assert obj["spec"]["trainer"].get("numProcPerNode", 1) >= 1
    policy = obj["spec"].get("mlPolicy") or {}
    assert sum(k in policy for k in ("torch", "mpi", "jax", "xgboost", "flux")) <= 1
