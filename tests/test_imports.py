"""The package's imports, read from the code (ast): no cycle, and the directions that must hold.

Every import counts, inside functions and under `TYPE_CHECKING` too: a cycle hidden in a lazy import is
still a cycle a reader has to untangle.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "testbed"

#: Leaves any layer may use: the package's own (its version), errors, the one command helper, ports, and
#: where the checkout is.
SHARED = frozenset({"testbed", "testbed.errors", "testbed.proc", "testbed.ports", "testbed.paths"})
#: What is made of results: never a platform, a mesh or a run (it reads result files only).
ANALYSIS = (
    *("testbed.analysis", "testbed.stats", "testbed.report", "testbed.report_text", "testbed.report_html"),
    *("testbed.compare", "testbed.claims", "testbed.claims_check", "testbed.smp"),
)


def modules() -> dict[str, Path]:
    found = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        found[name] = path
    return found


def imports(path: Path, known: dict[str, Path]) -> Iterator[str]:
    """The package's own modules that `path` imports (`from a import b` counts as a.b when b is a module)."""
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names if alias.name in known)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module in known:
                yield node.module
            yield from (f"{node.module}.{a.name}" for a in node.names if f"{node.module}.{a.name}" in known)


def graph() -> dict[str, set[str]]:
    known = modules()
    return {name: {t for t in imports(path, known) if t != name} for name, path in known.items()}


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in sorted(edges.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return found


def test_no_import_cycle() -> None:
    assert cycles(graph()) == []


def test_the_cycle_finder_finds_one() -> None:
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_the_engine_imports_nothing_of_the_rest() -> None:
    """The load generator runs alone in a pod: only its own modules and the shared leaves."""
    for name, targets in graph().items():
        if name.startswith("testbed.loadgen"):
            other = {t for t in targets if not t.startswith("testbed.loadgen") and t not in SHARED}
            assert not other, f"{name} imports {sorted(other)}"


def test_the_analysis_never_imports_a_platform_a_mesh_or_a_run() -> None:
    for name, targets in graph().items():
        if name in ANALYSIS:
            bad = {t for t in targets if t.startswith(("testbed.platforms", "testbed.meshes", "testbed.run"))}
            assert not bad, f"{name} imports {sorted(bad)}"


def test_the_meshes_plan_with_the_vocabulary_not_the_planner() -> None:
    """The planner asks the meshes for their steps; a mesh importing the planner would close a cycle."""
    for name, targets in graph().items():
        if name.startswith("testbed.meshes"):
            assert "testbed.kube.plan" not in targets, name
