"""The pinned CLIs (kind, kubectl, helm, istioctl, linkerd, cilium): download, verify, find, check.

Downloads go to `~/.cache/testbed/tools/<name>/<version>/` (or `$TESTBED_TOOLS_DIR`), each checked
against the sha256 its vendor publishes before anything is kept. `python -m testbed.kube.tools` (or
`nox -s tools`) fills the cache; `tool_path()` finds a CLI there first, then on PATH. Linkerd's digest
comes from GitHub's API, which gets `$GITHUB_TOKEN` when it is set (and nothing else does).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import re
import shutil
import sys
import tarfile
import tempfile
import traceback
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import IO, Any

from testbed import __version__, proc
from testbed.errors import CommandError, TestbedError, UsageError
from testbed.spec.versions import ARCHES, Tool, Versions, load_versions

ENV_DIR = "TESTBED_TOOLS_DIR"
#: A GitHub token, sent to GitHub's API only (the `github-release` checksum lookup): without one, GitHub
#: allows 60 API requests an hour per IP, which the shared IPs of CI runners exhaust. Never printed.
TOKEN_ENV = "GITHUB_TOKEN"  # noqa: S105 -- the variable's name, not a secret
#: Where the token goes, as (scheme, host): GitHub's REST API over TLS. Not a mirror (`--mirror`).
GITHUB_API_ORIGINS = frozenset({("https", "api.github.com")})
MARKER = ".verified"
#: Per connect and per read: a stalled mirror fails instead of hanging the run.
DOWNLOAD_TIMEOUT_S = 60.0
VERSION_TIMEOUT_S = 30.0
_CHECKSUM_FILE_LIMIT = 1 << 20
_CHUNK = 1 << 16
_HEX64 = re.compile(r"^[0-9a-f]{64}$")


def default_cache_dir() -> Path:
    override = os.environ.get(ENV_DIR)
    return Path(override) if override else Path.home() / ".cache" / "testbed" / "tools"


def host_arch() -> str:
    """amd64 or arm64, as the vendors name their Linux builds."""
    if not sys.platform.startswith("linux"):
        raise UsageError(
            f"pinned tool downloads are for Linux only, not {sys.platform}: "
            "install kind, kubectl, helm, istioctl, linkerd and cilium yourself and put them on PATH"
        )
    machine = platform.machine().lower()
    arch = {"x86_64": "amd64", "amd64": "amd64", "aarch64": "arm64", "arm64": "arm64"}.get(machine)
    if arch is None:
        raise UsageError(f"no pinned tool builds for the {machine} architecture (only {', '.join(ARCHES)})")
    return arch


def ensure_tools(
    names: Iterable[str] | None = None,
    cache_dir: Path | None = None,
    *,
    versions: Versions | None = None,
    arch: str | None = None,
    url_base: str | None = None,
    timeout: float = DOWNLOAD_TIMEOUT_S,
) -> dict[str, Path]:
    """Download and verify each pinned CLI unless a verified copy is cached; return the binaries' paths.

    `url_base` (e.g. `http://127.0.0.1:8000`) replaces the scheme and host of every URL, keeping its
    path: a mirror, or a local server in tests.
    """
    versions = versions or load_versions()
    cache_dir = cache_dir or default_cache_dir()
    arch = arch or host_arch()
    if arch not in ARCHES:
        raise UsageError(f"unknown architecture {arch!r} (known: {', '.join(ARCHES)})")
    selected = list(versions.tools) if names is None else list(names)
    return {
        name: ensure_tool(versions.tool(name), cache_dir, arch=arch, url_base=url_base, timeout=timeout)
        for name in selected
    }


def ensure_tool(tool: Tool, cache_dir: Path, *, arch: str, url_base: str | None, timeout: float) -> Path:
    """One CLI: reuse the verified cached copy, or download, verify, extract and install it."""
    final = cache_dir / tool.name / tool.version
    if _verified(final, tool, arch, rehash=True):
        return final / tool.name
    url = _rebase(tool.download_url(arch), url_base)
    checksum_url = _rebase(tool.checksum_file_url(arch), url_base)
    expected = parse_checksum(
        _fetch_text(checksum_url, tool=tool, timeout=timeout),
        tool.checksum_format,
        asset=tool.asset_name(arch),
        tool=tool,
        source=checksum_url,
    )
    cache_dir.mkdir(parents=True, exist_ok=True)
    # Everything happens in a scratch directory that is moved into place only once verified,
    # so that a failure (or Ctrl-C) never leaves a half-written or unverified binary in the cache.
    scratch = Path(tempfile.mkdtemp(prefix=f".{tool.name}-", dir=cache_dir))
    try:
        download = scratch / tool.asset_name(arch)
        print(f"downloading {url}", file=sys.stderr, flush=True)
        actual = _download(url, download, tool=tool, timeout=timeout)
        if actual != expected:
            raise TestbedError(
                f"{tool.name} {tool.version}: sha256 mismatch for {url}: expected {expected} "
                f"(from {checksum_url}), got {actual}; nothing was installed: retry, and if it "
                "persists the download is not the published file (proxy, mirror or tampering)"
            )
        staged = scratch / "install"
        staged.mkdir()
        binary = staged / tool.name
        member = tool.archive_member(arch)
        if member is None:
            download.rename(binary)
        else:
            _extract(download, member, binary, tool=tool)
        binary.chmod(0o755)
        marker = {
            "tool": tool.name,
            "version": tool.version,
            "arch": arch,
            "url": tool.download_url(arch),
            "sha256": actual,
            "binary_sha256": _sha256_file(binary),
        }
        (staged / MARKER).write_text(json.dumps(marker, indent=2) + "\n")
        final.parent.mkdir(parents=True, exist_ok=True)
        if final.exists():
            shutil.rmtree(final)
        try:
            staged.rename(final)
        except OSError:
            # Another process installed the same pin meanwhile: keep theirs if it verifies.
            if not _verified(final, tool, arch, rehash=True):
                raise
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return final / tool.name


def _verified(directory: Path, tool: Tool, arch: str, *, rehash: bool) -> bool:
    """A cached copy counts only with its marker, for this architecture, and (if asked) an intact binary."""
    try:
        marker = json.loads((directory / MARKER).read_text())
    except (OSError, ValueError):
        return False
    binary = directory / tool.name
    if not isinstance(marker, dict) or marker.get("arch") != arch or not binary.is_file():
        return False
    return not rehash or marker.get("binary_sha256") == _sha256_file(binary)


def tool_path(name: str, *, cache_dir: Path | None = None, versions: Versions | None = None) -> Path:
    """Where to run a CLI from: the verified pinned copy in the cache first, then PATH."""
    versions = versions or load_versions()
    tool = versions.tool(name)
    cache_dir = cache_dir or default_cache_dir()
    try:
        arch: str | None = host_arch()
    except UsageError:
        arch = None
    # No re-hash here: this runs before every use; `ensure_tools` re-hashes.
    if arch is not None and _verified(cache_dir / name / tool.version, tool, arch, rehash=False):
        return cache_dir / name / tool.version / name
    found = shutil.which(name)
    if found is None:
        raise UsageError(
            f"{name} {tool.version} is neither in the tool cache ({cache_dir}) nor on PATH: "
            f"run `nox -s tools -- --only {name}` (or install it yourself)"
        )
    return Path(found)


def parse_checksum(text: str, fmt: str, *, asset: str, tool: Tool, source: str) -> str:
    """The sha256 (lower-case hex) that a vendor's checksum file gives for `asset`."""
    parser = _CHECKSUM_PARSERS.get(fmt)
    problem = f"unknown checksum format {fmt!r}" if parser is None else None
    digest = None
    if parser is not None:
        digest, problem = parser(text, asset)
    if digest is not None and _HEX64.match(digest):
        return digest
    problem = problem or f"the digest for {asset} is not a sha256"
    raise TestbedError(f"{tool.name} {tool.version}: {source}: {problem}; check the pin's checksum_url")


def _bare_digest(text: str, asset: str) -> tuple[str | None, str | None]:
    """kubectl's `.sha256`: the hex digest alone."""
    return text.strip().lower(), "not a bare sha256 digest"


def _sha256sum_digest(text: str, asset: str) -> tuple[str | None, str | None]:
    """`<hex>  <name>` lines (sha256sum, shasum -a 256; Istio writes one space; `*` marks binary mode)."""
    for line in text.splitlines():
        parts = line.split(None, 1)
        if len(parts) == 2 and parts[1].strip().lstrip("*").rsplit("/", 1)[-1] == asset:
            return parts[0].lower(), None
    return None, f"lists no sha256 for {asset}"


def _github_release_digest(text: str, asset: str) -> tuple[str | None, str | None]:
    """GitHub's release JSON: `assets[].digest` is `sha256:<hex>`, computed by GitHub at upload."""
    try:
        release = json.loads(text)
    except ValueError:
        return None, "not JSON"
    assets = release.get("assets") if isinstance(release, dict) else None
    for item in assets if isinstance(assets, list) else []:
        if isinstance(item, dict) and item.get("name") == asset:
            digest = item.get("digest")
            if not isinstance(digest, str) or not digest.startswith("sha256:"):
                return None, f"GitHub published no sha256 digest for {asset}"
            return digest.removeprefix("sha256:").lower(), None
    return None, f"the release has no asset {asset}"


_CHECKSUM_PARSERS: dict[str, Callable[[str, str], tuple[str | None, str | None]]] = {
    "bare": _bare_digest,
    "sha256sum": _sha256sum_digest,
    "github-release": _github_release_digest,
}


def _rebase(url: str, base: str | None) -> str:
    if base is None:
        return url
    parts = urllib.parse.urlsplit(url)
    new = urllib.parse.urlsplit(base)
    return urllib.parse.urlunsplit(
        (new.scheme, new.netloc, new.path.rstrip("/") + parts.path, parts.query, "")
    )


def _github_authorization(url: str) -> str | None:
    """`Bearer $GITHUB_TOKEN` for an https request to GitHub's API when the variable is set, else None."""
    token = os.environ.get(TOKEN_ENV, "").strip()
    parts = urllib.parse.urlsplit(url)
    if not token or (parts.scheme, parts.hostname) not in GITHUB_API_ORIGINS:
        return None
    # GitHub's REST docs ("Authenticating to the REST API"): `Authorization: Bearer TOKEN`.
    return f"Bearer {token}"


def _open(
    url: str, *, timeout: float, accept: str | None = None, authorization: str | None = None
) -> IO[bytes]:
    """The one network seam (tests replace it to refuse anything but loopback)."""
    if urllib.parse.urlsplit(url).scheme not in ("https", "http"):
        raise UsageError(f"refusing to download {url}: only http(s) URLs")
    headers = {"User-Agent": f"testbed/{__version__}"}  # GitHub's API refuses requests without one
    if accept is not None:
        headers["Accept"] = accept
    if authorization is not None:
        headers["Authorization"] = authorization
    request = urllib.request.Request(url, headers=headers)  # noqa: S310 -- the scheme is checked above
    response: IO[bytes] = urllib.request.urlopen(request, timeout=timeout)  # noqa: S310 -- same
    return response


def _network_error(tool: Tool, url: str, error: Exception, *, hint: str = "") -> TestbedError:
    if isinstance(error, urllib.error.HTTPError):
        error.close()  # it holds the response open
    reason = getattr(error, "reason", None) or error
    return TestbedError(
        f"{tool.name} {tool.version}: could not download {url}: {reason}; {hint}check the network "
        f"(or install {tool.name} yourself and put it on PATH)"
    )


def _fetch_text(url: str, *, tool: Tool, timeout: float) -> str:
    github = tool.checksum_format == "github-release"
    accept = "application/vnd.github+json" if github else None
    # Only the API lookup of the checksum, never the download, and only if GitHub's API is the host.
    authorization = _github_authorization(url) if github else None
    try:
        with _open(url, timeout=timeout, accept=accept, authorization=authorization) as response:
            data = response.read(_CHECKSUM_FILE_LIMIT + 1)
    except (urllib.error.URLError, TimeoutError, OSError) as e:
        # GitHub's REST docs ("Rate limits for the REST API"): past the limit, a 403 or a 429.
        limited = isinstance(e, urllib.error.HTTPError) and e.code in (403, 429)
        hint = (
            f"GitHub's API allows 60 requests an hour per IP without a token: set {TOKEN_ENV}; "
            if github and limited and not os.environ.get(TOKEN_ENV, "").strip()
            else ""
        )
        raise _network_error(tool, url, e, hint=hint) from None
    if len(data) > _CHECKSUM_FILE_LIMIT:
        raise TestbedError(f"{tool.name} {tool.version}: {url} is too large for a checksum file")
    return data.decode("utf-8", errors="replace")


def _download(url: str, dest: Path, *, tool: Tool, timeout: float) -> str:
    digest = hashlib.sha256()
    try:
        with _open(url, timeout=timeout) as response, dest.open("wb") as out:
            while chunk := response.read(_CHUNK):
                digest.update(chunk)
                out.write(chunk)
    except (urllib.error.URLError, TimeoutError, OSError) as e:
        raise _network_error(tool, url, e) from None
    return digest.hexdigest()


def _extract(archive: Path, member: str, dest: Path, *, tool: Tool) -> None:
    # Only the one named regular file is read, and written to a path of our choosing: no member
    # path from the archive ever reaches the file system.
    try:
        with tarfile.open(archive, "r:gz") as tar:
            try:
                info = tar.getmember(member)
            except KeyError:
                names = ", ".join(tar.getnames()[:10])
                raise TestbedError(
                    f"{tool.name} {tool.version}: {archive.name} has no {member} (it has: {names}); "
                    "fix the pin's member"
                ) from None
            source = tar.extractfile(info) if info.isfile() else None
            if source is None:
                raise TestbedError(f"{tool.name} {tool.version}: {member} in {archive.name} is not a file")
            with source, dest.open("wb") as out:
                shutil.copyfileobj(source, out, _CHUNK)
    except (tarfile.TarError, EOFError) as e:
        raise TestbedError(
            f"{tool.name} {tool.version}: {archive.name} is not a valid .tar.gz: {e}"
        ) from None


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


# --- Is the CLI that will run the pinned one? ---------------------------------------------------


def parse_kind_version(output: str) -> str | None:
    """`kind version`: `kind v0.32.0 go1.26.3 linux/amd64` (pkg/cmd/kind/version/version.go)."""
    match = re.search(r"^kind (v\S+)", output, re.MULTILINE)
    return match.group(1) if match else None


def parse_kubectl_version(output: str) -> str | None:
    """`kubectl version --client -o json`: `clientVersion.gitVersion` (kubectl pkg/cmd/version)."""
    try:
        data: Any = json.loads(output)
    except ValueError:
        return None
    client = data.get("clientVersion") if isinstance(data, dict) else None
    version = client.get("gitVersion") if isinstance(client, dict) else None
    return version if isinstance(version, str) else None


def parse_helm_version(output: str) -> str | None:
    """`helm version --short`: `v4.2.4+g3900f43`, the build metadata dropped (pkg/cmd/version.go)."""
    match = re.search(r"^(v\d+\.\d+\.\d+[^+\s]*)", output.strip())
    return match.group(1) if match else None


def parse_istioctl_version(output: str) -> str | None:
    """`istioctl version --remote=false`: `client version: 1.30.3` (pkg/version/cobra.go)."""
    match = re.search(r"^client version: (\S+)", output, re.MULTILINE)
    return match.group(1) if match else None


def parse_linkerd_version(output: str) -> str | None:
    """`linkerd version --client --short`: `edge-26.8.3` (cli/cmd/version.go)."""
    lines = output.strip().splitlines()
    return lines[0].strip() if lines else None


def parse_cilium_version(output: str) -> str | None:
    """`cilium version --client`: `cilium-cli: v0.19.7 compiled with go1.26.5 on linux/amd64` first."""
    match = re.search(r"^cilium-cli: (\S+)", output, re.MULTILINE)
    return match.group(1) if match else None


#: Each CLI's version command (none needs a cluster) and the parser of its output.
VERSION_COMMANDS: dict[str, tuple[tuple[str, ...], Callable[[str], str | None]]] = {
    "kind": (("version",), parse_kind_version),
    "kubectl": (("version", "--client", "-o", "json"), parse_kubectl_version),
    "helm": (("version", "--short"), parse_helm_version),
    "istioctl": (("version", "--remote=false"), parse_istioctl_version),
    "linkerd": (("version", "--client", "--short"), parse_linkerd_version),
    "cilium": (("version", "--client"), parse_cilium_version),
}


def version_warning(name: str, output: str, *, pinned: str, path: Path) -> str | None:
    """A warning when the version a CLI printed is not the pin; None when it is."""
    args, parse = VERSION_COMMANDS[name]
    found = parse(output)
    if found is None:
        first = (output.strip().splitlines() or [""])[0]
        return f"{name} at {path}: could not read a version from `{name} {' '.join(args)}` (got {first!r})"
    if found != pinned:
        return (
            f"{name} at {path} is {found}, but the pin is {pinned}: results may differ; "
            f"run `nox -s tools -- --only {name}` to use the pinned one"
        )
    return None


def check_versions(
    names: Iterable[str] | None = None,
    *,
    versions: Versions | None = None,
    cache_dir: Path | None = None,
    timeout: float = VERSION_TIMEOUT_S,
) -> list[str]:
    """Run each CLI that `tool_path` finds and compare its version with the pin; one warning per problem."""
    versions = versions or load_versions()
    warnings = []
    for name in VERSION_COMMANDS if names is None else names:
        if name not in VERSION_COMMANDS:
            raise UsageError(f"no version check for {name!r} (known: {', '.join(VERSION_COMMANDS)})")
        try:
            path = tool_path(name, cache_dir=cache_dir, versions=versions)
        except UsageError as e:
            warnings.append(e.message)
            continue
        args, _ = VERSION_COMMANDS[name]
        try:
            output = proc.run([str(path), *args], timeout=timeout).stdout
        except CommandError as e:
            # `cilium version` looks up the latest stable release online after printing its own
            # version: what it printed before a timeout is enough.
            output = e.stdout
            if not output.strip():
                warnings.append(f"{name} at {path}: `{name} {' '.join(args)}` failed: {e.message}")
                continue
        warning = version_warning(name, output, pinned=versions.tool(name).version, path=path)
        if warning is not None:
            warnings.append(warning)
    return warnings


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m testbed.kube.tools",
        description="Download the pinned CLIs, each verified against its vendor's published sha256.",
    )
    parser.add_argument(
        "--only", action="append", default=[], metavar="NAME", help="this tool only; repeatable or a,b"
    )
    parser.add_argument(
        "--dir",
        type=Path,
        default=None,
        help=f"cache directory (default: ${ENV_DIR}, else ~/.cache/testbed/tools)",
    )
    parser.add_argument(
        "--mirror", default=None, metavar="URL", help="fetch every file from this base URL, same paths"
    )
    parser.add_argument("--check", action="store_true", help="then run each tool's version command")
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    args = parser.parse_args(argv)
    names = [n.strip() for item in args.only for n in item.split(",") if n.strip()] or None
    try:
        versions = load_versions()
        paths = ensure_tools(names, args.dir, versions=versions, url_base=args.mirror)
        for name, path in paths.items():
            print(f"{name} {versions.tool(name).version}: {path}")
        if args.check:
            checked = [n for n in paths if n in VERSION_COMMANDS]
            for warning in check_versions(checked, versions=versions, cache_dir=args.dir):
                print(f"warning: {warning}", file=sys.stderr)
    except TestbedError as e:
        if args.debug:
            traceback.print_exc()
        print(f"testbed.kube.tools: error: {e.message}", file=sys.stderr)
        return e.return_code
    return 0


if __name__ == "__main__":
    sys.exit(main())
