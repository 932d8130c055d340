"""verify_vote: critic-verified majority voting of a generator's answers (optional branch)."""

from kfp import dsl
from kfp.dsl import Dataset, Input, Metrics, Model, Output

from deepcritic.platform.images import image


@dsl.component(base_image=image("generate"), install_kfp_package=False)
def verify_vote(
    profile: str,
    critic: Input[Model],
    problems: str,
    limit: int,
    overrides: list,
    results: Output[Dataset],
    metrics: Output[Metrics],
) -> float:
    """Accuracy of plain vs critic-verified majority voting for each k; returns verified@max k."""
    from deepcritic.critic.voting import VotingConfig, run
    from deepcritic.runtime import ensure_parent_run, stage_config

    ensure_parent_run()
    extra = [f"critic.model={critic.path}", f"problems={problems}", f"out={results.path}",
             "tracking_uri=null"] + ([f"limit={limit}"] if limit > 0 else [])  # fmt: skip
    result = run(stage_config(VotingConfig, "voting", profile, [*overrides, *extra]))
    for key, value in result.metrics().items():
        metrics.log_metric(key, float(value))
    return float(result.rows[-1].verified)
