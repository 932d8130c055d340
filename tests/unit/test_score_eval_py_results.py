"""``deepcritic score`` on the authors' own result files: the tail of ``eval.py``'s ``main()`` (from
``res_data = []`` to its F1 print: the prediction branches, ``match``, the two result files and the
F1) is executed as written (by AST, from ``../shared/reference/deepcritic``) on generated critiques
for a real benchmark file; scoring its ``<task>_error.jsonl`` and ``<task>_correct.jsonl`` with
``--parser official`` gives eval.py's accuracies and F1, and the rows' 1-based ``prediction`` is
never read as a 0-based one."""

from __future__ import annotations

import ast
import io
import json
import os
import re
from collections import Counter
from contextlib import redirect_stdout
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from deepcritic.cli import main as cli
from deepcritic.records import DataError
from deepcritic.scoring import read_predictions
from support.paths import PROCESSBENCH_DIR, REFERENCE_DIR

EVAL_PY = REFERENCE_DIR / "ProcessBench" / "code" / "eval.py"
BENCH = PROCESSBENCH_DIR / "gsm8k.json"
pytestmark = pytest.mark.skipif(
    not (EVAL_PY.is_file() and BENCH.is_file()), reason="../shared reference or data absent"
)


def _eval_py_tail() -> tuple[Any, Any]:
    """``extract_answer`` and the statements of ``main()`` from ``res_data = []`` to the end."""
    tree = ast.parse(EVAL_PY.read_text())
    funcs = {n.name: n for n in tree.body if isinstance(n, ast.FunctionDef)}
    body = funcs["main"].body
    start = next(
        i
        for i, n in enumerate(body)
        if isinstance(n, ast.Assign) and ast.unparse(n) == "res_data = []"
    )
    extract = compile(ast.Module([funcs["extract_answer"]], []), str(EVAL_PY), "exec")
    return extract, compile(ast.Module(body[start:], []), str(EVAL_PY), "exec")


def run_eval_py(
    items: list[dict[str, Any]], texts: list[list[str]], out: Path, *, voting: bool, model: str
) -> str:
    """eval.py's result files for ``items`` whose vLLM outputs are ``texts``; returns its print."""
    extract, tail = _eval_py_tail() if EVAL_PY.is_file() else (None, None)
    ns: dict[str, Any] = {"re": re, "json": json, "os": os, "np": np, "Counter": Counter}
    exec(extract, ns)
    ns.update(
        input_data=items,
        generations=[
            SimpleNamespace(outputs=[SimpleNamespace(text=t) for t in ts]) for ts in texts
        ],
        args=SimpleNamespace(use_voting=voting, model_path=model, task="gsm8k"),
        output_dir=str(out),
    )
    buf = io.StringIO()
    with redirect_stdout(buf), np.errstate(all="ignore"):
        exec(tail, ns)
    return buf.getvalue()


CRITIQUES = st.sampled_from(
    [
        "**Answer**: \\boxed{-1}",
        "**Answer**: \\boxed{1}",
        "**Answer**: \\boxed{2}",
        "**Answer**: \\boxed{3}",
        "\\boxed{2}",
        "**Answer**: \\boxed{\\text{Step 2}}",
        "**Answer**: \\boxed{3} then \\boxed{2}",
        "no box at all",
        "**Answer**: \\boxed{ 4 }",
    ]
)


def _score(out: Path, voting: bool) -> dict[str, Any]:
    argv = ["score", "--benchmark", str(BENCH), "--parser", "official", "--predictions",
            str(out / "gsm8k_error.jsonl"), str(out / "gsm8k_correct.jsonl")]  # fmt: skip
    if voting:
        argv.append("--require-marker")
    buf = io.StringIO()
    with redirect_stdout(buf):
        assert cli(argv) == 0
    return json.loads(buf.getvalue().strip().splitlines()[-1])


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(st.data(), st.booleans())
def test_score_on_eval_py_result_files_equals_eval_py(
    tmp_path_factory: pytest.TempPathFactory, data: st.DataObject, voting: bool
) -> None:
    items = json.loads(BENCH.read_text())
    n = 1 + 3 * voting
    texts = [data.draw(st.lists(CRITIQUES, min_size=n, max_size=n)) for _ in items]
    out = tmp_path_factory.mktemp("eval-py")
    printed = run_eval_py(items, texts, out, voting=voting, model="x/DeepCritic-7B-RL-PRM800K")
    ref = re.search(r"error acc: (\S+), correct acc: (\S+), f1: (\S+)", printed)
    assert ref is not None, printed
    ours = _score(out, voting)
    assert f"{ours['acc_error']:.1f}" == ref.group(1)
    assert f"{ours['acc_correct']:.1f}" == ref.group(2)
    if ref.group(3) != "nan":  # eval.py prints nan for 0/0; the package says 0
        assert f"{ours['f1']:.1f}" == ref.group(3)
    # the rows' own `match`, item by item
    rows = [json.loads(x) for f in ("gsm8k_error", "gsm8k_correct")
            for x in (out / f"{f}.jsonl").read_text().splitlines()]  # fmt: skip
    preds = read_predictions([out / "gsm8k_error.jsonl", out / "gsm8k_correct.jsonl"],
                             parser="official", require_marker=voting)  # fmt: skip
    for row in rows:
        label, pred = row["label"], preds[str(row["id"])]
        assert row["match"] == (pred == label)


def test_the_rows_prediction_is_not_read_as_zero_based(tmp_path: Path) -> None:
    """eval.py writes ``prediction`` 1-based (step 2 -> 2); read as 0-based every erroneous item
    would be off by one. The critique text decides; a malformed one names the field."""
    rows = [
        {"id": "a", "label": 1, "generated_critique": "**Answer**: \\boxed{2}", "prediction": 2},
        {"id": "b", "label": -1, "generated_critique": ["\\boxed{-1}", "\\boxed{-1}"],
         "prediction": -1},
    ]  # fmt: skip
    path = tmp_path / "gsm8k_error.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert read_predictions(path, parser="official") == {"a": 1, "b": -1}
    path.write_text(json.dumps({"id": "c", "generated_critique": 3}) + "\n")
    with pytest.raises(DataError, match="generated_critique"):
        read_predictions(path, parser="official")
    other = tmp_path / "again.jsonl"
    other.write_text(json.dumps({"id": "c", "output": "\\boxed{1}"}) + "\n")
    path.write_text(json.dumps({"id": "c", "output": "\\boxed{1}"}) + "\n")
    with pytest.raises(DataError, match="duplicate id 'c'"):
        read_predictions([path, other])
