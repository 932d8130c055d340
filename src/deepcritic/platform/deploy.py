"""Roll the champion out as a KServe InferenceService: pinned, canaried, checked, rolled back.

:func:`rollout` resolves ``models:/<name>@champion`` to its version *number* once and serves
``models:/<name>/<version>`` (a later alias move never changes what a running pod loads):

1. create the InferenceService when it does not exist (all traffic to it), else patch the model
   with ``canaryTrafficPercent`` (the previous revision keeps the rest);
2. wait until the new revision is Ready (timeout);
3. optionally send one critique request to it (the rehearsal does; on a cluster the predictor sits
   behind the JWT policy, and KServe's readiness probe already calls the model route);
4. promote the canary to 100 % and wait again;
5. on any failure: traffic back to the previous revision (its model args restored, canary
   removed) and the registry alias back to the version it served, the failed version tagged.

The object built here is what ``manifests/base/serving/inferenceservice.yaml`` declares, so the
pipeline can create it on a fresh cluster; tests validate it against KServe's CRD schema.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from typing import Any

from deepcritic.platform.cluster import Cluster, Obj, condition, is_true, wait_for

log = logging.getLogger(__name__)

API_VERSION = "serving.kserve.io/v1beta1"
KIND = "InferenceService"
PROFILE_ANNOTATION = "deepcritic.dev/serve-profile"  # which serve preset (the rehearsal reads it)
FAILED_TAG = "deepcritic.deploy"  # set to "failed" on a version whose rollout was rolled back
SAMPLE_REQUEST = {
    "problem": "Tom has 3 apples and buys 2 more. How many apples does he have?",
    "steps": ["Tom starts with 3 apples.", "He buys 2 more, so 3 + 2 = 6.", "The answer is 6."],
}


class DeployError(RuntimeError):
    """The new revision did not become healthy; traffic and alias were rolled back."""


@dataclass
class DeploySpec:
    model_name: str = "deepcritic"  # registered model
    alias: str = "champion"
    service: str = "deepcritic"  # InferenceService name
    runtime: str = "deepcritic-critic"  # ServingRuntime (manifests/base/serving)
    serve_profile: str = "paper"  # serve preset (configs/serve.<profile>.yaml)
    canary_percent: int = 10  # traffic share of the new revision before promotion
    ready_timeout_s: float = 1800.0  # download + vLLM start of a 7B model: minutes
    poll_s: float = 10.0
    smoke_request: bool = False  # send one critique to the new revision (rehearsal: on)
    min_replicas: int = 1
    max_replicas: int = 4
    labels: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not 0 < self.canary_percent <= 100:
            raise ValueError(f"canary_percent must be in (0, 100], got {self.canary_percent}")
        if self.ready_timeout_s <= 0:
            raise ValueError(f"ready_timeout_s must be > 0, got {self.ready_timeout_s}")


@dataclass
class DeployResult:
    model_uri: str  # the pinned models:/<name>/<version>
    previous_uri: str | None
    url: str | None
    response: Any = None  # the smoke request's answer, when sent
    created: bool = False

    def to_json(self) -> str:
        return json.dumps(self.__dict__, default=str)


def model_uri_arg(uri: str) -> str:
    return f"--model-uri={uri}"


def isvc_manifest(spec: DeploySpec, model_uri: str) -> Obj:
    """The critic InferenceService serving ``model_uri`` (a pinned ``models:/name/version``)."""
    return {
        "apiVersion": API_VERSION,
        "kind": KIND,
        "metadata": {
            "name": spec.service,
            "labels": {"app.kubernetes.io/name": "deepcritic-critic",
                       "app.kubernetes.io/component": "serving", **spec.labels},
            "annotations": {"serving.kserve.io/deploymentMode": "Serverless",
                            "sidecar.istio.io/inject": "true",
                            PROFILE_ANNOTATION: spec.serve_profile},
        },
        "spec": {"predictor": {
            "minReplicas": spec.min_replicas, "maxReplicas": spec.max_replicas,
            "scaleMetric": "concurrency", "scaleTarget": 32, "containerConcurrency": 128,
            "timeout": 600,
            "model": {"modelFormat": {"name": "deepcritic-critic", "version": "1"},
                      "runtime": spec.runtime, "args": [model_uri_arg(model_uri)]},
        }},
    }  # fmt: skip


def served_uri(obj: Obj | None) -> str | None:
    """The ``--model-uri`` an InferenceService's predictor serves."""
    args = (((obj or {}).get("spec") or {}).get("predictor") or {}).get("model", {}).get("args")
    for arg in args or []:
        if str(arg).startswith("--model-uri="):
            return str(arg).split("=", 1)[1]
    return None


def revision_ready(obj: Obj | None, model_uri: str) -> bool:
    """Ready, serving ``model_uri``, and the latest created revision is the ready one."""
    if obj is None or served_uri(obj) != model_uri or not is_true(obj, "Ready"):
        return False
    status = obj.get("status") or {}
    gen = (obj.get("metadata") or {}).get("generation")
    if gen is not None and status.get("observedGeneration", gen) < gen:
        return False
    pred = (status.get("components") or {}).get("predictor") or {}
    latest = pred.get("latestCreatedRevision")
    return latest is None or latest == pred.get("latestReadyRevision")


def _failed_message(obj: Obj | None) -> str | None:
    for kind in ("PredictorReady", "Ready"):
        cond = condition(obj, kind)
        if cond and str(cond.get("status")) == "False" and "Fail" in str(cond.get("reason", "")):
            return f"{cond.get('reason')}: {cond.get('message', '')}"
    return None


def wait_ready(cluster: Cluster, spec: DeploySpec, model_uri: str) -> Obj:
    def check() -> Obj | None:
        obj = cluster.get(API_VERSION, KIND, spec.service)
        failed = _failed_message(obj)
        if failed:
            raise DeployError(f"{spec.service} ({model_uri}) failed: {failed}")
        return obj if revision_ready(obj, model_uri) else None

    return dict(wait_for(check, timeout_s=spec.ready_timeout_s, poll_s=spec.poll_s,
                         what=f"InferenceService {spec.service} serving {model_uri}"))  # fmt: skip


def endpoint_url(obj: Obj) -> str | None:
    status = obj.get("status") or {}
    return status.get("url") or (status.get("address") or {}).get("url")


def smoke(url: str, model: str = "deepcritic", timeout_s: float = 600.0) -> Any:
    """One critique request (v1 protocol) to the new revision; raises on any failure."""
    import httpx

    resp = httpx.post(f"{url}/v1/models/{model}:predict", json=SAMPLE_REQUEST, timeout=timeout_s)
    if resp.status_code != 200:
        raise DeployError(f"smoke request to {url}: HTTP {resp.status_code} {resp.text[:300]}")
    return resp.json()


def pin(client: Any, spec: DeploySpec) -> str:
    """``models:/<name>@<alias>`` -> ``models:/<name>/<version>``, read once."""
    version = client.get_model_version_by_alias(spec.model_name, spec.alias).version
    return f"models:/{spec.model_name}/{version}"


def rollout(cluster: Cluster, spec: DeploySpec, client: Any) -> DeployResult:
    """Create-or-canary the InferenceService on the pinned champion; promote or roll back."""
    pinned = pin(client, spec)
    current = cluster.get(API_VERSION, KIND, spec.service)
    previous = served_uri(current)
    if current is None:
        log.info("creating InferenceService %s serving %s", spec.service, pinned)
        cluster.create(isvc_manifest(spec, pinned))
    elif previous == pinned:
        log.info("%s already serves %s", spec.service, pinned)
    else:
        log.info("canary: %s -> %s at %d%%", previous, pinned, spec.canary_percent)
        canary = spec.canary_percent if spec.canary_percent < 100 else None
        cluster.patch(API_VERSION, KIND, spec.service, _model_patch(spec, pinned, canary))
    try:
        obj = wait_ready(cluster, spec, pinned)
        url = endpoint_url(obj)
        response = smoke(url) if spec.smoke_request and url else None
        if previous not in (None, pinned) and spec.canary_percent < 100:
            cluster.patch(API_VERSION, KIND, spec.service, _model_patch(spec, pinned, None))
            obj = wait_ready(cluster, spec, pinned)
    except (DeployError, TimeoutError) as exc:
        rollback(cluster, spec, client, failed=pinned, previous=previous)
        raise DeployError(f"rollout of {pinned} rolled back to {previous}: {exc}") from exc
    log.info("%s serves %s at 100%%: %s", spec.service, pinned, endpoint_url(obj))
    return DeployResult(pinned, previous, endpoint_url(obj), response, created=current is None)


def _model_patch(spec: DeploySpec, model_uri: str, canary: int | None) -> Obj:
    """Merge patch: the predictor's model args and canary share (None removes the canary)."""
    return {"metadata": {"annotations": {PROFILE_ANNOTATION: spec.serve_profile}},
            "spec": {"predictor": {"canaryTrafficPercent": canary,
                                   "model": {"args": [model_uri_arg(model_uri)]}}}}  # fmt: skip


def rollback(
    cluster: Cluster, spec: DeploySpec, client: Any, *, failed: str, previous: str | None
) -> None:
    """Traffic back to ``previous`` (or the failed service removed), alias back, version tagged."""
    name, _, version = failed.removeprefix("models:/").partition("/")
    client.set_model_version_tag(name, version, FAILED_TAG, "failed")
    if previous is None:
        log.error("first rollout of %s failed: deleting InferenceService %s", failed, spec.service)
        cluster.delete(API_VERSION, KIND, spec.service)
        client.delete_registered_model_alias(name, spec.alias)
        return
    log.error("rolling %s back to %s", spec.service, previous)
    cluster.patch(API_VERSION, KIND, spec.service, _model_patch(spec, previous, None))
    prev_name, _, prev_version = previous.removeprefix("models:/").partition("/")
    if prev_name == name and prev_version.isdigit():
        client.set_registered_model_alias(name, spec.alias, prev_version)
