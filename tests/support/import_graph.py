"""The import graph of a package, read with ``ast`` (nothing is imported).

Every ``import`` and ``from ... import`` counts, at module level and inside functions and
classes; only the ones under ``if TYPE_CHECKING:`` are left out (they never run). Relative imports
are resolved against the importing module's package, and ``from pkg.x import y`` where ``y`` is a
submodule is an edge to ``pkg.x.y``. Used by ``tests/unit/test_layout.py`` and printed by
``benchmarks/import_graph.py``.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path


@dataclass(frozen=True)
class Import:
    """One import statement: the absolute module it names and the names it takes from it."""

    module: str
    names: tuple[str, ...]
    line: int


@dataclass
class Graph:
    """Modules of one package (name -> file) and the edges between them (importer -> imported)."""

    files: dict[str, Path]
    imports: dict[str, list[Import]]
    edges: dict[str, set[str]] = field(default_factory=dict)

    def lines(self) -> dict[str, int]:
        return {m: len(p.read_text(encoding="utf-8").splitlines()) for m, p in self.files.items()}


def module_name(path: Path, root: Path) -> str:
    """``root/pkg/a/b.py`` -> ``pkg.a.b``; ``root/pkg/a/__init__.py`` -> ``pkg.a``."""
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _walk(node: ast.AST) -> Iterator[ast.AST]:
    """``ast.walk`` that skips the body of ``if TYPE_CHECKING:`` (its ``else`` still counts)."""
    for child in ast.iter_child_nodes(node):
        if isinstance(child, ast.If) and _is_type_checking(child.test):
            for other in child.orelse:
                yield other
                yield from _walk(other)
            continue
        yield child
        yield from _walk(child)


def _package_of(module: str, is_package: bool) -> str:
    return module if is_package else module.rpartition(".")[0]


def imports_of(path: Path, module: str) -> list[Import]:
    """Every import in ``path`` (module ``module``), relative ones made absolute."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    package = _package_of(module, path.name == "__init__.py")
    found: list[Import] = []
    for node in _walk(tree):
        if isinstance(node, ast.Import):
            found += [Import(alias.name, (), node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            names = tuple(alias.name for alias in node.names)
            if node.level:
                base = package.split(".")
                if node.level - 1 >= len(base):
                    raise ValueError(
                        f"{path}:{node.lineno}: relative import beyond the top package"
                    )
                base = base[: len(base) - (node.level - 1)]
                target = ".".join([*base, *([node.module] if node.module else [])])
            else:
                target = node.module or ""
            found.append(Import(target, names, node.lineno))
    return found


def build(package_dir: Path) -> Graph:
    """The graph of the package at ``package_dir`` (its parent is the import root)."""
    root = package_dir.parent
    top = package_dir.name
    files = {module_name(p, root): p for p in sorted(package_dir.rglob("*.py"))}
    graph = Graph(files, {m: imports_of(p, m) for m, p in files.items()})
    for module, found in graph.imports.items():
        targets: set[str] = set()
        for imp in found:
            if imp.module != top and not imp.module.startswith(top + "."):
                continue
            subs = [f"{imp.module}.{n}" for n in imp.names if f"{imp.module}.{n}" in files]
            if subs:
                targets.update(subs)
            if len(subs) < len(imp.names) or not imp.names:
                # names that are not submodules come from the module itself
                targets.add(_existing(imp.module, files))
        targets.discard(module)
        graph.edges[module] = targets
    return graph


def _existing(module: str, files: dict[str, Path]) -> str:
    """The module itself, or (``import pkg.a.b`` of something that is no file) its nearest parent."""
    while module not in files and "." in module:
        module = module.rpartition(".")[0]
    return module


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan, iterative), sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    counter = 0
    for start in sorted(edges):
        if start in index:
            continue
        work: list[tuple[str, Iterator[str]]] = [(start, iter(sorted(edges.get(start, ()))))]
        index[start] = low[start] = counter
        counter += 1
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(edges.get(child, ())))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
    return sorted(found)


def cycle_path(edges: dict[str, set[str]], component: list[str]) -> list[str]:
    """One concrete loop inside a strongly connected component: ``a -> b -> ... -> a``."""
    members = set(component)
    start = component[0]
    # breadth-first from start's successors back to start, within the component
    previous: dict[str, str] = {}
    frontier = [start]
    while frontier:
        nxt = []
        for node in frontier:
            for child in sorted(edges.get(node, set()) & members):
                if child == start:
                    path = [node]
                    while path[-1] != start:
                        path.append(previous[path[-1]])
                    return [start, *reversed(path[:-1]), start]
                if child not in previous:
                    previous[child] = node
                    nxt.append(child)
        frontier = nxt
    return component
