"""The compiled pipeline: no drift from the Python definition, and its contract (parameters, GPU
placement, images, retries, caching, control flow); the README's `kfp run create` parses against it."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any
from unittest import mock

import pytest
import yaml

from deepcritic.platform.images import IMAGES, image

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
PIPELINE_YAML = ROOT / "pipelines" / "deepcritic.yaml"
STAGE_PREFIXES = ("prepare_", "seed_", "sft_", "rl_", "mc_", "grpo_", "eval_", "registry_",
                  "promote_", "deploy_", "use_", "voting_", "refine_")  # fmt: skip
GLOBAL_PARAMS = {"profile", "base_model", "namespace"}
CLUSTER_PARAMS = {"gpu_node_selector", "gpu_tolerations", "run_volume_claim", "create_run_volume",
                  "run_volume_size", "run_volume_storage_class", "delete_run_volume",
                  "mlflow_config", "mlflow_secret", "hf_token_secret"}  # fmt: skip
GPU_EXECUTORS = {"exec-seed-critiques": 8, "exec-mc-annotate": 1, "exec-evaluate": 1,
                 "exec-evaluate-base": 1,
                 "exec-evaluate-2": 1, "exec-verify-vote": 1, "exec-verify-vote-2": 1,
                 "exec-refine": 1, "exec-refine-2": 1}  # fmt: skip
# tasks that read or write the run volume (caches, shards, checkpoints, resumable work)
VOLUME_EXECUTORS = {"exec-prepare-data", "exec-seed-critiques", "exec-seed-finalize", "exec-sft",
                    "exec-grpo", "exec-grpo-2", "exec-mc-annotate", "exec-evaluate",
                    "exec-evaluate-2", "exec-evaluate-base", "exec-cleanup"}  # fmt: skip


@pytest.fixture(scope="module")
def compiled() -> tuple[dict[str, Any], dict[str, Any]]:
    spec, platform = yaml.safe_load_all(PIPELINE_YAML.read_text())
    return spec, platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"]


def test_committed_yaml_matches_python_definition(tmp_path: Path) -> None:
    from pipelines.deepcritic import compile_pipeline

    fresh = compile_pipeline(tmp_path / "deepcritic.yaml")
    committed = list(yaml.safe_load_all(PIPELINE_YAML.read_text()))
    assert list(yaml.safe_load_all(fresh.read_text())) == committed, (
        "pipelines/deepcritic.yaml is stale: run `python pipelines/deepcritic.py` and commit it"
    )


def test_parameters_are_prefixed_and_defaulted(compiled: tuple[dict, dict]) -> None:
    spec, _ = compiled
    params = spec["root"]["inputDefinitions"]["parameters"]
    assert len(params) <= 51  # 49 + eval_parser, eval_prompt_set (issue 23)
    for name, p in params.items():
        assert name in GLOBAL_PARAMS | CLUSTER_PARAMS or name.startswith(STAGE_PREFIXES), name
        assert p["isOptional"] and "defaultValue" in p, name
    assert params["seed_num_shards"]["parameterType"] == "NUMBER_INTEGER"
    assert params["promote_margin"]["parameterType"] == "NUMBER_DOUBLE"
    assert params["deploy_enabled"]["parameterType"] == "BOOLEAN"
    assert params["eval_benchmarks"]["parameterType"] == "LIST"
    assert params["gpu_node_selector"]["parameterType"] == "STRUCT"


def test_root_defaults_are_the_paper_run(compiled: tuple[dict, dict]) -> None:
    """`kfp run create -f pipelines/deepcritic.yaml` with no parameters is the paper run, and
    configs/pipeline.paper.yaml spells out exactly those defaults."""
    from deepcritic.runtime import pipeline_arguments

    spec, _ = compiled
    defaults = {
        k: p["defaultValue"] for k, p in spec["root"]["inputDefinitions"]["parameters"].items()
    }
    assert defaults["profile"] == "paper"
    assert defaults["base_model"] == "hf://Qwen/Qwen2.5-7B-Instruct"
    assert defaults["seed_teacher_model"] == "hf://Qwen/Qwen2.5-72B-Instruct"
    assert (
        defaults["prepare_source"].startswith("prm800k:")
        and "phase2_train" in defaults["prepare_source"]
    )
    assert defaults["sft_launcher"] == defaults["grpo_launcher"] == "trainjob"
    assert "champ" not in str(defaults) and "default" not in (defaults["base_model"],)
    assert pipeline_arguments("paper") == defaults


def test_every_parameter_default_is_documented_in_a_comment() -> None:
    text = (ROOT / "pipelines" / "deepcritic.py").read_text()
    source = text[text.index("def deepcritic_pipeline(") :].split(") -> None:")[0]
    spec = next(yaml.safe_load_all(PIPELINE_YAML.read_text()))
    for name in spec["root"]["inputDefinitions"]["parameters"]:
        (line,) = [ln for ln in source.splitlines() if ln.strip().startswith(f"{name}:")]
        assert "#" in line, f"{name}: default not documented"


def _from_param(entry: dict[str, Any], param: str) -> bool:
    return bool(entry.get("componentInputParameter", "").endswith(param))


def test_gpu_placement_comes_from_parameters(compiled: tuple[dict, dict]) -> None:
    from deepcritic.runtime import preset_gpus

    assert GPU_EXECUTORS["exec-seed-critiques"] == preset_gpus("seed")  # the teacher's TP size
    spec, k8s = compiled
    executors = spec["deploymentSpec"]["executors"]
    for name, count in GPU_EXECUTORS.items():
        res = executors[name]["container"]["resources"]
        assert res["accelerator"]["resourceType"] == "nvidia.com/gpu", name
        assert int(res["accelerator"]["resourceCount"]) == count, name
        plat = k8s[name]
        assert _from_param(plat["nodeSelector"]["nodeSelectorJson"], "gpu_node_selector"), name
        (tol,) = plat["tolerations"]
        assert _from_param(tol["tolerationJson"], "gpu_tolerations"), name
        (shm,) = plat["emptyDirMounts"]
        assert shm["mountPath"] == "/dev/shm" and shm["medium"] == "Memory", name
    for name, ex in executors.items():
        if name not in GPU_EXECUTORS:  # SFT/GRPO tasks launch TrainJobs: CPU only
            assert "accelerator" not in ex["container"].get("resources", {}), name
            assert "tolerations" not in k8s.get(name, {}), name


def test_every_task_is_tracked_timed_and_identified(compiled: tuple[dict, dict]) -> None:
    spec, k8s = compiled
    for name in spec["deploymentSpec"]["executors"]:
        if name.startswith("exec-createpvc"):
            continue
        plat = k8s[name]
        assert int(plat["activeDeadlineSeconds"]) > 0, f"{name}: no timeout"
        assert plat["fieldPathAsEnv"][0]["name"] == "KFP_RUN_ID", name
        if name == "exec-cleanup":  # the exit handler talks to the API server, not to MLflow
            continue
        (cm,) = plat["configMapAsEnv"]
        assert _from_param(cm["configMapNameParameter"], "mlflow_config"), name
        assert {"configMapKey": "tracking_uri", "envVar": "MLFLOW_TRACKING_URI"} in cm["keyToEnv"]
        secrets = {s["secretNameParameter"]["componentInputParameter"].split("--")[-1]: s
                   for s in plat["secretAsEnv"]}  # fmt: skip
        assert secrets["mlflow_secret"]["optional"] is True, name


def test_run_volume_is_mounted_where_needed(compiled: tuple[dict, dict]) -> None:
    from deepcritic.platform.storage import MOUNT_PATH

    spec, k8s = compiled
    for name in spec["deploymentSpec"]["executors"]:
        mounts = k8s.get(name, {}).get("pvcMount", [])
        if name in VOLUME_EXECUTORS:
            (m,) = mounts
            assert m["mountPath"] == MOUNT_PATH and _from_param(
                m["pvcNameParameter"], "run_volume_claim"
            )
        elif name != "exec-volume-ready":
            assert not mounts or name.startswith(
                ("exec-verify-vote", "exec-refine", "exec-seed")
            ), name


def test_images_come_from_one_registry_and_tag(compiled: tuple[dict, dict]) -> None:
    from deepcritic.platform import images

    spec, _ = compiled
    executors = spec["deploymentSpec"]["executors"]
    refs = {img.ref for img in IMAGES.values()}
    for name, ex in executors.items():
        if name.startswith("exec-createpvc"):
            continue
        assert ex["container"]["image"] in refs, name
        assert ex["container"]["image"].startswith(images.REGISTRY + "/"), name
        assert "pip install" not in " ".join(ex["container"]["command"]), name
    assert executors["exec-sft"]["container"]["image"] == image("train")
    assert executors["exec-grpo"]["container"]["image"] == image("train")
    assert executors["exec-seed-critiques"]["container"]["image"] == image("generate")
    assert executors["exec-evaluate"]["container"]["image"] == image("generate")
    assert executors["exec-register"]["container"]["image"] == image("pipeline-base")


def _all_tasks(spec: dict[str, Any]) -> dict[str, dict[str, Any]]:
    tasks = dict(spec["root"]["dag"]["tasks"])
    for comp in spec["components"].values():
        tasks.update(comp.get("dag", {}).get("tasks", {}))
    return tasks


def test_retries_caching_and_control_flow(compiled: tuple[dict, dict]) -> None:
    spec, _ = compiled
    tasks = _all_tasks(spec)
    for name, task in tasks.items():  # every task is idempotent: retried
        if "componentRef" in task and not name.startswith(
            ("condition", "for-loop", "exit-handler", "createpvc", "cleanup")
        ):
            assert task.get("retryPolicy", {}).get("maxRetryCount") == 2, name
    exit_tasks = [n for n, t in tasks.items() if t.get("triggerPolicy", {}).get("strategy") ==
                  "ALL_UPSTREAM_TASKS_COMPLETED"]  # fmt: skip
    assert exit_tasks == ["cleanup"]
    assert tasks["sft"]["cachingOptions"]["enableCache"] is True
    for name in ("register", "promote", "deploy", "register-2", "promote-2", "deploy-2"):
        assert not tasks[name]["cachingOptions"].get("enableCache", False), name
    # both RL branches end in the same evaluate -> register -> promote -> deploy tail
    branches = [c for n, c in spec["components"].items() if n.startswith("comp-condition")]
    heads = [
        set(c["dag"]["tasks"])
        for c in branches
        if any(t.startswith("grpo") for t in c["dag"]["tasks"])
    ]
    assert len(heads) == 2 and all(any(t.startswith("register") for t in h) for h in heads)
    loop = next(t for n, t in tasks.items() if n.startswith("for-loop"))
    assert loop["parameterIterator"]["items"]["inputParameter"]
    conditions = [
        t["triggerPolicy"].get("condition", "") for t in tasks.values() if "triggerPolicy" in t
    ]
    assert any("rl_data_source" in c and "labels" in c for c in conditions)
    assert any("deploy_enabled" in c for c in conditions)
    assert any("promote-promoted" in c for c in conditions)
    # the optional branch after evaluation: verified voting + refinement, off by default
    assert any("use_enabled" in c for c in conditions)
    assert spec["root"]["inputDefinitions"]["parameters"]["use_enabled"]["defaultValue"] is False
    use = [
        t
        for t in tasks.values()
        if "use_enabled" in t.get("triggerPolicy", {}).get("condition", "")
    ]
    assert len(use) == 2 and all(
        any(d.startswith("evaluate") for d in t["dependentTasks"]) for t in use
    )
    assert {"verify-vote", "verify-vote-2", "refine", "refine-2"} <= set(tasks)


def _kfp_run_create(args: list[str]) -> mock.MagicMock:
    from click.testing import CliRunner
    from kfp.cli import cli

    fake = mock.MagicMock(name="Client")
    fake.return_value.create_experiment.return_value.experiment_id = "exp-1"
    fake.return_value.run_pipeline.return_value.run_id = "run-1"
    with mock.patch.object(cli.client, "Client", fake), mock.patch("kfp.cli.run.display_run"):
        result = CliRunner().invoke(
            cli.cli, ["--endpoint", "http://kfp.example:8888", *args], obj={}
        )
    assert result.exit_code == 0, result.output + repr(result.exception)
    return fake


def _check_types(params: dict[str, Any]) -> None:
    spec = next(yaml.safe_load_all(PIPELINE_YAML.read_text()))
    inputs = spec["root"]["inputDefinitions"]["parameters"]
    kinds = {"STRING": str, "NUMBER_INTEGER": int, "NUMBER_DOUBLE": (int, float),
             "BOOLEAN": bool, "LIST": list, "STRUCT": dict}  # fmt: skip
    for key, value in params.items():
        assert key in inputs, f"{key} is not a pipeline parameter"
        assert isinstance(value, kinds[inputs[key]["parameterType"]]), (key, value)


@pytest.mark.parametrize("verb", ["create", "submit"])
def test_readme_cluster_command_parses_against_compiled_pipeline(verb: str) -> None:
    fake = _kfp_run_create([
        "run", verb, "-e", "deepcritic", "-r", "critic-7b", "-f", str(PIPELINE_YAML),
        "profile=paper", "seed_num_shards=16", "rl_data_source=mc", "promote_margin=0.01",
        'eval_benchmarks=["processbench:gsm8k","processbench:math"]', "deploy_enabled=false",
    ])  # fmt: skip
    client = fake.return_value
    client.create_experiment.assert_called_once_with("deepcritic")
    kwargs = client.run_pipeline.call_args.kwargs
    assert kwargs["job_name"] == "critic-7b" and kwargs["experiment_id"] == "exp-1"
    assert kwargs["pipeline_package_path"] == str(PIPELINE_YAML)
    params = kwargs["params"]
    assert params["seed_num_shards"] == 16 and params["deploy_enabled"] is False
    assert params["eval_benchmarks"] == ["processbench:gsm8k", "processbench:math"]
    _check_types(params)


def test_type_check_catches_unknown_and_mistyped_parameters() -> None:
    with pytest.raises(AssertionError, match="not a pipeline parameter"):
        _check_types({"sft_epochs": 3})
    with pytest.raises(AssertionError):
        _check_types({"seed_num_shards": "many"})


@pytest.mark.parametrize("profile", ["tiny", "local", "paper"])
def test_profile_presets_are_valid_pipeline_arguments(profile: str) -> None:
    from deepcritic.runtime import pipeline_arguments

    _check_types(pipeline_arguments(profile))
