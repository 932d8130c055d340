"""The DeepCritic pipeline: data -> seed critiques (sharded) -> SFT -> RL data (labels | MC) -> GRPO
-> evaluate -> register -> promote -> deploy. Only wiring: every step is a component in components/.

Compile (the committed pipelines/deepcritic.yaml must match; a test recompiles and compares):
    python pipelines/deepcritic.py
Run on a cluster (kfp 2.17 CLI; parameters as key=value):
    kfp --endpoint URL run create -e deepcritic -r NAME -f pipelines/deepcritic.yaml profile=paper
Run here, end to end, with KFP's local runner:  python pipelines/run_local.py [--tiny]
"""

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kfp import compiler, dsl, kubernetes

ROOT = Path(__file__).resolve().parents[1]
# `python pipelines/deepcritic.py` puts pipelines/ first on sys.path, where this file would shadow
# the deepcritic package: drop it, and make components/ importable from anywhere.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != ROOT / "pipelines"]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from components.deploy.component import deploy  # noqa: E402
from components.evaluate.component import evaluate  # noqa: E402
from components.grpo.component import grpo  # noqa: E402
from components.mc_annotate.component import mc_annotate  # noqa: E402
from components.prepare_data.component import prepare_data  # noqa: E402
from components.promote.component import promote  # noqa: E402
from components.refine.component import refine  # noqa: E402
from components.register.component import register  # noqa: E402
from components.seed_critiques.component import plan_shards, seed_critiques, seed_finalize  # noqa: E402
from components.sft.component import sft  # noqa: E402
from components.verify_vote.component import verify_vote  # noqa: E402

PIPELINE_YAML = ROOT / "pipelines" / "deepcritic.yaml"
GPU_RESOURCE = "nvidia.com/gpu"
GPU_NODE_LABEL = "nvidia.com/gpu.product"  # set by NVIDIA GPU feature discovery on GPU nodes
GPU_TAINT = "nvidia.com/gpu"  # GPU node pools are tainted NoSchedule with this key


@dataclass(frozen=True)
class Placement:
    """Where a step runs on the cluster (ignored by the local runner)."""

    gpus: int = 0
    gpu_product: str = "NVIDIA-H100-80GB-HBM3"
    cpu: str = "2"
    memory: str = "8Gi"
    shm: str | None = None  # memory-backed /dev/shm size (NCCL, dataloader workers)
    retries: int = 0  # generation stages retry (preemptible GPU nodes, vLLM OOM restarts)


PLACEMENT = {
    "prepare": Placement(cpu="2", memory="8Gi"),
    "seed": Placement(gpus=1, cpu="8", memory="64Gi", shm="16Gi", retries=2),
    "sft": Placement(gpus=8, cpu="32", memory="512Gi", shm="64Gi"),
    "mc": Placement(gpus=1, cpu="8", memory="64Gi", shm="16Gi", retries=2),
    "grpo": Placement(gpus=8, cpu="32", memory="512Gi", shm="64Gi"),
    "eval": Placement(gpus=1, cpu="8", memory="64Gi", shm="16Gi", retries=2),
    "cpu": Placement(cpu="1", memory="4Gi"),
}


def place(task: dsl.PipelineTask, stage: str) -> dsl.PipelineTask:
    """Requests, GPU accelerator + limit, node selector, toleration, /dev/shm, retries."""
    p = PLACEMENT[stage]
    task.set_cpu_request(p.cpu).set_memory_request(p.memory).set_memory_limit(p.memory)
    if p.gpus:
        task.set_accelerator_type(GPU_RESOURCE).set_accelerator_limit(p.gpus)
        kubernetes.add_node_selector(task, label_key=GPU_NODE_LABEL, label_value=p.gpu_product)
        kubernetes.add_toleration(task, key=GPU_TAINT, operator="Exists", effect="NoSchedule")
    if p.shm:
        kubernetes.empty_dir_mount(
            task, volume_name="dshm", mount_path="/dev/shm", medium="Memory", size_limit=p.shm
        )
    if p.retries:
        task.set_retry(num_retries=p.retries, backoff_duration="60s", backoff_factor=2.0)
    kubernetes.use_field_path_as_env(
        task, env_name="KFP_RUN_ID", field_path="metadata.labels['pipeline/runid']"
    )
    task.set_caching_options(True)
    return task


def _evaluate_register_promote_deploy(critic: Any, *, profile: Any, train: Any, base_model: Any,
                                      eval_benchmarks: Any, eval_limit: Any, eval_overrides: Any,
                                      model_name: Any, margin: Any, deploy_enabled: Any,
                                      deploy_target: Any, canary: Any, namespace: Any,
                                      use: dict[str, Any]) -> None:  # fmt: skip
    ev = place(evaluate(profile=profile, model=critic, benchmarks=eval_benchmarks, limit=eval_limit,
                        overrides=eval_overrides), "eval")  # fmt: skip
    with dsl.If(use["enabled"] == True, name="use-critic"):  # noqa: E712
        vote = place(verify_vote(profile=profile, critic=critic, problems=use["problems"],
                                 limit=use["limit"], overrides=use["voting_overrides"]), "eval")  # fmt: skip
        vote.after(ev)
        ref = place(refine(profile=profile, critic=critic, baseline_model=base_model,
                           problems=use["problems"], limit=use["limit"],
                           overrides=use["refine_overrides"]), "eval")  # fmt: skip
        ref.after(ev)
    reg = place(register(model=critic, eval_results=ev.outputs["results"], train_data=train,
                         model_name=model_name, base_model=base_model), "cpu")  # fmt: skip
    reg.set_caching_options(False)  # registry side effects: never skip them
    gate = place(
        promote(model_name=model_name, version=reg.outputs["version"], margin=margin), "cpu"
    )
    gate.set_caching_options(False)
    with dsl.If(deploy_enabled == True, name="deploy-enabled"):  # noqa: E712, SIM117
        with dsl.If(gate.outputs["promoted"] == True, name="new-champion"):  # noqa: E712, SIM117
            dep = place(deploy(model_name=model_name, target=deploy_target, namespace=namespace,
                               canary_percent=canary, serve_profile=profile), "cpu")  # fmt: skip
            dep.set_caching_options(False)


@dsl.pipeline(
    name="deepcritic", description="Train, evaluate, register and serve a DeepCritic critic."
)
def deepcritic_pipeline(
    profile: str = "paper",  # stage presets: configs/<stage>.<profile>.yaml (tiny | local | paper)
    base_model: str = "default",  # critic to fine-tune (paper: Qwen2.5-7B-Instruct)
    prepare_source: str = "champ",  # labelled solutions (paper: PRM800K phase 2; champ = stand-in)
    prepare_limit: int = 0,  # first N solutions (0 = all)
    prepare_overrides: list = [],  # noqa: B006 (KFP defaults are literals)
    seed_num_shards: int = 4,  # parallel seed-critique tasks (dsl.ParallelFor)
    seed_teacher_model: str = "",  # "" = the seed preset's teacher (paper: Qwen2.5-72B-Instruct)
    seed_overrides: list = [],  # noqa: B006
    sft_launcher: str = "inprocess",  # inprocess | trainjob (Kubeflow Trainer, DeepSpeed runtime)
    sft_overrides: list = [],  # noqa: B006
    rl_data_source: str = "labels",  # labels (human first-error labels) | mc (MC annotation)
    mc_problems: str = "gsm8k:train",  # problems for MC annotation (rl_data_source=mc)
    mc_limit: int = 0,  # first N problems (0 = all)
    mc_overrides: list = [],  # noqa: B006
    grpo_launcher: str = "inprocess",  # inprocess | trainjob
    grpo_overrides: list = [],  # noqa: B006
    eval_benchmarks: list = ["processbench:gsm8k", "processbench:math"],  # noqa: B006
    eval_limit: int = 0,  # first N items per benchmark (0 = all)
    eval_overrides: list = [],  # noqa: B006
    registry_model_name: str = "deepcritic",  # MLflow registered model (serve: @champion)
    promote_margin: float = 0.0,  # promote only if avg F1 > champion's + margin
    deploy_enabled: bool = True,  # roll out the champion when this run promoted it
    deploy_target: str = "kserve",  # kserve (cluster InferenceService) | local (serve + 1 request)
    deploy_canary_percent: int = 10,  # traffic share of the new champion during rollout
    namespace: str = "deepcritic",  # where TrainJobs and the InferenceService live
    use_enabled: bool = False,  # optional branch after evaluate: verified voting + refinement
    use_problems: str = "gsm8k:test",  # problems with gold answers for the optional branch
    use_limit: int = 0,  # first N problems (0 = the voting/refine preset's limit)
    voting_overrides: list = [],  # noqa: B006
    refine_overrides: list = [],  # noqa: B006
) -> None:
    data = place(prepare_data(profile=profile, source=prepare_source, limit=prepare_limit,
                              overrides=prepare_overrides), "prepare")  # fmt: skip
    train = data.outputs["train"]
    shards = place(plan_shards(num_shards=seed_num_shards), "cpu")
    with dsl.ParallelFor(shards.output, name="seed-shards") as shard:
        seed = place(seed_critiques(profile=profile, data=train, shard=shard,
                                    teacher_model=seed_teacher_model, overrides=seed_overrides), "seed")  # fmt: skip
    final = place(seed_finalize(profile=profile, data=train, shards=dsl.Collected(seed.outputs["shard_out"]),
                                overrides=seed_overrides), "cpu")  # fmt: skip
    sft_task = place(sft(profile=profile, data=final.outputs["sft_data"], base_model=base_model,
                         launcher=sft_launcher, namespace=namespace, overrides=sft_overrides), "sft")  # fmt: skip
    sft_model = sft_task.outputs["model"]
    # RL data source: two branches. Each wires its own evaluate -> register -> promote -> deploy
    # tail (kfp.local resolves dsl.OneOf for parameters only, not artifacts, so no OneOf here).
    tail = {"profile": profile, "train": train, "base_model": base_model,
            "eval_benchmarks": eval_benchmarks, "eval_limit": eval_limit,
            "eval_overrides": eval_overrides, "model_name": registry_model_name,
            "margin": promote_margin, "deploy_enabled": deploy_enabled,
            "deploy_target": deploy_target, "canary": deploy_canary_percent,
            "namespace": namespace,
            "use": {"enabled": use_enabled, "problems": use_problems, "limit": use_limit,
                    "voting_overrides": voting_overrides, "refine_overrides": refine_overrides}}  # fmt: skip
    with dsl.If(rl_data_source == "labels", name="rl-from-labels"):
        rl_labels = place(grpo(profile=profile, sft_model=sft_model, data=train, data_source="labels",
                               launcher=grpo_launcher, namespace=namespace, overrides=grpo_overrides), "grpo")  # fmt: skip
        _evaluate_register_promote_deploy(rl_labels.outputs["model"], **tail)
    with dsl.Else(name="rl-from-mc"):  # rl_data_source == "mc" (grpo validates the value)
        mc = place(mc_annotate(profile=profile, problems=mc_problems, limit=mc_limit,
                               overrides=mc_overrides), "mc")  # fmt: skip
        rl_mc = place(grpo(profile=profile, sft_model=sft_model, data=mc.outputs["labels"], data_source=rl_data_source,
                           launcher=grpo_launcher, namespace=namespace, overrides=grpo_overrides), "grpo")  # fmt: skip
        _evaluate_register_promote_deploy(rl_mc.outputs["model"], **tail)


def compile_pipeline(path: str | Path = PIPELINE_YAML) -> Path:
    compiler.Compiler().compile(deepcritic_pipeline, str(path))
    return Path(path)


if __name__ == "__main__":
    print(compile_pipeline(sys.argv[1] if len(sys.argv) > 1 else PIPELINE_YAML))
