"""Every container image a configuration needs, from the pins alone; pulled and saved for kind.

An image is needed in one of three places (`Image.where`):

    host    the host's Docker daemon: the kind node image (`kind create cluster --image`) and the
            Python base of the testbed image (`docker build`)
    built   the testbed image, built from this checkout by the kind platform (in no registry)
    nodes   pods in the cluster: the mesh's own images, loaded into every node from one archive
            (`kind load image-archive`), so that nothing is pulled inside the cluster

`pull_and_save()` pulls the host and nodes images for the host's platform and saves a configuration's
nodes images in one archive, `images-<config>-<hash>.tar`, for that platform alone (`docker image save
--platform`: with Docker 29's containerd image store an archive of the whole multi-platform index does
not import into kind; `testbed.kube.docker.save_images`), and keeps it only once `check_archive()` finds
every blob its OCI index names in it. With `--prune`, the archived images then leave the Docker
daemon's store. The hash covers exactly what the archive holds (the references and the platform) and
its format (`ARCHIVE_FORMAT`): a new pin gives a new name, so a stale archive is never loaded, and a pin
of one mesh leaves the other meshes' archives valid.

Cilium's chart pins its images by digest. They are pulled by digest (what is saved is what the chart
pins) and saved under their tag alone: `kind load image-archive` imports an image under the names in the
archive, and containerd does not match such an image to a pod's `name:tag@digest` (mesh-install.md:
digest-pinned references may not match preloaded images). So a Cilium install that relies on the archive
sets `image.useDigest=false`, `operator.image.useDigest=false` and `envoy.image.useDigest=false`.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import tarfile
import traceback
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, TypeVar

from testbed.errors import CommandError, TestbedError, UsageError
from testbed.kube import docker as kube_docker
from testbed.kube.actions import image_tag
from testbed.kube.tools import host_arch
from testbed.spec.versions import Versions, load_versions

#: Every configuration of the kind platform; `istio-ambient-waypoint` is ambient with the L7 waypoint,
#: `cilium-plain` is Cilium without encryption (the same images as `cilium`).
CONFIGURATIONS = (
    "none",
    "istio",
    "istio-ambient",
    "istio-ambient-waypoint",
    "linkerd",
    "cilium-plain",
    "cilium",
)

#: Configurations whose images are another's, archived once under that one's name.
SHARED_ARCHIVE = {"cilium-plain": "cilium"}

ENV_DIR = "TESTBED_IMAGES_DIR"
#: Per docker call (one pull, one tag, the save): a stalled registry fails instead of hanging the run.
PULL_TIMEOUT_S = 900.0
HASH_LENGTH = 12
#: Hashed into every archive name with the pins: a new format of what is saved (here: one platform,
#: checked complete before it is kept) names new archives, so an archive written before is never reused.
ARCHIVE_FORMAT = "save:platform-v2"

#: What to do when the daemon saves a platform's manifests without their content.
CONTAINERD_STORE_HINT = (
    "this Docker daemon keeps images in the containerd image store and cannot save {platform} alone "
    "(`docker image save --platform` needs Docker 28 or later, API 1.48): upgrade Docker, or switch the "
    "daemon to the classic image store"
)

# OCI image-spec media-types.md and the Docker image manifest v2 schema 2: an index (manifest list) names
# manifests; a manifest names its config and layers.
INDEX_TYPES = frozenset(
    {"application/vnd.oci.image.index.v1+json", "application/vnd.docker.distribution.manifest.list.v2+json"}
)
MANIFEST_TYPES = frozenset(
    {"application/vnd.oci.image.manifest.v1+json", "application/vnd.docker.distribution.manifest.v2+json"}
)

#: The istio charts' ambient profile sets `global.variant: distroless` (istio/istio 1.30.3
#: manifests/charts/{istio-control/istio-discovery,istio-cni,ztunnel}/files/profile-ambient.yaml, which
#: `istioctl install --set profile=ambient` applies: operator/cmd/mesh/testdata/manifest-generate/output/
#: ztunnel.golden.yaml renders `ztunnel:latest-distroless`). Sidecars and waypoints take the same
#: variant (pkg/kube/inject/inject.go ProxyImage: HUB/proxyv2:TAG-VARIANT).
ISTIO_AMBIENT_VARIANT = "distroless"

Where = Literal["host", "built", "nodes"]

T = TypeVar("T")


@dataclass(frozen=True, kw_only=True)
class Image:
    """One image: its full reference (as pulled), where it is needed, and what uses it."""

    ref: str
    where: Where
    purpose: str

    @property
    def saved_as(self) -> str:
        """The name it has in an archive and in the nodes: the reference without its digest."""
        return self.ref.split("@", 1)[0]


def qualify(ref: str) -> str:
    """A reference as Docker normalizes it: `python:3` is `docker.io/library/python:3`.

    distribution/reference normalize.go (splitDockerDomain): the first path component is a registry
    only if it has a `.` or a `:` or is `localhost`; otherwise the registry is docker.io, and a
    single-component name is in `library/`.
    """
    first, sep, _ = ref.partition("/")
    if sep and ("." in first or ":" in first or first == "localhost"):
        return ref
    return f"docker.io/{ref}" if sep else f"docker.io/library/{ref}"


def images(config: str, versions: Versions) -> tuple[Image, ...]:
    """Every image `config` needs, host images first."""
    _check_config(config)
    common = (
        Image(
            ref=qualify(versions.node_image),
            where="host",
            purpose="kind node image (kind create cluster --image)",
        ),
        Image(ref=qualify(versions.python_image), where="host", purpose="base of the testbed image"),
        Image(
            ref=image_tag(versions.python_image),
            where="built",
            purpose="testbed image: load generator and demo services",
        ),
    )
    return common + tuple(_mesh_images(config, versions))


def _mesh_images(config: str, versions: Versions) -> list[Image]:
    if config == "none":
        return []
    if config.startswith("istio"):
        return _istio(config, versions)
    if config == "linkerd":
        return _linkerd(versions)
    return _cilium(versions)  # cilium and cilium-plain: one chart, encryption is a value


def _istio(config: str, versions: Versions) -> list[Image]:
    # istio/istio at 1.30.3: images are HUB/NAME:TAG[-VARIANT] (istio-discovery templates/deployment.yaml
    # for pilot, ztunnel templates/daemonset.yaml, istio-cni templates/_helpers.tpl "istio-tag"), the
    # names from istio-discovery values.yaml (image: pilot, global.proxy.image and global.proxy_init.image:
    # proxyv2), ztunnel values.yaml (image: ztunnel) and istio-cni values.yaml (image: install-cni).
    hub, tag = versions.istio.hub, versions.istio.version

    def ref(name: str) -> str:
        return f"{hub}/{name}:{tag}" if config == "istio" else f"{hub}/{name}:{tag}-{ISTIO_AMBIENT_VARIANT}"

    if config == "istio":
        # Profile minimal: istiod only (manifests/profiles/minimal.yaml); sidecar and its init are proxyv2.
        return [
            Image(ref=ref("pilot"), where="nodes", purpose="istiod"),
            Image(ref=ref("proxyv2"), where="nodes", purpose="sidecar (istio-proxy) and istio-init"),
        ]
    # Profile ambient: istiod, the CNI node agent and ztunnel (manifests/profiles/ambient.yaml).
    found = [
        Image(ref=ref("pilot"), where="nodes", purpose="istiod"),
        Image(ref=ref("install-cni"), where="nodes", purpose="istio-cni node agent"),
        Image(ref=ref("ztunnel"), where="nodes", purpose="ztunnel (per node)"),
    ]
    if config == "istio-ambient-waypoint":
        # The waypoint Deployment runs the proxy image (istio-discovery files/waypoint.yaml: .ProxyImage).
        found.append(Image(ref=ref("proxyv2"), where="nodes", purpose="waypoint proxy"))
    return found


def _linkerd(versions: Versions) -> list[Image]:
    # linkerd/linkerd2 at edge-26.8.3: destination, identity, proxy-injector, the policy controller
    # and heartbeat run controllerImage (charts/linkerd-control-plane/templates/*.yaml; values.yaml says
    # of policyController "`image` has been removed"); proxy-init and the network validator run the
    # proxy image (charts/partials/templates/_proxy-init.tpl, _network-validator.tpl): no proxy-init image.
    registry, tag = versions.linkerd.image_registry, versions.linkerd.version
    return [
        Image(
            ref=f"{registry}/controller:{tag}",
            where="nodes",
            purpose="destination, identity, proxy-injector, policy controller",
        ),
        Image(ref=f"{registry}/proxy:{tag}", where="nodes", purpose="linkerd-proxy and its init container"),
    ]


def _cilium(versions: Versions) -> list[Image]:
    # cilium/charts cilium-1.20.0.tgz: cilium/values.yaml (image, operator.image, envoy.image, each with
    # useDigest true), templates/_helpers.tpl "cilium.image" (REPOSITORY:TAG@DIGEST) and
    # templates/cilium-operator/_helpers.tpl "cilium.operator.image" (REPOSITORY-generic:TAG@DIGEST).
    # envoy.enabled is true for new installs; hubble relay and ui, nodeinit and certgen are off.
    c = versions.cilium
    return [
        Image(
            ref=f"{c.image_registry}/cilium:v{c.version}@{c.agent_digest}",
            where="nodes",
            purpose="cilium-agent (per node) and its init containers",
        ),
        Image(
            ref=f"{c.image_registry}/operator-generic:v{c.version}@{c.operator_generic_digest}",
            where="nodes",
            purpose="cilium-operator",
        ),
        Image(
            ref=f"{c.image_registry}/cilium-envoy:{c.envoy_tag}@{c.envoy_digest}",
            where="nodes",
            purpose="cilium-envoy (per node)",
        ),
    ]


def images_for(config: str, versions: Versions) -> list[str]:
    """The references of every image `config` needs (see `images()` for where each is needed)."""
    return [image.ref for image in images(config, versions)]


def archived(config: str, versions: Versions) -> list[Image]:
    """The images that go into the configuration's archive (loaded into the nodes)."""
    return [image for image in images(config, versions) if image.where == "nodes"]


def host_platform() -> str:
    return f"linux/{host_arch()}"


def pins_hash(config: str, versions: Versions, *, platform: str) -> str:
    """A short digest of what the archive of `config` holds: its references and the platform."""
    text = "\n".join([ARCHIVE_FORMAT, platform, *sorted(image.ref for image in archived(config, versions))])
    return hashlib.sha256(text.encode()).hexdigest()[:HASH_LENGTH]


def default_cache_dir() -> Path:
    """`$TESTBED_IMAGES_DIR`, else `~/.cache/testbed/images`."""
    override = os.environ.get(ENV_DIR)
    return Path(override) if override else Path.home() / ".cache" / "testbed" / "images"


def archive_path(
    config: str,
    cache_dir: Path | None = None,
    *,
    versions: Versions | None = None,
    platform: str | None = None,
) -> Path:
    """Where the archive of `config` is (it exists only once pulled; `none` never has one)."""
    versions = versions or load_versions()
    platform = platform or host_platform()
    directory = default_cache_dir() if cache_dir is None else cache_dir
    # cilium-plain is the same chart and images as cilium: one archive for both, pulled and saved once.
    shared = SHARED_ARCHIVE.get(config, config)
    return directory / f"images-{shared}-{pins_hash(shared, versions, platform=platform)}.tar"


def format_list(config: str, versions: Versions) -> str:
    """`testbed images --mesh X`: one image a line, the reference first (`awk '{print $1}'`)."""
    found = images(config, versions)
    width = max(len(image.ref) for image in found)
    lines = [f"# {config}: {len(found)} images, from {versions.source}"]
    lines += [f"{image.ref:<{width}}  {image.where:<5}  {image.purpose}" for image in found]
    return "\n".join(lines) + "\n"


def pull_and_save(
    config: str,
    directory: Path | None = None,
    timeout: float = PULL_TIMEOUT_S,
    *,
    versions: Versions | None = None,
    platform: str | None = None,
    prune: bool = False,
    keep: frozenset[str] = frozenset(),
) -> Path | None:
    """Pull what `config` needs and save its nodes images in its archive; return the archive.

    The host images are pulled when the daemon lacks them. An archive already there is kept (its name
    says what is in it); `none` has no archive. The archive is written beside its final name and
    renamed, so an interrupted save never leaves a truncated archive under that name. With `prune`, the
    archived images are then removed from the daemon's store (the kind platform loads the archive, never
    those images): on a CI runner they would otherwise take the disk twice, once in the store and once in
    the archive. The host images stay: `kind create cluster` and `docker build` use them, and so do
    the images whose reference is in `keep` (the next configurations' archives need them).
    """
    versions = versions or load_versions()
    platform = platform or host_platform()
    for image in images(config, versions):
        if image.where == "host" and not kube_docker.image_exists(image.ref):
            _pull(image, platform, timeout)
    to_save = archived(config, versions)
    if not to_save:
        return None
    target = archive_path(config, directory, versions=versions, platform=platform)
    if target.exists():
        _say(f"{target} is there already: {len(to_save)} images for {config}")
        if prune:
            _prune([image for image in to_save if image.ref not in keep], timeout)
        return target
    for image in to_save:
        _pull(image, platform, timeout)
        if image.saved_as != image.ref:
            _tag(image, timeout)
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(f".{target.name}.partial")
    names = [image.saved_as for image in to_save]
    try:
        _save(names, partial, platform, timeout)
        check_archive(partial, platform)
        partial.replace(target)
    finally:
        partial.unlink(missing_ok=True)
    _say(f"saved {len(names)} images for {config} to {target}")
    if prune:
        pruned = [image for image in to_save if image.ref not in keep]
        _prune(pruned, timeout)
        _say(f"removed {len(pruned)} archived images of {config} from the Docker daemon's store")
    return target


def _pull(image: Image, platform: str, timeout: float) -> None:
    kube_docker.echo("image", "pull", "--quiet", "--platform", platform, image.ref)
    kube_docker.call(timeout, lambda d: d.image.pull(image.ref, quiet=True, platform=platform))


def _tag(image: Image, timeout: float) -> None:
    kube_docker.echo("image", "tag", image.ref, image.saved_as)
    kube_docker.call(timeout, lambda d: d.image.tag(image.ref, image.saved_as))


def _save(names: list[str], path: Path, platform: str, timeout: float) -> None:
    # Only `platform`'s manifests, so that kind's `ctr images import --all-platforms --digests` finds all
    # the content the archive names (testbed.kube.docker.save_images says why, with the sources).
    try:
        kube_docker.save_images(names, path, platform=platform, timeout=timeout)
    except CommandError as e:
        if "content digest" in e.stderr:
            # The containerd image store holds a multi-platform index of which only `platform` was pulled;
            # a daemon below API 1.48 (Docker 28) cannot be asked for one platform (no --platform).
            raise TestbedError(f"{e.message}: {CONTAINERD_STORE_HINT.format(platform=platform)}") from None
        raise


def check_archive(path: Path, platform: str) -> None:
    """Refuse an archive whose OCI layout names content it does not hold (kind would fail importing it).

    `docker image save` writes an OCI layout, index.json and blobs/sha256/<hex>, since Docker 25, from
    either store: the classic store writes each image's manifest, config and layers there beside its
    manifest.json (moby v28.5.2 image/tarexport/save.go), the containerd store exports the image's target,
    its whole multi-platform index unless `--platform` picks one manifest, and skips the content it does
    not have (daemon/containerd/image_exporter.go ExportImage: archive.WithSkipMissing,
    getPushDescriptor). kind imports with `ctr images import --all-platforms` (kind v0.32.0
    pkg/cluster/nodeutils/util.go), which needs every manifest such an index names: so every descriptor
    reachable from index.json must have its blob here, other platforms' manifests included. Only
    non-distributable (foreign) layers may be absent (ExportImage: WithSkipNonDistributableBlobs).
    An archive without index.json (Docker below 25, classic store) has no such index to check.
    """
    try:
        with tarfile.open(path) as tar:
            members = {m.name.removeprefix("./"): m for m in tar.getmembers() if m.isfile()}
            if "index.json" not in members:
                return

            def read(name: str) -> dict[str, object]:
                handle = tar.extractfile(members[name])
                assert handle is not None  # a regular file
                data = json.load(handle)
                if not isinstance(data, dict):
                    raise ValueError(f"{name} is not a JSON object")
                return data

            missing: list[str] = []
            seen: set[str] = set()

            def walk(document: dict[str, object]) -> None:
                config = document.get("config")
                for descriptor in [
                    *_descriptors(document.get("manifests")),
                    *([config] if isinstance(config, dict) else []),
                    *_descriptors(document.get("layers")),
                ]:
                    digest, media_type = (
                        str(descriptor.get("digest", "")),
                        str(descriptor.get("mediaType", "")),
                    )
                    if digest in seen:
                        continue
                    seen.add(digest)
                    algorithm, _, encoded = digest.partition(":")
                    blob = f"blobs/{algorithm}/{encoded}"
                    if blob not in members:
                        if "nondistributable" not in media_type and "foreign" not in media_type:
                            missing.append(f"{digest} ({media_type or 'no media type'})")
                        continue
                    if media_type in INDEX_TYPES or media_type in MANIFEST_TYPES:
                        walk(read(blob))

            walk(read("index.json"))
    except (tarfile.TarError, OSError, ValueError, KeyError) as e:
        raise TestbedError(f"{path} is not an image archive that kind can load: {e}") from None
    if missing:
        shown = ", ".join(missing[:3]) + (f" and {len(missing) - 3} more" if len(missing) > 3 else "")
        raise TestbedError(
            f"docker image save wrote {path} without content its index names ({shown}), which kind's "
            f"import (ctr --all-platforms) fails on: {CONTAINERD_STORE_HINT.format(platform=platform)}"
        )


def _descriptors(value: object) -> list[dict[str, object]]:
    return [d for d in value if isinstance(d, dict)] if isinstance(value, list) else []


def _prune(images: Sequence[Image], timeout: float) -> None:
    if not images:
        return
    # Both names of a digest-pinned image (as pulled, and as saved); --force passes over absent ones.
    names = list(dict.fromkeys(name for image in images for name in (image.ref, image.saved_as)))
    kube_docker.remove_images(names, timeout=timeout)


def _check_config(config: str) -> None:
    if config not in CONFIGURATIONS:
        raise UsageError(f"unknown configuration {config!r} (known: {', '.join(CONFIGURATIONS)})")


def _say(message: str) -> None:
    print(f"testbed.kube.images: {message}", file=sys.stderr, flush=True)


# --- python -m testbed.kube.images ------------------------------------------------------------------


def parse_configs(value: str) -> tuple[str, ...]:
    """`--mesh`: comma-separated configurations, or `all`."""
    if value.strip() == "all":
        return CONFIGURATIONS
    configs = tuple(dict.fromkeys(c.strip() for c in value.split(",") if c.strip()))
    if not configs:
        raise UsageError("--mesh names no configuration: give e.g. --mesh istio,linkerd or --mesh all")
    for config in configs:
        _check_config(config)
    return configs


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m testbed.kube.images",
        description="The images each configuration needs (from manifests/versions.toml); pull and save them.",
    )
    parser.add_argument("action", choices=("list", "pull"), help="list them, or pull and save them")
    parser.add_argument(
        "--mesh",
        default="all",
        help=f"comma-separated configurations, or all (the default): {', '.join(CONFIGURATIONS)}",
    )
    parser.add_argument(
        "--dir",
        type=Path,
        default=None,
        help=f"archive directory (default: ${ENV_DIR}, else ~/.cache/testbed/images)",
    )
    parser.add_argument(
        "--timeout", type=float, default=PULL_TIMEOUT_S, help="seconds for each docker call (default 900)"
    )
    parser.add_argument(
        "--prune",
        action="store_true",
        help="pull: once a configuration's archive is saved, remove its archived images from the Docker "
        "daemon's store (they are loaded from the archive; saves disk on CI runners)",
    )
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    args = parser.parse_args(argv)
    try:
        configs = parse_configs(args.mesh)
        versions = load_versions()
        for i, config in enumerate(configs):
            if args.action == "list":
                print(format_list(config, versions), end="")
                continue
            # An image that a later configuration archives too (e.g. istiod in both ambient ones) stays.
            later = frozenset(image.ref for c in configs[i + 1 :] for image in archived(c, versions))
            archive = pull_and_save(
                config, args.dir, args.timeout, versions=versions, prune=args.prune, keep=later
            )
            print(f"{config}: {archive if archive is not None else 'no images to load into the nodes'}")
    except TestbedError as e:
        if args.debug:
            traceback.print_exc()
        print(f"testbed.kube.images: error: {e.message}", file=sys.stderr)
        return e.return_code
    return 0


if __name__ == "__main__":
    sys.exit(main())
