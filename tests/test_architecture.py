"""Layering of the project's packages, read from the source with ``ast`` (nothing is imported).

``compress`` may use ``pruners`` and ``reparam``, never the other way round, and the modules of the
three packages import each other without cycles: a cycle makes import order matter and breaks
``import compress`` whenever someone reorders an ``__init__``. Imports inside functions count (they
still tie the modules together); imports under ``if TYPE_CHECKING:`` don't take part in the graph,
since they never run.
"""

from __future__ import annotations

import ast
from collections import deque
from collections.abc import Iterable, Mapping
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("compress", "pruners", "reparam")


def find_cycles(graph: Mapping[str, Iterable[str]]) -> list[list[str]]:
    """One shortest cycle path ``[a, b, ..., a]`` per strongly connected component that has a cycle.

    Tarjan's algorithm, so a failure names every tangle at once instead of whichever one a DFS hits
    first; each path starts at the component's smallest node, for stable output.
    """
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[set[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph.get(node, ())):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = set()
            while True:
                top = stack.pop()
                on_stack.discard(top)
                component.add(top)
                if top == node:
                    break
            if len(component) > 1 or node in graph.get(node, ()):
                components.append(component)

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return sorted(_shortest_cycle(graph, min(c), c) for c in components)


def _shortest_cycle(graph: Mapping[str, Iterable[str]], start: str, within: set[str]) -> list[str]:
    """Breadth-first search from ``start`` back to itself, staying inside one component."""
    parent: dict[str, str | None] = {start: None}
    queue = deque([start])
    while queue:
        node = queue.popleft()
        for nxt in sorted(graph.get(node, ())):
            if nxt == start:
                path = [node]
                while (previous := parent[path[-1]]) is not None:
                    path.append(previous)
                return [*reversed(path), start]
            if nxt in within and nxt not in parent:
                parent[nxt] = node
                queue.append(nxt)
    raise ValueError(f"{start} is on no cycle inside {sorted(within)}")


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


class _Imports(ast.NodeVisitor):
    """Every import of one module as ``(absolute module, imported names)``; relative ones resolved."""

    def __init__(self, package: str, *, type_checking: bool) -> None:
        self.package = package  # the package a relative import of this module starts from
        self.type_checking = type_checking
        self.found: list[tuple[str, tuple[str, ...]]] = []

    def visit_If(self, node: ast.If) -> None:
        if self.type_checking or not _is_type_checking(node.test):
            self.generic_visit(node)
        else:
            for child in node.orelse:
                self.visit(child)

    def visit_Import(self, node: ast.Import) -> None:
        self.found.extend((alias.name, ()) for alias in node.names)

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        base = node.module or ""
        if node.level:
            parts = self.package.split(".")
            anchor = ".".join(parts[: len(parts) - node.level + 1])
            base = f"{anchor}.{base}" if base else anchor
        self.found.append((base, tuple(alias.name for alias in node.names)))


def project_modules(root: Path = ROOT, packages: Iterable[str] = PACKAGES) -> dict[str, Path]:
    """Dotted module name -> file, for every .py under the given packages (``pkg/__init__.py`` is ``pkg``)."""
    modules = {}
    for package in packages:
        for path in sorted((root / package).rglob("*.py")):
            parts = path.relative_to(root).with_suffix("").parts
            modules[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return modules


def imports_of(name: str, path: Path, *, type_checking: bool) -> list[tuple[str, tuple[str, ...]]]:
    """The imports of module ``name`` (at ``path``), optionally including those under ``if TYPE_CHECKING:``."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    visitor = _Imports(package, type_checking=type_checking)
    visitor.visit(ast.parse(path.read_text(encoding="utf-8"), filename=str(path)))
    return visitor.found


def import_graph(root: Path = ROOT, packages: Iterable[str] = PACKAGES) -> dict[str, set[str]]:
    """Module -> project modules it imports at run time; ``from B import x`` points at ``B.x`` when that is a module."""
    modules = project_modules(root, packages)
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        targets = set()
        for base, names in imports_of(name, path, type_checking=False):
            submodules = {f"{base}.{n}" for n in names} & modules.keys()
            targets |= submodules
            if len(submodules) < len(names) or not names:
                targets |= {base} & modules.keys()
        graph[name] = targets - {name}
    return graph


def test_the_project_modules_import_each_other_without_cycles():
    graph = import_graph()
    assert "compress.methods" in graph and "reparam.fold" in graph, "the walk found the project's modules"
    cycles = find_cycles(graph)
    assert not cycles, "import cycles:\n" + "\n".join("  " + " -> ".join(cycle) for cycle in cycles)


def test_pruners_and_reparam_import_neither_transformers_nor_compress():
    offenders = [
        f"{name}: import {base}{' (' + ', '.join(names) + ')' if names else ''}"
        for name, path in project_modules(packages=("pruners", "reparam")).items()
        for base, names in imports_of(name, path, type_checking=True)
        if base.partition(".")[0] in ("transformers", "compress")
    ]
    assert not offenders, "pruners/reparam must stay below compress and free of transformers:\n" + "\n".join(offenders)


def test_find_cycles_reports_each_cycle_and_passes_an_acyclic_graph():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a", "d"}, "d": set(), "e": {"e"}, "f": {"a"}}
    assert find_cycles(graph) == [["a", "b", "c", "a"], ["e", "e"]]
    assert find_cycles({"a": {"b", "c"}, "b": {"c"}, "c": set()}) == []


def test_import_graph_follows_the_edge_rules(tmp_path):
    files = {
        "pkg/__init__.py": "from pkg import a\n",
        "pkg/a.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from pkg import c\n"
                    "def f():\n    from . import b\n    import os\n",
        "pkg/b.py": "from pkg.sub import d, helper\n",
        "pkg/c.py": "",
        "pkg/sub/__init__.py": "helper = 1\n",
        "pkg/sub/d.py": "from .. import c\nfrom ..a import f\n",
    }
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text, encoding="utf-8")
    assert import_graph(tmp_path, ["pkg"]) == {
        "pkg": {"pkg.a"},
        "pkg.a": {"pkg.b"},  # in-function import counts, TYPE_CHECKING one doesn't
        "pkg.b": {"pkg.sub.d", "pkg.sub"},  # `helper` is a name of pkg.sub, d a submodule
        "pkg.c": set(),
        "pkg.sub": set(),
        "pkg.sub.d": {"pkg.c", "pkg.a"},
    }
