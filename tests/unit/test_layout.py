"""The project's layering, read from the source with ``ast``: no import cycle among deepcritic's
modules, no kfp (nor images/, tests/, pipelines/, components/) under src/deepcritic, no module over
500 lines, and components that import only kfp, the standard library and deepcritic's public
entry points. The graph code is checked on small synthetic packages first, so a rule that could
never fire would show here."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

from support.import_graph import Graph, build, cycle_path, cycles, imports_of, module_name
from support.paths import ROOT

PACKAGE = ROOT / "src" / "deepcritic"
COMPONENTS = ROOT / "components"
MAX_LINES = 500
# top-level names that live in this repository but outside the package
REPO_ONLY = {"images", "tests", "support", "conftest", "pipelines", "components", "benchmarks"}


@pytest.fixture(scope="module")
def graph() -> Graph:
    return build(PACKAGE)


def _write(root: Path, files: dict[str, str]) -> Path:
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root / "pkg"


# --- the graph code itself -----------------------------------------------------------------------


def test_graph_finds_a_cycle_through_relative_and_function_level_imports(tmp_path: Path) -> None:
    pkg = _write(
        tmp_path,
        {
            "pkg/__init__.py": "",
            "pkg/a.py": "from .sub import b\n",
            "pkg/sub/__init__.py": "",
            "pkg/sub/b.py": "def f():\n    from ..c import g\n",
            "pkg/c.py": "import pkg.a\ng = 1\n",
            "pkg/d.py": "from pkg import a\n",
        },
    )
    g = build(pkg)
    assert g.edges["pkg.a"] == {"pkg.sub.b"}  # `from .sub import b`: b is a submodule
    assert g.edges["pkg.sub.b"] == {"pkg.c"}  # function-level, two levels up, g is a name
    assert g.edges["pkg.d"] == {"pkg.a"}
    assert cycles(g.edges) == [["pkg.a", "pkg.c", "pkg.sub.b"]]
    assert cycle_path(g.edges, ["pkg.a", "pkg.c", "pkg.sub.b"]) == [
        "pkg.a",
        "pkg.sub.b",
        "pkg.c",
        "pkg.a",
    ]


def test_graph_ignores_type_checking_imports_and_other_packages(tmp_path: Path) -> None:
    pkg = _write(
        tmp_path,
        {
            "pkg/__init__.py": "from pkg.x import y\n",  # y is a name: an edge to pkg.x
            "pkg/x.py": (
                "from typing import TYPE_CHECKING\nimport os, kfp\n"
                "if TYPE_CHECKING:\n    from pkg import z\nelse:\n    import json\ny = 1\n"
            ),
            "pkg/z.py": "import pkg.x\n",
        },
    )
    g = build(pkg)
    assert g.edges == {"pkg": {"pkg.x"}, "pkg.x": set(), "pkg.z": {"pkg.x"}}
    assert cycles(g.edges) == []
    assert {i.module for i in imports_of(pkg / "x.py", "pkg.x")} == {"typing", "os", "kfp", "json"}
    assert module_name(pkg / "__init__.py", tmp_path) == "pkg"


# --- the rules, on src/deepcritic ---------------------------------------------------------------


def test_graph_covers_the_package(graph: Graph) -> None:
    assert "deepcritic.stages.evaluate" in graph.files and "deepcritic.grader" in graph.files
    assert "deepcritic.grader" in graph.edges["deepcritic.stages.evaluate"]


def test_no_import_cycle_among_deepcritic_modules(graph: Graph) -> None:
    found = cycles(graph.edges)
    loops = [" -> ".join(cycle_path(graph.edges, c)) + f"  (component: {c})" for c in found]
    assert not found, "import cycles:\n" + "\n".join(loops)


def _offending(graph: Graph, banned: set[str], root: Path = ROOT) -> list[str]:
    return [
        f"{graph.files[m].relative_to(root)}:{imp.line} imports {imp.module}"
        for m, found in graph.imports.items()
        for imp in found
        if imp.module.split(".")[0] in banned
    ]


def test_the_package_never_imports_kfp(graph: Graph) -> None:
    assert not _offending(graph, {"kfp", "kfp_server_api"})


def test_the_package_never_imports_repository_folders(graph: Graph) -> None:
    assert not _offending(graph, REPO_ONLY)


def test_no_module_over_500_lines(graph: Graph) -> None:
    over = {m: n for m, n in graph.lines().items() if n > MAX_LINES}
    assert not over, f"modules over {MAX_LINES} lines: {over}"


def _component_files() -> list[Path]:
    return sorted(COMPONENTS.rglob("*.py"))


def test_components_exist() -> None:
    assert len([p for p in _component_files() if p.name == "component.py"]) >= 10


def _public(graph: Graph, module: str, names: tuple[str, ...]) -> str | None:
    """Why a deepcritic import is not a public entry point, or None when it is."""
    if module not in graph.files:
        return "no such module"
    if any(part.startswith("_") for part in module.split(".")):
        return "a private module"
    private = [n for n in names if n.startswith("_")]
    return f"private names {private}" if private else None


@pytest.mark.parametrize("path", _component_files(), ids=lambda p: str(p.relative_to(ROOT)))
def test_components_import_only_kfp_stdlib_and_deepcritic_entry_points(
    path: Path, graph: Graph
) -> None:
    """Components are thin: the KFP signature, then a call into deepcritic's public API. No ML
    library (torch, transformers, mlflow, ...) directly, no other component, no pipeline."""
    stdlib = set(sys.stdlib_module_names) | {"__future__"}
    wrong = []
    for imp in imports_of(path, module_name(path, ROOT)):
        top = imp.module.split(".")[0]
        if top == "deepcritic":
            why = _public(graph, imp.module, imp.names)
            if why:
                wrong.append(f"line {imp.line}: {imp.module} ({why})")
        elif top not in stdlib and top != "kfp" and not imp.module.startswith("components"):
            wrong.append(f"line {imp.line}: {imp.module} (not kfp, stdlib or deepcritic)")
        elif imp.module.startswith("components") and path.name == "component.py":
            wrong.append(f"line {imp.line}: {imp.module} (a component imports another)")
    assert not wrong, "\n".join(wrong)


def _from_deepcritic(node: ast.Import | ast.ImportFrom) -> bool:
    if isinstance(node, ast.ImportFrom):
        return (node.module or "").split(".")[0] == "deepcritic" and not node.level
    return any(alias.name.split(".")[0] == "deepcritic" for alias in node.names)


def body_misuses(source: str) -> list[str]:
    """``function: names`` for each decorated top-level function whose body uses a name that
    only the module imported from deepcritic."""
    tree = ast.parse(source)
    outer = {
        alias.asname or alias.name.split(".")[0]
        for node in tree.body
        if isinstance(node, ast.Import | ast.ImportFrom) and _from_deepcritic(node)
        for alias in node.names
    }
    wrong = []
    for fn in [n for n in tree.body if isinstance(n, ast.FunctionDef) and n.decorator_list]:
        body = [n for stmt in fn.body for n in ast.walk(stmt)]
        own = {
            alias.asname or alias.name.split(".")[0]
            for n in body
            if isinstance(n, ast.Import | ast.ImportFrom)
            for alias in n.names
        }
        used = {n.id for n in body if isinstance(n, ast.Name)} & (outer - own)
        wrong += [f"{fn.name}: {sorted(used)}"] if used else []
    return wrong


def test_body_rule_fires_and_accepts_own_imports() -> None:
    head = "from kfp import dsl\nfrom deepcritic.platform.images import image\n"
    bad = head + "@dsl.component(base_image=image('x'))\ndef f() -> str:\n    return image('x')\n"
    good = head + (
        "@dsl.component(base_image=image('x'))\ndef f() -> str:\n"
        "    from deepcritic.platform.images import image\n    return image('x')\n"
    )
    assert body_misuses(bad) == ["f: ['image']"]
    assert body_misuses(good) == []


def test_component_bodies_do_not_use_module_level_deepcritic_imports() -> None:
    """KFP lightweight components run their function's body alone in the image, so a name the
    module imports from deepcritic (for the decorator's arguments, e.g. the image reference) is
    undefined inside a ``@dsl.component`` body; the body imports what it uses itself."""
    wrong = {
        str(path.relative_to(ROOT)): found
        for path in sorted(COMPONENTS.rglob("component.py"))
        if (found := body_misuses(path.read_text(encoding="utf-8")))
    }
    assert not wrong, wrong


def test_banned_imports_are_found(tmp_path: Path) -> None:
    pkg = _write(
        tmp_path,
        {
            "pkg/__init__.py": "",
            "pkg/a.py": "def f():\n    from kfp import dsl\n",
            "pkg/b.py": "import images.tools.digests\nfrom tests.support import paths\n",
        },
    )
    assert _offending(build(pkg), {"kfp", *REPO_ONLY}, tmp_path) == [
        "pkg/a.py:2 imports kfp",
        "pkg/b.py:1 imports images.tools.digests",
        "pkg/b.py:2 imports tests.support",
    ]
