"""The authors' Critique_Generation scripts, taken apart for tests (``../shared/reference``).

The scripts cannot be imported (they load vLLM or a tokenizer at import time), so the pieces that
build prompts and SFT examples are cut out of their syntax trees and run on a given item: a test
compares the product's rendering with what the authors' own code builds, never with a copy.
"""

from __future__ import annotations

import ast
import functools
from collections.abc import Callable
from pathlib import Path
from typing import Any

from support.paths import REFERENCE_DIR

CRITIQUE_GEN = REFERENCE_DIR / "Critique_Generation"
MERGE_PY = CRITIQUE_GEN / "merge_critique.py"
SFT_PY = CRITIQUE_GEN / "process_formatted_sft_data.py"
EVAL_PY = REFERENCE_DIR / "ProcessBench" / "code" / "eval.py"
PRESENT = MERGE_PY.is_file() and SFT_PY.is_file() and EVAL_PY.is_file()


@functools.lru_cache(maxsize=8)
def _tree(path: Path) -> ast.Module:
    return ast.parse(path.read_text(encoding="utf-8"))


def functions(path: Path, *names: str) -> dict[str, Callable[..., Any]]:
    """Top-level functions of a script, compiled on their own (plus ``import`` lines they need)."""
    tree = _tree(path)
    keep = [n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name in names]
    ns: dict[str, Any] = {}
    exec(compile(ast.Module(keep, []), str(path), "exec"), ns)
    return {name: ns[name] for name in names}


def _main_block(tree: ast.Module) -> list[ast.stmt]:
    return next(
        n.body for n in tree.body if isinstance(n, ast.If) and "__main__" in ast.unparse(n.test)
    )


def merge_chat_template() -> str:
    """merge_critique.py's hand-written chat template (``prompt_template = (...)``)."""
    for node in _main_block(_tree(MERGE_PY)):
        if isinstance(node, ast.Assign) and ast.unparse(node.targets[0]) == "prompt_template":
            value = ast.literal_eval(node.value)
            assert isinstance(value, str)
            return value
    raise AssertionError("merge_critique.py: no prompt_template")


def merge_instruction(
    merge_prompt: str, example1: str, example2: str, data: dict[str, Any], i: int
) -> str:
    """merge_critique.py's ``merge_prompt.format(...)`` call, evaluated on ``data``'s step ``i``."""
    for node in ast.walk(ast.Module(_main_block(_tree(MERGE_PY)), [])):
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr == "format"
            and ast.unparse(node.func.value) == "merge_prompt"
        ):
            code = compile(ast.Expression(node), str(MERGE_PY), "eval")
            ns = {"merge_prompt": merge_prompt, "example1": example1, "example2": example2}
            out = eval(code, {**ns, "data": data, "i": i})
            assert isinstance(out, str)
            return out
    raise AssertionError("merge_critique.py: no merge_prompt.format call")


def _for_loop(tree: ast.Module, target: str, iterable: str) -> ast.For:
    for node in tree.body:
        if (
            isinstance(node, ast.For)
            and ast.unparse(node.target) == target
            and ast.unparse(node.iter) == iterable
        ):
            return node
    raise AssertionError(f"{SFT_PY.name}: no `for {target} in {iterable}`")


def sft_example(prompt_template: str, data: dict[str, Any]) -> dict[str, Any]:
    """process_formatted_sft_data.py on one item: its formatting loop (prompt and completion, up to
    ``new_data["completion"] = completion``) and then its SFT loop (the ``messages``)."""
    tree = _tree(SFT_PY)
    loops = [n for n in tree.body if isinstance(n, ast.For) and ast.unparse(n.target) == "data"]
    fmt = next(n for n in loops if "new_data['prompt']" in ast.unparse(n))
    body: list[ast.stmt] = []
    for stmt in fmt.body:
        body.append(stmt)
        if ast.unparse(stmt) == "new_data['completion'] = completion":
            break
    ns: dict[str, Any] = {"data": data, "prompt_template": prompt_template}
    exec(compile(ast.Module(body, []), str(SFT_PY), "exec"), ns)
    sft = _for_loop(tree, "sample", "original_data")
    out: dict[str, Any] = {"original_data": [ns["new_data"]], "new_data": []}
    exec(compile(ast.Module([sft], []), str(SFT_PY), "exec"), out)
    result = out["new_data"][0]
    assert isinstance(result, dict)
    return result


def eval_tagged_response(steps: list[str]) -> str:
    """eval.py's numbering of a solution (``prepare_input_boxed`` on a bare template)."""
    prepare = functions(EVAL_PY, "prepare_input_boxed")["prepare_input_boxed"]
    content = prepare("{tagged_response}", {"problem": "", "steps": steps})[0]["content"]
    assert isinstance(content, str)
    return content


def chatml(messages: list[dict[str, str]]) -> str:
    """The Qwen2.5 chat template on a system + user conversation, with the generation prompt."""
    turns = "".join(f"<|im_start|>{m['role']}\n{m['content']}<|im_end|>\n" for m in messages)
    return turns + "<|im_start|>assistant\n"
