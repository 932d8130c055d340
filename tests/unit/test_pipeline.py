"""The compiled pipeline: no drift from the Python definition, and its contract (parameters, GPU
placement, images, retries, caching, control flow); the README's `kfp run create` parses against it."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any
from unittest import mock

import pytest
import yaml

from deepcritic.images import IMAGES, image

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
PIPELINE_YAML = ROOT / "pipelines" / "deepcritic.yaml"
STAGE_PREFIXES = ("prepare_", "seed_", "sft_", "rl_", "mc_", "grpo_", "eval_", "registry_",
                  "promote_", "deploy_", "use_", "voting_", "refine_")  # fmt: skip
GLOBAL_PARAMS = {"profile", "base_model", "namespace"}
GPU_EXECUTORS = {"exec-seed-critiques": 1, "exec-sft": 8, "exec-mc-annotate": 1, "exec-grpo": 8,
                 "exec-grpo-2": 8, "exec-evaluate": 1, "exec-evaluate-2": 1, "exec-verify-vote": 1,
                 "exec-verify-vote-2": 1, "exec-refine": 1, "exec-refine-2": 1}  # fmt: skip


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


def test_parameters_are_few_prefixed_and_defaulted(compiled: tuple[dict, dict]) -> None:
    spec, _ = compiled
    params = spec["root"]["inputDefinitions"]["parameters"]
    assert len(params) <= 30
    for name, p in params.items():
        assert name in GLOBAL_PARAMS or name.startswith(STAGE_PREFIXES), name
        assert p["isOptional"] and "defaultValue" in p, name
    assert params["profile"]["defaultValue"] == "paper"
    assert params["rl_data_source"]["defaultValue"] == "labels"
    assert params["seed_num_shards"]["parameterType"] == "NUMBER_INTEGER"
    assert params["promote_margin"]["parameterType"] == "NUMBER_DOUBLE"
    assert params["deploy_enabled"]["parameterType"] == "BOOLEAN"
    assert params["eval_benchmarks"]["parameterType"] == "LIST"


def test_every_parameter_default_is_documented_in_a_comment() -> None:
    text = (ROOT / "pipelines" / "deepcritic.py").read_text()
    source = text[text.index("def deepcritic_pipeline(") :].split(") -> None:")[0]
    spec = next(yaml.safe_load_all(PIPELINE_YAML.read_text()))
    for name in spec["root"]["inputDefinitions"]["parameters"]:
        (line,) = [ln for ln in source.splitlines() if ln.strip().startswith(f"{name}:")]
        assert "#" in line, f"{name}: default not documented"


def test_gpu_placement(compiled: tuple[dict, dict]) -> None:
    spec, k8s = compiled
    executors = spec["deploymentSpec"]["executors"]
    for name, count in GPU_EXECUTORS.items():
        res = executors[name]["container"]["resources"]
        assert res["accelerator"]["resourceType"] == "nvidia.com/gpu", name
        assert int(res["accelerator"]["resourceCount"]) == count, name
        assert res["resourceCpuRequest"] and res["resourceMemoryRequest"], name
        plat = k8s[name]
        assert plat["nodeSelector"]["labels"]["nvidia.com/gpu.product"], name
        assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in plat[
            "tolerations"
        ], name
        (shm,) = plat["emptyDirMounts"]
        assert shm["mountPath"] == "/dev/shm" and shm["medium"] == "Memory", name
    for name, ex in executors.items():
        if name not in GPU_EXECUTORS:
            assert "accelerator" not in ex["container"].get("resources", {}), name
            assert "tolerations" not in k8s.get(name, {}), name
        assert k8s[name]["fieldPathAsEnv"][0]["name"] == "KFP_RUN_ID", name


def test_images_come_from_the_pinned_table(compiled: tuple[dict, dict]) -> None:
    spec, _ = compiled
    executors = spec["deploymentSpec"]["executors"]
    refs = {img.ref for img in IMAGES.values()}
    for name, ex in executors.items():
        assert ex["container"]["image"] in refs, name
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
    for name in ("seed-critiques", "mc-annotate", "evaluate", "evaluate-2"):
        assert tasks[name]["retryPolicy"]["maxRetryCount"] == 2, name
    for name in ("sft", "grpo", "grpo-2", "register", "promote", "register-2", "promote-2"):
        assert "retryPolicy" not in tasks[name], name
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
    loop = tasks["for-loop-1"]
    assert loop["parameterIterator"]["items"]["inputParameter"]
    conditions = [t["triggerPolicy"]["condition"] for t in tasks.values() if "triggerPolicy" in t]
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
             "BOOLEAN": bool, "LIST": list}  # fmt: skip
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
