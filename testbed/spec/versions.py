"""Every pinned version (`manifests/versions.toml`), read once and validated field by field."""

from __future__ import annotations

import re
import string
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any, Literal, cast

from testbed import paths
from testbed.errors import ConfigError
from testbed.paths import ROOT

VERSIONS_FILE = ROOT / "manifests" / "versions.toml"

ChecksumFormat = Literal["sha256sum", "bare", "github-release"]
CHECKSUM_FORMATS: tuple[ChecksumFormat, ...] = ("sha256sum", "bare", "github-release")

#: The architectures every tool template is verified for (Linux only).
ARCHES = ("amd64", "arm64")

_NODE_IMAGE = re.compile(r"^kindest/node:(?P<tag>v(?P<major>\d+)\.(?P<minor>\d+)\.\d+)@sha256:[0-9a-f]{64}$")
_SEMVER = re.compile(r"^v?(?P<major>\d+)\.(?P<minor>\d+)\.(?P<patch>\d+)$")
_EDGE = re.compile(r"^edge-(?P<yy>\d\d)\.(?P<month>\d{1,2})\.(?P<n>\d+)$")
#: An image repository prefix with its registry host and no tag, e.g. quay.io/cilium (lowercase, as
#: distribution/reference's grammar requires of repository paths).
_REGISTRY = re.compile(r"^[a-z0-9][a-z0-9.-]*\.[a-z0-9.-]+(:\d+)?(/[a-z0-9]+([._-][a-z0-9]+)*)+$")
_DIGEST = re.compile(r"^sha256:[0-9a-f]{64}$")
_IMAGE_TAG = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")  # distribution/reference's tag grammar


@dataclass(frozen=True, kw_only=True)
class Tool:
    """A pinned CLI: where to download it for an architecture, and where its vendor publishes the digest."""

    name: str
    version: str
    url: str
    checksum_url: str
    checksum_format: ChecksumFormat
    member: str | None = None

    def download_url(self, arch: str) -> str:
        return self.url.format(version=self.version, arch=arch)

    def checksum_file_url(self, arch: str) -> str:
        return self.checksum_url.format(version=self.version, arch=arch)

    def asset_name(self, arch: str) -> str:
        """The file name of the download, as checksum files and release assets name it."""
        return self.download_url(arch).rsplit("/", 1)[-1]

    def archive_member(self, arch: str) -> str | None:
        """The binary's path inside the .tar.gz download, or None when the download is the binary."""
        return None if self.member is None else self.member.format(version=self.version, arch=arch)


@dataclass(frozen=True, kw_only=True)
class Kubernetes:
    node_image: str
    version: str  # the node image's tag, e.g. v1.35.0
    minor: tuple[int, int]


@dataclass(frozen=True, kw_only=True)
class Istio:
    version: str
    chart_repo: str
    hub: str  # the release images' repository prefix: HUB/pilot:VERSION and so on


@dataclass(frozen=True, kw_only=True)
class Linkerd:
    version: str
    chart_version: str
    chart_repo: str
    image_registry: str  # REGISTRY/controller:VERSION and REGISTRY/proxy:VERSION


@dataclass(frozen=True, kw_only=True)
class Cilium:
    version: str
    chart_repo: str
    image_registry: str
    #: The digests the chart pins (`image.digest`, `operator.image.genericDigest`, `envoy.image`).
    agent_digest: str
    operator_generic_digest: str
    envoy_tag: str
    envoy_digest: str


@dataclass(frozen=True, kw_only=True)
class GatewayApi:
    version: str
    linkerd_version: str
    install_url_template: str

    def install_url(self, version: str | None = None) -> str:
        """The standard-channel CRDs; `version` defaults to the pin (pass `linkerd_version` for Linkerd)."""
        return self.install_url_template.format(version=version or self.version)


@dataclass(frozen=True, kw_only=True)
class MetricsServer:
    chart_version: str
    app_version: str
    chart_repo: str


@dataclass(frozen=True, kw_only=True)
class Versions:
    """The whole of `manifests/versions.toml`."""

    kubernetes: Kubernetes
    python_image: str
    istio: Istio
    linkerd: Linkerd
    cilium: Cilium
    gateway_api: GatewayApi
    metrics_server: MetricsServer
    tools: Mapping[str, Tool]
    source: Path

    @property
    def node_image(self) -> str:
        return self.kubernetes.node_image

    def tool(self, name: str) -> Tool:
        try:
            return self.tools[name]
        except KeyError:
            known = ", ".join(self.tools)
            raise ConfigError(f"{self.source}: no pinned tool {name!r} (known: {known})") from None


# Each table's keys (all strings), and whether each is required.
_TABLES: dict[str, dict[str, bool]] = {
    "kubernetes": {"node_image": True},
    "images": {"python": True},
    "istio": {"version": True, "chart_repo": True, "hub": True},
    "linkerd": {"version": True, "chart_version": True, "chart_repo": True, "image_registry": True},
    "cilium": {
        "version": True,
        "chart_repo": True,
        "image_registry": True,
        "agent_digest": True,
        "operator_generic_digest": True,
        "envoy_tag": True,
        "envoy_digest": True,
    },
    "gateway_api": {"version": True, "linkerd_version": True, "install_url": True},
    "metrics_server": {"chart_version": True, "app_version": True, "chart_repo": True},
}
_TOOL_KEYS: dict[str, bool] = {
    "version": True,
    "url": True,
    "checksum_url": True,
    "checksum_format": True,
    "member": False,
}
_TOOL_PLACEHOLDERS = frozenset({"version", "arch"})
#: The CLIs the kind platform needs; each must be pinned.
REQUIRED_TOOLS = ("kind", "kubectl", "helm", "istioctl", "linkerd", "cilium")


def load_versions(path: Path | None = None) -> Versions:
    """Read and validate the pins (default `manifests/versions.toml`)."""
    path = VERSIONS_FILE if path is None else Path(path)
    try:
        text = path.read_text()
    except OSError as e:
        raise ConfigError(f"{path}: cannot read the version pins: {e.strerror}" + paths.hint()) from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{path}: not valid TOML: {e}") from None
    return parse_versions(data, path=path)


def parse_versions(data: Mapping[str, Any], *, path: Path) -> Versions:
    """Validate the parsed TOML; every error names the file and the field."""
    for key in data:
        if key not in _TABLES and key != "tools":
            raise _fail(path, key, f"unknown table (expected one of: {', '.join([*_TABLES, 'tools'])})")
    tables: dict[str, dict[str, str]] = {}
    for name, keys in _TABLES.items():
        if name not in data:
            raise _fail(path, name, "missing table")
        tables[name] = _table(path, name, data[name], keys)
    for name in ("istio", "linkerd", "cilium", "metrics_server"):
        _url(path, f"{name}.chart_repo", tables[name]["chart_repo"], frozenset())
    _image_pins(path, tables)

    kubernetes = _kubernetes(path, tables["kubernetes"])
    istio = Istio(**tables["istio"])
    _semver(path, "istio.version", istio.version, v=False)
    linkerd = _linkerd(path, tables["linkerd"])
    cilium = Cilium(**tables["cilium"])
    _semver(path, "cilium.version", cilium.version, v=False)
    gateway = tables["gateway_api"]
    _semver(path, "gateway_api.version", gateway["version"], v=True)
    _semver(path, "gateway_api.linkerd_version", gateway["linkerd_version"], v=True)
    _url(path, "gateway_api.install_url", gateway["install_url"], frozenset({"version"}))
    metrics = MetricsServer(**tables["metrics_server"])
    _semver(path, "metrics_server.chart_version", metrics.chart_version, v=False)
    _semver(path, "metrics_server.app_version", metrics.app_version, v=False)

    raw_tools = data.get("tools")
    if not isinstance(raw_tools, dict):
        raise _fail(path, "tools", "missing table" if raw_tools is None else "must be a table of tools")
    tools = {name: _tool(path, name, raw) for name, raw in raw_tools.items()}
    _check_tools(path, tools, kubernetes=kubernetes, istio=istio, linkerd=linkerd)

    return Versions(
        kubernetes=kubernetes,
        python_image=tables["images"]["python"],
        istio=istio,
        linkerd=linkerd,
        cilium=cilium,
        gateway_api=GatewayApi(
            version=gateway["version"],
            linkerd_version=gateway["linkerd_version"],
            install_url_template=gateway["install_url"],
        ),
        metrics_server=metrics,
        tools=MappingProxyType(tools),
        source=path,
    )


def _fail(path: Path, field: str, problem: str) -> ConfigError:
    return ConfigError(f"{path}: {field}: {problem}")


def _table(path: Path, name: str, value: Any, keys: Mapping[str, bool]) -> dict[str, str]:
    if not isinstance(value, dict):
        raise _fail(path, name, f"must be a table, got {type(value).__name__}")
    for key, item in value.items():
        if key not in keys:
            raise _fail(path, f"{name}.{key}", f"unknown key (expected one of: {', '.join(keys)})")
        if not isinstance(item, str) or not item.strip():
            raise _fail(path, f"{name}.{key}", "must be a non-empty string")
    for key, required in keys.items():
        if required and key not in value:
            raise _fail(path, f"{name}.{key}", "missing")
    return cast(dict[str, str], value)


def _template(path: Path, field: str, value: str, allowed: frozenset[str]) -> None:
    try:
        names = {name for _, name, _, _ in string.Formatter().parse(value) if name is not None}
    except ValueError as e:
        raise _fail(path, field, f"not a valid template: {e}") from None
    if names - allowed:
        unknown = ", ".join(sorted("{" + n + "}" for n in names - allowed))
        known = ", ".join(sorted("{" + n + "}" for n in allowed)) or "none"
        raise _fail(path, field, f"unknown placeholder {unknown} (allowed: {known})")


def _url(path: Path, field: str, value: str, placeholders: frozenset[str]) -> str:
    if not value.startswith("https://"):
        raise _fail(path, field, f"must be an https:// URL, got {value!r}")
    _template(path, field, value, placeholders)
    return value


def _semver(path: Path, field: str, value: str, *, v: bool) -> re.Match[str]:
    match = _SEMVER.match(value)
    if match is None or value.startswith("v") != v:
        raise _fail(path, field, f"must be a version like {'vX.Y.Z' if v else 'X.Y.Z'}, got {value!r}")
    return match


def _image_pins(path: Path, tables: Mapping[str, Mapping[str, str]]) -> None:
    """The image repositories and digests the meshes' charts use (read by `testbed.kube.images`)."""
    for field, value in (
        ("istio.hub", tables["istio"]["hub"]),
        ("linkerd.image_registry", tables["linkerd"]["image_registry"]),
        ("cilium.image_registry", tables["cilium"]["image_registry"]),
    ):
        if not _REGISTRY.match(value):
            raise _fail(path, field, f"must be a registry host and path like quay.io/cilium, got {value!r}")
    cilium = tables["cilium"]
    for key in ("agent_digest", "operator_generic_digest", "envoy_digest"):
        if not _DIGEST.match(cilium[key]):
            raise _fail(path, f"cilium.{key}", f"must be sha256:<64 hex digits>, got {cilium[key]!r}")
    if not _IMAGE_TAG.match(cilium["envoy_tag"]):
        raise _fail(path, "cilium.envoy_tag", f"not a valid image tag: {cilium['envoy_tag']!r}")


def _kubernetes(path: Path, table: Mapping[str, str]) -> Kubernetes:
    node = _NODE_IMAGE.match(table["node_image"])
    if node is None:
        raise _fail(
            path,
            "kubernetes.node_image",
            "must be kindest/node:vX.Y.Z@sha256:<64 hex digits> (pinned by digest), "
            f"got {table['node_image']!r}",
        )
    return Kubernetes(
        node_image=table["node_image"],
        version=node["tag"],
        minor=(int(node["major"]), int(node["minor"])),
    )


def _linkerd(path: Path, table: Mapping[str, str]) -> Linkerd:
    linkerd = Linkerd(**table)
    edge = _EDGE.match(linkerd.version)
    if edge is None:
        raise _fail(
            path, "linkerd.version", f"must be an edge release like edge-26.8.3, got {linkerd.version!r}"
        )
    # bin/compute-edge-version: edge-YY.M.N ships charts YYYY.M.N.
    expected = f"20{edge['yy']}.{int(edge['month'])}.{edge['n']}"
    if linkerd.chart_version != expected:
        raise _fail(
            path,
            "linkerd.chart_version",
            f"{linkerd.version} ships charts {expected}, got {linkerd.chart_version!r}",
        )
    return linkerd


def _tool(path: Path, name: str, raw: Any) -> Tool:
    field = f"tools.{name}"
    entry = _table(path, field, raw, _TOOL_KEYS)
    url = _url(path, f"{field}.url", entry["url"], _TOOL_PLACEHOLDERS)
    checksum_url = _url(path, f"{field}.checksum_url", entry["checksum_url"], _TOOL_PLACEHOLDERS)
    checksum_format = entry["checksum_format"]
    if checksum_format not in CHECKSUM_FORMATS:
        raise _fail(
            path,
            f"{field}.checksum_format",
            f"must be one of {', '.join(CHECKSUM_FORMATS)}, got {checksum_format!r}",
        )
    member = entry.get("member")
    if member is not None:
        _template(path, f"{field}.member", member, _TOOL_PLACEHOLDERS)
        if not url.endswith(".tar.gz"):
            raise _fail(path, f"{field}.member", "only .tar.gz downloads have members")
    elif url.endswith(".tar.gz"):
        raise _fail(path, f"{field}.member", "missing: the download is a .tar.gz, so name the binary in it")
    return Tool(
        name=name,
        version=entry["version"],
        url=url,
        checksum_url=checksum_url,
        checksum_format=checksum_format,
        member=member,
    )


def _check_tools(
    path: Path, tools: Mapping[str, Tool], *, kubernetes: Kubernetes, istio: Istio, linkerd: Linkerd
) -> None:
    for name in REQUIRED_TOOLS:
        if name not in tools:
            raise _fail(path, f"tools.{name}", "missing (the kind platform needs it)")
    for name in ("kind", "helm", "cilium"):
        _semver(path, f"tools.{name}.version", tools[name].version, v=True)
    kubectl = _semver(path, "tools.kubectl.version", tools["kubectl"].version, v=True)
    if (int(kubectl["major"]), int(kubectl["minor"])) != kubernetes.minor:
        raise _fail(
            path,
            "tools.kubectl.version",
            f"{tools['kubectl'].version} is not the node image's minor ({kubernetes.version}): "
            "pin a kubectl of the same minor",
        )
    # The CLI that installs a mesh is that mesh's release: one pin, checked in both places.
    for tool, (table, version) in {
        "istioctl": ("istio", istio.version),
        "linkerd": ("linkerd", linkerd.version),
    }.items():
        if tools[tool].version != version:
            raise _fail(
                path,
                f"tools.{tool}.version",
                f"{tools[tool].version!r} is not {table}.version {version!r}: pin the same release",
            )
