"""The package as a user installs it: `pip install .`, no extras, runs every command that needs no cluster.

The test extra brings packages of its own (kubernetes-validate brings PyYAML, for one), so a green suite can
hide a runtime dependency that `[project].dependencies` lacks: every kind session once crashed at import on
`yaml`. Two guards: every third-party module the package imports belongs to a declared dependency (or one
of theirs), read from the code; and a fresh venv with `pip install .` runs the commands themselves.
"""

from __future__ import annotations

import ast
import importlib.metadata as md
import os
import re
import shutil
import subprocess
import sys
import tomllib
import venv
from collections.abc import Iterator
from pathlib import Path

import pytest
from packaging.requirements import Requirement

from testbed.kube.images import CONFIGURATIONS
from testbed.meshes.kube import KUBE_MESHES

REPO = Path(__file__).resolve().parent.parent
PACKAGE = REPO / "testbed"


def _canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def imported_modules() -> dict[str, list[str]]:
    """Top-level modules imported anywhere in the package (inside functions too), with where."""
    found: dict[str, list[str]] = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            names: list[str] = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            for name in names:
                top = name.split(".")[0]
                found.setdefault(top, []).append(f"{path.relative_to(REPO)}:{node.lineno}")
    return found


def declared_closure() -> set[str]:
    """`[project].dependencies` and, recursively, what they require (no extras): what `pip install .` gets."""
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    todo = [Requirement(text) for text in project["dependencies"]]
    seen: set[str] = set()
    while todo:
        requirement = todo.pop()
        name = _canonical(requirement.name)
        if name in seen or (
            requirement.marker is not None and not requirement.marker.evaluate({"extra": ""})
        ):
            continue
        seen.add(name)
        try:
            requires = md.requires(requirement.name) or []
        except md.PackageNotFoundError:
            continue
        todo += [Requirement(text) for text in requires]
    return seen


def test_every_third_party_import_is_a_runtime_dependency() -> None:
    distributions = md.packages_distributions()
    closure = declared_closure()
    missing = {}
    for module, where in imported_modules().items():
        if module in sys.stdlib_module_names or module in {"testbed", "__future__"}:
            continue
        owners = {_canonical(d) for d in distributions.get(module, [])}
        assert owners, f"{module} ({where[0]}) is imported but installed by no distribution here"
        if not owners & closure:
            missing[module] = (sorted(owners), where[0])
    assert not missing, f"imported but not brought by [project].dependencies: {missing}"


def test_the_guard_sees_a_missing_dependency(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without PyYAML declared, the import guard above fails (yaml is imported by the kind plan)."""
    real = tomllib.loads

    def without_yaml(text: str) -> dict[str, object]:
        data = real(text)
        project = data.get("project")
        if isinstance(project, dict):
            project["dependencies"] = [d for d in project["dependencies"] if not d.startswith("PyYAML")]
        return data

    monkeypatch.setattr(tomllib, "loads", without_yaml)
    with pytest.raises(AssertionError, match="yaml"):
        test_every_third_party_import_is_a_runtime_dependency()


# --- a real venv -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def plain_venv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A fresh venv with `pip install REPO`: no extras, no editable install (the package is copied)."""
    root = tmp_path_factory.mktemp("plain-venv")
    venv.create(root / "venv", with_pip=True)
    python = root / "venv" / "bin" / "python"
    # The working tree as it is now, copied, so that pip's in-tree build leaves nothing in it.
    source = root / "src"
    _copy_tree(REPO, source)
    subprocess.run(
        [str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check", str(source)],
        check=True,
        timeout=900,
    )
    yield root


def _copy_tree(src: Path, dest: Path) -> None:
    dest.mkdir(parents=True)
    for item in ("testbed", "scenarios", "manifests", "pyproject.toml", "README.md", "Dockerfile"):
        target = dest / item
        if (src / item).is_dir():
            shutil.rmtree(target, ignore_errors=True)
            shutil.copytree(src / item, target, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(src / item, target)


def _run(root: Path, *argv: str, cwd: Path, home: bool = False) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "VIRTUAL_ENV", "TESTBED_"))}
    env["PATH"] = f"{root / 'venv' / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    if home:
        env["TESTBED_HOME"] = str(root / "src")
    done = subprocess.run(
        list(argv), cwd=cwd, env=env, capture_output=True, text=True, timeout=300, check=False
    )
    assert done.returncode == 0, (
        f"{' '.join(argv)} (in {cwd}) exited {done.returncode}:\n{done.stderr[-3000:]}"
    )
    return done


def _kube_configurations() -> list[tuple[str, ...]]:
    configurations = [("--mesh", name) for name in KUBE_MESHES]
    return [*configurations, ("--mesh", "istio-ambient", "--waypoint")]


@pytest.mark.slow
def test_commands_without_a_cluster_run_after_a_plain_install(plain_venv: Path, tmp_path: Path) -> None:
    root = plain_venv
    checkout = root / "src"
    python = str(root / "venv" / "bin" / "python")
    # The console script from the checkout (as a user who cloned it), `python -m` from elsewhere with
    # TESTBED_HOME: in neither does Python import the checkout's own package instead of the installed one.
    import_check = _run(root, python, "-c", "import testbed; print(testbed.__file__)", cwd=tmp_path)
    assert "site-packages" in import_check.stdout, import_check.stdout

    def dry_run(*platform: str, configuration: tuple[str, ...]) -> str:
        argv = ("testbed", "--quiet", "run", *platform, *configuration, "--scenario", "steady", "--dry-run")
        return _run(root, *argv, "--out", str(tmp_path / "dry"), cwd=checkout).stdout

    for configuration in _kube_configurations():
        done = dry_run("--platform", "kind", configuration=configuration)
        assert "kind create cluster" in done, configuration
        if not KUBE_MESHES[configuration[1]].replaces_cni:  # a CNI of its own is refused on existing
            done = dry_run("--platform", "existing", "--context", "my-cluster", configuration=configuration)
            assert "--context my-cluster" in done, configuration
    for config in CONFIGURATIONS:
        listed = _run(root, "testbed", "images", "--mesh", config, cwd=checkout)
        assert listed.stdout.strip(), config
    _run(root, python, "-m", "testbed.kube.images", "--help", cwd=tmp_path, home=True)
    _run(root, python, "-m", "testbed.kube.tools", "--help", cwd=tmp_path, home=True)
    # A small real run on the local platform (no Docker), then the report commands on it.
    results = tmp_path / "results"
    # smoke's load, judged with a lateness limit a busy CI host meets: `compare` needs a valid trial, and
    # this test is about the install, not about the host's wake-up latency (a 2 ms limit failed once in CI).
    smoke = (checkout / "scenarios" / "smoke.toml").read_text()
    scenario = tmp_path / "smoke-lenient.toml"
    scenario.write_text(smoke + "max_lateness_ms = 50\n")
    _run(
        root,
        "testbed",
        "--quiet",
        "run",
        "--platform",
        "local",
        "--mesh",
        "none",
        "--scenario",
        str(scenario),
        "--out",
        str(results),
        "--run-id",
        "plain",
        cwd=checkout,
    )
    run_dir = results / "plain"
    _run(root, "testbed", "report", str(run_dir), cwd=tmp_path, home=True)
    _run(root, "testbed", "report", str(run_dir), "--format", "smp", cwd=tmp_path, home=True)
    compared = _run(root, "testbed", "compare", str(run_dir), str(run_dir), cwd=tmp_path, home=True)
    assert compared.stdout.strip()
    for name in ("report.html", "report.md", "summary.json", "smp.json"):
        assert (run_dir / name).is_file(), name


@pytest.mark.slow
def test_a_plain_install_elsewhere_says_where_the_checkout_is(plain_venv: Path, tmp_path: Path) -> None:
    """Outside the checkout, with no TESTBED_HOME: one line that says how to fix it, exit 2."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "VIRTUAL_ENV", "TESTBED_"))}
    env["PATH"] = f"{plain_venv / 'venv' / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    done = subprocess.run(
        [
            str(plain_venv / "venv" / "bin" / "testbed"),
            "run",
            "--platform",
            "kind",
            "--mesh",
            "none",
            "--dry-run",
        ],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "TESTBED_HOME" in lines[0], done.stderr
