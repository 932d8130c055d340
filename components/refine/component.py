"""refine: critique-guided refinement of a generator's solutions, vs a baseline critic (optional)."""

from kfp import dsl
from kfp.dsl import Dataset, Input, Metrics, Model, Output

from deepcritic.platform.images import image


@dsl.component(base_image=image("generate"), install_kfp_package=False)
def refine(
    profile: str,
    critic: Input[Model],
    baseline_model: str,
    problems: str,
    limit: int,
    overrides: list,
    results: Output[Dataset],
    metrics: Output[Metrics],
) -> float:
    """Accuracy before/after, w->c and c->w for the critic and the baseline; returns acc after."""
    from deepcritic.critic.refine import RefineConfig, run
    from deepcritic.runtime import ensure_parent_run, stage_config

    ensure_parent_run()
    extra = [f"critic.model={critic.path}", f"baseline_critic.model={baseline_model}",
             f"problems={problems}", f"out={results.path}", "tracking_uri=null"]  # fmt: skip
    extra += [f"limit={limit}"] if limit > 0 else []
    result = run(stage_config(RefineConfig, "refine", profile, [*overrides, *extra]))
    for key, value in result.metrics().items():
        metrics.log_metric(key, float(value))
    return float(result.summaries["critic"].accuracy_after)
