"""The learning benchmark: base -> SFT -> GRPO on the same held-out items (see deepcritic.stages.learning).

    python benchmarks/bench_learning.py                       # CPU, SmolLM2-135M, ~60 min on 2 cores
    python benchmarks/bench_learning.py --teacher llm         # the LLM teacher instead (slow on CPU)
    python benchmarks/bench_learning.py --model /models/Qwen2.5-1.5B-Instruct --device cuda \\
        --sft-examples 2000 --grpo-steps 100                  # on a GPU: a bigger model, more data

Held out: GSM8K test problems with one calculation made wrong (train uses GSM8K train problems),
and balanced ProcessBench GSM8K/MATH slices read from ``--processbench-dir`` (default: the
workplace's ``../shared/data/processbench`` when it exists). Prints one table (per stage and
benchmark: readable-verdict rate, acc_error, acc_correct, F1, mean tokens, truncation, wall time,
predicted-step histogram; then the trivial baselines), writes ``report.json`` and
``learning.png`` under ``--work-dir`` and logs everything to MLflow (``--tracking-uri``).
A rerun with the same ``--work-dir`` reuses finished stages.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHARED_PROCESSBENCH = ROOT.parent / "shared" / "data" / "processbench"


def main(argv: list[str] | None = None) -> int:
    from deepcritic.config import add_dataclass_arguments, config_from_args
    from deepcritic.stages.learning import LearningConfig, run

    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add_dataclass_arguments(parser, LearningConfig)
    config = config_from_args(LearningConfig, parser.parse_args(argv))
    if not config.processbench_dir and SHARED_PROCESSBENCH.is_dir():
        config.processbench_dir = str(SHARED_PROCESSBENCH)
    result = run(config)
    print(f"report: {result.report_path}\nplot:   {result.plot_path}\nMLflow run: {result.run_id}")
    return 0


if __name__ == "__main__":
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    sys.exit(main())
