"""grpo: RL (GRPO) of the SFT critic on labels or MC-annotated data (in-process or a TrainJob)."""

from kfp import dsl
from kfp.dsl import Dataset, Input, Metrics, Model, Output

from deepcritic.images import image


@dsl.component(base_image=image("train"), install_kfp_package=False)
def grpo(
    profile: str,
    sft_model: Input[Model],
    data: Input[Dataset],
    data_source: str,
    launcher: str,
    namespace: str,
    overrides: list,
    model: Output[Model],
    metrics: Output[Metrics],
) -> int:
    """``data_source``: labels (a JSONL file) | mc (mc_annotate's folder). Returns steps run."""
    import shutil
    from pathlib import Path

    import yaml

    from deepcritic.config import to_dict
    from deepcritic.grpo import CriticGRPOConfig, run
    from deepcritic.images import image as image_ref
    from deepcritic.runtime import (
        ensure_parent_run,
        launch_trainjob,
        stage_config,
        trainjob_manifest,
    )

    ensure_parent_run()
    out_dir = model.path + ".work"
    src = data.metadata.get("out_path") or data.path
    key = "mc_path" if data_source == "mc" else "labels_path"
    if Path(src).is_dir():
        src = str(sorted(Path(src).glob("*.jsonl"))[0])
    extra = [f"model={sft_model.path}", f"data_source={data_source}", f"{key}={src}",
             f"out_dir={out_dir}"]  # fmt: skip
    config = stage_config(CriticGRPOConfig, "grpo", profile, [*overrides, *extra])
    if launcher == "trainjob":
        name = f"grpo-{abs(hash(model.path)) % 10**8}"
        body = yaml.safe_dump(to_dict(config))
        launch_trainjob(trainjob_manifest(name, "grpo", body, image=image_ref("train")), namespace)
        checkpoint, steps = f"{out_dir}/final", -1
    elif launcher == "inprocess":
        result = run(config)
        checkpoint, steps = result.checkpoint, result.steps
        if result.reward_curve:
            metrics.log_metric("final_reward", float(result.reward_curve[-1]))
    else:
        raise ValueError(f"grpo_launcher must be inprocess or trainjob, got {launcher!r}")
    shutil.copytree(checkpoint, model.path, dirs_exist_ok=True)
    metrics.log_metric("steps", float(steps))
    model.metadata.update({**sft_model.metadata, "rl_data_source": data_source})
    return int(steps)
