"""seed_critiques: stage-1 seed critiques, sharded with dsl.ParallelFor, then merged + finalized."""

from kfp import dsl
from kfp.dsl import Dataset, Input, Metrics, Output

from deepcritic.platform.images import image


@dsl.component(base_image=image("pipeline-base"), install_kfp_package=False)
def plan_shards(num_shards: int) -> list:
    """``["0/N", "1/N", ...]``: the ``shard`` value of each parallel seed task."""
    if num_shards < 1:
        raise ValueError(f"seed_num_shards must be >= 1, got {num_shards}")
    return [f"{i}/{num_shards}" for i in range(num_shards)]


@dsl.component(base_image=image("generate"), install_kfp_package=False)
def seed_critiques(
    profile: str,
    data: Input[Dataset],
    shard: str,
    teacher_model: str,
    overrides: list,
    shard_out: Output[Dataset],
) -> int:
    """Generate one shard's critiques into ``shard_out`` (a folder); returns critiques kept."""
    import shutil

    from deepcritic.platform.storage import has_run_volume, run_dir
    from deepcritic.runtime import ensure_parent_run, stage_config
    from deepcritic.stages.seed.config import SeedConfig
    from deepcritic.stages.seed.stage import run

    ensure_parent_run()
    # On the run volume a retried shard resumes where it stopped; the task output gets a copy.
    out = str(run_dir("seed", shard.replace("/", "-of-"))) if has_run_volume() else shard_out.path
    extra = [f"data={data.path}", f"out_dir={out}", f"shard={shard}", "mode=generate"]
    if teacher_model:
        extra.append(f"generation.model={teacher_model}")
    result = run(stage_config(SeedConfig, "seed", profile, [*overrides, *extra]))
    if out != shard_out.path:
        shutil.copytree(out, shard_out.path, dirs_exist_ok=True)
    shard_out.metadata.update({"shard": shard, **result.counts})
    return int(result.counts.get("run.kept", 0))


@dsl.component(base_image=image("pipeline-base"), install_kfp_package=False)
def seed_finalize(
    profile: str,
    data: Input[Dataset],
    shards: Input[list[Dataset]],
    overrides: list,
    sft_data: Output[Dataset],
    metrics: Output[Metrics],
) -> int:
    """Merge every shard folder and write the SFT set (``sft_data`` folder); returns its size."""
    import shutil

    from deepcritic.runtime import ensure_parent_run, stage_config
    from deepcritic.stages.seed.config import SeedConfig
    from deepcritic.stages.seed.stage import run

    ensure_parent_run()
    for part in shards:
        shutil.copytree(part.path, sft_data.path, dirs_exist_ok=True)
    n = len(shards)
    extra = [f"data={data.path}", f"out_dir={sft_data.path}", f"shard=0/{n}", "mode=finalize"]
    result = run(stage_config(SeedConfig, "seed", profile, [*overrides, *extra]))
    if result.sft_path is None:
        raise RuntimeError("seed finalize wrote no SFT set (are all shards done?)")
    for key, value in result.counts.items():
        metrics.log_metric(key.replace("/", "_"), float(value))
    sft_data.metadata.update({"sft_path": result.sft_path, "kept": result.kept})
    return int(result.kept or 0)
