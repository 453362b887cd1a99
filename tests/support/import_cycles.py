"""Import circles between modules: the strongly connected components of grimp's import graph.

import-linter's contracts see packages (a layer, a forbidden import), not a loop of modules inside one package;
this finds those loops. Every import statement counts, including one inside a function: a lazy import still
ties two modules together.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import grimp


def import_graph(packages: Iterable[str]) -> dict[str, set[str]]:
    """module -> the project modules it imports directly (external packages left out)."""
    graph = grimp.build_graph(*packages)
    return {m: set(graph.find_modules_directly_imported_by(m)) for m in graph.modules}


def circles(graph: Mapping[str, set[str]]) -> list[list[str]]:
    """Every group of modules that import one another round a loop (Tarjan's algorithm, iterative), sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    for root in sorted(graph):
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph.get(child, ())))))
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
                if len(component) > 1 or node in graph.get(node, ()):
                    found.append(sorted(component))
    return sorted(found)
