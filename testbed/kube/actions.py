"""The vocabulary of a Kubernetes plan: its actions (commands, files, checks), what a mesh plans with, and
the names kind gives clusters, contexts, nodes and the testbed image. Pure data, no I/O.

A leaf: the planner (`testbed.kube.cluster`, `trial`) and every mesh (`testbed.meshes.*.kube`) import
it, and it imports neither, so that the plan can ask the meshes for their steps without an import cycle.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from testbed import __version__
from testbed.kube import manifests as m
from testbed.paths import ROOT
from testbed.spec.versions import Versions

#: The source checkout the image is built from (the Dockerfile copies testbed/ and scenarios/).
SOURCE = ROOT

#: `kubectl rollout status --timeout` (a Go duration), and the command's own timeout a little above it.
ROLLOUT_TIMEOUT = "5m"
ROLLOUT_TIMEOUT_S = 330.0


@dataclass(frozen=True)
class IfFile:
    """A condition looked at when the step is reached: `path` exists (or, with `exists=False`, does not)."""

    path: Path
    exists: bool = True

    def holds(self) -> bool:
        return self.path.exists() == self.exists

    def describe(self) -> str:
        return f"only if {self.path} {'is present' if self.exists else 'is absent'}"


@dataclass(frozen=True, kw_only=True)
class Step:
    """One external command: why, what, for how long at most, and what it reads on stdin."""

    description: str
    argv: tuple[str, ...]
    timeout_s: float
    stdin: str | None = None
    #: Where its stdout is kept (failure logs, verification); None: read by the platform or dropped.
    output: Path | None = None
    #: Skipped at run time unless this holds (an image archive that `nox -s pull-images` may have saved).
    only_if: IfFile | None = None
    #: A non-zero exit is no error: what it printed is judged by the mesh's checks (`linkerd check`
    #: exits 1 when a check fails). A timeout still is.
    may_fail: bool = False


#: Part of the kind toolset (the issue's preflight list) though no plan of the CLI-based installs runs it:
#: helm, for users who install the charts themselves. Checked, and warned about, never required.
OPTIONAL_TOOLS = ("helm",)


@dataclass(frozen=True, kw_only=True)
class Pipe:
    """`producer | consumer` without a shell: the producer's stdout becomes the consumer's stdin.

    Each runs through the one command helper with its own timeout (`linkerd install | kubectl apply -f -`).
    """

    description: str
    producer: Step
    consumer: Step


@dataclass(frozen=True, kw_only=True)
class MakeFiles:
    """Files that a function of the testbed makes at run time (Linkerd's certificates): named, not shown."""

    description: str
    paths: tuple[Path, ...]
    make: Callable[[], object]


@dataclass(frozen=True, kw_only=True)
class WriteFile:
    """A file the commands after it read (the kind configuration, the manifests)."""

    description: str
    path: Path
    text: str


@dataclass(frozen=True, kw_only=True)
class BuildImage:
    """The testbed image, built by the Docker layer (`testbed.kube.docker.build_image`)."""

    description: str
    context: Path
    tag: str
    build_args: tuple[tuple[str, str], ...]
    timeout_s: float

    def argv(self) -> tuple[str, ...]:
        """The equivalent `docker build` command, for the plan."""
        args = [arg for name, value in self.build_args for arg in ("--build-arg", f"{name}={value}")]
        return ("docker", "build", "--tag", self.tag, *args, str(self.context))


@dataclass(frozen=True, kw_only=True)
class Check:
    """A preflight check that the platform runs by `name`; `argv` is the command it runs, if any."""

    description: str
    name: str
    argv: tuple[str, ...] = ()
    timeout_s: float = 30.0
    #: The CLIs that the `tools` check resolves and compares with their pins.
    tools: tuple[str, ...] = ()
    #: CLIs of the toolset that this plan does not run: a warning when missing or not the pin, not an error.
    optional_tools: tuple[str, ...] = ()


Action = Step | WriteFile | BuildImage | Check | Pipe | MakeFiles


@dataclass(frozen=True, kw_only=True)
class MeshContext:
    """What a mesh plans its install and verification with."""

    kubectl: tuple[str, ...]  # `kubectl --context C`
    context: str
    cluster: str | None  # the kind cluster, None on `existing`
    namespace: str
    versions: Versions
    workdir: Path
    #: The testbed image (the plaintext probe runs it) and the URL the load generator calls.
    image: str
    target_url: str
    #: The topology's services (their Deployments), leaves first.
    services: tuple[str, ...]
    #: The Deployments that call others: the load generator, then every service with downstreams.
    callers: tuple[str, ...]
    #: Every call as (caller, callee) Deployments: the load generator's to the entry, then each
    #: service's to its downstreams (`manifests.call_edges`); each must cross nodes.
    edges: tuple[tuple[str, str], ...]
    #: The mesh's image archive, loaded into the nodes when present; None: the mesh pulls (or has none).
    archive: Path | None = None


def cluster_name(mesh: str) -> str:
    return f"testbed-{mesh}"


def kind_context(cluster: str) -> str:
    """The kubeconfig context that `kind create cluster` writes."""
    return f"kind-{cluster}"


def kind_nodes(cluster: str, workers: int = len(m.NODE_ROLES)) -> tuple[str, ...]:
    """The node (and node container) names kind gives a control plane and `workers` workers.

    By default the three workers of `manifests/kind/*.yaml`, in their order there (apps-a, apps-b,
    loadgen): kind names nodes in config order, counting per role (kubernetes-sigs/kind v0.32.0
    pkg/cluster/internal/providers/common/namer.go MakeNodeNamer, called over cfg.Nodes in
    pkg/cluster/internal/providers/docker/provision.go planCreation; namer_test.go: `ab1-worker`,
    `ab1-worker2`, `ab1-worker3`).
    """
    return (
        f"{cluster}-control-plane",
        *(f"{cluster}-worker{i if i > 1 else ''}" for i in range(1, workers + 1)),
    )


def image_tag(python_image: str, source: Path = SOURCE, *, version: str = __version__) -> str:
    """The testbed image's tag, `testbed:VERSION-HASH`: HASH covers everything the image is built from.

    Never `latest` (kind would pull it again), and never the version alone: with `--reuse`, pods whose
    spec names an unchanged tag keep running the old code (imagePullPolicy IfNotPresent), whereas a new
    tag changes the Deployments, which then roll out the new image.
    """
    return f"testbed:{version}-{image_content_hash(python_image, source)}"


#: What the Dockerfile copies into the image (its COPY sources) and the Dockerfile itself: the paths the
#: tag's hash covers (a test checks them against the Dockerfile's COPY lines).
IMAGE_CONTEXT = (
    "Dockerfile",
    "pyproject.toml",
    "README.md",
    "requirements/image.txt",
    "testbed",
    "scenarios",
)
IMAGE_HASH_LENGTH = 12


def _image_context_files(source: Path) -> list[str]:
    """The files of `IMAGE_CONTEXT` under `source` (relative, sorted), less what .dockerignore leaves out."""
    found: list[str] = []
    for entry in IMAGE_CONTEXT:
        path = source / entry
        if path.is_file():
            found.append(entry)
        elif path.is_dir():
            relative = (file.relative_to(source) for file in path.rglob("*") if file.is_file())
            found += [
                name.as_posix()
                for name in relative
                # .dockerignore: `**/__pycache__/` and `*.egg-info/` are not in the build context.
                if not any(part == "__pycache__" or part.endswith(".egg-info") for part in name.parts)
            ]
    return sorted(found)


def image_content_hash(python_image: str, source: Path = SOURCE) -> str:
    """A short SHA-256 of the base image pin and each context file's path and bytes: a pure function."""
    digest = hashlib.sha256(f"PYTHON_IMAGE={python_image}\n".encode())
    for name in _image_context_files(source):
        digest.update(f"{name}\0{hashlib.sha256((source / name).read_bytes()).hexdigest()}\n".encode())
    return digest.hexdigest()[:IMAGE_HASH_LENGTH]
