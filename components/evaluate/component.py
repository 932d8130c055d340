"""evaluate: step-level F1 of the critic on ProcessBench-style benchmarks.

``parser`` (strict | official) and ``prompt_set`` (deepcritic | reference): "" keeps the preset's
value. ``preset``: an evaluate preset other than the profile's, e.g. ``paper-reference`` (the
authors' settings, printed beside the paper's numbers); "" = ``configs/evaluate.<profile>.yaml``.
"""

from kfp import dsl
from kfp.dsl import Dataset, Input, Metrics, Model, Output

from deepcritic.platform.images import image


@dsl.component(base_image=image("generate"), install_kfp_package=False)
def evaluate(
    profile: str,
    model: Input[Model],
    benchmarks: list,
    limit: int,
    overrides: list,
    results: Output[Dataset],
    metrics: Output[Metrics],
    parser: str = "",
    prompt_set: str = "",
    preset: str = "",
) -> float:
    """Writes per-item results + ``metrics.json`` (flat) under ``results``; returns avg F1."""
    import json
    import os

    from deepcritic.runtime import ensure_parent_run, stage_config
    from deepcritic.stages.evaluate import EvalConfig, run

    ensure_parent_run()
    extra = [f"generation.model={model.path}", f"out={results.path}",
             "benchmarks=" + ",".join(benchmarks)] + ([f"limit={limit}"] if limit > 0 else [])  # fmt: skip
    extra += [f"{k}={v}" for k, v in (("parser", parser), ("prompt_set", prompt_set)) if v]
    result = run(stage_config(EvalConfig, "evaluate", preset or profile, [*overrides, *extra],
                              required=bool(preset)))  # fmt: skip
    flat = result.flat()
    os.makedirs(results.path, exist_ok=True)
    with open(os.path.join(results.path, "metrics.json"), "w") as fh:
        json.dump(flat, fh, indent=1)
    for key, value in flat.items():
        metrics.log_metric(key, float(value))
    return float(result.avg_f1)


@dsl.component(base_image=image("generate"), install_kfp_package=False)
def evaluate_base(
    profile: str,
    base_model: str,
    benchmarks: list,
    limit: int,
    overrides: list,
    results: Output[Dataset],
    parser: str = "",
    prompt_set: str = "",
    preset: str = "",
) -> float:
    """The base model on the same benchmarks: its avg F1 is the promotion floor. Predictions are
    cached on the run volume (``cache/base-eval``), so a rerun with the same settings reuses them."""
    import json
    import os

    from deepcritic.platform.storage import cache_dir, has_run_volume, safe_name
    from deepcritic.runtime import ensure_parent_run, stage_config
    from deepcritic.stages.evaluate import EvalConfig, run

    ensure_parent_run()
    out = cache_dir("base-eval", safe_name(base_model)) if has_run_volume() else "base-eval"
    extra = [f"generation.model={base_model}", f"out={out}",
             "benchmarks=" + ",".join(benchmarks)] + ([f"limit={limit}"] if limit > 0 else [])  # fmt: skip
    extra += [f"{k}={v}" for k, v in (("parser", parser), ("prompt_set", prompt_set)) if v]
    result = run(stage_config(EvalConfig, "evaluate", preset or profile, [*overrides, *extra],
                              required=bool(preset)))  # fmt: skip
    os.makedirs(results.path, exist_ok=True)
    with open(os.path.join(results.path, "metrics.json"), "w") as fh:
        json.dump(result.flat(), fh, indent=1)
    print(f"base model {base_model}: avg F1 {result.avg_f1:.4f}", flush=True)
    return float(result.avg_f1)
