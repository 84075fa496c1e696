"""The plan as text, for `--dry-run`: what is printed is what runs (`testbed.kube.cluster`, `trial`)."""

from __future__ import annotations

import shlex
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING

from testbed.kube.actions import (
    Action,
    BuildImage,
    Check,
    MakeFiles,
    Pipe,
    Step,
    WriteFile,
)
from testbed.loadgen import marks
from testbed.spec.trials import Trial

if TYPE_CHECKING:
    pass
from testbed.kube.cluster import ClusterPlan
from testbed.kube.trial import NOT_READY_RECHECK_S, SCRAPE_TIMEOUT_S, TrialPlan

# --- The plan as text (--dry-run) ----------------------------------------------------------------


def render_actions(actions: Iterable[Action]) -> list[str]:
    """Each action as a `# why` line and the command (`+ ...`) or the file's whole text."""
    lines: list[str] = []
    for action in actions:
        match action:
            case Check():
                lines.append(f"# check: {action.description}")
                if action.argv:
                    lines.append("+ " + shlex.join(action.argv))
            case WriteFile():
                lines.append(f"# write {action.path}: {action.description}")
                lines += [f"    {line}".rstrip() for line in action.text.splitlines()]
            case BuildImage():
                lines.append(
                    f"# {action.description} (timeout {action.timeout_s:g} s; with the buildx plugin: "
                    "docker buildx build --load)"
                )
                lines.append("+ " + shlex.join(action.argv()))
            case Step():
                notes = [f"timeout {action.timeout_s:g} s"]
                if action.output is not None:
                    notes.append(f"stdout to {action.output}")
                if action.may_fail:
                    notes.append("read by the checks whatever its exit status")
                if action.only_if is not None:
                    notes.append(action.only_if.describe())
                lines.append(f"# {action.description} ({'; '.join(notes)})")
                lines.append("+ " + shlex.join(action.argv))
                if action.stdin is not None:
                    lines.append("  with stdin:")
                    lines += [f"    {line}".rstrip() for line in action.stdin.splitlines()]
            case Pipe():
                timeouts = f"{action.producer.timeout_s:g} s and {action.consumer.timeout_s:g} s"
                lines.append(f"# {action.description} (timeouts {timeouts}; no shell: stdout to stdin)")
                lines.append(f"+ {shlex.join(action.producer.argv)} | {shlex.join(action.consumer.argv)}")
            case MakeFiles():
                lines.append(f"# make {', '.join(map(str, action.paths))}: {action.description}")
    return lines


def render_cluster(plan: ClusterPlan, *, reuse: bool) -> list[str]:
    """The phases that bring a mesh's cluster up, as they run before its first trial."""
    where = f"kind cluster {plan.cluster}" if plan.cluster else "the existing cluster"
    created = (
        "skipped if the cluster exists: --reuse" if reuse else "refused if the cluster exists: see --reuse"
    )
    sections: list[tuple[str, Sequence[Action]]] = [
        (f"mesh {plan.mesh}: preflight ({where}, context {plan.context})", plan.preflight),
        ("prepare", plan.prepare),
        (f"create ({created})" if plan.cluster else "create", plan.create),
        ("provision", plan.provision),
        ("verify the mesh", plan.verify),
    ]
    return _sections(sections)


def render_trial(number: int, total: int, trial: Trial, plan: TrialPlan, *, cooldown_s: float) -> list[str]:
    title = f"trial {number}/{total}: mesh {trial.mesh}, {plan.load_label}, trial {trial.index}"
    lines = [f"== {title}", f"# wait {cooldown_s:g} s (the scenario's cooldown)"]
    lines += render_actions(plan.setup)
    lines += render_actions([read.step for read in plan.pods])
    lines.append(
        "# if a pod is not Running and ready (not counting pods being deleted, load generator workers, or "
        f"pods that have ended): wait {NOT_READY_RECHECK_S:g} s and read those pods once more; still not "
        "ready fails the trial before its load"
    )
    lines += render_actions([plan.load])
    lines.append(
        f"# its stderr is read as it comes: at the line `{marks.PREFIX}{marks.START} UNIX_TIME` and again "
        f"at `{marks.PREFIX}{marks.END} UNIX_TIME`, the reads below run"
    )
    lines += render_actions(plan.at_marks)
    if plan.node_containers:
        lines.append(
            f"# in every kind node container at once (the Docker layer, timeout {SCRAPE_TIMEOUT_S:g} s "
            "each): the time, the host's /proc/stat, and the cgroup v2 cpu.stat, memory.current and "
            "memory.stat of the node and of each container (testbed.kube.metrics.NODE_READ)"
        )
        lines += [
            "+ " + shlex.join(("docker", "exec", node, "sh", "-c", plan.node_read))
            for node in plan.node_containers
        ]
    lines.append("# when the load has finished:")
    lines += render_actions([read.step for read in plan.pods])
    lines.append(
        "# if the only problems are containers not ready (no restart, no pod replaced, every pod Running): "
        f"wait {NOT_READY_RECHECK_S:g} s and read those pods once more; still not ready fails the trial"
    )
    lines += render_actions(plan.after)
    lines += render_actions(plan.cleanup)
    return [*lines, ""]


def render_end(plan: ClusterPlan, *, keep: bool) -> list[str]:
    """What happens to a cluster at the end: its teardown, and what a failure adds before it."""
    teardown = "skipped: --keep" if keep else "at the end, and after Ctrl-C, unless --keep"
    return _sections(
        [
            (f"mesh {plan.mesh}: on failure, first ({plan.logs_dir})", plan.on_failure),
            (f"mesh {plan.mesh}: teardown ({teardown})", plan.teardown),
        ]
    )


def _sections(sections: Sequence[tuple[str, Sequence[Action]]]) -> list[str]:
    lines: list[str] = []
    for title, actions in sections:
        if actions:
            lines += [f"== {title}", *render_actions(actions), ""]
    return lines


def describe_versions(versions: Mapping[str, str]) -> str:
    return ", ".join(f"{name} {value}" for name, value in versions.items())
