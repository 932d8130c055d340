"""ProcessBench (Zheng et al. 2024): a local JSON file or the HF hub dataset ``Qwen/ProcessBench``.

Each item has ``id``, ``generator``, ``problem``, ``steps`` (list of paragraphs), ``final_answer_correct``
and ``label`` (0-based first wrong step, -1 if none), i.e. already the canonical record; the loader
validates it and sets ``source = "processbench:<split>"``. Steps are kept verbatim (numbering happens
when prompts are rendered).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from deepcritic.data.rows import Row, collect, fail, load_json_file, require
from deepcritic.records import LoadReport, Solution

HUB_DATASET = "Qwen/ProcessBench"
SPLITS = ("gsm8k", "math", "olympiadbench", "omnimath")


def bundled_slice(split: str) -> Path:
    """The 24-item slice of ``split`` (gsm8k or math) shipped in the package (see NOTICE.md)."""
    from importlib import resources

    name = f"processbench_{split or 'gsm8k'}_slice.json"
    path = Path(str(resources.files("deepcritic.data").joinpath("bundled", name)))
    if not path.is_file():
        raise FileNotFoundError(f"no bundled ProcessBench slice for {split!r} (gsm8k or math)")
    return path


def to_solution(row: Row, split: str) -> Solution:
    """Validate one ProcessBench item (``final_answer_correct`` is required here)."""
    data = row.data
    require(row, data, "final_answer_correct", bool)
    if not isinstance(data.get("generator", ""), str):
        raise fail(row, "generator", f"must be a string, got {data['generator']!r:.60}")
    item = {k: v for k, v in data.items() if k not in ("source", "meta")}
    return Solution.from_dict(
        {**item, "source": f"processbench:{split}"}, source=row.source, line=row.line
    )


def load_file(
    path: str | Path,
    *,
    split: str | None = None,
    limit: int | None = None,
    skip_invalid: bool = False,
) -> tuple[list[Solution], LoadReport]:
    """A local ProcessBench file (JSON array or JSONL); ``split`` defaults to the file stem."""
    name = split or Path(path).stem.removeprefix("processbench_").removesuffix("_slice")
    return load_json_file(
        path,
        "ProcessBench",
        lambda r: to_solution(r, name),
        desc=f"processbench:{name}",
        limit=limit,
        skip_invalid=skip_invalid,
    )


def _hub_rows(split: str, revision: str | None) -> Iterator[Row]:
    from datasets import load_dataset

    dataset = load_dataset(HUB_DATASET, split=split, revision=revision)
    source = f"hf:{HUB_DATASET}/{split}"
    for i, item in enumerate(dataset):
        yield Row(dict(item), f"{source} item {i}", None)


def load_hub(
    split: str,
    *,
    revision: str | None = None,
    limit: int | None = None,
    skip_invalid: bool = False,
) -> tuple[list[Solution], LoadReport]:
    """``datasets.load_dataset("Qwen/ProcessBench", split=split)`` (needs hub access or a cache)."""
    if split not in SPLITS:
        raise ValueError(f"unknown ProcessBench split {split!r}; expected one of {SPLITS}")
    report = LoadReport(f"hf:{HUB_DATASET}/{split}")
    solutions = collect(
        _hub_rows(split, revision),
        lambda r: to_solution(r, split),
        report,
        skip_invalid=skip_invalid,
        limit=limit,
        desc=f"processbench:{split}",
    )
    return solutions, report
