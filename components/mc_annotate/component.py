"""mc_annotate: Monte Carlo first-error labels for the RL data (the no-human-labels branch)."""

from kfp import dsl
from kfp.dsl import Dataset, Metrics, Output

from deepcritic.platform.images import image


@dsl.component(base_image=image("generate"), install_kfp_package=False)
def mc_annotate(
    profile: str,
    problems: str,
    limit: int,
    overrides: list,
    labels: Output[Dataset],
    metrics: Output[Metrics],
) -> int:
    """Sample solutions, roll out every step prefix, write canonical JSONL; returns rows written."""
    from deepcritic.runtime import ensure_parent_run, stage_config
    from deepcritic.stages.mc import MCConfig, run

    ensure_parent_run()
    extra = [f"problems={problems}", f"out_dir={labels.path}"]
    extra += [f"limit={limit}"] if limit > 0 else []
    result = run(stage_config(MCConfig, "mc", profile, [*overrides, *extra]))
    for key, value in {**result.counts, **result.label_counts}.items():
        metrics.log_metric(key.replace(":", ".").replace("/", "_"), float(value))
    labels.metadata["out_path"] = result.out_path
    return int(result.written)
