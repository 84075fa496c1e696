"""The version pins and the pinned CLIs: parsing, download and verification (on loopback only), checks."""

from __future__ import annotations

import functools
import hashlib
import http.server
import io
import json
import os
import sys
import tarfile
import threading
import urllib.parse
from collections.abc import Iterator
from pathlib import Path
from typing import IO

import pytest

from testbed.errors import ConfigError, TestbedError, UsageError
from testbed.kube import tools
from testbed.spec.versions import VERSIONS_FILE, Versions, load_versions

ARCH = "amd64"  # explicit, so that the tests do not depend on the machine running them

# Outputs of the real CLIs at the pinned versions. Shapes (and every value derived from a source
# file) as printed by: kind pkg/cmd/kind/version/version.go at v0.32.0 (Go from .go-version);
# kubectl pkg/cmd/version/version.go + apimachinery pkg/version/types.go at v0.35.7 (json.MarshalIndent,
# empty emulation fields omitted; gitCommit and buildDate are illustrative); helm pkg/cmd/version.go
# at v4.2.4 (`%s+g%s` with the tag's commit); istio pkg/version/cobra.go at 1.30.3 (istioctl sets
# --short); linkerd cli/cmd/version.go at edge-26.8.3; cilium-cli version.go at v0.19.7 (Go from its
# Makefile's build image, default image = newest embedded chart; "unknown" when offline).
KIND_OUTPUT = "kind v0.32.0 go1.26.3 linux/amd64\n"
KUBECTL_OUTPUT = """{
  "clientVersion": {
    "major": "1",
    "minor": "35",
    "gitVersion": "v1.35.7",
    "gitCommit": "4b5c1e2f7a8d9c0b1a2e3f4d5c6b7a8e9f0d1c2b",
    "gitTreeState": "clean",
    "buildDate": "2026-07-22T10:12:31Z",
    "goVersion": "go1.25.9",
    "compiler": "gc",
    "platform": "linux/amd64"
  },
  "kustomizeVersion": "v5.7.1"
}
"""
HELM_OUTPUT = "v4.2.4+g3900f43\n"
ISTIOCTL_OUTPUT = "client version: 1.30.3\n"
LINKERD_OUTPUT = "edge-26.8.3\n"
CILIUM_OUTPUT = (
    "cilium-cli: v0.19.7 compiled with go1.26.5 on linux/amd64\n"
    "cilium image (default): v1.19.5\n"
    "cilium image (stable): unknown\n"
)


@pytest.fixture(autouse=True)
def loopback_only(monkeypatch: pytest.MonkeyPatch) -> None:
    """An accidental real download fails the test instead of reaching the internet."""
    real_open = tools._open

    def guarded(
        url: str, *, timeout: float, accept: str | None = None, authorization: str | None = None
    ) -> IO[bytes]:
        host = urllib.parse.urlsplit(url).hostname
        assert host == "127.0.0.1", f"a test tried to reach {url}"
        return real_open(url, timeout=timeout, accept=accept, authorization=authorization)

    monkeypatch.setattr(tools, "_open", guarded)


class Mirror:
    """A directory served over HTTP on loopback, recording every path requested (and its Authorization)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.requests: list[str] = []
        self.authorization: dict[str, str | None] = {}
        #: Paths answered with this status instead of the file (e.g. GitHub's rate limit, 403).
        self.status: dict[str, int] = {}
        mirror = self

        class Handler(http.server.SimpleHTTPRequestHandler):
            def do_GET(self) -> None:
                mirror.requests.append(self.path)
                mirror.authorization[self.path] = self.headers.get("Authorization")
                if self.path in mirror.status:
                    self.send_error(mirror.status[self.path])
                    return
                super().do_GET()

            def log_message(self, format: str, *args: object) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(
            ("127.0.0.1", 0), functools.partial(Handler, directory=str(root))
        )
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()
        self.base = f"http://127.0.0.1:{self.server.server_address[1]}"

    def publish(self, url: str, data: bytes) -> None:
        """Serve `data` at the path of a real URL (the scheme and host are what `url_base` replaces)."""
        target = self.root / urllib.parse.urlsplit(url).path.lstrip("/")
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=10)


@pytest.fixture
def mirror(tmp_path: Path) -> Iterator[Mirror]:
    root = tmp_path / "www"
    root.mkdir()
    server = Mirror(root)
    yield server
    server.stop()


@pytest.fixture
def versions() -> Versions:
    return load_versions()


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def tarball(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for name, content in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(content)
            info.mode = 0o644
            tar.addfile(info, io.BytesIO(content))
    return buffer.getvalue()


def publish_tool(mirror: Mirror, versions: Versions, name: str, binary: bytes, *, digest: str = "") -> bytes:
    """Publish a fake build of a pinned tool, and its checksum in the vendor's format; return the asset."""
    tool = versions.tool(name)
    member = tool.archive_member(ARCH)
    asset = binary if member is None else tarball({"LICENSE": b"license\n", member: binary})
    digest = digest or sha256(asset)
    name_in_file = tool.asset_name(ARCH)
    checksum = {
        "bare": f"{digest}\n",
        # Istio writes one space, sha256sum and shasum two: both must parse.
        "sha256sum": f"{digest} {name_in_file}\n" if name == "istioctl" else f"{digest}  {name_in_file}\n",
        "github-release": json.dumps(
            {
                "tag_name": tool.version,
                "assets": [
                    {"name": f"{name_in_file}-other", "digest": "sha256:" + "0" * 64},
                    {"name": name_in_file, "digest": f"sha256:{digest}"},
                ],
            }
        ),
    }[tool.checksum_format]
    mirror.publish(tool.download_url(ARCH), asset)
    mirror.publish(tool.checksum_file_url(ARCH), checksum.encode())
    return asset


def files_under(directory: Path) -> list[Path]:
    return [p for p in directory.rglob("*") if p.is_file()] if directory.exists() else []


# --- versions.toml -------------------------------------------------------------------------------


def test_the_real_pins_parse(versions: Versions) -> None:
    assert versions.node_image == (
        "kindest/node:v1.35.5@sha256:ce977ae6d65918d0b58a5f8b5e940429c2ce42fa3a5619ec2bbc60b949c0ac95"
    )
    assert versions.kubernetes.version == "v1.35.5"
    assert versions.kubernetes.minor == (1, 35)
    assert versions.istio.version == "1.30.3"
    assert (versions.linkerd.version, versions.linkerd.chart_version) == ("edge-26.8.3", "2026.8.3")
    assert versions.cilium.version == "1.20.0"
    assert versions.gateway_api.install_url() == (
        "https://github.com/kubernetes-sigs/gateway-api/releases/download/v1.5.1/standard-install.yaml"
    )
    # Linkerd edge-26.8.3's own install error names v1.5.1 (pkg/healthcheck/healthcheck.go).
    assert versions.gateway_api.install_url(versions.gateway_api.linkerd_version).endswith(
        "/v1.5.1/standard-install.yaml"
    )
    assert (versions.metrics_server.chart_version, versions.metrics_server.app_version) == ("3.13.1", "0.8.1")
    assert versions.python_image.startswith("python:3.11")
    assert set(versions.tools) >= {"kind", "kubectl", "helm", "istioctl", "linkerd", "cilium"}


@pytest.mark.parametrize(
    ("name", "asset", "checksum_file"),
    [
        ("kind", "kind-linux-{arch}", "kind-linux-{arch}.sha256sum"),
        ("kubectl", "kubectl", "kubectl.sha256"),
        ("helm", "helm-v4.2.4-linux-{arch}.tar.gz", "helm-v4.2.4-linux-{arch}.tar.gz.sha256sum"),
        ("istioctl", "istioctl-1.30.3-linux-{arch}.tar.gz", "istioctl-1.30.3-linux-{arch}.tar.gz.sha256"),
        ("linkerd", "linkerd2-cli-edge-26.8.3-linux-{arch}", "edge-26.8.3"),
        ("cilium", "cilium-linux-{arch}.tar.gz", "cilium-linux-{arch}.tar.gz.sha256sum"),
    ],
)
@pytest.mark.parametrize("arch", ["amd64", "arm64"])
def test_release_asset_names(
    versions: Versions, name: str, asset: str, checksum_file: str, arch: str
) -> None:
    tool = versions.tool(name)
    assert tool.asset_name(arch) == asset.format(arch=arch)
    assert tool.checksum_file_url(arch).rsplit("/", 1)[-1] == checksum_file.format(arch=arch)
    assert tool.download_url(arch).startswith("https://")
    assert f"/{arch}/" in tool.download_url(arch) or f"-{arch}" in tool.download_url(arch)


def test_tar_members(versions: Versions) -> None:
    assert versions.tool("helm").archive_member("arm64") == "linux-arm64/helm"
    assert versions.tool("istioctl").archive_member(ARCH) == "istioctl"
    assert versions.tool("cilium").archive_member(ARCH) == "cilium"
    assert versions.tool("kind").archive_member(ARCH) is None


@pytest.mark.parametrize(
    ("old", "new", "field"),
    [
        ('checksum_format = "bare"', 'checksum_format = "md5"', "tools.kubectl.checksum_format"),
        ('member = "linux-{arch}/helm"\n', "", "tools.helm.member"),
        ('version = "v1.35.7"', 'version = "v1.34.2"', "tools.kubectl.version"),
        ('chart_version = "2026.8.3"', 'chart_version = "2026.8.2"', "linkerd.chart_version"),
        ("@sha256:ce977ae6", "@sha256:ce97", "kubernetes.node_image"),
        ('version = "1.30.3"\nchart_repo', 'version = "1.30.2"\nchart_repo', "tools.istioctl.version"),
        (
            'https://get.helm.sh/helm-{version}-linux-{arch}.tar.gz"',
            'http://x/{version}.tar.gz"',
            "tools.helm.url",
        ),
        ('kind-linux-{arch}"', 'kind-{os}-{arch}"', "tools.kind.url"),
        ('python = "', 'pyhton = "', "images.pyhton"),
        ('app_version = "0.8.1"', "app_version = 0.81", "metrics_server.app_version"),
        ("[tools.cilium]", "[tools.cilium-cli]", "tools.cilium"),
    ],
)
def test_a_bad_field_is_named(tmp_path: Path, old: str, new: str, field: str) -> None:
    text = VERSIONS_FILE.read_text()
    assert old in text
    bad = tmp_path / "versions.toml"
    bad.write_text(text.replace(old, new, 1))
    with pytest.raises(ConfigError, match=f": {field}: ") as e:
        load_versions(bad)
    assert str(bad) in e.value.message


def test_not_toml(tmp_path: Path) -> None:
    bad = tmp_path / "versions.toml"
    bad.write_text("[kubernetes\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_versions(bad)


# --- Download and verification ------------------------------------------------------------------


def test_download_verify_and_install(tmp_path: Path, mirror: Mirror, versions: Versions) -> None:
    binaries = {name: f"#!/bin/sh\necho {name}\n".encode() for name in versions.tools}
    assets = {name: publish_tool(mirror, versions, name, binary) for name, binary in binaries.items()}
    cache = tmp_path / "cache"
    paths = tools.ensure_tools(None, cache, versions=versions, arch=ARCH, url_base=mirror.base)
    assert set(paths) == set(versions.tools)
    for name, path in paths.items():
        assert path == cache / name / versions.tool(name).version / name
        assert path.read_bytes() == binaries[name]
        assert os.access(path, os.X_OK)
        marker = json.loads((path.parent / tools.MARKER).read_text())
        assert marker["sha256"] == sha256(assets[name])
        assert marker["binary_sha256"] == sha256(binaries[name])
        assert marker["url"] == versions.tool(name).download_url(ARCH)  # the real URL, not the mirror's
    # Nothing but the installed tools: no scratch directories, no downloaded archives.
    assert sorted(p.name for p in files_under(cache)) == sorted(
        [*versions.tools, *[tools.MARKER] * len(versions.tools)]
    )


def test_checksum_mismatch_installs_nothing(tmp_path: Path, mirror: Mirror, versions: Versions) -> None:
    wrong = "ab" * 32
    asset = publish_tool(mirror, versions, "helm", b"helm binary", digest=wrong)
    cache = tmp_path / "cache"
    with pytest.raises(TestbedError) as e:
        tools.ensure_tools(["helm"], cache, versions=versions, arch=ARCH, url_base=mirror.base)
    message = e.value.message
    assert "\n" not in message
    assert message.startswith("helm v4.2.4: sha256 mismatch")
    assert f"expected {wrong}" in message
    assert f"got {sha256(asset)}" in message
    assert "retry" in message
    assert files_under(cache) == []
    assert list(cache.iterdir()) == []


def test_idempotent_and_repairs_a_damaged_copy(tmp_path: Path, mirror: Mirror, versions: Versions) -> None:
    publish_tool(mirror, versions, "kind", b"kind binary")
    cache = tmp_path / "cache"
    first = tools.ensure_tools(["kind"], cache, versions=versions, arch=ARCH, url_base=mirror.base)
    assert len(mirror.requests) == 2  # the checksum file, then the binary
    again = tools.ensure_tools(["kind"], cache, versions=versions, arch=ARCH, url_base=mirror.base)
    assert again == first
    assert len(mirror.requests) == 2  # verified copy reused: no request at all
    first["kind"].write_bytes(b"damaged")
    tools.ensure_tools(["kind"], cache, versions=versions, arch=ARCH, url_base=mirror.base)
    assert len(mirror.requests) == 4
    assert first["kind"].read_bytes() == b"kind binary"


def test_a_missing_member_is_an_error(tmp_path: Path, mirror: Mirror, versions: Versions) -> None:
    tool = versions.tool("cilium")
    asset = tarball({"README.md": b"no binary here"})
    mirror.publish(tool.download_url(ARCH), asset)
    mirror.publish(tool.checksum_file_url(ARCH), f"{sha256(asset)}  {tool.asset_name(ARCH)}\n".encode())
    cache = tmp_path / "cache"
    with pytest.raises(TestbedError, match=r"cilium v0\.19\.7: cilium-linux-amd64\.tar\.gz has no cilium"):
        tools.ensure_tools(["cilium"], cache, versions=versions, arch=ARCH, url_base=mirror.base)
    assert files_under(cache) == []


def test_an_unpublished_file_is_a_download_error(tmp_path: Path, mirror: Mirror, versions: Versions) -> None:
    with pytest.raises(TestbedError, match=r"kind v0\.32\.0: could not download http://127\.0\.0\.1:\d+/"):
        tools.ensure_tools(["kind"], tmp_path / "cache", versions=versions, arch=ARCH, url_base=mirror.base)


TOKEN = "ghp_testbedFakeToken0123456789"  # noqa: S105 -- made up for the tests


def test_github_token_goes_to_githubs_api_only(monkeypatch: pytest.MonkeyPatch, versions: Versions) -> None:
    api = versions.tool("linkerd").checksum_file_url(ARCH)
    assert urllib.parse.urlsplit(api).hostname == "api.github.com"
    monkeypatch.delenv(tools.TOKEN_ENV, raising=False)
    assert tools._github_authorization(api) is None
    monkeypatch.setenv(tools.TOKEN_ENV, TOKEN)
    assert tools._github_authorization(api) == f"Bearer {TOKEN}"
    for elsewhere in (
        versions.tool("linkerd").download_url(ARCH),  # github.com, then its CDN: no token
        api.replace("https://", "http://"),  # never in clear text
        "https://api.github.com.example.org/repos/x",
        "http://127.0.0.1:8000" + urllib.parse.urlsplit(api).path,  # a mirror
    ):
        assert tools._github_authorization(elsewhere) is None, elsewhere


def _linkerd_paths(versions: Versions) -> tuple[str, str]:
    tool = versions.tool("linkerd")
    return (
        urllib.parse.urlsplit(tool.checksum_file_url(ARCH)).path,
        urllib.parse.urlsplit(tool.download_url(ARCH)).path,
    )


def test_github_token_is_sent_with_the_checksum_lookup_only(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, mirror: Mirror, versions: Versions
) -> None:
    publish_tool(mirror, versions, "linkerd", b"linkerd binary")
    checksum, download = _linkerd_paths(versions)
    # The mirror stands in for GitHub's API: both files come from it, the token only with the lookup.
    monkeypatch.setattr(tools, "GITHUB_API_ORIGINS", frozenset({("http", "127.0.0.1")}))
    monkeypatch.setenv(tools.TOKEN_ENV, TOKEN)
    tools.ensure_tools(["linkerd"], tmp_path / "cache", versions=versions, arch=ARCH, url_base=mirror.base)
    assert mirror.authorization == {checksum: f"Bearer {TOKEN}", download: None}


def test_github_token_never_leaves_for_a_mirror_or_unset(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, mirror: Mirror, versions: Versions
) -> None:
    publish_tool(mirror, versions, "linkerd", b"linkerd binary")
    checksum, download = _linkerd_paths(versions)
    monkeypatch.setenv(tools.TOKEN_ENV, TOKEN)
    tools.ensure_tools(["linkerd"], tmp_path / "one", versions=versions, arch=ARCH, url_base=mirror.base)
    assert mirror.authorization == {checksum: None, download: None}
    monkeypatch.setattr(tools, "GITHUB_API_ORIGINS", frozenset({("http", "127.0.0.1")}))
    monkeypatch.delenv(tools.TOKEN_ENV)
    mirror.authorization.clear()
    tools.ensure_tools(["linkerd"], tmp_path / "two", versions=versions, arch=ARCH, url_base=mirror.base)
    assert mirror.authorization == {checksum: None, download: None}


def test_githubs_rate_limit_says_to_set_the_token(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, mirror: Mirror, versions: Versions
) -> None:
    publish_tool(mirror, versions, "linkerd", b"linkerd binary")
    checksum, _ = _linkerd_paths(versions)
    mirror.status[checksum] = 403
    monkeypatch.delenv(tools.TOKEN_ENV, raising=False)
    with pytest.raises(
        TestbedError, match=f"60 requests an hour per IP without a token: set {tools.TOKEN_ENV}"
    ):
        tools.ensure_tools(
            ["linkerd"], tmp_path / "cache", versions=versions, arch=ARCH, url_base=mirror.base
        )
    monkeypatch.setattr(tools, "GITHUB_API_ORIGINS", frozenset({("http", "127.0.0.1")}))
    monkeypatch.setenv(tools.TOKEN_ENV, TOKEN)
    with pytest.raises(TestbedError) as e:
        tools.ensure_tools(
            ["linkerd"], tmp_path / "cache", versions=versions, arch=ARCH, url_base=mirror.base
        )
    assert "Forbidden" in e.value.message and "without a token" not in e.value.message
    assert TOKEN not in e.value.message


@pytest.mark.parametrize(
    ("fmt", "text", "problem"),
    [
        ("sha256sum", f"{'a' * 64}  other-file\n", "lists no sha256 for kind-linux-amd64"),
        ("sha256sum", "xyz  kind-linux-amd64\n", "is not a sha256"),
        ("bare", "not a digest\n", "not a bare sha256 digest"),
        ("github-release", "<html>", "not JSON"),
        ("github-release", '{"assets": [{"name": "kind-linux-amd64", "digest": null}]}', "no sha256 digest"),
    ],
)
def test_bad_checksum_files(versions: Versions, fmt: str, text: str, problem: str) -> None:
    with pytest.raises(TestbedError, match=problem):
        tools.parse_checksum(text, fmt, asset="kind-linux-amd64", tool=versions.tool("kind"), source="u")


def test_sha256sum_binary_mode_marker(versions: Versions) -> None:
    text = f"{'B' * 64} *kind-linux-amd64\n"
    digest = tools.parse_checksum(
        text, "sha256sum", asset="kind-linux-amd64", tool=versions.tool("kind"), source="u"
    )
    assert digest == "b" * 64


def test_main_prints_where_each_tool_went(
    tmp_path: Path, mirror: Mirror, versions: Versions, capsys: pytest.CaptureFixture[str]
) -> None:
    publish_tool(mirror, versions, "kind", b"kind binary")
    publish_tool(mirror, versions, "linkerd", b"linkerd binary")
    cache = tmp_path / "cache"
    if tools.host_arch() != ARCH:
        pytest.skip("main() downloads for this machine's architecture")
    code = tools.main(["--only", "kind,linkerd", "--dir", str(cache), "--mirror", mirror.base])
    out = capsys.readouterr().out.splitlines()
    assert code == 0
    assert out == [
        f"kind v0.32.0: {cache / 'kind' / 'v0.32.0' / 'kind'}",
        f"linkerd edge-26.8.3: {cache / 'linkerd' / 'edge-26.8.3' / 'linkerd'}",
    ]


def test_main_reports_an_unknown_tool(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = tools.main(["--only", "kubeadm", "--dir", str(tmp_path)])
    assert code == 2
    assert "no pinned tool 'kubeadm'" in capsys.readouterr().err


# --- Finding the CLIs and checking their versions ----------------------------------------------


def test_tool_path_prefers_the_cache(
    tmp_path: Path, mirror: Mirror, versions: Versions, monkeypatch: pytest.MonkeyPatch
) -> None:
    if tools.host_arch() != ARCH:
        pytest.skip("the cache is looked up for this machine's architecture")
    on_path = fake_cli(tmp_path / "bin", "kind", KIND_OUTPUT)
    monkeypatch.setenv("PATH", str(on_path.parent))
    cache = tmp_path / "cache"
    assert tools.tool_path("kind", cache_dir=cache, versions=versions) == on_path
    publish_tool(mirror, versions, "kind", b"kind binary")
    cached = tools.ensure_tools(["kind"], cache, versions=versions, arch=ARCH, url_base=mirror.base)["kind"]
    assert tools.tool_path("kind", cache_dir=cache, versions=versions) == cached


def test_tool_path_says_how_to_get_a_missing_tool(
    tmp_path: Path, versions: Versions, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(
        UsageError, match=r"helm v4\.2\.4 is neither in the tool cache .* `nox -s tools -- --only helm`"
    ):
        tools.tool_path("helm", cache_dir=tmp_path / "cache", versions=versions)


def test_cache_dir_override(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv(tools.ENV_DIR, str(tmp_path))
    assert tools.default_cache_dir() == tmp_path
    monkeypatch.delenv(tools.ENV_DIR)
    assert tools.default_cache_dir() == Path.home() / ".cache" / "testbed" / "tools"


@pytest.mark.parametrize(
    ("parse", "output", "version"),
    [
        (tools.parse_kind_version, KIND_OUTPUT, "v0.32.0"),
        (
            tools.parse_kind_version,
            "kind v0.33.0-alpha.12+0123456789abcd go1.26.3 linux/arm64\n",
            "v0.33.0-alpha.12+0123456789abcd",
        ),
        (tools.parse_kubectl_version, KUBECTL_OUTPUT, "v1.35.7"),
        (tools.parse_helm_version, HELM_OUTPUT, "v4.2.4"),
        (tools.parse_helm_version, "v3.21.4+g813176c\n", "v3.21.4"),
        (tools.parse_istioctl_version, ISTIOCTL_OUTPUT, "1.30.3"),
        (tools.parse_linkerd_version, LINKERD_OUTPUT, "edge-26.8.3"),
        (tools.parse_cilium_version, CILIUM_OUTPUT, "v0.19.7"),
    ],
)
def test_version_outputs_parse(parse: object, output: str, version: str) -> None:
    assert callable(parse)
    assert parse(output) == version


@pytest.mark.parametrize(
    ("name", "output"),
    [
        ("kind", KIND_OUTPUT),
        ("kubectl", KUBECTL_OUTPUT),
        ("helm", HELM_OUTPUT),
        ("istioctl", ISTIOCTL_OUTPUT),
        ("linkerd", LINKERD_OUTPUT),
        ("cilium", CILIUM_OUTPUT),
    ],
)
def test_the_pinned_outputs_give_no_warning(versions: Versions, name: str, output: str) -> None:
    pinned = versions.tool(name).version
    assert tools.version_warning(name, output, pinned=pinned, path=Path(name)) is None


def test_other_versions_and_garbage_give_warnings(versions: Versions) -> None:
    older = KUBECTL_OUTPUT.replace("v1.35.7", "v1.34.2")
    warning = tools.version_warning("kubectl", older, pinned="v1.35.7", path=Path("/usr/bin/kubectl"))
    assert warning is not None
    assert "kubectl at /usr/bin/kubectl is v1.34.2, but the pin is v1.35.7" in warning
    garbage = tools.version_warning("helm", "Error: unknown flag: --short\n", pinned="v4.2.4", path=Path("h"))
    assert garbage is not None
    assert "could not read a version from `helm version --short`" in garbage


def fake_cli(directory: Path, name: str, output: str) -> Path:
    """A stand-in CLI that prints one of the real outputs above."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / name
    path.write_text(f"#!{sys.executable}\nimport sys\nsys.stdout.write({output!r})\n")
    path.chmod(0o755)
    return path


def test_check_versions_runs_the_clis(
    tmp_path: Path, versions: Versions, monkeypatch: pytest.MonkeyPatch
) -> None:
    bin_dir = tmp_path / "bin"
    fake_cli(bin_dir, "kind", KIND_OUTPUT.replace("v0.32.0", "v0.31.0"))
    fake_cli(bin_dir, "helm", HELM_OUTPUT)
    fake_cli(bin_dir, "cilium", CILIUM_OUTPUT)
    monkeypatch.setenv("PATH", str(bin_dir))
    warnings = tools.check_versions(versions=versions, cache_dir=tmp_path / "empty-cache")
    assert len(warnings) == 4, warnings
    assert f"kind at {bin_dir / 'kind'} is v0.31.0, but the pin is v0.32.0" in warnings[0]
    for name, warning in zip(("kubectl", "istioctl", "linkerd"), warnings[1:], strict=True):
        assert warning.startswith(f"{name} {versions.tool(name).version} is neither in the tool cache")
