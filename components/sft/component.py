"""sft: supervised fine-tuning of the critic on the seed critiques (in-process or a TrainJob)."""

from kfp import dsl
from kfp.dsl import Dataset, Input, Metrics, Model, Output

from deepcritic.images import image


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
) -> str:
    """Train; ``model`` gets the HF checkpoint. ``launcher``: inprocess | trainjob (cluster)."""
    import shutil

    import yaml

    from deepcritic.config import to_dict
    from deepcritic.images import image as image_ref
    from deepcritic.runtime import (
        ensure_parent_run,
        launch_trainjob,
        stage_config,
        trainjob_manifest,
    )
    from deepcritic.sft import CriticSFTConfig, run

    ensure_parent_run()
    out_dir = model.path + ".work"
    extra = [f"data={data.path}", f"model={base_model}", f"out_dir={out_dir}"]
    config = stage_config(CriticSFTConfig, "sft", profile, [*overrides, *extra])
    if launcher == "trainjob":  # multi-node DeepSpeed on the cluster; out_dir on the shared volume
        name = f"sft-{abs(hash(model.path)) % 10**8}"
        body = yaml.safe_dump(to_dict(config))
        launch_trainjob(trainjob_manifest(name, "sft", body, image=image_ref("train")), namespace)
        checkpoint, loss = f"{out_dir}/final", float("nan")
    elif launcher == "inprocess":
        result = run(config)
        checkpoint, loss = result.checkpoint, result.train_loss
        metrics.log_metric("global_step", float(result.global_step))
        model.metadata.update({"data_hash": result.data_hash, "examples": result.examples})
    else:
        raise ValueError(f"sft_launcher must be inprocess or trainjob, got {launcher!r}")
    shutil.copytree(checkpoint, model.path, dirs_exist_ok=True)
    metrics.log_metric("train_loss", loss)
    model.metadata["base_model"] = base_model
    return base_model
