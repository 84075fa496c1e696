"""Docker for the kind platform: is a daemon there, build and save the testbed image, a kind node's CPU.

Every call goes through python-on-whales, which drives the same `docker` CLI a user would type (so the
CLI's context, config and credential helpers apply) and gives typed calls (`docker.image.exists`,
`docker.container.execute`, ...) instead of hand-built argv, with failures as `DockerException`s that
keep the command, its exit code and its output. These are turned into `CommandError`s, like the ones
`testbed.proc.run` raises; each call prints `+ docker ...` to stderr when `proc.ECHO` is set (`--verbose`)
and is written to the command log (`testbed.proc.log_commands_to`) as the command `echo()` named, with
its exit code and duration, when `call()` ends.

python-on-whales' `run()` calls `subprocess.run` without a timeout, so each call here gets its own
`DockerClient` whose `client_call` is `timeout --kill-after=5 SECONDS docker`: coreutils' `timeout`
sends SIGTERM to the CLI's process group (CLI plugins such as buildx included) after SECONDS, SIGKILL
5 s later, and exits 124 (137 after the SIGKILL). python-on-whales puts `client_call` in front of every
command it runs, so a daemon that stops answering cannot hang the testbed; such an exit becomes a
one-line `CommandError` (with `exit_code` None, as in `proc.run`) naming the docker command and the
timeout. The timeout bounds each CLI run: a python-on-whales call that runs the CLI twice (`image.save`
inspects the image first, a build inspects its result) can take up to twice as long.

A kind node is a Docker container, so its CPU (kubelet, containerd and every pod on it) is the CPU of
that container's cgroup: `run_in_nodes()` runs one script in every node at once (the kind platform's
read of every container's cgroup, `testbed.kube.metrics.NODE_READ`, which says in one line when a host
has no cgroup v2); in a node,
`/sys/fs/cgroup` is the node's own cgroup (Docker's private cgroup namespace, which kind uses on
cgroup v2). The Docker stats API has a cumulative counter too, but the
CLI does not show it: `docker stats` prints a percentage over its own short sample. cgroup v1 is not
read: a Kubernetes 1.35 kubelet does not start on it (`failCgroupV1` defaults to true since 1.35,
kubernetes/kubernetes#134298), so a kind node there could not run the benchmark anyway.
"""

from __future__ import annotations

import concurrent.futures
import shlex
import shutil
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TypeVar

from python_on_whales import DockerClient
from python_on_whales.exceptions import DockerException
from python_on_whales.utils import run as pow_run

from testbed import proc
from testbed.errors import CommandError, TestbedError, UsageError

DAEMON_TIMEOUT_S = 20.0
BUILD_TIMEOUT_S = 1800.0
SAVE_TIMEOUT_S = 600.0
EXEC_TIMEOUT_S = 30.0
#: `docker image save --platform` needs this API version (docker/cli v28.0.0 cli/command/image/save.go).
PLATFORM_SAVE_API = (1, 48)

#: How long `timeout` waits after its SIGTERM before it sends SIGKILL.
KILL_AFTER_S = 5
#: Exit codes of coreutils' `timeout` when the time ran out: after SIGTERM, and after SIGKILL (128 + 9).
TIMED_OUT_EXIT_CODES = (124, 137)
NO_DOCKER_CLI = "the docker CLI is not on PATH: install Docker (Debian: apt-get install docker.io)"

T = TypeVar("T")


def daemon_reachable(*, timeout: float = DAEMON_TIMEOUT_S) -> str | None:
    """None if a Docker daemon answers; otherwise what is wrong, in one line."""
    echo("version", "--format", "{{json .}}")
    try:
        call(timeout, lambda docker: docker.version())
    except UsageError as e:
        return e.message
    except CommandError as e:
        if e.exit_code is None:
            return f"the Docker daemon did not answer within {timeout:g} s"
        last = (e.stderr.strip() or e.stdout.strip()).splitlines()[-1:] or ["no output"]
        return f"no Docker daemon answers: {last[0]}"
    return None


def daemon_cgroup_version(*, timeout: float = DAEMON_TIMEOUT_S) -> int:
    """The cgroup version (1 or 2) of the daemon's host: kind nodes for Kubernetes 1.35 need 2."""
    # python-on-whales' `SystemInfo` (0.81) has no `CgroupVersion` field, so `docker.info()` drops it:
    # the same `docker info` is run through python-on-whales' own runner, with the client's timeout.
    args = ["info", "--format", "{{.CgroupVersion}}"]
    echo(*args)

    def info(docker: DockerClient) -> str:
        return pow_run([*docker.client_config.docker_cmd, *args], return_stderr=False)

    out = call(timeout, info).strip()
    if out not in ("1", "2"):
        raise TestbedError(f"`docker info` reports cgroup version {out!r}; expected 1 or 2")
    return int(out)


def build_image(
    context_dir: Path,
    tag: str,
    *,
    build_args: Mapping[str, str] | None = None,
    dockerfile: Path | None = None,
    timeout: float = BUILD_TIMEOUT_S,
) -> None:
    """Build `context_dir` (with its `Dockerfile`, or `dockerfile`) into the daemon as `tag`.

    With the buildx plugin, `docker buildx build --load`: the image lands in the daemon whatever the
    current builder (a docker-container one keeps results in its own cache without `--load`). Without
    it (Debian's docker.io), the classic builder: `docker build`.
    """
    args = dict(sorted((build_args or {}).items()))
    options: list[str] = [f for name, value in args.items() for f in ("--build-arg", f"{name}={value}")]
    if dockerfile is not None:
        options += ["--file", str(dockerfile)]

    def build(docker: DockerClient) -> None:
        if _buildx_installed(docker):
            echo("buildx", "build", *options, "--load", "--tag", tag, str(context_dir))
            docker.buildx.build(
                context_dir, build_args=args, file=dockerfile, load=True, progress=False, tags=[tag]
            )
        else:
            echo("build", "--quiet", *options, "--tag", tag, str(context_dir))
            docker.legacy_build(context_dir, build_args=args, file=dockerfile, tags=tag, quiet=True)

    call(timeout, build)
    if not image_exists(tag):
        raise TestbedError(f"the docker build finished but {tag} is not in the daemon's images")


def image_exists(tag: str, *, timeout: float = DAEMON_TIMEOUT_S) -> bool:
    """Whether the daemon has an image `tag` (nothing is pulled)."""
    echo("image", "inspect", tag)
    return call(timeout, lambda docker: docker.image.exists(tag))


def save_image(tag: str, path: Path, *, timeout: float = SAVE_TIMEOUT_S) -> Path:
    """`docker image save` of `tag` to the tar file `path` (for `kind load image-archive` and CI caches)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    echo("image", "save", "--output", str(path), tag)
    call(timeout, lambda docker: docker.image.save(tag, output=path))
    return path


def api_version(*, timeout: float = DAEMON_TIMEOUT_S) -> tuple[int, int]:
    """The API version the CLI speaks with the daemon: the lower of the two, as negotiated."""
    # docker/cli v28.0.0 cli/command/system/version.go: `.Client.APIVersion` is `CurrentVersion()`, the
    # negotiated version, which is what cmd/docker/docker.go compares a flag's "version" annotation with.
    args = ["version", "--format", "{{.Client.APIVersion}}"]
    echo(*args)

    def version(docker: DockerClient) -> str:
        return pow_run([*docker.client_config.docker_cmd, *args], return_stderr=False)

    out = call(timeout, version).strip()
    major, sep, minor = out.partition(".")
    if not (sep and major.isdigit() and minor.isdigit()):
        raise TestbedError(f"`docker version` reports API version {out!r}; expected MAJOR.MINOR")
    return int(major), int(minor)


def save_images(
    names: Sequence[str], path: Path, *, platform: str | None, timeout: float = SAVE_TIMEOUT_S
) -> list[str]:
    """`docker image save --platform PLATFORM --output PATH NAMES...`; returns the argv after `docker`.

    With `platform`, only that platform's manifest goes into the archive. Docker 29 keeps pulled images in
    the containerd image store, where an image is its whole multi-platform index although only the host's
    platform was pulled: saved without `--platform`, the archive's index names manifests whose content is
    not in it, and kind's import (`ctr images import --all-platforms --digests`, kind v0.32.0
    pkg/cluster/nodeutils/util.go LoadImageArchive) fails with "content digest ... not found" (kind issues
    3795, 4224; kind PR 4247 documents this very workaround). `--platform` is in docker/cli since v28.0.0
    (cli/command/image/save.go, annotated API 1.48); a CLI or daemon below API 1.48 refuses the flag
    (cmd/docker/docker.go: "requires API version 1.48"), so there the archive is saved without it, which
    is right for the classic image store, the default before Docker 29 (it holds one platform per tag).
    """
    args = ["image", "save"]
    if platform is not None and api_version(timeout=timeout) >= PLATFORM_SAVE_API:
        args += ["--platform", platform]
    args += ["--output", str(path), *names]
    echo(*args)

    def save(docker: DockerClient) -> None:
        pow_run([*docker.client_config.docker_cmd, *args])

    call(timeout, save)
    return args


def remove_images(names: Sequence[str], *, timeout: float = DAEMON_TIMEOUT_S) -> None:
    """`docker image rm --force NAMES...`: untag each, delete what is left untagged; absent ones pass."""
    # docker/cli v28.0.0 cli/command/image/remove.go: with --force a name that is not found is no error.
    echo("image", "rm", "--force", *names)
    call(timeout, lambda docker: docker.image.remove(list(names), force=True))


def run_in_nodes(
    containers: Sequence[str], script: str, *, timeout: float = EXEC_TIMEOUT_S
) -> dict[str, str]:
    """`docker exec NODE sh -c SCRIPT` in every node container at once (a thread each); stdout by node.

    For reads that must happen at one moment in all nodes (the cgroups at a window's edge): each node
    runs the same script once, and the calls overlap instead of queueing one after the other.
    """

    def one(container: str) -> str:
        echo("exec", container, "sh", "-c", script)
        argv = ["docker", "exec", container, "sh", "-c", script]
        out = call(
            timeout, lambda docker: docker.container.execute(container, ["sh", "-c", script]), argv=argv
        )
        if not isinstance(out, str):  # only `detach` or `stream` make `execute` return something else
            raise TypeError(f"docker.container.execute returned {type(out).__name__}, not the output")
        return out

    if not containers:
        return {}
    with concurrent.futures.ThreadPoolExecutor(max_workers=len(containers)) as pool:
        futures = {container: pool.submit(one, container) for container in containers}
        return {container: future.result() for container, future in futures.items()}


def _client(timeout: float) -> DockerClient:
    """A client whose every `docker` run is ended by coreutils' `timeout` after `timeout` seconds."""
    docker = shutil.which("docker")
    if docker is None:
        raise UsageError(NO_DOCKER_CLI)
    timeout_bin = shutil.which("timeout")
    if timeout_bin is None:
        raise UsageError("coreutils' `timeout` is not on PATH: install coreutils")
    return DockerClient(client_call=[timeout_bin, f"--kill-after={KILL_AFTER_S}", f"{timeout:g}", docker])


#: How many words of `client_call` come before the docker binary.
_PREFIX_WORDS = 3


def call(timeout: float, fn: Callable[[DockerClient], T], *, argv: Sequence[str] | None = None) -> T:
    """`fn` with a fresh timed client, logged; a `DockerException` becomes a one-line `CommandError`.

    `argv`: the docker command to log it under, when the caller knows it (calls from several threads)."""
    with proc.Logged(["docker"], timeout) as logged:
        try:
            docker = _client(timeout)
            try:
                result = fn(docker)
            except DockerException as e:
                error = _command_error(e, timeout, time.monotonic() - logged.started)
                logged.argv, logged.exit_code = error.argv, error.exit_code
                logged.timed_out = error.exit_code is None
                raise error from None
            logged.exit_code = 0
            return result
        finally:
            # The command `echo()` printed for this call (inside `fn` for a build), the same in the log.
            logged.argv = list(argv) if argv is not None else getattr(_echoed, "argv", None) or logged.argv
            _echoed.argv = None


def _buildx_installed(docker: DockerClient) -> bool:
    try:
        return docker.buildx.is_installed()
    except DockerException as e:
        if e.return_code in TIMED_OUT_EXIT_CODES:
            raise
        return False  # `docker buildx --help` fails with "unknown command" when there is no plugin


def _command_error(e: DockerException, timeout: float, elapsed: float) -> CommandError:
    argv = ["docker", *map(str, e.docker_command[_PREFIX_WORDS + 1 :])]
    command = shlex.join(argv)
    stdout, stderr = e.stdout or "", e.stderr or ""
    # `docker exec` passes on its command's exit code: 124 is a timeout only if the time really ran out.
    if e.return_code in TIMED_OUT_EXIT_CODES and elapsed >= 0.95 * timeout:
        return CommandError(
            f"docker call timed out after {timeout:g} s: {command}",
            argv=argv,
            exit_code=None,
            stdout=stdout,
            stderr=stderr,
        )
    last = (stderr.strip() or stdout.strip()).splitlines()[-1:] or [""]
    return CommandError(
        f"{command} exited with code {e.return_code}: {last[0]}",
        argv=argv,
        exit_code=e.return_code,
        stdout=stdout,
        stderr=stderr,
    )


#: The last command `echo()` printed, per thread (`run_in_nodes` calls from several): `call()` logs it.
_echoed = threading.local()


def echo(*args: str) -> None:
    """`+ docker ...` on stderr, as `testbed.proc.run` prints its commands (only with `--verbose`)."""
    _echoed.argv = ["docker", *args]
    if proc.ECHO:
        print("+ " + shlex.join(["docker", *args]), file=sys.stderr, flush=True)
