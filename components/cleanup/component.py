"""cleanup: the run's exit handler (runs after success, failure or cancellation): deletes the
run's TrainJobs, its run-volume folder (on success, or when asked) and, when asked, the claim."""

from kfp import dsl

from deepcritic.platform.images import image


@dsl.component(base_image=image("pipeline-base"), install_kfp_package=False)
def cleanup(
    status: dsl.PipelineTaskFinalStatus,
    namespace: str,
    delete_run_files: bool,
    claim: str,
    delete_claim: bool,
) -> str:
    """Returns what was deleted and kept, as JSON."""
    import json
    import os

    from deepcritic.platform.cleanup import cleanup as run_cleanup
    from deepcritic.platform.connect import current

    run_id = os.environ.get("KFP_RUN_ID") or status.pipeline_job_resource_name
    result = run_cleanup(current(namespace), run_id=run_id, state=status.state,
                         delete_run_files=delete_run_files,
                         delete_claim=claim if delete_claim else "")  # fmt: skip
    return json.dumps(result.__dict__)
