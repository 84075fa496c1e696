"""kind cluster configurations: `manifests/kind/*.yaml` with the cluster name filled in."""

from __future__ import annotations

import re
import string
from pathlib import Path

from testbed.errors import UsageError
from testbed.meshes import ALL_MESHES
from testbed.paths import ROOT

#: The templates: the repository's `manifests/kind/`.
KIND_DIR = ROOT / "manifests" / "kind"

# kind's own rule for cluster names (kubernetes-sigs/kind v0.32.0, pkg/internal/apis/config/validate.go).
_NAME_RE = re.compile(r"^[a-z0-9.-]+$")
# kind warns above this: the node containers' host names get "-control-plane" appended
# (pkg/cluster/internal/create/create.go, clusterNameMax).
_NAME_MAX = 50


def template_name(mesh: str) -> str:
    """The template a mesh's cluster is made from: Cilium, encrypted or not, brings its own CNI and
    replaces kube-proxy."""
    if mesh not in ALL_MESHES:
        raise UsageError(f"unknown mesh {mesh!r} (known: {', '.join(ALL_MESHES)})")
    return "cluster-cilium.yaml" if mesh in ("cilium", "cilium-plain") else "cluster.yaml"


def render(template: str, *, name: str) -> str:
    """The template with `${name}` replaced by the cluster name; any other placeholder is an error."""
    if not _NAME_RE.match(name) or len(name) > _NAME_MAX:
        raise UsageError(
            f"kind cluster name {name!r}: use at most {_NAME_MAX} lowercase letters, digits, '.' and '-'"
        )
    return string.Template(template).substitute(name=name)


def kind_config(mesh: str, *, name: str, directory: Path = KIND_DIR) -> str:
    """The kind configuration for a cluster called `name` that will run `mesh`."""
    return render((directory / template_name(mesh)).read_text(), name=name)
