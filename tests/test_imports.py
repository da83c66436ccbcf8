"""The import graph inside streamvid has no cycles: each module's module-level imports (those that
run at import time; not the ones inside functions or under ``if TYPE_CHECKING:``) point one way."""

from __future__ import annotations

import ast
from pathlib import Path

import streamvid

PACKAGE = Path(streamvid.__file__).resolve().parent


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _runtime_statements(body: list[ast.stmt], deferred: bool = False) -> list[ast.stmt]:
    """Statements that run at import time, descending into if/try but not into TYPE_CHECKING blocks;
    with ``deferred``, also every statement inside functions (imports made on first use)."""
    out: list[ast.stmt] = []
    for node in body:
        if deferred and isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            out += [n for n in ast.walk(node) if isinstance(n, (ast.Import, ast.ImportFrom))]
            continue
        if isinstance(node, ast.If):
            test = node.test
            name = test.id if isinstance(test, ast.Name) else getattr(test, "attr", None)
            if name != "TYPE_CHECKING":
                out += _runtime_statements(node.body, deferred)
            out += _runtime_statements(node.orelse, deferred)
        elif isinstance(node, ast.Try):
            for part in (node.body, *(h.body for h in node.handlers), node.orelse, node.finalbody):
                out += _runtime_statements(part, deferred)
        else:
            out.append(node)
    return out


def imported_modules(path: Path, modules: set[str], deferred: bool = False) -> set[str]:
    """The streamvid modules ``path`` imports at module level (with ``deferred``: anywhere)."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in _runtime_statements(ast.parse(path.read_text(), str(path)).body, deferred):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            # "from pkg import sub" imports the submodule pkg.sub when there is one
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base for a in node.names]
        else:
            continue
        found.update(t for t in targets if t in modules and t != name)
    return found


def import_graph(deferred: bool = False) -> dict[str, set[str]]:
    files = sorted(PACKAGE.rglob("*.py"))
    modules = {module_name(p) for p in files}
    return {module_name(p): imported_modules(p, modules, deferred) for p in files}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as [a, b, …, a], or None (depth-first search, three colours)."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_the_graph_sees_the_package():
    graph = import_graph()
    assert {"streamvid.agent", "streamvid.backends.base", "streamvid.backends.offline",
            "streamvid.generation"} <= set(graph)
    assert "streamvid.backends.base" in graph["streamvid.backends.offline"]
    assert "streamvid.generation" in graph["streamvid.models.base"]


def test_find_cycle_finds_one():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set(), "c": {"a", "b"}}) is None


def test_streamvid_has_no_import_cycles():
    cycle = find_cycle(import_graph())
    assert cycle is None, "import cycle: " + " → ".join(cycle)


def test_backends_never_import_each_other():
    graph = import_graph(deferred=True)  # not even on first use
    assert "streamvid.backends.vlm" not in graph["streamvid.backends.offline"]
    assert "streamvid.backends.offline" not in graph["streamvid.backends.vlm"]
