"""The main job, here: the compiled pipeline end to end with KFP's local runner.

    python pipelines/run_local.py            # embedded default: SmolLM2-135M-Instruct, ~10 min
    python pipelines/run_local.py --tiny     # random tiny model: the wiring check the e2e test runs

Runs ``pipelines/deepcritic.yaml`` exactly as compiled with ``kfp.local.SubprocessRunner
(use_venv=False)``: every component is a subprocess of this Python; no Docker, no cluster, nothing
pip-installed, ``base_image`` ignored. MLflow logs to a SQLite store under ``--work-dir``, one
parent run per pipeline run with the stage runs nested under it. At the end it prints where
everything landed (runs, model version, ``@champion`` alias, endpoint).

This file lives in ``pipelines/`` because it drives KFP; the package ``deepcritic`` never imports kfp.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
# Running this file puts pipelines/ first on sys.path, where deepcritic.py would shadow the
# deepcritic package: drop it, and import topology.py from here by path.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != ROOT / "pipelines"]
sys.path.append(str(ROOT / "pipelines"))

from deepcritic import tracking  # noqa: E402
from deepcritic.config import ConfigError  # noqa: E402
from deepcritic.runtime import PROFILES, pipeline_arguments  # noqa: E402


@dataclass
class LocalConfig:
    profile: str = "local"  # tiny (random model, ~1 min) | local (SmolLM2-135M, ~10 min)
    pipeline: str = "pipelines/deepcritic.yaml"  # the compiled pipeline (run as compiled)
    work_dir: str = "outputs/local"  # pipeline root, MLflow server store, run volume, cluster
    tracking_uri: str | None = None  # None = start a local `mlflow server` (HTTP) for the run
    arguments: dict[str, Any] = field(default_factory=dict)  # override pipeline parameters


@dataclass
class LocalResult:
    parent_run_id: str
    tracking_uri: str
    pipeline_root: str
    seconds: float
    arguments: dict[str, Any]
    model_version: str | None = None
    champion_version: str | None = None
    reopen: str = ""  # the command that reopens the MLflow server on this run's store
    work_dir: str = ""
    store_uri: str = ""  # the server's backend store, to read results after it stopped


def _pipeline_file(path: str) -> Path:
    p = Path(path)
    if p.is_file():
        return p.resolve()
    repo = ROOT / path
    if repo.is_file():
        return repo
    raise FileNotFoundError(
        f"pipeline: {path} not found (compile it: python pipelines/deepcritic.py)"
    )


@contextlib.contextmanager
def _env(values: dict[str, str]) -> Iterator[None]:
    old = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def run(config: LocalConfig) -> LocalResult:
    """Run the compiled pipeline with kfp.local in the cluster's topology (see topology.py)."""
    from local_topology import LocalTopology

    pipeline = _pipeline_file(config.pipeline)
    args = pipeline_arguments(config.profile, config.arguments)
    start = time.monotonic()
    with LocalTopology(Path(config.work_dir).resolve(), config.tracking_uri) as topo:
        uri = topo.tracking_uri
        with _env(topo.env()):
            os.environ.pop(tracking.PARENT_ENV, None)
            with tracking.stage_run("pipeline", tracking_uri=uri) as parent:
                parent.log_params({"profile": config.profile, **args})
                parent.log_artifact(pipeline, "pipeline")
                parent.set_tags({"deepcritic.pipeline": str(pipeline), "kfp.run_id": topo.run_id})
                with _env({tracking.PARENT_ENV: str(parent.run_id)}):
                    topo.run_pipeline(pipeline, args)
                seconds = time.monotonic() - start
                parent.log_metrics({"pipeline_seconds": seconds})
                comparison = base_vs_trained(str(topo.pipeline_root))
                parent.log_metrics({f"{who}.{k}": v for who, m in comparison.items()
                                    for k, v in m.items()})  # fmt: skip
                parent.log_dict(comparison, "base_vs_trained.json")
            name = str(args.get("registry_model_name", "deepcritic"))
            version, champion = _registry_state(uri, name)
    return LocalResult(str(parent.run_id), uri, str(topo.pipeline_root), seconds, args,
                       version, champion, topo.reopen_command(), str(topo.work),
                       topo.store_uri)  # fmt: skip


def _registry_state(uri: str, name: str) -> tuple[str | None, str | None]:
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    client = MlflowClient(uri, uri)
    versions = client.search_model_versions(f"name='{name}'", max_results=1000)
    latest = str(max(int(v.version) for v in versions)) if versions else None
    try:
        champion = str(client.get_model_version_by_alias(name, "champion").version)
    except MlflowException:
        champion = None
    return latest, champion


def _outputs(pipeline_root: str, task_glob: str) -> list[Any]:
    """The ``Output`` parameter of every task matching ``task_glob`` (newest run first)."""
    outs = sorted(Path(pipeline_root).glob(f"*/{task_glob}/executor_output.json"),
                  key=os.path.getmtime, reverse=True)  # fmt: skip
    values = [json.loads(p.read_text()).get("parameterValues", {}).get("Output") for p in outs]
    return [v for v in values if v is not None]


def deploy_output(pipeline_root: str) -> dict[str, Any] | None:
    """What the deploy task returned (pinned model URI, endpoint URL, the smoke answer)."""
    answers = _outputs(pipeline_root, "deploy*")
    return dict(json.loads(answers[0])) if answers else None


def _eval_metrics(pipeline_root: str, task_glob: str) -> dict[str, float] | None:
    """The flat ``metrics.json`` an evaluate task wrote under its ``results`` (newest run)."""
    found = sorted(Path(pipeline_root).glob(f"*/{task_glob}/results/metrics.json"),
                   key=os.path.getmtime, reverse=True)  # fmt: skip
    return dict(json.loads(found[0].read_text())) if found else None


def base_vs_trained(pipeline_root: str) -> dict[str, dict[str, float]]:
    """avg F1 and readable-verdict rate of the base model and of the trained critic (same items)."""
    out = {}
    for who, task_glob in (("base", "evaluate-base"), ("trained", "evaluate"),
                           ("trained", "evaluate-2")):  # fmt: skip
        metrics = _eval_metrics(pipeline_root, task_glob)
        if metrics and who not in out:
            out[who] = {k: float(metrics[k]) for k in ("avg_f1", "avg_answer_rate") if k in metrics}
    return out


def comparison_table(comparison: dict[str, dict[str, float]]) -> str:
    """Base vs trained side by side (``answer%``: readable ``**Answer**: \\boxed{k}``)."""
    lines = [f"{'':<18}{'answer%':>9}{'avg F1':>9}"]
    for who, label in (("base", "base model"), ("trained", "trained critic")):
        m = comparison.get(who, {})
        rate, f1 = m.get("avg_answer_rate"), m.get("avg_f1")
        cells = "".join(f"{v:>9.1f}" if v is not None else f"{'n/a':>9}" for v in (rate, f1))
        lines.append(f"{label:<18}{cells}")
    return "\n".join(lines)


LEARNING_BENCHMARK = "python benchmarks/bench_learning.py (docs/benchmarks.md)"


def learned(comparison: dict[str, dict[str, float]]) -> str:
    """One line: what the trained critic learned on these items, measured against the base model
    and the trivial baselines (always -1, always one step: F1 0 by construction, as the harmonic
    mean of a 100% and a 0% accuracy)."""
    base, trained = comparison.get("base", {}), comparison.get("trained", {})
    rate, f1 = trained.get("avg_answer_rate"), trained.get("avg_f1")
    if rate is None or f1 is None:
        return f"what it learned: not measured (no evaluation); see {LEARNING_BENCHMARK}"
    fmt = f"readable verdicts {base.get('avg_answer_rate', 0.0):.0f}% -> {rate:.0f}%"
    if f1 > 0:
        return (f"what it learned: to find first errors, F1 {f1:.1f} above the trivial baselines' "
                f"0.0 (base {base.get('avg_f1', 0.0):.1f}), and the verdict format ({fmt}); "
                f"more items: {LEARNING_BENCHMARK}")  # fmt: skip
    return (f"what it learned: the verdict format ({fmt}), not yet to find the first error "
            f"(F1 {f1:.1f}, as the trivial baselines); the learning benchmark trains longer on "
            f"more items: {LEARNING_BENCHMARK}")  # fmt: skip


def summary(result: LocalResult) -> str:
    name = result.arguments.get("registry_model_name", "deepcritic")
    comparison = base_vs_trained(result.pipeline_root)
    deployed = deploy_output(result.pipeline_root)
    served = (
        f"{deployed['model_uri']} answered at {deployed['url']} (stopped; serve it again: "
        f"deepcritic serve --model-uri {deployed['model_uri']})"
        if deployed else "not deployed (not promoted)"
    )  # fmt: skip
    lines = [
        f"pipeline finished in {result.seconds:.0f} s (profile {result.arguments.get('profile')})",
        "base vs trained critic on the same evaluation items "
        "(answer% = critiques with a readable **Answer**: \\boxed{k}):",
        comparison_table(comparison),
        learned(comparison),
        f"MLflow server:     {result.tracking_uri} (stopped; reopen: {result.reopen})",
        f"parent run:        {result.parent_run_id} (stage runs nested under it)",
        f"pipeline outputs:  {result.pipeline_root}",
        f"model version:     {name} v{result.model_version}",
        f"@champion:         v{result.champion_version}  (models:/{name}@champion)",
        f"served:            {served}",
    ]
    return "\n".join(lines)


# The rehearsal: the tiny profile through the cluster's paths: SFT and GRPO as TrainJobs run by the
# local Trainer stand-in (SFT: 1 node x 2 ranks under ZeRO-3; GRPO: 2 nodes x 1 rank), RL data from
# Monte Carlo annotation (the branch the tiny demo does not take), deploy through local KServe.
REHEARSAL: dict[str, Any] = {
    "sft_launcher": "trainjob", "sft_gpus_per_node": 0, "sft_procs_per_node": 2,
    "grpo_launcher": "trainjob", "grpo_num_nodes": 2, "grpo_gpus_per_node": 0,
    "grpo_procs_per_node": 1, "rl_data_source": "mc",
}  # fmt: skip


def rehearsal_arguments(extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """The tiny profile + :data:`REHEARSAL`, ZeRO-3 added to both trainers' overrides."""
    tiny = pipeline_arguments("tiny")
    zero3 = {k: [*tiny.get(k, []), "deepspeed=zero3"] for k in ("sft_overrides", "grpo_overrides")}
    return {**REHEARSAL, **zero3, **(extra or {})}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--tiny", action="store_true", help="random tiny model: the fast wiring check")
    p.add_argument("--profile", default="local", choices=PROFILES, help="pipeline.<profile>.yaml")
    p.add_argument("--pipeline", default="pipelines/deepcritic.yaml", help="compiled pipeline")
    p.add_argument("--work-dir", default="outputs/local", help="pipeline root + MLflow store")
    p.add_argument("--tracking-uri", default=None, help="default: a local mlflow server (HTTP)")
    p.add_argument(
        "--rehearse",
        action="store_true",
        help="the cluster rehearsal: tiny model, training through the TrainJob path",
    )
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a parameter")
    args = p.parse_args(argv)
    extra = {}
    for item in args.set or []:
        key, sep, value = item.partition("=")
        if not sep:
            raise ConfigError(f"--set {item!r} must look like key=value")
        extra[key] = yaml.safe_load(value)
    profile = "tiny" if (args.tiny or args.rehearse) else args.profile
    if args.rehearse:
        extra = rehearsal_arguments(extra)
    result = run(LocalConfig(profile=profile, pipeline=args.pipeline, work_dir=args.work_dir,
                             tracking_uri=args.tracking_uri, arguments=extra))  # fmt: skip
    print(summary(result), flush=True)
    return 0


if __name__ == "__main__":
    import logging

    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    raise SystemExit(main())
