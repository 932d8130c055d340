"""deploy: serve the champion. ``target=kserve`` applies the critic InferenceService (canary) on the
cluster; ``target=local`` starts ``deepcritic serve`` here, answers one critique request, stops."""

from kfp import dsl

from deepcritic.images import image


@dsl.component(base_image=image("pipeline-base"), install_kfp_package=False)
def deploy(
    model_name: str, target: str, namespace: str, canary_percent: int, serve_profile: str
) -> str:
    """Returns the endpoint URL (local: the URL it answered on before shutting down)."""
    from deepcritic.runtime import deploy_kserve, deploy_local, ensure_parent_run

    ensure_parent_run()
    uri = f"models:/{model_name}@champion"
    if target == "local":
        return deploy_local(uri, serve_profile)
    if target == "kserve":
        return deploy_kserve(uri, namespace, canary_percent)
    raise ValueError(f"deploy_target must be local or kserve, got {target!r}")
