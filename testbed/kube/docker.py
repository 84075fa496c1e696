"""Docker for the kind platform: is a daemon there, build and save the testbed image, a kind node's CPU.

Every call runs the `docker` CLI through `testbed.proc.run`, with a timeout. python-on-whales (which
also drives the CLI) is not used for these calls: its `python_on_whales.utils.run()` calls
`subprocess.run` without a timeout, so a daemon that stops answering would hang the testbed, and it
would bypass the one helper that echoes `+ docker ...` and raises `CommandError` with the output.

A kind node is a Docker container, so its CPU (kubelet, containerd and every pod on it) is the CPU of
that container's cgroup: `node_cpu_seconds()` reads the cumulative `usage_usec` of cgroup v2's
`cpu.stat` inside the node, where `/sys/fs/cgroup` is the node's own cgroup (Docker's private cgroup
namespace, which kind uses on cgroup v2). The Docker stats API has a cumulative counter too, but the
CLI does not show it: `docker stats` prints a percentage over its own short sample. cgroup v1 is not
read: a Kubernetes 1.35 kubelet does not start on it (`failCgroupV1` defaults to true since 1.35,
kubernetes/kubernetes#134298), so a kind node there could not run the benchmark anyway.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from testbed import proc
from testbed.errors import CommandError, TestbedError, UsageError

#: The node's own cgroup inside a kind node container (cgroup v2, private cgroup namespace).
CPU_STAT = "/sys/fs/cgroup/cpu.stat"

DAEMON_TIMEOUT_S = 20.0
BUILD_TIMEOUT_S = 1800.0
SAVE_TIMEOUT_S = 600.0
EXEC_TIMEOUT_S = 30.0


def daemon_reachable(*, timeout: float = DAEMON_TIMEOUT_S) -> str | None:
    """None if a Docker daemon answers; otherwise what is wrong, in one line."""
    try:
        proc.run(["docker", "version", "--format", "{{.Server.Version}}"], timeout=timeout)
    except UsageError:
        return "the docker CLI is not on PATH: install Docker (Debian: apt-get install docker.io)"
    except CommandError as e:
        if e.exit_code is None:
            return f"the Docker daemon did not answer within {timeout:g} s"
        last = (e.stderr.strip() or e.stdout.strip()).splitlines()[-1:] or ["no output"]
        return f"no Docker daemon answers: {last[0]}"
    return None


def daemon_cgroup_version(*, timeout: float = DAEMON_TIMEOUT_S) -> int:
    """The cgroup version (1 or 2) of the daemon's host: kind nodes for Kubernetes 1.35 need 2."""
    out = proc.run(["docker", "info", "--format", "{{.CgroupVersion}}"], timeout=timeout).stdout.strip()
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
    """`docker build` of `context_dir` (with its `Dockerfile`, or `dockerfile`) into the daemon as `tag`."""
    argv = ["docker", "build", "--tag", tag]
    for name, value in sorted((build_args or {}).items()):
        argv += ["--build-arg", f"{name}={value}"]
    if dockerfile is not None:
        argv += ["--file", str(dockerfile)]
    argv.append(str(context_dir))
    proc.run(argv, timeout=timeout)
    # A buildx builder with the docker-container driver builds into its own cache, not into the daemon.
    if not image_exists(tag):
        raise TestbedError(
            f"`docker build` finished but {tag} is not in the daemon's images: "
            "if the default buildx builder is a docker-container one, run `docker buildx use default`"
        )


def image_exists(tag: str, *, timeout: float = DAEMON_TIMEOUT_S) -> bool:
    """Whether the daemon has an image `tag` (nothing is pulled)."""
    try:
        proc.run(["docker", "image", "inspect", "--format", "{{.Id}}", tag], timeout=timeout)
    except CommandError as e:
        if e.exit_code is not None and "no such image" in (e.stderr + e.stdout).lower():
            return False
        raise
    return True


def save_image(tag: str, path: Path, *, timeout: float = SAVE_TIMEOUT_S) -> Path:
    """`docker image save` of `tag` to the tar file `path` (for `kind load image-archive` and CI caches)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    proc.run(["docker", "image", "save", "--output", str(path), tag], timeout=timeout)
    return path


def node_cpu_seconds(container: str, *, timeout: float = EXEC_TIMEOUT_S) -> float:
    """Cumulative CPU seconds of everything in a kind node container, from its cgroup v2 `cpu.stat`."""
    try:
        result = proc.run(["docker", "exec", container, "cat", CPU_STAT], timeout=timeout)
    except CommandError as e:
        if e.exit_code is not None and "no such file" in e.stderr.lower():
            raise TestbedError(
                f"container {container} has no {CPU_STAT}: its Docker host uses cgroup v1, on which a "
                "Kubernetes 1.35 kubelet does not start; use a cgroup v2 host (e.g. GitHub's ubuntu-latest)"
            ) from None
        raise
    return parse_cpu_stat(result.stdout, source=f"{CPU_STAT} of {container}")


def parse_cpu_stat(text: str, *, source: str = CPU_STAT) -> float:
    """Seconds from the `usage_usec` line of a cgroup v2 `cpu.stat`."""
    for line in text.splitlines():
        key, _, value = line.partition(" ")
        if key == "usage_usec":
            try:
                return int(value) / 1e6
            except ValueError:
                break
    raise TestbedError(f"{source} has no `usage_usec N` line: {text.strip()[:200]!r}")
