"""prepare_data: load labelled step-level solutions (CHAMP / PRM800K / ...) into canonical JSONL."""

from kfp import dsl
from kfp.dsl import Dataset, Metrics, Output

from deepcritic.platform.images import image


@dsl.component(base_image=image("pipeline-base"), install_kfp_package=False)
def prepare_data(
    profile: str,
    source: str,
    limit: int,
    overrides: list,
    train: Output[Dataset],
    metrics: Output[Metrics],
) -> int:
    """Returns the number of solutions written (``limit`` 0 = all)."""
    from deepcritic.runtime import ensure_parent_run, stage_config
    from deepcritic.stages.prepare import PrepareConfig, run

    ensure_parent_run()
    extra = [f"source={source}", f"out={train.path}"] + ([f"limit={limit}"] if limit > 0 else [])
    result = run(stage_config(PrepareConfig, "prepare", profile, [*overrides, *extra]))
    for key in ("read", "kept", "skipped", "n_train", "n_error", "n_correct"):
        metrics.log_metric(key, float(getattr(result, key)))
    train.metadata.update({"source": source, "n": result.n_train})
    return int(result.n_train)
