"""Summary of src/deepcritic's import graph: modules, edges, cycles, the largest modules.

    python benchmarks/import_graph.py              # the summary
    python benchmarks/import_graph.py --top 15     # more of the largest modules
    python benchmarks/import_graph.py --edges      # every edge, importer -> imported

Reads the source with ``ast`` (nothing is imported); the rules it reports on are asserted by
``tests/unit/test_layout.py``, which shares the code (``tests/support/import_graph.py``).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from support.import_graph import build, cycle_path, cycles  # noqa: E402

MAX_LINES = 500


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--package", default=str(ROOT / "src" / "deepcritic"))
    p.add_argument("--top", type=int, default=8, help="how many of the largest modules")
    p.add_argument("--edges", action="store_true", help="print every edge too")
    args = p.parse_args(argv)
    graph = build(Path(args.package))
    n_edges = sum(len(v) for v in graph.edges.values())
    found = cycles(graph.edges)
    lines = graph.lines()
    fan_in: dict[str, int] = {m: 0 for m in graph.files}
    for targets in graph.edges.values():
        for t in targets:
            fan_in[t] += 1
    print(f"modules: {len(graph.files)}   edges: {n_edges}   cycles: {len(found)}")
    for component in found:
        print(
            f"  cycle ({len(component)} modules): "
            + " -> ".join(cycle_path(graph.edges, component))
        )
    over = sorted((n, m) for m, n in lines.items() if n > MAX_LINES)
    print(f"modules over {MAX_LINES} lines: {len(over)}" + "".join(f"\n  {m} {n}" for n, m in over))
    print(f"largest modules (lines; limit {MAX_LINES}):")
    for m, n in sorted(lines.items(), key=lambda kv: (-kv[1], kv[0]))[: args.top]:
        print(f"  {n:5d}  {m}")
    print("most imported (modules importing it):")
    for m, n in sorted(fan_in.items(), key=lambda kv: (-kv[1], kv[0]))[:5]:
        print(f"  {n:5d}  {m}")
    if args.edges:
        for m in sorted(graph.edges):
            for t in sorted(graph.edges[m]):
                print(f"{m} -> {t}")
    return 1 if found else 0


if __name__ == "__main__":
    raise SystemExit(main())
