"""Validate Kubernetes objects the code creates against their schemas (tests only).

KServe and Kubeflow Trainer kinds: the CRDs' OpenAPI v3 schemas in ``../shared/schemas/{kserve,
trainer}``; core kinds (PersistentVolumeClaim, ...): kubernetes-validate, strict.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import yaml

SCHEMAS = Path(__file__).resolve().parents[3] / "shared" / "schemas"
K8S_VERSION = "1.32"
CRD_GROUPS = {"serving.kserve.io": "kserve", "trainer.kubeflow.org": "trainer"}


@functools.cache
def crd_validator(group: str, kind: str, version: str) -> Any:
    import jsonschema

    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    for path in (SCHEMAS / CRD_GROUPS[group]).glob(f"*_{kind.lower()}s.yaml"):
        crd = yaml.load(path.read_text(), Loader=loader)  # noqa: S506 (safe loader)
        if crd["spec"]["names"]["kind"] == kind:
            for v in crd["spec"]["versions"]:
                if v["name"] == version:
                    return jsonschema.Draft7Validator(v["schema"]["openAPIV3Schema"])
    raise AssertionError(f"no CRD schema for {group}/{version} {kind} under {SCHEMAS}")


def validate(obj: dict[str, Any]) -> None:
    """Raise (jsonschema.ValidationError / kubernetes-validate's error) when ``obj`` is invalid."""
    import jsonschema

    group, _, version = obj["apiVersion"].rpartition("/")
    if group in CRD_GROUPS:
        error = jsonschema.exceptions.best_match(
            crd_validator(group, obj["kind"], version).iter_errors(obj)
        )
        if error is not None:
            raise error
        return
    import kubernetes_validate

    kubernetes_validate.validate(obj, K8S_VERSION, strict=True)
