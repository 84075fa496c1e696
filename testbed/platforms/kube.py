"""What the `kind` and `existing` platforms share: running a cluster plan, a trial, and the clean-up.

The plan (`testbed.kube.cluster`, `trial`) says what to run; this runs it, through `testbed.proc.run`
(commands) and `testbed.kube.docker` (image, node containers). A cluster is brought up at the first
trial of its mesh and kept for the next ones; inside `session()` (the whole run, see `testbed.run`) it
is torn down at the end, after Ctrl-C too, and after a failure once its logs are in the run directory.
Without a session, `deploy()` is a session of its own, so that the `Platform` contract (down on exit) holds.

A mesh is verified once its topology is up (`ClusterPlan.verify`): its checks' output is kept in
`work/<mesh>/verify/`, and a failed check stops the run like any other failure, so the cluster's logs are
exported and the cluster deleted. What the checks found is every trial's `mesh_evidence`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import json
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from testbed import proc
from testbed.errors import CommandError, TestbedError, TrialFailed
from testbed.kube import actions as ka
from testbed.kube import cluster as kp
from testbed.kube import health, metrics, tools
from testbed.kube import render as kr
from testbed.kube import trial as kt
from testbed.loadgen import marks
from testbed.loadgen.config import LoadConfig
from testbed.loadgen.result import SCHEMA as LOAD_SCHEMA
from testbed.meshes.kube import KubeMesh, kube_mesh
from testbed.spec.scenario import Scenario
from testbed.spec.topology import Topology
from testbed.spec.trials import Trial, load_config
from testbed.spec.versions import Versions, load_versions


@dataclass
class KubeDeployment:
    mesh: str
    target_url: str
    plan: kp.ClusterPlan
    nodes: tuple[str, ...]
    evidence: dict[str, Any] = field(default_factory=dict)


def say(message: str) -> None:
    """Progress for the user, on stderr beside the `+ cmd` echo of `--verbose` (off with `--quiet`)."""
    if not proc.QUIET:
        print(f"testbed: {message}", file=sys.stderr, flush=True)


def warn(message: str) -> None:
    print(f"testbed: warning: {message}", file=sys.stderr, flush=True)


class KubePlatform:
    """The pipeline on any Kubernetes cluster; `KindPlatform` and `ExistingPlatform` plan and check."""

    name = "kube"

    #: `--reuse`: a kind cluster of the same name is run on instead of refused.
    reuse = False
    #: One cluster per mesh, one at a time: a mesh's trials run in one block and its cluster then goes.
    one_mesh_at_a_time = True

    def __init__(
        self,
        *,
        keep: bool = False,
        loadgen_workers: int = 1,
        waypoint: bool = False,
        versions: Versions | None = None,
    ) -> None:
        self.keep = keep
        self.loadgen_workers = loadgen_workers
        #: `--waypoint`: istio-ambient with Istio's L7 waypoint.
        self.waypoint = waypoint
        self.pins = versions or load_versions()
        self._session_dir: Path | None = None
        #: Clusters this run is responsible for (torn down at the end), by mesh, in the order they came up.
        self._owned: dict[str, kp.ClusterPlan] = {}
        self._up: dict[str, KubeDeployment] = {}
        #: Resolved CLIs (the pinned copy in the tool cache, or PATH), by name.
        self._tools: dict[str, str] = {}

    # --- what each platform provides -----------------------------------------------------------

    def mesh(self, name: str) -> KubeMesh:
        return kube_mesh(name, self.name, waypoint=self.waypoint)

    def cluster_plan(self, mesh: KubeMesh, topology: Topology, run_dir: Path) -> kp.ClusterPlan:
        raise NotImplementedError

    def check(self, check: ka.Check, plan: kp.ClusterPlan) -> None:
        """Run one preflight check; raise a `TestbedError` that says what to do. Subclasses add theirs."""
        if check.name != "tools":
            raise NotImplementedError(f"no preflight check {check.name!r} on {self.name}")
        for name in check.tools:
            self._tools[name] = str(tools.tool_path(name, versions=self.pins))
        for warning in tools.check_versions(check.tools, versions=self.pins):
            warn(warning)
        for name in check.optional_tools:
            try:
                self._tools[name] = str(tools.tool_path(name, versions=self.pins))
            except TestbedError as e:
                warn(f"{e.message} (not used by this run)")
                continue
            for warning in tools.check_versions((name,), versions=self.pins):
                warn(warning)

    def is_reused(self, plan: kp.ClusterPlan) -> bool:
        """Whether preflight found the cluster there already (and --reuse allows it): skip `create`."""
        return False

    def nodes(self, plan: kp.ClusterPlan) -> tuple[str, ...]:
        return plan.nodes

    def read_resources(self, deployment: KubeDeployment, steps: kt.TrialPlan) -> Any:
        """What is read at each edge of the measured window: every node's kubelet (kind: its cgroups)."""
        scrapes = zip(deployment.nodes, steps.at_marks, strict=True)
        return {node: self.run(step).stdout for node, step in scrapes}

    def window_resources(
        self,
        deployment: KubeDeployment,
        start: Edge,
        end: Edge,
        after: Mapping[str, str],
    ) -> dict[str, Any]:
        """The trial's `resources` from the reads at the window's edges and the outputs of `after` steps."""
        (start_unix, before), (end_unix, later) = start, end
        result = resources(
            before,
            later,
            namespace=deployment.plan.namespace,
            workloads=self.mesh(deployment.mesh).components,
        )
        result["reads"] = {"window_unix": [round(start_unix, 3), round(end_unix, 3)]}
        return result

    def platform_versions(self) -> dict[str, str]:
        return {}

    # --- the Platform protocol -------------------------------------------------------------------

    def check_meshes(self, meshes: tuple[str, ...]) -> None:
        for mesh in meshes:
            self.mesh(mesh)

    def versions(self, meshes: tuple[str, ...]) -> dict[str, str]:
        image = ka.image_tag(self.pins.python_image)
        versions = {"kubectl": self.pins.tool("kubectl").version, "image": image}
        versions |= self.platform_versions()
        for mesh in meshes:
            versions |= self.mesh(mesh).versions(self.pins)
        return versions

    @contextmanager
    def session(self, run_dir: Path) -> Iterator[None]:
        """Keep each mesh's cluster up from its first trial to the end of the run; then tear down."""
        self._session_dir = run_dir
        try:
            yield
        except KeyboardInterrupt:
            self._finish(failed=False)
            raise
        except BaseException:
            self._finish(failed=True)
            raise
        else:
            self._finish(failed=False)
        finally:
            self._session_dir = None

    @contextmanager
    def deploy(self, topology: Topology, mesh: str, workdir: Path) -> Iterator[KubeDeployment]:
        if self._session_dir is None:
            with self.session(workdir), self.deploy(topology, mesh, workdir) as deployment:
                yield deployment
            return
        yield self._up.get(mesh) or self._provision(topology, mesh, self._session_dir)

    def measure(self, deployment: KubeDeployment, config: LoadConfig, trial_dir: Path) -> dict[str, Any]:
        """One trial: `kubectl exec` runs it in the loadgen pod; the resources are read at its window marks.

        The load generator prints a line when the measured window starts and one when it ends
        (`testbed.loadgen.marks`); its stderr is read as it comes, and `read_resources` runs at each
        line, so that the warm-up is not counted (kind: every node's cgroups at once; existing: every
        node's kubelet, whose own figures lag by up to 15 s).

        The namespace's pods are read right before the load and right after it (`pods-before.json`,
        `pods-after.json`), and so are the mesh's own outside it (`KubeMesh.traffic_pods`,
        `pods-NS-SELECTOR-before.json`, ...): a container that restarted, a pod replaced, or one not ready at
        the end (`testbed.kube.health`; not ready only: read again `kt.NOT_READY_RECHECK_S` later), a pod
        not Running and ready before the load (read again the same way: `_read_pods_before`), pods that
        cannot be read before or after the load, a setup step of the trial that failed (`_set_up`), or a
        load generator killed by a signal, fail the trial with `TrialFailed`: it is recorded with what was
        measured, never as a result, and the run goes on.
        """
        trial_dir.mkdir(parents=True, exist_ok=True)
        mesh_pods = self.mesh(deployment.mesh).traffic_pods
        steps = kt.trial_plan(deployment.plan, config, nodes=deployment.nodes, mesh_pods=mesh_pods)
        log = trial_dir / "loadgen.log"
        warnings: list[dict[str, Any]] = []
        edges: dict[str, Edge] = {}

        def on_line(line: str) -> None:
            mark = marks.parse(line)
            if mark is None or mark.edge in edges:
                return
            try:
                edges[mark.edge] = (mark.at_unix, self.read_resources(deployment, steps))
            except TestbedError as e:
                raise _ReadFailed(e) from e

        try:
            for step in steps.setup:
                self._set_up(step, steps.pods, trial_dir, log)
            before = self._read_pods_before(steps.pods, trial_dir, log)
            try:
                loaded = self.run(steps.load, on_line=on_line)
            except _ReadFailed as failed:
                raise failed.error from None
            except CommandError as e:
                load_error = _load_failed(e, log)
                spoiled, warnings = self._check_pods(steps.pods, before, trial_dir, log)
                if spoiled is not None and spoiled.failure["problems"]:
                    # E.g. the loadgen pod died under the exec: a failed trial, not a broken run.
                    spoiled.failure["load_error"] = load_error.message
                    raise TrialFailed(
                        f"{spoiled.message}; {load_error.message}", failure=spoiled.failure
                    ) from None
                killed = _killed(e)
                if killed is None:
                    raise load_error from None  # nothing wrong seen with the pods: the load's failure stands
                # Killed by a signal in a container that did not restart (e.g. the OOM killer took the load
                # generator, not the container's first process): the trial's failure, not the run's.
                failure = _pods_failure(steps.pods, trial_dir, log) | {
                    "load_error": load_error.message,
                    "load_exit_code": e.exit_code,
                    "pod_warnings": warnings,
                }
                raise TrialFailed(f"{killed}: {load_error.message}", failure=failure) from None
            spoiled, warnings = self._check_pods(steps.pods, before, trial_dir, log)
            # A failed trial's resources are not attributed: its `after` reads (kind: the pods' container
            # ids) would only add a way to fail.
            after = {} if spoiled else {step.description: self.run(step).stdout for step in steps.after}
        finally:
            for step in steps.cleanup:
                self._try(step)
        log.write_text(loaded.stderr)
        if spoiled is not None:
            # What was measured is kept in failed.json, never as result.json.
            with contextlib.suppress(TestbedError):
                spoiled.failure["measured"] = parse_load_output(loaded.stdout, log=log)
            raise spoiled
        result = parse_load_output(loaded.stdout, log=log)
        for edge in (marks.START, marks.END):
            if edge not in edges:
                raise TestbedError(
                    f"the load generator printed no `{marks.PREFIX}{edge} ...` line on stderr (see {log}), "
                    "so its window's resources could not be read: is the loadgen pod's image older than "
                    "the testbed?"
                )
        result["resources"] = self.window_resources(deployment, edges[marks.START], edges[marks.END], after)
        result["mesh_evidence"] = deployment.evidence
        if warnings:
            # Containers not ready right after the load, ready again `kt.NOT_READY_RECHECK_S` later.
            result["pod_warnings"] = warnings
        return result

    # --- --dry-run -------------------------------------------------------------------------------

    def describe(self, topology: Topology, scenario: Scenario, trials: Sequence[Trial], run_dir: Path) -> str:
        """The whole plan as text: every check, command and file, in the order a run does them."""
        meshes = tuple(dict.fromkeys(trial.mesh for trial in trials))
        lines = [
            f"platform {self.name}; pinned: {kr.describe_versions(self.versions(meshes))}",
            f"load generator workers: {self.loadgen_workers}; "
            + ("--keep: no teardown at the end" if self.keep else "the teardown runs at the end (no --keep)"),
            "",
        ]
        plans: dict[str, kp.ClusterPlan] = {}
        for number, trial in enumerate(trials, 1):
            if trial.mesh not in plans:
                implementation = self.mesh(trial.mesh)
                plans[trial.mesh] = self.cluster_plan(implementation, topology, run_dir)
                lines += kr.render_cluster(plans[trial.mesh], reuse=self.reuse)
                if not plans[trial.mesh].nodes:
                    lines += [f"# {kp.ANY_NODE} below: each node that the preflight found labelled", ""]
            plan = plans[trial.mesh]
            steps = kt.trial_plan(
                plan,
                load_config(scenario, trial, plan.target_url),
                nodes=plan.nodes or (kp.ANY_NODE,),
                mesh_pods=self.mesh(trial.mesh).traffic_pods,
            )
            lines += kr.render_trial(number, len(trials), trial, steps, cooldown_s=scenario.cooldown_s)
            if all(later.mesh != trial.mesh for later in trials[number:]):
                lines += kr.render_end(plan, keep=self.keep)
        return "\n".join(lines).rstrip() + "\n"

    # --- running the plan ------------------------------------------------------------------------

    def run(
        self, step: ka.Step, *, on_line: Callable[[str], None] | None = None
    ) -> subprocess.CompletedProcess[str]:
        """One step through the one command helper, with the resolved CLI; `on_line` sees its stderr lines."""
        argv = [self._tools.get(step.argv[0], step.argv[0]), *step.argv[1:]]
        if on_line is None:
            result = proc.run(argv, timeout=step.timeout_s, input=step.stdin)
        else:
            result = proc.stream(argv, on_line=on_line, timeout=step.timeout_s, input=step.stdin)
        if step.output is not None:
            step.output.parent.mkdir(parents=True, exist_ok=True)
            step.output.write_text(result.stdout)
        return result

    def do(self, action: ka.Action, plan: kp.ClusterPlan) -> None:
        from testbed.kube import docker

        match action:
            case ka.Check():
                self.check(action, plan)
            case ka.WriteFile():
                action.path.parent.mkdir(parents=True, exist_ok=True)
                action.path.write_text(action.text)
            case ka.BuildImage():
                say(f"{action.description} (the first build downloads the Python image)")
                docker.build_image(
                    action.context, action.tag, build_args=dict(action.build_args), timeout=action.timeout_s
                )
            case ka.Step():
                if action.only_if is not None and not action.only_if.holds():
                    say(f"skipped ({action.only_if.describe()}): {action.description}")
                    return
                say(action.description)
                self.run(action)
            case ka.Pipe():
                say(action.description)
                produced = self.run(action.producer)
                self.run(dataclasses.replace(action.consumer, stdin=produced.stdout))
            case ka.MakeFiles():
                say(f"make {', '.join(p.name for p in action.paths)}: {action.description}")
                action.make()

    def _set_up(self, step: ka.Step, reads: Sequence[kt.PodsRead], trial_dir: Path, log: Path) -> None:
        """One of the trial's own setup steps; one that fails fails the trial before its load, not the run.

        E.g. the previous trial's workers, whose deletion timed out (only a warning, `_try`), are still
        being deleted: `kubectl apply` updates the Deployment on its way out, and `rollout status` then
        stops with "object has been deleted" when it goes (kubectl v0.35.7 pkg/cmd/rollout/
        rollout_status.go:222-224). The trial's cleanup runs all the same, and the next trial starts afresh.
        """
        try:
            self.run(step)
        except CommandError as e:
            failure = _pods_failure(reads, trial_dir, log) | {
                "setup_step": step.description,
                "setup_command": " ".join(step.argv),
                "setup_error": e.message,
            }
            raise TrialFailed(
                f"before the load: {step.description} failed: {e.message}", failure=failure, before_load=True
            ) from None

    def _read_pods_before(self, reads: Sequence[kt.PodsRead], trial_dir: Path, log: Path) -> dict[str, str]:
        """Every pods read right before the load, by name; one that fails fails the trial, not the run
        (e.g. a busy API server's timeout), as the same read after the load does.

        The trials of a mesh share its pods, so a trial after a failed one may find one still recovering:
        a pod not Running and ready (`health.not_ready_before`) is read again `kt.NOT_READY_RECHECK_S`
        later (`pods-before-again.json`, then the trial's baseline), and still not ready fails the trial
        before its load rather than measure a topology that is not whole.
        """
        before: dict[str, str] = {}
        for read in reads:
            before[read.name] = self._read_before(read, reads, trial_dir, log, "before")
        unready = {
            read.name: health.not_ready_before(before[read.name], namespace=_qualified(read))
            for read in reads
        }
        if not any(unready.values()):
            return before
        time.sleep(kt.NOT_READY_RECHECK_S)
        still: list[health.Problem] = []
        for read in (read for read in reads if unready[read.name]):
            before[read.name] = self._read_before(read, reads, trial_dir, log, "before-again")
            still += health.not_ready_before(before[read.name], namespace=_qualified(read))
        if still:
            failure = _pods_failure(reads, trial_dir, log)
            failure["problems"] = [problem.to_json() for problem in still]
            # Every problem's message names its pod (`health.Problem`): the pod is not named again here.
            raise TrialFailed(
                f"before the load: {health.summary(still)} (read again {kt.NOT_READY_RECHECK_S:g} s later)",
                failure=failure,
                before_load=True,
            )
        return before

    def _read_before(
        self, read: kt.PodsRead, reads: Sequence[kt.PodsRead], trial_dir: Path, log: Path, when: str
    ) -> str:
        """One pods read before the load, kept in its file; one that fails fails the trial."""
        try:
            text = self.run(read.step).stdout
        except TestbedError as e:
            again = " again" if when != "before" else ""
            raise TrialFailed(
                f"{read.what} could not be read{again} before the load: {e.message}",
                failure=_pods_failure(reads, trial_dir, log),
                before_load=True,
            ) from None
        _pods_file(trial_dir, read, when).write_text(text)
        return text

    def _check_pods(
        self, reads: Sequence[kt.PodsRead], before: Mapping[str, str], trial_dir: Path, log: Path
    ) -> tuple[TrialFailed | None, list[dict[str, Any]]]:
        """Read the pods again after the load and compare: the trial's failure if anything went wrong, and
        the containers that were not ready only for a moment (the result's `pod_warnings`).

        Pods that cannot be read after the load fail the trial too: the cluster is not healthy. When the
        only problems are containers not ready, those pods are read once more `kt.NOT_READY_RECHECK_S`
        later, and the trial fails only if a problem is still there.
        """

        def failed(message: str, found: Sequence[health.Problem]) -> tuple[TrialFailed, list[dict[str, Any]]]:
            failure = _pods_failure(reads, trial_dir, log)
            failure["problems"] = [problem.to_json() for problem in found]
            return TrialFailed(message, failure=failure), []

        found: dict[str, list[health.Problem]] = {}
        for read in reads:
            try:
                later = self.run(read.step).stdout
                _pods_file(trial_dir, read, "after").write_text(later)
                found[read.name] = health.problems(before[read.name], later, namespace=_qualified(read))
            except TestbedError as e:
                return failed(f"{read.what} could not be read after the load: {e.message}", [])
        first = [problem for problems in found.values() for problem in problems]
        if not first:
            return None, []
        if not health.only_not_ready(first):
            return failed(health.summary(first), first)
        time.sleep(kt.NOT_READY_RECHECK_S)
        still: list[health.Problem] = []
        for read in (read for read in reads if found[read.name]):
            try:
                again = self.run(read.step).stdout
                _pods_file(trial_dir, read, "again").write_text(again)
                still += health.problems(before[read.name], again, namespace=_qualified(read))
            except TestbedError as e:
                wait = f"{kt.NOT_READY_RECHECK_S:g} s later"
                return failed(
                    f"{health.summary(first)}; {read.what} could not be read {wait}: {e.message}", first
                )
        if still:
            return failed(
                f"{health.summary(still)} (read again {kt.NOT_READY_RECHECK_S:g} s after the load)", still
            )
        return None, [problem.to_json() for problem in first]

    def _read(self, step: ka.Step) -> str:
        """A verify step's stdout; one that `may_fail` is read even after a non-zero exit."""
        say(step.description)
        try:
            return self.run(step).stdout
        except CommandError as e:
            if not step.may_fail or e.exit_code is None:
                raise
            if step.output is not None:
                step.output.parent.mkdir(parents=True, exist_ok=True)
                step.output.write_text(f"{e.stdout}\n# exit code {e.exit_code}; stderr:\n{e.stderr}")
            say(f"{step.argv[0]} exited with code {e.exit_code}: the checks judge what it printed")
            return e.stdout

    def _verify(self, implementation: KubeMesh, plan: kp.ClusterPlan) -> dict[str, Any]:
        """Run the verification and return the mesh's evidence; a failed check raises (`require`)."""
        outputs: dict[str, str] = {}
        for action in plan.verify:
            if isinstance(action, ka.Step):
                outputs[action.description] = self._read(action)
            else:
                self.do(action, plan)
        try:
            return implementation.evidence(outputs, plan.mesh_context)
        except TestbedError as e:
            where = plan.mesh_context.workdir / "verify"
            raise TestbedError(f"{e.message} (what the checks read is in {where})") from None

    def _provision(self, topology: Topology, mesh: str, run_dir: Path) -> KubeDeployment:
        implementation = self.mesh(mesh)
        plan = self.cluster_plan(implementation, topology, run_dir)
        for check in plan.preflight:
            self.do(check, plan)
        for action in plan.prepare:
            self.do(action, plan)
        # From here on the cluster is this run's to clean up (`kind delete cluster` is idempotent).
        self._owned[mesh] = plan
        if self.is_reused(plan):
            say(f"reusing the kind cluster {plan.cluster} (--reuse)")
        else:
            for action in plan.create:
                self.do(action, plan)
        for action in plan.provision:
            self.do(action, plan)
        evidence = self._verify(implementation, plan)
        if evidence.get("checks"):
            say(f"the {mesh} mesh is verified: {', '.join(c['name'] for c in evidence['checks'])}")
        deployment = KubeDeployment(
            mesh=mesh,
            target_url=plan.target_url,
            plan=plan,
            nodes=self.nodes(plan),
            evidence=evidence,
        )
        self._up[mesh] = deployment
        return deployment

    def release(self, mesh: str) -> None:
        """The mesh's last trial is done: its cluster goes now, so that only one is up at a time."""
        plan = self._owned.pop(mesh, None)
        self._up.pop(mesh, None)
        if plan is not None:
            self._finish_plan(plan, failed=False)

    def _finish(self, *, failed: bool) -> None:
        """Logs first if something failed, then the teardown unless --keep; never raises."""
        for plan in reversed(list(self._owned.values())):
            self._finish_plan(plan, failed=failed)
        self._owned.clear()
        self._up.clear()

    def _finish_plan(self, plan: kp.ClusterPlan, *, failed: bool) -> None:
        if failed:
            for step in plan.on_failure:
                self._try(step)
            say(f"the cluster's logs are in {plan.logs_dir}")
        if self.keep:
            remove = "; ".join(" ".join(step.argv) for step in plan.teardown)
            say(f"kept (--keep): use it with kubectl --context {plan.context}; remove it with: {remove}")
            return
        for step in plan.teardown:
            self._try(step)

    def _try(self, step: ka.Step) -> None:
        """A clean-up step: a failure is reported with the command to run by hand, and not raised."""
        try:
            say(step.description)
            self.run(step)
        except TestbedError as e:
            warn(f"{e.message}; run it yourself: {' '.join(step.argv)}")


#: One edge of the measured window: its time (the load generator's mark) and what was read there.
Edge = tuple[float, Any]


class _ReadFailed(Exception):
    """A read at a window mark failed: carried out of the load's stderr callback, then raised as it was."""

    def __init__(self, error: TestbedError) -> None:
        super().__init__(error.message)
        self.error = error


def _pods_file(trial_dir: Path, read: kt.PodsRead, when: str) -> Path:
    """`pods-before.json`, `pods-before-again.json`, `pods-after.json`, `pods-again.json` (the app
    namespace), `pods-NS-SEL-...`."""
    return trial_dir / f"{read.name}-{when}.json"


def _qualified(read: kt.PodsRead) -> str | None:
    """The namespace that the problems name: a mesh's, outside the app namespace; None for the app's."""
    return None if read.selector is None else read.namespace


def _pods_failure(reads: Sequence[kt.PodsRead], trial_dir: Path, log: Path) -> dict[str, Any]:
    """failed.json's facts of the pods: the files of every read so far (None: not read), the load's log."""

    def files(read: kt.PodsRead) -> dict[str, str | None]:
        whens = ("before", "before-again", "after", "again")
        paths = {when: _pods_file(trial_dir, read, when) for when in whens}
        return {when: str(path) if path.exists() else None for when, path in paths.items()}

    app, *mesh = reads
    failure: dict[str, Any] = {"problems": []}
    # The reads made only when a pod was not ready (`before-again`, `again`) are named only if made.
    failure |= {
        f"pods_{when.replace('-', '_')}": path
        for when, path in files(app).items()
        if when in ("before", "after") or path
    }
    failure["mesh_pods"] = [
        {"namespace": read.namespace, "selector": read.selector} | files(read) for read in mesh
    ]
    return failure | {"loadgen_log": str(log), "measured": None}


#: A process killed by signal N exits 128 + N as the container runtime reports it (containerd
#: pkg/sys/reaper/reaper_unix.go exitStatus: exitSignalOffset = 128), and `kubectl exec` exits with the
#: remote command's status (kubectl v0.35.7 pkg/cmd/util/helpers.go:208-209: utilexec.ExitError,
#: handleErr(err.Error(), err.ExitStatus())); kubectl's own errors exit 1 (DefaultErrorExitCode).
SIGNAL_EXIT_OFFSET = 128


def _killed(error: CommandError) -> str | None:
    """What killed the load generator, if `kubectl exec` says a signal did (exit code 128 + N); else None."""
    code = error.exit_code
    if code is None or code <= SIGNAL_EXIT_OFFSET:
        return None
    try:
        name = signal.Signals(code - SIGNAL_EXIT_OFFSET).name
    except ValueError:
        name = f"signal {code - SIGNAL_EXIT_OFFSET}"
    oom = ", e.g. by the OOM killer inside a container that did not restart" if name == "SIGKILL" else ""
    return f"the load generator was killed (exit {code} = 128 + {name}{oom})"


def _load_failed(error: CommandError, log: Path) -> TestbedError:
    """The load generator's own failure, its stderr kept in `log`: what it printed last, and what it means."""
    log.write_text(error.stderr)
    tail = " ".join((error.stderr.strip() or error.stdout.strip()).splitlines()[-3:])
    # argparse's word for a flag this version does not know: an image older than the plan.
    stale = (
        ": is the loadgen pod's image (--image) older than this testbed?"
        if "unrecognized arguments" in error.stderr
        else ""
    )
    return TestbedError(f"the load generator in the loadgen pod failed: {tail}{stale} (see {log})")


def parse_load_output(stdout: str, *, log: Path) -> dict[str, Any]:
    """The `testbed.load/2` document that `testbed load --out -` printed in the pod."""
    try:
        result = json.loads(stdout)
    except ValueError:
        first = (stdout.strip().splitlines() or ["nothing"])[0][:200]
        raise TestbedError(
            f"the load generator in the loadgen pod printed no result JSON (it printed {first!r}; see {log})"
        ) from None
    if not isinstance(result, dict) or result.get("schema") != LOAD_SCHEMA:
        schema = result.get("schema") if isinstance(result, dict) else type(result).__name__
        raise TestbedError(
            f"the loadgen pod's result is {schema!r}, not {LOAD_SCHEMA}: is its image older than the testbed?"
        )
    return result


def resources(
    before: Mapping[str, str],
    after: Mapping[str, str],
    *,
    namespace: str,
    workloads: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """Per component from two kubelet scrapes of each node, plus `nodes`, in `result.json`'s shape.

    `before` and `after` are each node's `/metrics/resource` text; `workloads` the mesh's own
    (`KubeMesh.components`). A node's own CPU is the kubelet's `node_cpu_usage_seconds_total`. This is
    the `existing` platform's source; kind reads cgroups instead (`testbed.kube.metrics.cgroup_window`).
    """
    first = {key: use for text in before.values() for key, use in metrics.snapshot(text).items()}
    last = {key: use for text in after.values() for key, use in metrics.snapshot(text).items()}
    attribution = functools.partial(metrics.component, app_namespace=namespace, workloads=workloads or {})
    result = metrics.window(first, last, attribution)
    nodes: dict[str, dict[str, Any]] = {}
    for node in before:
        start, end = metrics.node_usage(before[node]), metrics.node_usage(after.get(node, ""))
        entry: dict[str, Any] = {}
        if start is not None and end is not None:
            entry = _cpu(
                end.cpu_seconds - start.cpu_seconds, end.timestamp_s - start.timestamp_s, metrics.NODE_CPU
            )
        if end is not None:
            entry["memory_mb"] = round(end.memory_bytes / 2**20, 1)
        nodes[node] = entry
    result["nodes"] = nodes
    return result


def _cpu(used: float, interval: float, source: str) -> dict[str, Any]:
    return {
        "cpu_seconds": round(used, 4),
        "vcpu": round(used / interval, 4) if interval > 0 else 0.0,
        "source": source,
    }
