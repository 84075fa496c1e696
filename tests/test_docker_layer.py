"""`testbed.kube.docker` against a real Docker daemon, with an image made here: nothing is pulled.

The base image is a static busybox (Debian's busybox-static) in an otherwise empty root file system,
brought in with `docker import`. Without a daemon, these tests skip: `.ci/start-dockerd` starts one.
Every container and image a test creates is removed at its end.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import struct
import tarfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from testbed import proc
from testbed.errors import CommandError, TestbedError
from testbed.kube import docker, metrics

SKIP_NO_DAEMON = "no Docker daemon: run .ci/start-dockerd"
PT_INTERP = 3  # the ELF program header of a dynamically linked executable
BURN = "i=0; while [ $i -lt 300000 ]; do i=$((i+1)); done"  # about a second of one CPU in busybox's sh
UNIFIED = Path("/sys/fs/cgroup/unified")  # the cgroup v2 tree of systemd's hybrid layout


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def static_busybox() -> Path | None:
    """A statically linked busybox (no PT_INTERP), which runs alone in an empty image."""
    path = Path("/bin/busybox")
    if not path.is_file():
        return None
    head = path.read_bytes()[:65536]
    if head[:4] != b"\x7fELF" or head[4] != 2 or head[5] != 1:  # 64-bit little-endian only
        return None
    (phoff,) = struct.unpack_from("<Q", head, 32)
    entsize, count = struct.unpack_from("<HH", head, 54)
    types = [struct.unpack_from("<I", head, phoff + i * entsize)[0] for i in range(count)]
    return None if PT_INTERP in types else path


@pytest.fixture(scope="module")
def daemon() -> None:
    problem = docker.daemon_reachable()
    if problem is not None:
        pytest.skip(f"{SKIP_NO_DAEMON} ({problem})")


@pytest.fixture(scope="module")
def base_image(daemon: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A busybox image imported from a tar of a local root file system; removed with its containers."""
    busybox = static_busybox()
    if busybox is None:
        pytest.skip("no static /bin/busybox: install busybox-static (.ci/start-dockerd does)")
    root = tmp_path_factory.mktemp("rootfs")
    (root / "bin").mkdir()
    (root / "bin" / "busybox").write_bytes(busybox.read_bytes())
    (root / "bin" / "busybox").chmod(0o755)
    for applet in ("sh", "cat", "sleep", "echo"):
        (root / "bin" / applet).symlink_to("busybox")
    archive = root.parent / "rootfs.tar"
    with tarfile.open(archive, "w") as tar:
        tar.add(root / "bin", arcname="bin")
    tag = unique("testbed-test-busybox") + ":latest"
    proc.run(["docker", "import", str(archive), tag], timeout=120)
    try:
        yield tag
    finally:
        # Containers of the image and of images built from it (a failed build leaves one behind).
        leftovers = proc.run(
            ["docker", "ps", "--all", "--quiet", "--filter", f"ancestor={tag}"]
        ).stdout.split()
        if leftovers:
            proc.run(["docker", "rm", "--force", *leftovers])
        proc.run(["docker", "image", "rm", "--force", tag])


@contextlib.contextmanager
def running(image: str, *args: str) -> Iterator[str]:
    """A container that sleeps until removed, started with extra `docker run` options."""
    name = unique("testbed-test")
    proc.run(["docker", "run", "--detach", "--name", name, *args, image, "sleep", "600"], timeout=60)
    try:
        yield name
    finally:
        proc.run(["docker", "rm", "--force", name], timeout=60)


def test_unreachable_daemon_says_what_to_do(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DOCKER_HOST", "unix:///nonexistent/docker.sock")
    problem = docker.daemon_reachable()
    assert problem is not None
    assert problem.startswith("no Docker daemon answers: ")
    assert "/nonexistent/docker.sock" in problem  # the docker CLI's own words


def test_missing_cli_says_what_to_install(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    assert docker.daemon_reachable() == (
        "the docker CLI is not on PATH: install Docker (Debian: apt-get install docker.io)"
    )


def test_image_exists(base_image: str) -> None:
    assert docker.image_exists(base_image)
    assert not docker.image_exists(unique("testbed-test-absent") + ":nope")


def test_build_image_from_a_local_image_with_build_args(base_image: str, tmp_path: Path) -> None:
    (tmp_path / "Dockerfile").write_text(
        'ARG BASE\nFROM ${BASE}\nARG GREETING\nRUN echo "$GREETING" > /greeting\n'
    )
    tag = unique("testbed-test-built") + ":1"
    try:
        docker.build_image(
            tmp_path, tag, build_args={"BASE": base_image, "GREETING": "hello from a build arg"}
        )
        assert docker.image_exists(tag)
        out = proc.run(["docker", "run", "--rm", tag, "cat", "/greeting"], timeout=60).stdout
        assert out == "hello from a build arg\n"
    finally:
        proc.run(["docker", "image", "rm", "--force", tag])


def test_a_failing_build_raises_with_its_output(base_image: str, tmp_path: Path) -> None:
    (tmp_path / "Dockerfile").write_text(f"FROM {base_image}\nRUN echo about to fail && false\n")
    tag = unique("testbed-test-broken") + ":1"
    with pytest.raises(CommandError) as caught:
        docker.build_image(tmp_path, tag)
    assert caught.value.exit_code not in (0, None)
    assert "\n" not in str(caught.value)
    assert caught.value.argv[0] == "docker"  # not the `timeout` wrapper
    assert "about to fail" in caught.value.stdout + caught.value.stderr
    assert not docker.image_exists(tag)


def test_save_image(base_image: str, tmp_path: Path) -> None:
    path = docker.save_image(base_image, tmp_path / "cache" / "busybox.tar")
    with tarfile.open(path) as tar:
        assert "manifest.json" in tar.getnames()


def test_save_images_for_one_platform_when_the_daemon_can(base_image: str, tmp_path: Path) -> None:
    """`--platform` exactly when the negotiated API is 1.48 or later (docker/cli v28.0.0 save.go)."""
    platform = f"linux/{proc.run(['docker', 'version', '--format', '{{.Server.Arch}}']).stdout.strip()}"
    path = tmp_path / "images.tar"
    argv = docker.save_images([base_image], path, platform=platform)
    with_platform = docker.api_version() >= docker.PLATFORM_SAVE_API
    assert ("--platform" in argv) == with_platform
    if with_platform:
        assert argv[argv.index("--platform") + 1] == platform
    with tarfile.open(path) as tar:
        assert "manifest.json" in tar.getnames()
        manifest = json.loads(tar.extractfile("manifest.json").read())  # type: ignore[union-attr]
    assert [entry["RepoTags"] for entry in manifest] == [[base_image]]


def test_api_version_is_what_the_cli_negotiated(daemon: None) -> None:
    out = proc.run(["docker", "version", "--format", "{{.Client.APIVersion}}"]).stdout.strip()
    assert docker.api_version() == tuple(int(n) for n in out.split("."))
    assert docker.api_version() >= (1, 12)


def test_remove_images_removes_every_name_and_passes_over_absent_ones(base_image: str) -> None:
    first, second = unique("testbed-test-rm") + ":a", unique("testbed-test-rm") + ":b"
    for name in (first, second):
        proc.run(["docker", "image", "tag", base_image, name])
    docker.remove_images([first, second, unique("testbed-test-absent") + ":nope"])
    assert not docker.image_exists(first) and not docker.image_exists(second)
    assert docker.image_exists(base_image)  # other names of the same image stay


@contextlib.contextmanager
def node_like(image: str) -> Iterator[str]:
    """A container whose /sys/fs/cgroup is its own cgroup v2, as in a kind node on a cgroup v2 host.

    On a daemon with cgroup v1 but the hybrid layout (cgroup v2 mounted at /sys/fs/cgroup/unified, where
    runc also places each container), the container is put under a parent cgroup made for it, and that
    parent's v2 directory is mounted at /sys/fs/cgroup: its `cpu.stat` counts exactly this container.
    """
    if docker.daemon_cgroup_version() == 2:
        with running(image) as name:
            yield name
        return
    local = proc.run(["docker", "info", "--format", "{{.Name}}"]).stdout.strip() == socket.gethostname()
    if not (local and (UNIFIED / "cgroup.procs").is_file() and Path("/proc/self/cgroup").is_file()):
        pytest.skip("dockerd uses cgroup v1 and this host has no cgroup v2 tree at /sys/fs/cgroup/unified")
    parent = unique("testbed-test-cgroup")
    try:
        (UNIFIED / parent).mkdir()
    except PermissionError:
        pytest.skip(f"dockerd uses cgroup v1, and making a cgroup v2 parent under {UNIFIED} needs root")
    try:
        with running(
            image, f"--cgroup-parent=/{parent}", "--volume", f"{UNIFIED / parent}:/sys/fs/cgroup:ro"
        ) as name:
            yield name
    finally:
        remove_cgroups(parent)


def remove_cgroups(parent: str) -> None:
    """The parent cgroup, in the v2 tree and in every v1 hierarchy where runc also made it."""
    # runc removes the container's own cgroups just after the container is gone, not their parent.
    for _ in range(50):
        left = [*Path("/sys/fs/cgroup").glob(f"*/{parent}")]
        for directory in left:
            with contextlib.suppress(OSError):
                directory.rmdir()
        if not left:
            return
        time.sleep(0.1)


def test_a_node_read_without_cgroup_v2_is_a_clear_error(base_image: str) -> None:
    # An empty /sys/fs/cgroup looks, to the reader, like a node on a cgroup v1 host: no `cpu.stat` there.
    with running(base_image, "--tmpfs", "/sys/fs/cgroup") as name:
        out = docker.run_in_nodes([name], node_read_here())[name]
    with pytest.raises(
        TestbedError, match=r"uses cgroup v1, on which a Kubernetes 1.35 kubelet does not start"
    ):
        metrics.parse_node_read(out, node=name)


def test_a_node_read_of_a_missing_container_raises_the_docker_error(daemon: None) -> None:
    with pytest.raises(CommandError, match="No such container"):
        docker.run_in_nodes([unique("testbed-test-absent")], "true")


def test_a_docker_call_that_outlives_its_timeout_is_stopped_and_named(base_image: str) -> None:
    # A node read that hangs (here: it sleeps for a minute) is ended by the timeout and named.
    with running(base_image) as name:
        started = time.monotonic()
        with pytest.raises(TestbedError) as caught:
            docker.run_in_nodes([name], "sleep 60", timeout=1.5)
        elapsed = time.monotonic() - started
    assert str(caught.value) == (f"docker call timed out after 1.5 s: docker exec {name} sh -c 'sleep 60'")
    assert isinstance(caught.value, CommandError)
    assert caught.value.exit_code is None
    assert 1.5 <= elapsed < 1.5 + docker.KILL_AFTER_S + 5


def test_each_call_echoes_its_docker_command_with_verbose(
    base_image: str, capfd: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(proc, "ECHO", True)  # what `testbed --verbose` sets
    assert docker.image_exists(base_image)
    assert capfd.readouterr().err == f"+ docker image inspect {base_image}\n"
    monkeypatch.setattr(proc, "ECHO", False)
    assert docker.image_exists(base_image)
    assert capfd.readouterr().err == ""


def test_each_call_is_in_the_command_log_with_its_exit_code(base_image: str, tmp_path: Path) -> None:
    log = tmp_path / "commands.log"
    absent = unique("testbed-test-absent")
    with proc.log_commands_to(log), running(base_image) as first, running(base_image) as second:
        assert docker.image_exists(base_image)
        docker.run_in_nodes([first, second], "true")  # in two threads at once: each line names its node
        with pytest.raises(CommandError) as missing:
            docker.run_in_nodes([absent], "true")
        with pytest.raises(CommandError) as hung:
            docker.run_in_nodes([first], "sleep 60", timeout=1.5)
    lines = [line.split(" | ", 3) for line in log.read_text().splitlines()]
    calls = {command: (outcome, took) for _, outcome, took, command in lines}
    assert calls[f"docker image inspect {base_image}"][0] == "exit 0"
    assert calls[f"docker exec {first} sh -c true"][0] == "exit 0"
    assert calls[f"docker exec {second} sh -c true"][0] == "exit 0"
    assert missing.value.exit_code not in (0, None)
    assert calls[f"docker exec {absent} sh -c true"][0] == f"exit {missing.value.exit_code}"
    outcome, took = calls[f"docker exec {first} sh -c 'sleep 60'"]
    assert hung.value.exit_code is None and outcome == "exit None: timed out after 1.5 s"
    assert 1.5 <= float(took.removesuffix(" s")) < 1.5 + docker.KILL_AFTER_S + 5
    # The containers' own `docker run` and `docker rm`, through testbed.proc, are there too.
    assert sum(command.startswith(("docker run ", "docker rm ")) for *_, command in lines) == 4
    assert len(lines) == 4 + 5


# --- the cgroups of a kind node, read at a window's edge (issue 10, item 7) -----------------------------

#: What `testbed.kube.metrics.NODE_READ` runs, as busybox applets (a kind node has Debian's own).
NODE_TOOLS = ("date", "grep", "find", "awk")
#: GNU `date +%s.%N` (kind's node image is Debian's): busybox's date has no %N and its shell runs its own
#: applet whatever PATH says, so in the test the read's first command prints the kernel's wall clock from
#: adjtimex(2) instead, to the microsecond; the rest of the read runs as it is.
GNU_DATE = "date +%s.%N"
BUSYBOX_DATE = (
    "busybox adjtimex | awk '/time.tv_sec/ {s = $2} /time.tv_usec/ {u = $2} "
    'END {printf "%d.%06d\\n", s, u}\''
)


def node_read_here() -> str:
    assert metrics.NODE_READ.startswith(GNU_DATE + "; ")
    # The time is read twice: before the scan of the containers and after it.
    assert metrics.NODE_READ.count(GNU_DATE) == 2
    return metrics.NODE_READ.replace(GNU_DATE, BUSYBOX_DATE)


@pytest.fixture(scope="module")
def node_image(base_image: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The busybox image with the commands that the node read runs."""
    context = tmp_path_factory.mktemp("node-image")
    links = " && ".join(f"busybox ln -s busybox /bin/{tool}" for tool in NODE_TOOLS)
    (context / "Dockerfile").write_text(f"FROM {base_image}\nRUN {links}\n")
    tag = unique("testbed-test-node") + ":1"
    docker.build_image(context, tag)
    try:
        yield tag
    finally:
        proc.run(["docker", "image", "rm", "--force", tag])


def node_cgroup(name: str) -> Path:
    """The cgroup v2 directory that is /sys/fs/cgroup inside a `node_like` container, seen from here."""
    mounts = proc.run(["docker", "inspect", "--format", "{{json .Mounts}}", name]).stdout
    for mount in json.loads(mounts):
        if mount["Destination"] == "/sys/fs/cgroup":
            return Path(mount["Source"])
    pytest.skip("the daemon uses cgroup v2: a pod's scope cannot be made inside the node from here")


def test_a_node_read_sees_a_pod_containers_cpu_in_its_systemd_scope(node_image: str) -> None:
    """A cgroup laid out as kind's kubelet and containerd make it, with work in it, read as kind is."""
    cid = uuid.uuid4().hex * 2  # 64 hex digits, like a containerd id
    pod = "kubelet-kubepods-besteffort-pod0d6c6c35_4bb1_4c83_9a0e_5b3c1e1f4a11.slice"
    with node_like(node_image) as name:
        scope = (
            node_cgroup(name)
            / "kubelet.slice/kubelet-kubepods.slice/kubelet-kubepods-besteffort.slice"
            / pod
            / f"cri-containerd-{cid}.scope"
        )
        scope.mkdir(parents=True)
        try:
            first = metrics.parse_node_read(docker.run_in_nodes([name], node_read_here())[name], node=name)
            # A process here in the scope burns about a second of CPU (a host process: the cgroup is what
            # counts, and the node read sees it under the node's own cgroup as a kind node does).
            proc.run(["sh", "-c", f"echo $$ > {scope / 'cgroup.procs'} && exec sh -c '{BURN}'"], timeout=60)
            second = metrics.parse_node_read(docker.run_in_nodes([name], node_read_here())[name], node=name)
        finally:
            for directory in [scope, *scope.parents][:5]:
                with contextlib.suppress(OSError):
                    directory.rmdir()
    assert set(first.containers) == set(second.containers) == {cid}
    used = second.containers[cid].cpu_seconds - first.containers[cid].cpu_seconds
    assert used > 0.2
    assert second.node.cpu_seconds - first.node.cpu_seconds >= used  # the node's cgroup holds the scope's
    assert 0 < second.at_unix - first.at_unix < 60 and abs(second.at_unix - time.time()) < 30
    assert second.host["user"] + second.host["system"] > first.host["user"] + first.host["system"]
    assert second.cores == os.cpu_count()
    # Read again after the scan: later, and the node's counter not below its first value.
    assert second.scanned_unix is not None and second.scanned_unix >= second.at_unix
    assert second.node_scanned is not None and second.node_scanned.cpu_seconds >= second.node.cpu_seconds
    assert second.host_scanned is not None and second.host_scanned["idle"] >= second.host["idle"]


def test_run_in_nodes_reads_every_node_at_once(base_image: str) -> None:
    with running(base_image) as one, running(base_image) as two:
        started = time.monotonic()
        out = docker.run_in_nodes([one, two], "sleep 1; echo $HOSTNAME")
        elapsed = time.monotonic() - started
    assert set(out) == {one, two}
    assert elapsed < 1.9  # in parallel: two one-second reads in about one second
