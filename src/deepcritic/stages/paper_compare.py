"""The run's F1 beside the paper's published numbers (``paper_results`` in the eval config).

A paper-results file (the packaged ``configs/paper/results.yaml``: arXiv 2505.00662, its source
spelled out) has the paper's ``columns`` (keyed by our benchmark names) and one row per model, each
with the settings the paper reports (``single``: one critique per item; ``maj@8``: majority vote
of 8), each a mapping of per-benchmark F1 and the paper's ``avg``. ``null`` is "the paper gives no
number here (or it is not transcribed)": shown as ``n/a``, never as 0, and never diffed.

:func:`paper_reference` loads and checks the file and picks the row (``paper_row``, else the row
whose ``models`` include ``generation.model``) before anything is generated, so a typo costs
nothing; :meth:`PaperReference.compare` lines the finished run up against it; :func:`publish`
writes ``paper_comparison.json`` and ``paper_comparison.md`` and logs ``paper/<benchmark>``,
``paper_diff/<benchmark>`` (ours - paper) and the table to MLflow.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import yaml

from deepcritic.config import presets_dir
from deepcritic.tracking import Tracker

log = logging.getLogger(__name__)
AVG = "avg"
# source prefixes -> the paper column they are a (possibly sliced) copy of
_SOURCE_COLUMNS = {"mrgsm8k": "mrgsm8k", "prm800k": "prm800k-test"}
_PROCESSBENCH = ("processbench", "processbench-slice")


def setting_name(samples: int) -> str:
    """``single`` for one critique per item, ``maj@k`` for a vote of k."""
    return "single" if samples == 1 else f"maj@{samples}"


def results_path(spec: str) -> Path:
    """A file path, else a name inside the packaged configs (``paper/results.yaml``)."""
    path = Path(spec).expanduser()
    if path.is_file():
        return path
    packaged = presets_dir() / spec
    if packaged.is_file():
        return packaged
    raise FileNotFoundError(f"paper_results: {spec!r} is neither a file nor {packaged}")


def _number(where: str, value: Any) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"{where}: expected a number or null, got {value!r}")
    return float(value)


def load_results(spec: str) -> dict[str, Any]:
    """The paper-results file, checked: ``columns`` and ``rows`` mappings, numbers or null."""
    path = results_path(spec)
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    if not isinstance(data, dict) or not isinstance(data.get("rows"), dict):
        raise ValueError(f"{path}: expected a mapping with 'rows' (and 'columns', 'source')")
    columns = data.get("columns") or {}
    if not isinstance(columns, dict):
        raise ValueError(f"{path}: columns: expected a mapping of benchmark -> paper column")
    for key, row in data["rows"].items():
        settings = row.get("settings") if isinstance(row, dict) else None
        if not isinstance(settings, dict) or not isinstance(row.get("models", []), list):
            raise ValueError(f"{path}: rows.{key}: expected models (a list) and settings")
        for name, cells in settings.items():
            where = f"{path}: rows.{key}.settings.{name}"
            f1 = (cells or {}).get("f1") or {}
            unknown = sorted(set(f1) - set(columns))
            if unknown:
                raise ValueError(f"{where}.f1: {unknown} are not in columns {sorted(columns)}")
            for bench, value in f1.items():
                _number(f"{where}.f1.{bench}", value)
            _number(f"{where}.avg", (cells or {}).get(AVG))
    data["path"] = str(path)
    return data


def _model_key(model: str) -> str:
    return model.split("://", 1)[-1].strip().rstrip("/").lower()


def pick_row(data: dict[str, Any], model: str, row: str | None = None) -> str | None:
    """``row`` when given (an unknown one is an error listing the rows), else the row whose
    ``models`` name ``model`` (exactly, or by its last path part), else None."""
    rows: dict[str, Any] = data["rows"]
    if row is not None:
        if row not in rows:
            raise ValueError(f"paper_row: {row!r} is not a row of {data['path']}: {sorted(rows)}")
        return row
    key = _model_key(model)
    for name, spec in rows.items():
        ids = [_model_key(m) for m in spec.get("models", [])]
        if key in ids or key.rsplit("/", 1)[-1] in [i.rsplit("/", 1)[-1] for i in ids]:
            return str(name)
    return None


def column_for(name: str, source: str, columns: dict[str, Any]) -> str | None:
    """The paper column a benchmark is: by its name, else by its source (``processbench:math``
    and the bundled ``processbench-slice:math`` are ``processbench-math``)."""
    if name in columns:
        return name
    kind, _, rest = source.partition(":")
    if kind in _PROCESSBENCH:
        guess = f"processbench-{rest.strip().lower()}"
    else:
        guess = _SOURCE_COLUMNS.get(kind, "")
    return guess if guess in columns else None


@dataclass(frozen=True)
class PaperLine:
    benchmark: str  # our benchmark name
    column: str | None  # the paper's column key (None: the paper has no such benchmark)
    title: str  # the paper's column title ("" when none)
    n: int  # items we scored (a slice has fewer than the paper's benchmark)
    ours: float
    paper: float | None

    @property
    def diff(self) -> float | None:
        return None if self.paper is None else self.ours - self.paper


@dataclass
class PaperComparison:
    row: str
    label: str
    setting: str
    source: dict[str, Any]
    lines: list[PaperLine]
    ours_avg: float
    paper_avg: float | None  # the paper's Avg. column (over all its columns)
    avg_comparable: bool  # this run scored every column the paper averages over
    avg_over: int  # how many benchmarks the paper's Avg. is over
    notes: list[str]

    @property
    def avg_diff(self) -> float | None:
        if self.paper_avg is None or not self.avg_comparable:
            return None
        return self.ours_avg - self.paper_avg

    def to_dict(self) -> dict[str, Any]:
        lines = [{**asdict(x), "diff": x.diff} for x in self.lines]
        return {
            "row": self.row, "label": self.label, "setting": self.setting, "source": self.source,
            "benchmarks": lines, "avg": {"ours": self.ours_avg, "paper": self.paper_avg,
                                         "diff": self.avg_diff, "comparable": self.avg_comparable},
            "notes": self.notes,
        }  # fmt: skip

    def metrics(self) -> dict[str, float]:
        """``paper/<benchmark>`` and ``paper_diff/<benchmark>`` where the paper has a number."""
        out: dict[str, float] = {}
        for x in self.lines:
            if x.paper is not None and x.diff is not None:
                out[f"paper/{x.benchmark}"] = x.paper
                out[f"paper_diff/{x.benchmark}"] = x.diff
        if self.paper_avg is not None:
            out["paper/avg_f1"] = self.paper_avg
        if self.avg_diff is not None:
            out["paper_diff/avg_f1"] = self.avg_diff
        return out

    def _cells(self) -> list[tuple[str, str, str, str, str]]:
        rows = [(x.benchmark, str(x.n), f"{x.ours:.1f}", _fmt(x.paper), _fmt(x.diff, sign=True))
                for x in self.lines]  # fmt: skip
        avg_paper = _fmt(self.paper_avg)
        if self.paper_avg is not None and not self.avg_comparable:
            avg_paper += f" (of {self.avg_over})"
        rows.append(("average", "", f"{self.ours_avg:.1f}", avg_paper, _fmt(self.avg_diff, True)))
        return rows

    def title(self) -> str:
        return f"paper: {self.label}, {self.setting} (arXiv {self.source.get('arxiv', '?')})"

    def table(self) -> str:
        """Plain text for the terminal: ours, the paper's, ours - paper."""
        head = f"{'benchmark':<28}{'n':>6}{'F1':>8}{'paper':>22}{'diff':>8}"
        body = [f"{b:<28}{n:>6}{o:>8}{p:>22}{d:>8}" for b, n, o, p, d in self._cells()]
        lines = [self.title(), head, "-" * len(head), *body[:-1], "-" * len(head), body[-1]]
        return "\n".join(lines + [f"note: {n}" for n in self.notes])

    def markdown(self) -> str:
        lines = [f"**{self.title()}**", "", "| benchmark | n | F1 | paper | diff |",
                 "|---|---:|---:|---:|---:|"]  # fmt: skip
        lines += [f"| {' | '.join(cells)} |" for cells in self._cells()]
        src = self.source
        lines += [
            "",
            f"Source: {src.get('paper', '')} {src.get('url', '')}, {src.get('table', '')}.",
        ]
        return "\n".join(lines + [f"- {n}" for n in self.notes]) + "\n"


def _fmt(value: float | None, sign: bool = False) -> str:
    if value is None:
        return "n/a"
    return f"{value:+.1f}" if sign else f"{value:.1f}"


@dataclass(frozen=True)
class PaperReference:
    """One row and setting of a paper-results file, picked before the run."""

    row: str
    label: str
    setting: str
    source: dict[str, Any]
    columns: dict[str, str]
    f1: dict[str, float | None]  # column -> the paper's F1 (None: no number)
    avg: float | None
    notes: tuple[str, ...] = ()

    def compare(
        self, scored: list[tuple[str, str, int, float]], ours_avg: float
    ) -> PaperComparison:
        """``scored``: (benchmark name, source, items, F1) of the finished run, in suite order."""
        lines = []
        for name, source, n, f1 in scored:
            col = column_for(name, source, self.columns)
            paper = self.f1.get(col) if col else None
            lines.append(PaperLine(name, col, self.columns.get(col or "", ""), n, f1, paper))
        covered = {x.column for x in lines if x.column}
        comparable = covered >= set(self.columns)
        notes = list(self.notes)
        if not comparable:
            missing = sorted(set(self.columns) - covered)
            notes.append(f"average not compared: the paper's Avg. includes {missing}")
        if any(x.paper is None for x in lines):
            notes.append("n/a: the paper-results file has no number for that cell")
        return PaperComparison(self.row, self.label, self.setting, self.source, lines,
                               ours_avg, self.avg, comparable, len(self.columns), notes)  # fmt: skip


def paper_reference(
    spec: str, model: str, samples: int, row: str | None = None
) -> PaperReference | None:
    """The paper's numbers for this run (None, with a warning, when no row fits the model)."""
    data = load_results(spec)
    name = pick_row(data, model, row)
    if name is None:
        log.warning(
            "paper comparison skipped: %r is none of the models of %s (rows: %s); name one with "
            "paper_row",
            model,
            data["path"],
            ", ".join(sorted(data["rows"])),
        )
        return None
    spec_row = data["rows"][name]
    setting = setting_name(samples)
    cells = (spec_row.get("settings") or {}).get(setting)
    notes = []
    if cells is None:
        cells = {}
        notes.append(f"the paper reports no {setting} numbers for {spec_row.get('label', name)}")
    f1 = {col: _number(col, (cells.get("f1") or {}).get(col)) for col in data.get("columns") or {}}
    return PaperReference(
        row=name,
        label=str(spec_row.get("label", name)),
        setting=setting,
        source={**(data.get("source") or {}), "file": data["path"]},
        columns={str(k): str(v) for k, v in (data.get("columns") or {}).items()},
        f1=f1,
        avg=_number(f"rows.{name}.{setting}.avg", cells.get(AVG)),
        notes=tuple(notes),
    )


def publish(comparison: PaperComparison, out: Path, tracker: Tracker) -> None:
    """Write ``paper_comparison.json`` / ``.md`` under ``out`` and log them and the metrics."""
    (out / "paper_comparison.json").write_text(json.dumps(comparison.to_dict(), indent=2))
    (out / "paper_comparison.md").write_text(comparison.markdown())
    tracker.log_metrics(comparison.metrics())
    tracker.set_tags({"paper.row": comparison.row, "paper.setting": comparison.setting})
    tracker.log_artifact(out / "paper_comparison.json")
    tracker.log_artifact(out / "paper_comparison.md")
