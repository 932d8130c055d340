"""GRPO's training data: load the labelled solutions, curate them (every step counted), and turn
them into critique prompts of the configured prompt set.

Sources (:class:`~deepcritic.stages.grpo_config.CriticGRPOConfig`): ``labels_path`` (canonical
JSONL with human labels: PRM800K, CHAMP), ``mc_path`` (``deepcritic mc`` output, a file or its
folder of shard files), or ``rl_data_uri`` (a released RL set, e.g. the authors', read through
:func:`deepcritic.data.loaders.load_solutions`, so any URI :func:`deepcritic.platform.storage.fetch`
takes and any format the loaders detect; read as given, not curated).

Curation, in order; each step's count is in the result's ``data_counts``, the stage log and the
MLflow run (``data.<count>`` metrics; the switches are logged as ``rl_data.*`` params):

1. ``read``: solutions loaded (``invalid``: rows the loader skipped).
2. ``dropped_qc`` (``drop_quality_control``): PRM800K quality-control rows, the flag
   :mod:`deepcritic.data.prm800k` sets (``meta["quality_control"]``) and the seed stage skips.
3. ``dropped_duplicates`` / ``dropped_conflicting`` (``drop_duplicate_solutions``): the same
   problem and steps labelled more than once (PRM800K gives some solutions to several labellers):
   one copy kept when the labels agree, every copy dropped when they conflict.
4. ``dropped_per_problem`` (``max_solutions_per_problem``): at most N labelled trajectories of a
   problem, chosen by a seeded stable rank (:func:`deepcritic.data.select.rank`).
5. ``dropped_seed_overlap`` (``exclude_problems_from``): every solution of a problem the seed stage
   critiqued, matched on the normalized problem text (:func:`normalize_problem`). A seed row names
   its problem by a ``problem`` field, by an ``id`` of a solution read in step 1 (the seed and RL
   both read the prepared PRM800K train file), or in its stored critique prompt (either prompt
   set). ``exclude_rows`` / ``exclude_problems`` / ``exclude_unresolved`` count the seed side.
6. ``dropped_for_balance`` (``balance_labels``): as many correct as erroneous solutions, the
   larger side chosen by a seeded shuffle (:func:`deepcritic.data.select.balanced_slice`).
7. ``dropped_over_limit`` (``limit``): the first N of what is left.

``kept_erroneous`` + ``kept_correct`` = ``curated``, the solutions :func:`build_dataset` turns into
prompts (it counts ``dropped_prompt_too_long`` and the final ``kept``). Every count is present (0
when its step is off).
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from deepcritic.records import DataError, LoadReport, Solution, iter_jsonl, read_solutions
from deepcritic.stages.grpo_config import CriticGRPOConfig

log = logging.getLogger(__name__)

SEED_SFT_FILE = "sft.jsonl"  # deepcritic.stages.seed.finalize.SFT_FILE
SEED_SHARDS = "shards"  # deepcritic.stages.seed.store.shard_dir: one record per critiqued solution
_P, _S = "\x00problem\x00", "\x00steps\x00"


def data_path(config: CriticGRPOConfig) -> str:
    path = config.labels_path if config.data_source == "labels" else config.mc_path
    name = "labels_path" if config.data_source == "labels" else "mc_path"
    if not path:
        raise ValueError(f"data_source={config.data_source} needs {name} (a canonical JSONL file)")
    if not Path(path).exists():
        raise FileNotFoundError(f"{name}: {path} does not exist")
    return path


def data_files(path: str) -> list[Path]:
    """A JSONL file, or every ``*.jsonl`` in a folder (the shard files of ``deepcritic mc``)."""
    if Path(path).is_file():
        return [Path(path)]
    files = sorted(Path(path).glob("*.jsonl"))
    if not files:
        raise FileNotFoundError(f"{path}: a folder with no *.jsonl files")
    return files


def load_training_solutions(config: CriticGRPOConfig) -> tuple[list[Solution], LoadReport]:
    """Labelled solutions for the configured source (not curated, no limit); MC rows must carry
    their estimates."""
    if config.rl_data_uri:
        from deepcritic.data.loaders import load_solutions

        return load_solutions(config.rl_data_uri)
    path = data_path(config)
    report = LoadReport(path)
    rows: list[Solution] = []
    for file in data_files(path):
        part = read_solutions(file, report=LoadReport(str(file)))
        report.read += len(part)
        if config.data_source == "mc":
            for i, r in enumerate(part, start=1):
                if "mc_estimates" not in r.meta:
                    raise DataError(
                        str(file),
                        i,
                        "meta.mc_estimates",
                        "is missing (data_source=mc expects `deepcritic mc` output)",
                    )
        rows.extend(part)
    report.kept = len(rows)
    return rows, report


def training_solutions(config: CriticGRPOConfig) -> tuple[list[Solution], dict[str, int]]:
    """Load and curate (module docstring); the counts of every step, also logged."""
    rows, report = load_training_solutions(config)
    if config.rl_data_uri:
        log.info("rl_data_uri %s: the released RL set is used as given", config.rl_data_uri)
        kept, counts = curate(rows, CriticGRPOConfig(limit=config.limit, seed=config.seed))
    else:
        kept, counts = curate(rows, config)
    counts["invalid"] = report.skipped
    log.info("RL data: %s", ", ".join(f"{k} {v}" for k, v in counts.items()))
    return kept, counts


def curation_params(config: CriticGRPOConfig) -> dict[str, Any]:
    """The curation switches as MLflow params (what the counts were computed under)."""
    return {
        "rl_data.source": config.rl_data_uri or data_path(config),
        "rl_data.curated": not config.rl_data_uri,
        "rl_data.drop_quality_control": config.drop_quality_control,
        "rl_data.drop_duplicate_solutions": config.drop_duplicate_solutions,
        "rl_data.max_solutions_per_problem": config.max_solutions_per_problem,
        "rl_data.exclude_problems_from": config.exclude_problems_from,
        "rl_data.balance_labels": config.balance_labels,
        "rl_data.seed": config.seed,
        "rl_data.prompt_set": config.prompt_set,
    }


def curate(rows: list[Solution], config: CriticGRPOConfig) -> tuple[list[Solution], dict[str, int]]:
    """Steps 2-7 of the module docstring, every count present (0 when a step is off)."""
    from deepcritic.data.select import balanced_slice

    counts = {"read": len(rows), "dropped_qc": 0, "dropped_duplicates": 0,
              "dropped_conflicting": 0, "dropped_per_problem": 0, "dropped_seed_overlap": 0,
              "dropped_for_balance": 0, "dropped_over_limit": 0}  # fmt: skip
    kept = rows
    if config.drop_quality_control:
        kept = [r for r in kept if r.meta.get("quality_control") is not True]
        counts["dropped_qc"] = len(rows) - len(kept)
    if config.drop_duplicate_solutions:
        kept, counts["dropped_duplicates"], counts["dropped_conflicting"] = drop_duplicates(kept)
    if config.max_solutions_per_problem is not None:
        before = len(kept)
        kept = per_problem(kept, config.max_solutions_per_problem, config.seed)
        counts["dropped_per_problem"] = before - len(kept)
    if config.exclude_problems_from:
        problems, seed_counts = seed_problems(config.exclude_problems_from, rows)
        counts.update(seed_counts)
        before = len(kept)
        kept = [r for r in kept if normalize_problem(r.problem) not in problems]
        counts["dropped_seed_overlap"] = before - len(kept)
    if config.balance_labels:
        wrong = sum(r.has_error for r in kept)
        before = len(kept)
        kept = balanced_slice(kept, None, config.seed)
        counts["dropped_for_balance"] = before - len(kept)
        if not kept:
            raise ValueError(
                f"balance_labels: {wrong} erroneous and {before - wrong} correct solutions left: "
                "balancing keeps none (turn balance_labels off for one-sided data)"
            )
    if config.limit is not None:
        counts["dropped_over_limit"] = max(0, len(kept) - config.limit)
        kept = kept[: config.limit]
    counts["kept_erroneous"] = sum(r.has_error for r in kept)
    counts["kept_correct"] = len(kept) - counts["kept_erroneous"]
    counts["curated"] = len(kept)
    return kept, counts


def drop_duplicates(rows: list[Solution]) -> tuple[list[Solution], int, int]:
    """One copy of each (problem, steps) labelled more than once when every copy has the same
    label; none when they conflict. Returns the rows kept (file order), the extra copies dropped
    and the rows dropped for conflicting labels."""
    groups: dict[tuple[str, tuple[str, ...]], list[Solution]] = {}
    for r in rows:
        key = (normalize_problem(r.problem), tuple(" ".join(s.split()) for s in r.steps))
        groups.setdefault(key, []).append(r)
    keep: set[int] = set()
    extra = conflicting = 0
    for group in groups.values():
        if len({r.label for r in group}) > 1:
            conflicting += len(group)
            continue
        keep.add(id(group[0]))
        extra += len(group) - 1
    if extra or conflicting:
        log.info("RL data: %d duplicate copies dropped, %d rows with conflicting labels dropped",
                 extra, conflicting)  # fmt: skip
    return [r for r in rows if id(r) in keep], extra, conflicting


def per_problem(rows: list[Solution], n: int, seed: int) -> list[Solution]:
    """At most ``n`` solutions of each (normalized) problem, by the seeded stable rank of
    :func:`deepcritic.data.select.rank`; file order kept."""
    from dataclasses import replace

    from deepcritic.data.select import first_per_problem

    if n < 1:
        raise ValueError(f"max_solutions_per_problem must be >= 1 (or null for all), got {n}")
    keyed = [replace(r, problem=normalize_problem(r.problem)) for r in rows]
    chosen = {r.id for r in first_per_problem(keyed, n, seed)}
    return [r for r in rows if r.id in chosen]


def normalize_problem(text: str) -> str:
    """Problem text for matching: zero-width spaces (prompt escaping) removed, whitespace runs
    collapsed to one space, ends stripped."""
    from deepcritic.prompting import ZERO_WIDTH_SPACE

    return " ".join(text.replace(ZERO_WIDTH_SPACE, "").split())


def exclusion_files(path: str) -> list[Path]:
    """The seed output's files: a file as is; a seed ``out_dir``: ``sft.jsonl`` and the shard
    records (every critiqued solution, kept or dropped)."""
    from deepcritic.platform import storage

    p = storage.fetch(path) if storage.is_uri(path) else Path(path)
    if p.is_file():
        return [p]
    if not p.is_dir():
        raise FileNotFoundError(f"exclude_problems_from: {path} does not exist")
    files = [p / SEED_SFT_FILE] if (p / SEED_SFT_FILE).is_file() else []
    files += sorted((p / SEED_SHARDS).glob("*.jsonl"))
    if not files:
        raise FileNotFoundError(
            f"exclude_problems_from: {path} holds neither {SEED_SFT_FILE} nor {SEED_SHARDS}/*.jsonl"
        )
    return files


def seed_problems(path: str, rows: Sequence[Solution]) -> tuple[set[str], dict[str, int]]:
    """Normalized problems named by the seed output at ``path`` (ids resolved against ``rows``)."""
    by_id = {r.id: r.problem for r in rows}
    problems: set[str] = set()
    counts: Counter[str] = Counter({"exclude_rows": 0, "exclude_unresolved": 0})
    for file in exclusion_files(path):
        for n, row in iter_jsonl(file):
            if not isinstance(row, dict):
                raise DataError(str(file), n, None, "must be a JSON object")
            text = _row_problem(row, by_id)
            if text is None:
                counts["exclude_unresolved"] += 1
                continue
            counts["exclude_rows"] += 1
            problems.add(normalize_problem(text))
    if not problems:
        raise ValueError(
            f"exclude_problems_from: {path} names no problem (no row has a 'problem', an id of "
            f"the RL data or a critique prompt; {counts['exclude_unresolved']} rows read)"
        )
    if counts["exclude_unresolved"]:
        log.warning("exclude_problems_from: %d seed rows name no problem found here",
                    counts["exclude_unresolved"])  # fmt: skip
    counts["exclude_problems"] = len(problems)
    return problems, dict(counts)


def _row_problem(row: dict[str, Any], by_id: dict[str, str]) -> str | None:
    if isinstance(row.get("problem"), str):
        return str(row["problem"])
    if str(row.get("id")) in by_id:
        return by_id[str(row["id"])]
    messages = row.get("messages")
    if isinstance(messages, list) and all(isinstance(m, dict) for m in messages):
        return problem_from_prompt(messages)
    return None


def problem_from_prompt(messages: Sequence[dict[str, Any]]) -> str | None:
    """The problem text inside a stored critique prompt of either prompt set (None if the user
    message is not one)."""
    from deepcritic.reference import prompt_set_of

    user = next((m.get("content") for m in messages if m.get("role") == "user"), None)
    prompt_set = prompt_set_of(messages)
    if not isinstance(user, str) or prompt_set is None:
        return None
    before, between = _around_problem(prompt_set)
    end = user.find(between, len(before))
    return user[len(before) : end] if user.startswith(before) and end >= 0 else None


def _around_problem(prompt_set: str) -> tuple[str, str]:
    """The prompt text before the problem, and between the problem and the solution."""
    if prompt_set == "reference":
        from deepcritic.reference import CRITIQUE_TEMPLATE, reference_text

        filled = reference_text(CRITIQUE_TEMPLATE).strip().format(problem=_P, tagged_response=_S)
    else:
        from deepcritic.prompting import load_prompt, render_template

        filled = render_template(load_prompt("critique_user.md"), problem=_P, steps=_S)
    before, _, rest = filled.partition(_P)
    return before, rest.partition(_S)[0]


def build_dataset(
    rows: list[Solution], tokenizer: Any, config: CriticGRPOConfig
) -> tuple[Any, dict[str, int]]:
    """A ``datasets.Dataset`` with conversational ``prompt`` (of ``config.prompt_set``, by
    :func:`deepcritic.reference.critic_prompt`) and integer ``label`` columns."""
    from datasets import Dataset

    from deepcritic.reference import critic_prompt

    counts = {"solutions": len(rows), "kept": 0, "dropped_prompt_too_long": 0}
    records: list[dict[str, Any]] = []
    for r in rows:
        prompt = critic_prompt(r.problem, r.steps, config.prompt_set)
        if config.max_prompt_tokens is not None:
            ids = tokenizer.apply_chat_template(prompt, add_generation_prompt=True, tokenize=True)
            n = len(ids["input_ids"] if isinstance(ids, dict) or hasattr(ids, "keys") else ids)
            if n > config.max_prompt_tokens:
                counts["dropped_prompt_too_long"] += 1
                continue
        records.append({"prompt": prompt, "label": r.label, "id": r.id})
    counts["kept"] = len(records)
    if counts["dropped_prompt_too_long"]:
        log.warning(
            "dropped %d prompts longer than %d tokens",
            counts["dropped_prompt_too_long"],
            config.max_prompt_tokens,
        )
    if not records:
        raise ValueError("no training prompts left (check the data file and max_prompt_tokens)")
    return Dataset.from_list(records), counts
