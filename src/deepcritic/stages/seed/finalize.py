"""Merge every shard's records, balance, and write the SFT data (``sft.jsonl``) with counts.

Balance (the paper's, configurable): among kept solutions whose label is -1 (all steps right) and
whose initial critiques were already all right, keep at most ``balance_cap``, chosen by a stable
hash of (seed, id) so every rerun and every shard layout picks the same ones.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from deepcritic import grader
from deepcritic.stages.seed.config import SeedConfig, parse_shard
from deepcritic.stages.seed.store import (
    check_prompt_set,
    check_unique,
    done_path,
    load_records,
    shard_path,
    write_atomic,
    write_jsonl_atomic,
)

SFT_FILE = "sft.jsonl"
COUNTS_FILE = "counts.json"
SAMPLE_FILE = "kept_sample.jsonl"


@dataclass
class Finalized:
    sft_path: Path
    counts_path: Path
    sample_path: Path
    counts: dict[str, int] = field(default_factory=dict)


def missing_shards(config: SeedConfig) -> list[int]:
    _, total = parse_shard(config.shard)
    return [i for i in range(total) if not done_path(config.out_dir, i, total).is_file()]


def _balance_rank(seed: int, rid: str) -> str:
    return hashlib.sha256(f"{seed}:{rid}".encode()).hexdigest()


def balance(records: Sequence[dict[str, Any]], cap: int, seed: int) -> set[str]:
    """Ids of kept, all-correct, initially-all-right solutions beyond the cap (to drop)."""
    eligible = [
        str(r["id"])
        for r in records
        if r["status"] == "kept" and r["label"] == grader.NO_ERROR and r["initial_all_right"]
    ]
    eligible.sort(key=lambda rid: _balance_rank(seed, rid))
    return set(eligible[cap:])


def total_counts(records: Sequence[dict[str, Any]], capped: set[str]) -> dict[str, int]:
    """Every count of the stage, summed over all records (so shards and resumes add up)."""
    c: Counter[str] = Counter({"filter.kept": 0})
    for r in records:
        c.update(r.get("counts", {}))
        c["solutions.in"] += 1
        c[f"solutions.label_{'correct' if r['label'] == grader.NO_ERROR else 'error'}"] += 1
        if r["status"] == "kept":
            c["filter.kept"] += 1
        else:
            c[f"filter.dropped.{r['reason']}"] += 1
    c["balance.eligible"] = sum(
        1
        for r in records
        if r["status"] == "kept" and r["label"] == grader.NO_ERROR and r["initial_all_right"]
    )
    c["balance.dropped"] = len(capped)
    c["forced.total"] = sum(v for k, v in c.items() if k.endswith(".forced"))
    return dict(sorted(c.items()))


def sft_row(record: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": record["id"],
        "label": record["label"],
        "source": record.get("source", ""),
        "messages": record["messages"],
        "prompt_set": record.get("prompt_set", "deepcritic"),
    }


def finalize(config: SeedConfig) -> Finalized:
    """Read all shards (every done marker must exist), balance, write SFT data and counts."""
    _, total = parse_shard(config.shard)
    missing = missing_shards(config)
    if missing:
        raise FileNotFoundError(
            f"seed finalize: shards {missing} of {total} are not done in {config.out_dir}"
        )
    records: list[dict[str, Any]] = []
    for i in range(total):
        records.extend(load_records(shard_path(config.out_dir, i, total)))
    check_unique(records, f"{config.out_dir}/shards")
    check_prompt_set(records, config.prompt_set, f"{config.out_dir}/shards")
    records.sort(key=lambda r: str(r["id"]))
    capped = balance(records, config.balance_cap, config.seed)
    kept = [r for r in records if r["status"] == "kept" and str(r["id"]) not in capped]
    counts = total_counts(records, capped)
    counts["sft.examples"] = len(kept)
    out = Path(config.out_dir)
    write_jsonl_atomic(out / SFT_FILE, (sft_row(r) for r in kept))
    write_atomic(out / COUNTS_FILE, json.dumps(counts, indent=1, sort_keys=True) + "\n")
    sample = sorted(kept, key=lambda r: _balance_rank(config.seed + 1, str(r["id"])))
    write_jsonl_atomic(out / SAMPLE_FILE, sample[: config.sample_size])
    return Finalized(out / SFT_FILE, out / COUNTS_FILE, out / SAMPLE_FILE, counts)
