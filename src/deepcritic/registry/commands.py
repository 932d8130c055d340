"""CLI: ``deepcritic register``, ``deepcritic promote`` and ``deepcritic registry pin|unpin|status|verify``."""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from typing import Any

from deepcritic.config import add_dataclass_arguments, config_from_args, to_dict
from deepcritic.registry import operator
from deepcritic.registry.promotion import PromoteConfig, promote
from deepcritic.registry.registering import RegisterConfig, register


def _printing(cls: type, action: Callable[[Any], Any]) -> Callable[[argparse.Namespace], int]:
    def run(args: argparse.Namespace) -> int:
        result = action(config_from_args(cls, args))
        print(json.dumps(result if isinstance(result, dict) else to_dict(result), indent=1))
        return 0

    return run


OPERATOR_COMMANDS: dict[str, tuple[str, Callable[[Any], Any]]] = {
    "pin": ("pin the alias to --version (verified, gate-passed) until unpin", operator.pin),
    "unpin": ("lift the pin; promotions compare with the holder again", operator.unpin),
    "status": ("where the alias points, and any pin", operator.status),
    "verify": ("download --version and check its sha256", operator.verify),
}


def register_cli(subparsers: Any) -> None:
    """Add ``deepcritic register``, ``deepcritic promote`` and ``deepcritic registry ...``."""
    p = subparsers.add_parser(
        "register", help="register an HF checkpoint as an MLflow model version"
    )
    add_dataclass_arguments(p, RegisterConfig)
    p.set_defaults(func=_printing(RegisterConfig, register))
    q = subparsers.add_parser("promote", help="move @champion to a version if it is better")
    add_dataclass_arguments(q, PromoteConfig)
    q.set_defaults(func=_printing(PromoteConfig, promote))
    r = subparsers.add_parser("registry", help="operator actions on the alias (pin/unpin/...)")
    actions = r.add_subparsers(
        dest="registry_command", required=True, metavar="ACTION", help="what to do with the alias"
    )
    for name, (help_text, action) in OPERATOR_COMMANDS.items():
        a = actions.add_parser(name, help=help_text)
        add_dataclass_arguments(a, operator.OperatorConfig)
        a.set_defaults(func=_printing(operator.OperatorConfig, action))
