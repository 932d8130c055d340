"""``deepcritic seed``: run(config) for the component and the CLI subcommand."""

from __future__ import annotations

import argparse
import json
import logging
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tqdm import tqdm

from deepcritic import tracking
from deepcritic.config import add_dataclass_arguments, config_from_args
from deepcritic.data.loaders import detect_format
from deepcritic.generation import Backend, make_backend
from deepcritic.records import DataError, LoadReport, Solution, read_solutions
from deepcritic.stages.seed import calculator
from deepcritic.stages.seed.config import SeedConfig, parse_shard
from deepcritic.stages.seed.finalize import finalize, missing_shards
from deepcritic.stages.seed.generate import critique_chunk
from deepcritic.stages.seed.select import select_inputs
from deepcritic.stages.seed.store import (
    append_records,
    check_prompt_set,
    check_unique,
    done_path,
    load_records,
    select_shard,
    shard_path,
    write_atomic,
)

log = logging.getLogger(__name__)


@dataclass
class SeedResult:
    out_dir: str
    shard: str
    sft_path: str | None  # None until every shard is done and finalize has run
    counts: dict[str, int] = field(default_factory=dict)  # this shard's run (+ totals if final)
    kept: int | None = None  # SFT examples written by finalize
    forced_verdicts: int = 0  # forced in this run


def load_inputs(config: SeedConfig, counts: Counter[str]) -> list[Solution]:
    """Read the solutions (unique ids required) and select the ones to critique
    (:func:`deepcritic.stages.seed.select.select_inputs`); every skip is counted."""
    if not config.data:
        raise ValueError("data: path to the step-labelled solutions JSONL is required")
    if Path(config.data).is_file() and detect_format(config.data) == "prm800k":
        raise ValueError(
            f"data: {config.data} is raw PRM800K; convert it first (deepcritic prepare --config "
            "src/deepcritic/configs/prepare.paper.yaml) and pass the prepared JSONL"
        )
    report = LoadReport(config.data)
    solutions = read_solutions(config.data, skip_invalid=config.skip_invalid, report=report)
    counts["input.read"] += report.read
    counts["input.invalid"] += report.skipped
    seen: set[str] = set()
    for n, s in enumerate(solutions, start=1):
        if s.id in seen:
            raise DataError(config.data, None, "id", f"duplicate id {s.id!r} (solution #{n})")
        seen.add(s.id)
    solutions = select_inputs(solutions, config, counts)
    counts["input.used"] += len(solutions)
    return solutions


def generate_shard(config: SeedConfig, backend: Backend | None = None) -> Counter[str]:
    """Critique this shard's solutions not already done; return this run's counts."""
    counts: Counter[str] = Counter({"run.processed": 0, "run.kept": 0, "run.forced": 0})
    index, total = parse_shard(config.shard)
    todo_all = select_shard(load_inputs(config, counts), index, total)
    path = shard_path(config.out_dir, index, total)
    done = load_records(path)
    check_prompt_set(done, config.prompt_set, str(path))
    done_ids = check_unique(done, str(path))
    todo = [s for s in todo_all if s.id not in done_ids]
    counts.update(
        {"shard.solutions": len(todo_all), "shard.already_done": len(todo_all) - len(todo)}
    )
    log.info(
        "seed shard %s: %d solutions, %d already done, %d to critique",
        config.shard,
        len(todo_all),
        len(todo_all) - len(todo),
        len(todo),
    )
    own = backend is None and bool(todo) and config.teacher == "llm"
    backend = make_backend(config.generation) if own else backend
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        with open(path, "a", encoding="utf-8") as f, tqdm(total=len(todo), desc="seed") as bar:
            for start in range(0, len(todo), config.chunk_size):
                chunk = todo[start : start + config.chunk_size]
                records = _critique(backend, chunk, config, config.seed + start)
                append_records(f, records)
                _count_records(records, counts)
                bar.update(len(chunk))
                bar.set_postfix(kept=counts["run.kept"], forced=counts["run.forced"])
    finally:
        if own and backend is not None:
            backend.close()
    write_atomic(done_path(config.out_dir, index, total), json.dumps(dict(counts), indent=1))
    return counts


def _critique(
    backend: Backend | None, chunk: list[Solution], config: SeedConfig, chunk_seed: int
) -> list[dict[str, Any]]:
    """One chunk through the configured teacher (the LLM sub-steps, or the calculator)."""
    if config.teacher == "calculator":
        return calculator.critique_chunk(chunk)
    if backend is None:
        raise RuntimeError("seed: the llm teacher needs a generation backend")
    return critique_chunk(backend, chunk, config, chunk_seed)


def _count_records(records: list[dict[str, Any]], counts: Counter[str]) -> None:
    for r in records:
        counts["run.processed"] += 1
        counts["run.kept" if r["status"] == "kept" else f"run.dropped.{r['reason']}"] += 1
        for key, value in r["counts"].items():
            counts[f"run.{key}"] += value
            if key.endswith(".forced"):
                counts["run.forced"] += value


def run(config: SeedConfig, backend: Backend | None = None) -> SeedResult:
    """Generate this shard and/or finalize (see :class:`SeedConfig`); log counts to MLflow."""
    result = SeedResult(out_dir=config.out_dir, shard=config.shard, sft_path=None)
    with tracking.stage_run("seed", config, tracking_uri=config.tracking_uri) as t:
        if config.mode in ("all", "generate"):
            counts = generate_shard(config, backend)
            result.counts.update(counts)
            result.forced_verdicts = counts["run.forced"]
            _report("seed shard " + config.shard, dict(counts))
        if config.mode == "finalize" or (config.mode == "all" and not missing_shards(config)):
            final = finalize(config)
            result.sft_path, result.kept = str(final.sft_path), final.counts["sft.examples"]
            result.counts.update({f"total.{k}": v for k, v in final.counts.items()})
            _report("seed totals", final.counts)
            t.log_artifact(final.counts_path)
            t.log_artifact(final.sample_path, "kept_sample")
        elif config.mode == "all":
            log.info(
                "seed: shards %s not done yet; finalize runs when they are", missing_shards(config)
            )
        t.log_metrics({k.replace("/", "_"): v for k, v in result.counts.items()})
        t.set_tags({"seed.shard": config.shard, "seed.out_dir": str(Path(config.out_dir))})
    return result


def _report(title: str, counts: dict[str, int]) -> None:
    """Print counts on the terminal (and the log): every step, kept and dropped by reason."""
    width = max((len(k) for k in counts), default=0)
    lines = [f"{k:<{width}}  {v}" for k, v in sorted(counts.items())]
    print(f"== {title} ==\n" + "\n".join(lines), flush=True)
    log.info("%s: %s", title, json.dumps(counts, sort_keys=True))


def register_cli(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "seed",
        help="stage 1: deliberate seed critiques from a teacher LLM (sharded, resumable)",
        description="Initial -> in-depth -> merged critiques per step, filtered, balanced and "
        "formatted as SFT chat data. Example: deepcritic seed --config "
        "src/deepcritic/configs/seed.local.yaml --data solutions.jsonl --shard 0/4",
    )
    add_dataclass_arguments(parser, SeedConfig)
    parser.set_defaults(func=_cli)


def _cli(args: argparse.Namespace) -> int:
    result = run(config_from_args(SeedConfig, args))
    print(
        json.dumps(
            {
                "sft_path": result.sft_path,
                "kept": result.kept,
                "forced_verdicts": result.forced_verdicts,
            }
        )
    )
    return 0
