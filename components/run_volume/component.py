"""volume_ready: wait until the run volume claim exists and is bound (or pending first use), so
that no task starts mounting a claim the run is still creating (``create_run_volume=True``)."""

from kfp import dsl

from deepcritic.platform.images import image


@dsl.component(base_image=image("pipeline-base"), install_kfp_package=False)
def volume_ready(claim: str, namespace: str, timeout_s: int) -> str:
    """Returns the claim's phase."""
    from deepcritic.platform.connect import current
    from deepcritic.platform.storage import wait_for_claim

    return wait_for_claim(current(namespace), claim, timeout_s=float(timeout_s))
