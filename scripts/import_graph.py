#!/usr/bin/env python3
"""Draws quiesce's import graph by box (the packages under ``quiesce``) and finds import cycles
between modules, from the source as it is (grimp, the library import-linter is built on).

    python3 scripts/import_graph.py             # the box graph, as a Mermaid block
    python3 scripts/import_graph.py --text      # the same as "box -> boxes" lines
    python3 scripts/import_graph.py --cycles    # every module-level import cycle; exit 1 if any

Imports under ``if TYPE_CHECKING:`` count: a cycle of types is still a cycle to read through.
docs/architecture.md shows the output of the first command.
"""

from __future__ import annotations

import argparse
import sys
from collections import defaultdict

import grimp

ROOT = "quiesce"


def box(module: str) -> str:
    """``quiesce.frontends.api.routes`` -> ``frontends.api``; ``quiesce.state.registry`` ->
    ``state``; top-level modules are their own box."""
    parts = module.split(".")[1:]
    if not parts:
        return ROOT
    if parts[0] == "frontends" and len(parts) > 1:
        return ".".join(parts[:2])
    return parts[0]


def module_edges(graph: grimp.ImportGraph) -> dict[str, set[str]]:
    edges: dict[str, set[str]] = defaultdict(set)
    for m in graph.modules:
        if not m.startswith(ROOT):
            continue
        for imported in graph.find_modules_directly_imported_by(m):
            if imported.startswith(ROOT + ".") and imported != m:
                edges[m].add(imported)
    return edges


def box_edges(edges: dict[str, set[str]]) -> dict[str, set[str]]:
    out: dict[str, set[str]] = defaultdict(set)
    for src, targets in edges.items():
        for dst in targets:
            a, b = box(src), box(dst)
            if a != b and a != ROOT and b != ROOT:
                out[a].add(b)
    return out


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan, iterative).

    A package's ``__init__`` re-exporting its own modules is not a cycle to a reader: edges
    from a package to its own submodules are left out."""
    nodes = sorted(set(edges) | {t for ts in edges.values() for t in ts})
    succ = {n: sorted(t for t in edges.get(n, ()) if not t.startswith(n + ".")) for n in nodes}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    out: list[list[str]] = []
    counter = 0
    for start in nodes:
        if start in index:
            continue
        work = [(start, 0)]
        while work:
            node, i = work.pop()
            if i == 0:
                index[node] = low[node] = counter
                counter += 1
                stack.append(node)
                on_stack.add(node)
            children = succ[node]
            if i < len(children):
                work.append((node, i + 1))
                child = children[i]
                if child not in index:
                    work.append((child, 0))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            if low[node] == index[node]:
                comp = []
                while True:
                    w = stack.pop()
                    on_stack.discard(w)
                    comp.append(w)
                    if w == node:
                        break
                if len(comp) > 1:
                    out.append(sorted(comp))
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[node])
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--text", action="store_true", help="box -> boxes lines")
    parser.add_argument("--cycles", action="store_true", help="module cycles; exit 1 if any")
    args = parser.parse_args()
    graph = grimp.build_graph(ROOT, cache_dir=None)
    edges = module_edges(graph)
    if args.cycles:
        found = cycles(edges)
        for comp in found:
            print("cycle:", " <-> ".join(comp))
        print(f"{len(edges)} modules, {sum(map(len, edges.values()))} imports, {len(found)} cycles")
        return 1 if found else 0
    boxes = box_edges(edges)
    if args.text:
        for a in sorted(boxes):
            print(f"{a} -> {', '.join(sorted(boxes[a]))}")
        return 0
    print("```mermaid\nflowchart TD")
    for a in sorted(boxes):
        for b in sorted(boxes[a]):
            print(f"    {a.replace('.', '_')}[{a}] --> {b.replace('.', '_')}[{b}]")
    print("```")
    return 0


if __name__ == "__main__":
    sys.exit(main())
