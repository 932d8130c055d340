"""deploy: roll the champion out as the critic InferenceService (pinned version, canary, wait for
Ready, promote or roll back), through :mod:`deepcritic.platform.deploy`. On a cluster it talks to
the API server; in the rehearsal to the local stand-in, which runs ``deepcritic serve``."""

from kfp import dsl

from deepcritic.platform.images import image


@dsl.component(base_image=image("pipeline-base"), install_kfp_package=False)
def deploy(
    model_name: str,
    namespace: str,
    canary_percent: int,
    serve_profile: str,
    ready_timeout_s: int,
    smoke_request: bool,
) -> str:
    """Returns the rollout as JSON: pinned model URI, previous one, endpoint URL, smoke answer."""
    from deepcritic.platform.connect import current
    from deepcritic.platform.deploy import DeploySpec, rollout
    from deepcritic.runtime import ensure_parent_run
    from deepcritic.tracking import registry_client

    ensure_parent_run()
    spec = DeploySpec(model_name=model_name, serve_profile=serve_profile,
                      canary_percent=canary_percent, ready_timeout_s=float(ready_timeout_s),
                      smoke_request=smoke_request)  # fmt: skip
    result = rollout(current(namespace), spec, registry_client())
    print(f"deployed {result.model_uri} at {result.url}; answer: {result.response}", flush=True)
    return result.to_json()
