"""grpo: RL (GRPO) of the SFT critic on labels or MC-annotated data (in-process or a TrainJob)."""

from kfp import dsl
from kfp.dsl import Dataset, Input, Metrics, Model, Output

from deepcritic.platform.images import image


@dsl.component(base_image=image("train"), install_kfp_package=False)
def grpo(
    profile: str,
    sft_model: Input[Model],
    data: Input[Dataset],
    seed_data: Input[Dataset],
    data_source: str,
    launcher: str,
    namespace: str,
    overrides: list,
    model: Output[Model],
    metrics: Output[Metrics],
    num_nodes: int = 1,
    gpus_per_node: int = 8,
    procs_per_node: int = 0,
    run_volume_claim: str = "",
    timeout_s: int = 172800,
    node_selector: dict = None,  # type: ignore[assignment]  # KFP: an optional struct
    tolerations: list = None,  # type: ignore[assignment]
) -> int:
    """``data_source``: labels (a JSONL file) | mc (mc_annotate's folder). Returns steps run.
    ``launcher``: inprocess | trainjob (cluster: this task stays on a CPU node and follows a
    Kubeflow Trainer TrainJob with the files on the run volume ``run_volume_claim``; ranks per node:
    ``procs_per_node``, 0 = one per GPU). ``seed_data``: the seed stage's folder, handed over as
    ``exclude_problems_from`` when the preset curates (its problems stay out of RL)."""
    import shutil
    from dataclasses import replace
    from pathlib import Path

    from deepcritic.runtime import ensure_parent_run, stage_config
    from deepcritic.stages.grpo import CriticGRPOConfig, read_result, run

    ensure_parent_run()
    key = "mc_path" if data_source == "mc" else "labels_path"
    src = data.metadata.get("out_path") or data.path
    if launcher == "trainjob":
        from deepcritic.platform import trainjob

        folder = trainjob.stage_files("grpo")
        kept = sft_model.metadata.get("run_volume_path")  # SFT's TrainJob left it on the volume
        policy = Path(kept) if kept and Path(kept, "config.json").is_file() else None
        policy = policy or trainjob.put_on_volume(sft_model.path, folder / "inputs" / "sft_model")
        rows = trainjob.put_on_volume(src, folder / "inputs" / "data")  # a file or MC's folder
        extra = [f"model={policy}", f"data_source={data_source}", f"{key}={rows}",
                 f"out_dir={folder / 'out'}"]  # fmt: skip
        config = stage_config(CriticGRPOConfig, "grpo", profile, [*overrides, *extra])
        if config.exclude_problems_from:  # the preset curates: the seed folder, on the volume
            seed_dir = trainjob.put_on_volume(seed_data.path, folder / "inputs" / "seed")
            config = replace(config, exclude_problems_from=str(seed_dir))
        launch = trainjob.Launch(namespace, num_nodes, gpus_per_node, procs_per_node,
                                 run_volume_claim, timeout_s, node_selector, tolerations)  # fmt: skip
        result = trainjob.train("grpo", config, read_result, launch)
    elif launcher == "inprocess":
        extra = [f"model={sft_model.path}", f"data_source={data_source}", f"{key}={src}",
                 f"out_dir={model.path}.work"]  # fmt: skip
        config = stage_config(CriticGRPOConfig, "grpo", profile, [*overrides, *extra])
        if config.exclude_problems_from:  # the preset curates: the seed stage's folder
            config = replace(config, exclude_problems_from=seed_data.path)
        result = run(config)
    else:
        raise ValueError(f"grpo_launcher must be inprocess or trainjob, got {launcher!r}")
    shutil.copytree(result.checkpoint, model.path, dirs_exist_ok=True)
    if result.reward_curve:
        metrics.log_metric("final_reward", float(result.reward_curve[-1]))
    metrics.log_metric("steps", float(result.steps))
    model.metadata.update({**sft_model.metadata, "rl_data_source": data_source})
    model.metadata["run_volume_path"] = result.checkpoint if launcher == "trainjob" else ""
    return int(result.steps)
