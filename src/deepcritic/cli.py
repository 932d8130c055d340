"""``deepcritic <command>``: one entry point; each stage module contributes its subcommand.

A stage module defines ``register_cli(subparsers)``, which adds its parser and sets
``func=<callable(args) -> int>``. Modules are imported only when the CLI runs. Every stage
subcommand with packaged presets (:data:`PRESET_STAGES`) gets ``--preset NAME``
(``configs/<stage>.<NAME>.yaml``, under ``--config`` and flags).
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import logging
import sys
from typing import Any

from deepcritic.config import add_preset_argument

# Stage modules that contribute a subcommand, in help order.
STAGE_MODULES = (
    "deepcritic.stages.evaluate",
    "deepcritic.scoring",
    "deepcritic.stages.prepare",
    "deepcritic.stages.seed",
    "deepcritic.stages.sft",
    "deepcritic.stages.mc",
    "deepcritic.stages.grpo",
    "deepcritic.critic.voting",
    "deepcritic.critic.refine",
    "deepcritic.registry",
    "deepcritic.serve.server",
)

# Subcommand -> the stage name of its presets (configs/<stage>.<preset>.yaml).
PRESET_STAGES = {
    "eval": "evaluate", "prepare": "prepare", "seed": "seed", "sft": "sft", "mc": "mc",
    "grpo": "grpo", "verify-vote": "voting", "refine": "refine", "serve": "serve",
}  # fmt: skip

# One or more example command lines per subcommand (shown as each subcommand's epilog).
EXAMPLES: dict[str, tuple[str, ...]] = {
    "eval": ("deepcritic eval --generation.model tiny --benchmarks gsm8k --limit 8 --out outputs/eval",
             "deepcritic eval --config configs/paper.yaml --backend vllm --samples 8",
             "deepcritic eval --preset paper-reference --model Keven16/DeepCritic-7B-RL-PRM800K",
             "deepcritic eval --preset paper-reference --model Keven16/DeepCritic-7B-RL-PRM800K "
             "--samples 8 --out outputs/eval-maj8"),
    "score": ("deepcritic score --benchmark data/gsm8k.json --predictions outputs/eval/predictions/gsm8k.jsonl",),
    "prepare": ("deepcritic prepare --source prm800k --limit 100 --out outputs/prepare",),
    "seed": ("deepcritic seed --data outputs/prepare/train.jsonl --teacher default --max-problems 4",),
    "sft": ("deepcritic sft --data outputs/seed/critiques.jsonl --model default --max-steps 10",),
    "mc": ("deepcritic mc --problems outputs/prepare/train.jsonl --limit 8 --rollouts 4",),
    "grpo": ("deepcritic grpo --model outputs/sft --data-source mc --mc-path outputs/mc --max-steps 10",),
    "verify-vote": ("deepcritic verify-vote --problems data/gsm8k.json --limit 8 --k 4",),
    "refine": ("deepcritic refine --problems data/gsm8k.json --limit 8 --rounds 2",),
    "register": ("deepcritic register --checkpoint outputs/grpo --metrics-json outputs/eval/metrics.json",),
    "promote": ("deepcritic promote --version 7 --floor-f1 41.0",
                "deepcritic promote --margin 0.5 --verify-champion false"),
    "registry": ("deepcritic registry status",
                 "deepcritic registry pin --version 6 --reason 'rollback: v7 regressed'"),
    "registry pin": ("deepcritic registry pin --version 6 --reason 'rollback: v7 regressed'",),
    "registry unpin": ("deepcritic registry unpin",),
    "registry status": ("deepcritic registry status --alias champion",),
    "registry verify": ("deepcritic registry verify --version 7",),
    "serve": ("deepcritic serve --model-uri models:/deepcritic@champion --port 8080",
              "deepcritic serve --model-uri tiny --openai-route on --limits.max-samples 4"),
}  # fmt: skip


def subcommands(parser: argparse.ArgumentParser, prefix: str = "") -> dict[str, Any]:
    """Every (nested) subcommand parser by its command line, e.g. ``"registry pin"``."""
    out: dict[str, Any] = {}
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                out[prefix + name] = sub
                out.update(subcommands(sub, f"{prefix}{name} "))
    return out


def _add_presets(parser: argparse.ArgumentParser) -> None:
    subs = subcommands(parser)
    for name, stage in PRESET_STAGES.items():
        if name in subs:
            add_preset_argument(subs[name], stage)


def _add_examples(parser: argparse.ArgumentParser) -> None:
    for name, sub in subcommands(parser).items():
        examples = EXAMPLES.get(name, ())
        if examples:
            sub.epilog = "examples:\n" + "\n".join(f"  {line}" for line in examples)
            sub.formatter_class = argparse.RawDescriptionHelpFormatter


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="deepcritic", description="Deliberate step-level math critics: train, eval, serve."
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in STAGE_MODULES:
        if importlib.util.find_spec(name) is None:
            continue
        module = importlib.import_module(name)
        register = getattr(module, "register_cli", None)
        if register is not None:
            register(sub)
    _add_presets(parser)
    _add_examples(parser)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    for noisy in ("httpx", "urllib3", "alembic", "mlflow.store"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    try:
        return int(args.func(args) or 0)
    except (ValueError, FileNotFoundError) as e:
        print(f"deepcritic {args.command}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
