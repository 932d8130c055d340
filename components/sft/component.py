"""sft: supervised fine-tuning of the critic on the seed critiques (in-process or a TrainJob)."""

from kfp import dsl
from kfp.dsl import Dataset, Input, Metrics, Model, Output

from deepcritic.platform.images import image


@dsl.component(base_image=image("train"), install_kfp_package=False)
def sft(
    profile: str,
    data: Input[Dataset],
    base_model: str,
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
) -> str:
    """Train; ``model`` gets the HF checkpoint. ``launcher``: inprocess | trainjob (cluster: this
    task stays on a CPU node and follows a Kubeflow Trainer TrainJob with the files on the run
    volume ``run_volume_claim``, ``num_nodes`` x ``gpus_per_node`` GPUs, ZeRO-3; ``procs_per_node``
    ranks per node, 0 = one per GPU; the CPU rehearsal: ``gpus_per_node=0, procs_per_node=2``)."""
    import shutil

    from deepcritic.runtime import ensure_parent_run, stage_config
    from deepcritic.stages.sft import CriticSFTConfig, read_result, run

    ensure_parent_run()
    if launcher == "trainjob":
        from deepcritic.models import resolve_model
        from deepcritic.platform import trainjob

        # resolved once here (a URI fetched, an alias built) onto the run volume's cache, so the
        # trainer pods find it in place instead of racing to build it
        base_model = resolve_model(base_model)
        folder = trainjob.stage_files("sft")
        on_volume = trainjob.put_on_volume(data.path, folder / "inputs" / "data")
        extra = [f"data={on_volume}", f"model={base_model}", f"out_dir={folder / 'out'}"]
        config = stage_config(CriticSFTConfig, "sft", profile, [*overrides, *extra])
        launch = trainjob.Launch(namespace, num_nodes, gpus_per_node, procs_per_node,
                                 run_volume_claim, timeout_s, node_selector, tolerations)  # fmt: skip
        result = trainjob.train("sft", config, read_result, launch)
        model.metadata["run_volume_path"] = result.checkpoint  # GRPO's TrainJob reads it in place
    elif launcher == "inprocess":
        config = stage_config(CriticSFTConfig, "sft", profile, [*overrides, f"data={data.path}",
                              f"model={base_model}", f"out_dir={model.path}.work"])  # fmt: skip
        result = run(config)
    else:
        raise ValueError(f"sft_launcher must be inprocess or trainjob, got {launcher!r}")
    shutil.copytree(result.checkpoint, model.path, dirs_exist_ok=True)
    metrics.log_metric("train_loss", result.train_loss)
    metrics.log_metric("global_step", float(result.global_step))
    model.metadata.update({"data_hash": result.data_hash, "examples": result.examples,
                           "base_model": base_model})  # fmt: skip
    return base_model
