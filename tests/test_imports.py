"""The package's imports, read from the code (ast): no cycle, and the directions that must hold.

Every import counts, inside functions and under `TYPE_CHECKING` too: a cycle hidden in a lazy import is
still a cycle a reader has to untangle.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "testbed"

#: The package's folders, each a step in the story of a run, and what each may import (the documented
#: direction: each folder's `__init__` docstring says the same). A module belongs to the first group whose
#: prefix it has; every module must belong to one.
GROUPS: dict[str, tuple[str, ...]] = {
    # Leaves any layer may use: the package's own (its version), errors, the one command helper, ports,
    # where the checkout is, and the CPU/memory vocabulary and sampler.
    "shared": (
        "testbed",
        "testbed.errors",
        "testbed.proc",
        "testbed.ports",
        "testbed.paths",
        "testbed.resources",
    ),
    "loadgen": ("testbed.loadgen",),
    "spec": ("testbed.spec",),
    "sut": ("testbed.sut",),
    "reporting": ("testbed.reporting",),
    # The planner asks the meshes for their steps: apart from the vocabulary the meshes plan with.
    "kube-planner": (
        "testbed.kube.cluster",
        "testbed.kube.trial",
        "testbed.kube.render",
        "testbed.kube.kindconfig",
    ),
    "kube": ("testbed.kube",),
    "meshes": ("testbed.meshes",),
    "platforms": ("testbed.platforms",),
    "entry": (
        "testbed.run",
        "testbed.progress",
        "testbed.cli",
        "testbed.__main__",
        "testbed.bench",
        "testbed.capacity",
        "testbed.reproduce",
    ),
}
MAY_IMPORT: dict[str, frozenset[str]] = {
    "shared": frozenset(),
    "loadgen": frozenset({"shared"}),
    "spec": frozenset({"shared", "loadgen"}),
    "sut": frozenset({"shared", "spec"}),
    "reporting": frozenset({"shared", "loadgen", "spec"}),
    "kube": frozenset({"shared", "loadgen", "spec"}),
    "meshes": frozenset({"shared", "spec", "sut", "kube"}),
    "kube-planner": frozenset({"shared", "loadgen", "spec", "kube", "meshes"}),
    "platforms": frozenset({"shared", "loadgen", "spec", "sut", "kube", "meshes", "kube-planner"}),
    "entry": frozenset(GROUPS),
}


def group(module: str) -> str | None:
    for name, prefixes in GROUPS.items():
        if any(module == p or (p != "testbed" and module.startswith(p + ".")) for p in prefixes):
            return name
    return None


def against_the_direction(edges: dict[str, set[str]]) -> list[str]:
    """Every import from one group into another that the group may not import."""
    bad = []
    for name, targets in sorted(edges.items()):
        own = group(name)
        for target in sorted(targets):
            other = group(target)
            if own is not None and other is not None and other != own and other not in MAY_IMPORT[own]:
                bad.append(f"{name} ({own}) imports {target} ({other})")
    return bad


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


def test_every_module_belongs_to_a_group() -> None:
    assert [name for name in modules() if group(name) is None] == []


def test_every_import_follows_the_direction() -> None:
    assert against_the_direction(graph()) == []


def test_the_direction_check_finds_a_wrong_import() -> None:
    """The check can fail: an analysis module importing a platform, or the engine a mesh, is found."""
    edges = {
        "testbed.reporting.analysis": {"testbed.platforms.kind", "testbed.reporting.stats"},
        "testbed.loadgen.engine": {"testbed.meshes.local", "testbed.errors"},
        "testbed.meshes.istio.kube": {"testbed.kube.cluster", "testbed.kube.actions"},
        "testbed.kube.cluster": {"testbed.meshes.kube"},
    }
    assert against_the_direction(edges) == [
        "testbed.loadgen.engine (loadgen) imports testbed.meshes.local (meshes)",
        "testbed.meshes.istio.kube (meshes) imports testbed.kube.cluster (kube-planner)",
        "testbed.reporting.analysis (reporting) imports testbed.platforms.kind (platforms)",
    ]


def test_the_engine_imports_nothing_of_the_rest() -> None:
    """The load generator runs alone in a pod: only its own modules and the shared leaves."""
    shared = set(GROUPS["shared"])
    for name, targets in graph().items():
        if name.startswith("testbed.loadgen"):
            other = {t for t in targets if not t.startswith("testbed.loadgen") and t not in shared}
            assert not other, f"{name} imports {sorted(other)}"


def test_every_folder_says_what_it_holds_and_may_import() -> None:
    """Each folder's `__init__` docstring is its one-paragraph map: what lives there, what it may import."""
    for init in PACKAGE.rglob("__init__.py"):
        doc = ast.get_docstring(ast.parse(init.read_text())) or ""
        assert "import" in doc.lower(), f"{init.relative_to(PACKAGE.parent)}: no word on what it may import"
