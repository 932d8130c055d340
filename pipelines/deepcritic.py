"""The DeepCritic pipeline: data -> seed critiques (sharded) -> SFT -> RL data (labels | MC) -> GRPO
-> evaluate -> register -> promote -> deploy. Only wiring: every step is a component in components/.

Compile (the committed pipelines/deepcritic.yaml must match; a test recompiles and compares):
    python pipelines/deepcritic.py
Run on a cluster (kfp 2.17 CLI): the compiled defaults ARE the paper run (docs/cluster.md):
    kfp --endpoint URL run create -e deepcritic -r NAME -f pipelines/deepcritic.yaml
Run here, end to end, with KFP's local runner:  python pipelines/run_local.py [--tiny | --rehearse]
Cluster settings (GPU node selector + tolerations, run volume claim, MLflow ConfigMap/Secret, HF
token Secret) are pipeline parameters; the local runner ignores the Kubernetes ones.
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

from components.cleanup.component import cleanup  # noqa: E402
from components.deploy.component import deploy as deploy_component  # noqa: E402
from components.evaluate.component import evaluate, evaluate_base  # noqa: E402
from components.grpo.component import grpo  # noqa: E402
from components.mc_annotate.component import mc_annotate  # noqa: E402
from components.prepare_data.component import prepare_data  # noqa: E402
from components.promote.component import promote  # noqa: E402
from components.refine.component import refine  # noqa: E402
from components.register.component import register  # noqa: E402
from components.run_volume.component import volume_ready  # noqa: E402
from components.seed_critiques.component import plan_shards, seed_critiques, seed_finalize  # noqa: E402
from components.sft.component import sft  # noqa: E402
from components.verify_vote.component import verify_vote  # noqa: E402

from deepcritic.platform.storage import MOUNT_PATH  # noqa: E402
from deepcritic.runtime import preset_gpus  # noqa: E402

PIPELINE_YAML = ROOT / "pipelines" / "deepcritic.yaml"
GPU_RESOURCE = "nvidia.com/gpu"
HOUR = 3600


@dataclass(frozen=True)
class Placement:
    """Where a step runs on the cluster (the local runner ignores all of it)."""

    gpus: int = 0  # from the stage's paper preset (tensor_parallel_size), compiled in
    cpu: str = "2"
    memory: str = "8Gi"
    shm: str | None = None  # memory-backed /dev/shm size (NCCL, vLLM workers)
    timeout_s: int = 2 * HOUR  # the pod's activeDeadlineSeconds
    retries: int = 2  # every task is idempotent (resumes from the run volume, or recomputes)
    run_volume: bool = True  # mounts the run volume claim at MOUNT_PATH
    hf_token: bool = False  # downloads inputs: gets $HF_TOKEN from the Secret named by a parameter


# SFT/GRPO tasks are CPU launchers: the training itself is a TrainJob on GPU nodes.
PLACEMENT = {
    "prepare": Placement(cpu="2", memory="8Gi", hf_token=True),
    # each shard holds the whole teacher: GPUs = the seed preset's tensor_parallel_size (8 for 72B)
    "seed": Placement(gpus=preset_gpus("seed"), cpu="16", memory="256Gi", shm="32Gi", timeout_s=48 * HOUR,
                      hf_token=True),
    "train": Placement(cpu="2", memory="16Gi", timeout_s=96 * HOUR, hf_token=True),
    "mc": Placement(gpus=preset_gpus("mc"), cpu="8", memory="64Gi", shm="16Gi",
                    timeout_s=48 * HOUR, hf_token=True),
    "eval": Placement(gpus=preset_gpus("evaluate"), cpu="8", memory="64Gi", shm="16Gi",
                      timeout_s=24 * HOUR, hf_token=True),
    "cpu": Placement(cpu="1", memory="4Gi", timeout_s=HOUR, run_volume=False),
    "deploy": Placement(cpu="1", memory="2Gi", timeout_s=2 * HOUR, run_volume=False),
}  # fmt: skip


def place(task: dsl.PipelineTask, stage: str, cluster: dict[str, Any]) -> dsl.PipelineTask:
    """Requests, GPUs + node selector + tolerations, run volume, MLflow env, timeout, retries."""
    p = PLACEMENT[stage]
    task.set_cpu_request(p.cpu).set_memory_request(p.memory).set_memory_limit(p.memory)
    if p.gpus:
        task.set_accelerator_type(GPU_RESOURCE).set_accelerator_limit(p.gpus)
        kubernetes.add_node_selector_json(task, cluster["gpu_node_selector"])
        kubernetes.add_toleration_json(task, cluster["gpu_tolerations"])
    if p.shm:
        kubernetes.empty_dir_mount(
            task, volume_name="dshm", mount_path="/dev/shm", medium="Memory", size_limit=p.shm
        )
    if p.run_volume:
        kubernetes.mount_pvc(task, cluster["run_volume_claim"], MOUNT_PATH)
        task.after(cluster["volume"])
    kubernetes.use_config_map_as_env(task, cluster["mlflow_config"], {
        "tracking_uri": "MLFLOW_TRACKING_URI", "credentials_secret": "DEEPCRITIC_MLFLOW_SECRET"})  # fmt: skip
    kubernetes.use_secret_as_env(task, cluster["mlflow_secret"], {
        "username": "MLFLOW_TRACKING_USERNAME", "password": "MLFLOW_TRACKING_PASSWORD"},
        optional=True)  # fmt: skip
    if p.hf_token:
        kubernetes.use_secret_as_env(task, cluster["hf_token_secret"], {"token": "HF_TOKEN"},
                                     optional=True)  # fmt: skip
    kubernetes.use_field_path_as_env(
        task, env_name="KFP_RUN_ID", field_path="metadata.labels['pipeline/runid']"
    )
    kubernetes.add_pod_label(task, "deepcritic.io/mlflow-client", "true")  # its NetworkPolicy
    kubernetes.set_timeout(task, p.timeout_s)
    if p.retries:
        task.set_retry(num_retries=p.retries, backoff_duration="60s", backoff_factor=2.0)
    task.set_caching_options(True)
    return task


def _evaluate_register_promote_deploy(critic: Any, *, profile: Any, train: Any, base_model: Any,
                                      eval_benchmarks: Any, eval_limit: Any, eval_overrides: Any,
                                      eval_parser: Any, eval_prompt_set: Any, model_name: Any, margin: Any, gates: dict[str, Any],
                                      deploy: dict[str, Any],
                                      use: dict[str, Any], cluster: dict[str, Any]) -> None:  # fmt: skip
    ev = place(evaluate(profile=profile, model=critic, benchmarks=eval_benchmarks, limit=eval_limit,
                        overrides=eval_overrides, parser=eval_parser,
                        prompt_set=eval_prompt_set), "eval", cluster)  # fmt: skip
    with dsl.If(use["enabled"] == True, name="use-critic"):  # noqa: E712
        vote = place(verify_vote(profile=profile, critic=critic, problems=use["problems"],
                                 limit=use["limit"], overrides=use["voting_overrides"]), "eval", cluster)  # fmt: skip
        vote.after(ev)
        ref = place(refine(profile=profile, critic=critic, baseline_model=base_model,
                           problems=use["problems"], limit=use["limit"],
                           overrides=use["refine_overrides"]), "eval", cluster)  # fmt: skip
        ref.after(ev)
    reg = place(register(model=critic, eval_results=ev.outputs["results"], train_data=train,
                         model_name=model_name, base_model=base_model), "cpu", cluster)  # fmt: skip
    reg.set_caching_options(False)  # registry side effects: never skip them
    gate = place(promote(model_name=model_name, version=reg.outputs["version"], margin=margin,
                         floor=gates["floor"], base_f1=gates["base_f1"],
                         min_parse_rate=gates["min_parse_rate"]), "cpu", cluster)  # fmt: skip
    gate.set_caching_options(False)
    with dsl.If(deploy["enabled"] == True, name="deploy-enabled"):  # noqa: E712, SIM117
        with dsl.If(gate.outputs["promoted"] == True, name="new-champion"):  # noqa: E712, SIM117
            dep = place(deploy_component(model_name=model_name, namespace=cluster["namespace"],
                                    canary_percent=deploy["canary"], serve_profile=profile,
                                    ready_timeout_s=deploy["ready_timeout_s"],
                                    smoke_request=deploy["smoke_request"]), "deploy", cluster)  # fmt: skip
            dep.set_caching_options(False)


def _trainjob(c: dict[str, Any]) -> dict[str, Any]:
    """What a TrainJob launcher passes on: the run volume and the GPU pool's selector/taint."""
    return {"run_volume_claim": c["run_volume_claim"], "node_selector": c["gpu_node_selector"],
            "tolerations": c["gpu_tolerations"],
            # the job's deadline ends before the launcher's, so the launcher can still delete it
            "timeout_s": PLACEMENT["train"].timeout_s - HOUR}  # fmt: skip


def _body(**p: Any) -> None:
    """The stages (inside the exit handler)."""
    c = p["cluster"]
    data = place(prepare_data(profile=p["profile"], source=p["prepare_source"],
                              limit=p["prepare_limit"], overrides=p["prepare_overrides"]),
                 "prepare", c)  # fmt: skip
    train = data.outputs["train"]
    shards = place(plan_shards(num_shards=p["seed_num_shards"]), "cpu", c)
    with dsl.ParallelFor(shards.output, name="seed-shards") as shard:
        seed = place(seed_critiques(profile=p["profile"], data=train, shard=shard,
                                    teacher_model=p["seed_teacher_model"],
                                    overrides=p["seed_overrides"]), "seed", c)  # fmt: skip
    final = place(seed_finalize(profile=p["profile"], data=train,
                                shards=dsl.Collected(seed.outputs["shard_out"]),
                                overrides=p["seed_overrides"]), "prepare", c)  # fmt: skip
    sft_task = place(sft(profile=p["profile"], data=final.outputs["sft_data"],
                         base_model=p["base_model"], launcher=p["sft_launcher"],
                         namespace=p["namespace"], overrides=p["sft_overrides"],
                         num_nodes=p["sft_num_nodes"], gpus_per_node=p["sft_gpus_per_node"],
                         procs_per_node=p["sft_procs_per_node"], **_trainjob(c)), "train", c)  # fmt: skip
    sft_model = sft_task.outputs["model"]
    # the base model on the same benchmarks: the promotion floor (cached across runs)
    base = place(evaluate_base(profile=p["profile"], base_model=p["base_model"],
                               benchmarks=p["eval_benchmarks"], limit=p["eval_limit"],
                               overrides=p["eval_overrides"], parser=p["eval_parser"],
                               prompt_set=p["eval_prompt_set"]), "eval", c)  # fmt: skip
    # RL data source: two branches. Each wires its own evaluate -> register -> promote -> deploy
    # tail (kfp.local resolves dsl.OneOf for parameters only, not artifacts, so no OneOf here).
    tail = {"profile": p["profile"], "train": train, "base_model": p["base_model"],
            "eval_benchmarks": p["eval_benchmarks"], "eval_limit": p["eval_limit"],
            "eval_overrides": p["eval_overrides"], "eval_parser": p["eval_parser"],
            "eval_prompt_set": p["eval_prompt_set"], "model_name": p["registry_model_name"],
            "margin": p["promote_margin"],
            "gates": {"floor": p["promote_floor"], "base_f1": base.outputs["Output"],
                      "min_parse_rate": p["promote_min_parse_rate"]},
            "deploy": {"enabled": p["deploy_enabled"], "canary": p["deploy_canary_percent"],
                       "ready_timeout_s": p["deploy_ready_timeout_s"],
                       "smoke_request": p["deploy_smoke_request"]},
            "use": {"enabled": p["use_enabled"], "problems": p["use_problems"],
                    "limit": p["use_limit"], "voting_overrides": p["voting_overrides"],
                    "refine_overrides": p["refine_overrides"]},
            "cluster": c}  # fmt: skip
    grpo_args = {"profile": p["profile"], "sft_model": sft_model, "launcher": p["grpo_launcher"],
                 "seed_data": final.outputs["sft_data"],
                 "namespace": p["namespace"], "overrides": p["grpo_overrides"],
                 "num_nodes": p["grpo_num_nodes"], "gpus_per_node": p["grpo_gpus_per_node"],
                 "procs_per_node": p["grpo_procs_per_node"], **_trainjob(c)}  # fmt: skip
    with dsl.If(p["rl_data_source"] == "labels", name="rl-from-labels"):
        rl_labels = place(grpo(data=train, data_source="labels", **grpo_args), "train", c)
        _evaluate_register_promote_deploy(rl_labels.outputs["model"], **tail)
    with dsl.Else(name="rl-from-mc"):  # rl_data_source == "mc" (grpo validates the value)
        mc = place(mc_annotate(profile=p["profile"], problems=p["mc_problems"], limit=p["mc_limit"],
                               overrides=p["mc_overrides"]), "mc", c)  # fmt: skip
        rl_mc = place(grpo(data=mc.outputs["labels"], data_source=p["rl_data_source"],
                           **grpo_args), "train", c)  # fmt: skip
        _evaluate_register_promote_deploy(rl_mc.outputs["model"], **tail)


# PRM800K phase 2 (github.com/openai/prm800k; Git LFS files are served by /raw/)
PRM800K_PHASE2 = (
    "prm800k:https://github.com/openai/prm800k/raw/main/prm800k/data/phase2_train.jsonl"
)
# paper: ProcessBench x4 (from the hub), MR-GSM8K and PRM800K test as released by the DeepCritic authors
PAPER_BENCHMARKS = [
    "processbench-gsm8k=processbench:gsm8k",
    "processbench-math=processbench:math",
    "processbench-olympiadbench=processbench:olympiadbench",
    "processbench-omnimath=processbench:omnimath",
    "mrgsm8k=mrgsm8k:https://github.com/RUCBM/DeepCritic/raw/main/data/Mr-GSM8K/processed_test.json",
    "prm800k-test=prm800k-test:https://raw.githubusercontent.com/RUCBM/DeepCritic/6a0cde9e58bc20ac69eecf79e36fac661d28eb6f/data/prm800k/phase2_test.json",
]
# paper: NuminaMath problems (AI-MO/NuminaMath-CoT as JSONL, placed on the run volume)
NUMINAMATH = "numinamath:/mnt/deepcritic-run/inputs/numinamath/train.jsonl"
PAPER_GPU_POOL = {"nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3"}  # NVIDIA GPU feature discovery
GPU_TAINT = [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]


@dsl.pipeline(
    name="deepcritic", description="Train, evaluate, register and serve a DeepCritic critic."
)
def deepcritic_pipeline(
    profile: str = "paper",  # stage presets: configs/<stage>.<profile>.yaml (tiny | local | paper)
    base_model: str = "hf://Qwen/Qwen2.5-7B-Instruct",  # paper: Qwen2.5-7B-Instruct critic
    prepare_source: str = PRM800K_PHASE2,  # paper: PRM800K phase-2 labels (a URI or volume path)
    prepare_limit: int = 0,  # first N solutions (0 = all)
    prepare_overrides: list = [],  # noqa: B006 (KFP defaults are literals)
    seed_num_shards: int = 8,  # parallel seed-critique tasks (dsl.ParallelFor)
    seed_teacher_model: str = "hf://Qwen/Qwen2.5-72B-Instruct",  # paper: Qwen2.5-72B-Instruct
    seed_overrides: list = [],  # noqa: B006
    sft_launcher: str = "trainjob",  # trainjob (Kubeflow Trainer, ZeRO-3) | inprocess (local)
    sft_overrides: list = [],  # noqa: B006
    sft_num_nodes: int = 1,  # TrainJob nodes (paper: one node of 8 x 80 GB)
    sft_gpus_per_node: int = 8,  # paper: 8 GPUs
    sft_procs_per_node: int = 0,  # ranks per node (0 = one per GPU)
    rl_data_source: str = "labels",  # labels (human first-error labels) | mc (MC annotation)
    mc_problems: str = NUMINAMATH,  # problems for MC annotation (rl_data_source=mc)
    mc_limit: int = 0,  # first N problems (0 = all)
    mc_overrides: list = [],  # noqa: B006
    grpo_launcher: str = "trainjob",  # trainjob | inprocess
    grpo_overrides: list = [],  # noqa: B006
    grpo_num_nodes: int = 1,  # TrainJob nodes (paper: one node of 8 x 80 GB)
    grpo_gpus_per_node: int = 8,  # paper: 8 GPUs
    grpo_procs_per_node: int = 0,  # ranks per node (0 = one per GPU)
    eval_benchmarks: list = PAPER_BENCHMARKS,  # noqa: B006  paper: the six benchmarks
    eval_limit: int = 0,  # first N items per benchmark (0 = all)
    eval_overrides: list = [],  # noqa: B006
    eval_parser: str = "",  # strict | official (authors' eval.py) ("" = the evaluate preset's)
    eval_prompt_set: str = "",  # deepcritic | reference (authors' template) ("" = the preset's)
    registry_model_name: str = "deepcritic",  # MLflow registered model (serve: @champion)
    promote_margin: float = 0.0,  # promote only if avg F1 > champion's + margin
    promote_floor: str = "base",  # and > the base model's avg F1 (base | none | a number)
    promote_min_parse_rate: float = 50.0,  # and a readable verdict on >= this % of items
    deploy_enabled: bool = True,  # roll out the champion when this run promoted it
    deploy_canary_percent: int = 10,  # traffic share of the new champion until it is Ready
    deploy_ready_timeout_s: int = 1800,  # then roll back (traffic and alias)
    deploy_smoke_request: bool = False,  # one critique to the new revision (needs auth on a cluster)
    namespace: str = "",  # TrainJobs + InferenceService ("" = the namespace the run's pods are in)
    gpu_node_selector: dict = PAPER_GPU_POOL,  # noqa: B006  GPU tasks, TrainJobs, serving
    gpu_tolerations: list = GPU_TAINT,  # noqa: B006  the GPU pool's taint
    run_volume_claim: str = "deepcritic-run",  # RWX claim: shards, checkpoints, input cache
    create_run_volume: bool = False,  # create the claim in this run (else: manifests/base/storage)
    run_volume_size: str = "4Ti",  # when created here: 145 GB teacher + 15 GB/checkpoint + states
    run_volume_storage_class: str = "",  # when created here: an RWX class ("" = cluster default)
    delete_run_volume: bool = False,  # exit handler: delete the claim (only with create_run_volume)
    mlflow_config: str = "deepcritic-mlflow-client",  # ConfigMap: tracking_uri, credentials_secret
    mlflow_secret: str = "mlflow-client",  # Secret: username, password (optional)
    hf_token_secret: str = "hf-token",  # Secret: token, for gated hub models (optional)
    use_enabled: bool = False,  # optional branch after evaluate: verified voting + refinement
    use_problems: str = "gsm8k:test",  # problems with gold answers for the optional branch
    use_limit: int = 0,  # first N problems (0 = the voting/refine preset's limit)
    voting_overrides: list = [],  # noqa: B006
    refine_overrides: list = [],  # noqa: B006
) -> None:
    exit_task = cleanup(namespace=namespace, delete_run_files=False, claim=run_volume_claim,
                        delete_claim=delete_run_volume)  # fmt: skip
    kubernetes.mount_pvc(exit_task, run_volume_claim, MOUNT_PATH)
    kubernetes.use_field_path_as_env(  # the run's folder on the volume is named by it
        exit_task, env_name="KFP_RUN_ID", field_path="metadata.labels['pipeline/runid']"
    )
    kubernetes.set_timeout(exit_task, HOUR)
    with dsl.ExitHandler(exit_task, name="run"):
        with dsl.If(create_run_volume == True, name="create-run-volume"):  # noqa: E712
            kubernetes.CreatePVC(pvc_name=run_volume_claim, access_modes=["ReadWriteMany"],
                                 size=run_volume_size, storage_class_name=run_volume_storage_class)  # fmt: skip
        volume = volume_ready(claim=run_volume_claim, namespace=namespace, timeout_s=1800)
        cluster = {"gpu_node_selector": gpu_node_selector, "gpu_tolerations": gpu_tolerations,
                   "run_volume_claim": run_volume_claim, "volume": volume,
                   "mlflow_config": mlflow_config, "mlflow_secret": mlflow_secret,
                   "hf_token_secret": hf_token_secret, "namespace": namespace}  # fmt: skip
        place(volume, "cpu", {**cluster, "volume": None})
        _body(**locals())


def compile_pipeline(path: str | Path = PIPELINE_YAML) -> Path:
    compiler.Compiler().compile(deepcritic_pipeline, str(path))
    return Path(path)


if __name__ == "__main__":
    print(compile_pipeline(sys.argv[1] if len(sys.argv) > 1 else PIPELINE_YAML))
