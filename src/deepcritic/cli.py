"""``deepcritic <command>``: one entry point; each stage module contributes its subcommand.

A stage module defines ``register_cli(subparsers)``, which adds its parser and sets
``func=<callable(args) -> int>``. Modules are imported only when the CLI runs.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import logging
import sys

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
