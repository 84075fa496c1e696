"""What went wrong with the topology's pods during a trial: two `kubectl get pods -n NS -o json`. No I/O.

The pods are read right before the load and right after it (`testbed.kube.trial.TrialPlan.pods`). Every pod
of the namespace counts, the load generator's too: its restart spoils the trial as much as a service's. A
problem is a container whose `restartCount` grew (with how its last run ended), a pod gone or new (replaced),
a pod being deleted or not `Running` at the end, or a container not ready at the end. The read before the
load is judged on its own too (`not_ready_before`): on kind and existing the trials share one topology, so
a trial after a failed one may find a pod still recovering, and must not measure it.

The fields, as `kubectl get -o json` prints them, are those of k8s.io/api v0.35.7 `core/v1/types.go`
(`PodStatus.phase`, `.containerStatuses`, `.initContainerStatuses`; `ContainerStatus.name`, `.ready`,
`.restartCount`, `.state`, `.lastState`; `ContainerStateTerminated.exitCode`, `.signal`, `.reason`,
`.finishedAt`; `ContainerStateWaiting.reason`; `Container.restartPolicy`) and of k8s.io/apimachinery
v0.35.7 `pkg/apis/meta/v1/types.go` (`ObjectMeta.name`, `.uid`, `.deletionTimestamp`).
"""

from __future__ import annotations

import dataclasses
import json
import signal
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from testbed.errors import TestbedError
from testbed.kube.manifests import WORKER_NAME

#: `PodRunning` (k8s.io/api v0.35.7 core/v1/types.go): the one phase a pod of the topology should be in.
RUNNING = "Running"
#: `ContainerRestartPolicyAlways` on an init container makes it a sidecar that runs beside the others
#: (core/v1/types.go `Container.RestartPolicy`): Linkerd edge-26.8.3 injects its proxy so by default
#: (charts/linkerd-control-plane/values.yaml `proxy.nativeSidecar: true`, charts/partials/templates/_proxy.tpl
#: `restartPolicy: Always`), and Istio 1.30.3 where the cluster supports it (pilot/pkg/features/pilot.go
#: `ENABLE_NATIVE_SIDECARS` "auto"). Its restarts and readiness count like a container's.
RESTART_ALWAYS = "Always"
#: `PodSucceeded` and `PodFailed` (k8s.io/api v0.35.7 core/v1/types.go): phases a pod does not leave, e.g.
#: one evicted by an earlier trial (`Failed`, reason `Evicted`), which its ReplicaSet has already replaced.
ENDED = frozenset({"Succeeded", "Failed"})


@dataclass(frozen=True, kw_only=True)
class Problem:
    """One thing that went wrong: what (`kind`), where, a sentence, and the facts for failed.json."""

    #: "restarted", "gone", "new", "deleting", "not-running" or "not-ready".
    kind: str
    pod: str
    container: str | None = None
    #: Set for a mesh's pods outside the app namespace (`testbed.kube.trial.PodsRead`), named in `message`.
    namespace: str | None = None
    message: str
    details: Mapping[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        where = {"kind": self.kind, "pod": self.pod, "container": self.container}
        if self.namespace is not None:
            where["namespace"] = self.namespace
        return where | {"message": self.message, **self.details}


def only_not_ready(found: Sequence[Problem]) -> bool:
    """Whether every problem is a container not ready: no restart, no pod gone, new, deleted or not
    Running (`_end_state` says not-ready only of a Running pod), so that a later read may clear them."""
    return bool(found) and all(problem.kind == "not-ready" for problem in found)


def problems(before: str, after: str, *, namespace: str | None = None) -> list[Problem]:
    """What went wrong between two reads of the namespace's pods: restarts first, then pods, then readiness.

    A pod already being deleted at the first read (e.g. the previous trial's load generator worker, if its
    `kubectl delete deployment` timed out: `testbed.kube.trial`) is not the trial's: it may go, or linger.
    `namespace`: given for a mesh's pods outside the app namespace, whose pods the messages name NS/POD.
    """
    return [_in(problem, namespace) for problem in _problems(before, after)]


def not_ready_before(before: str, *, namespace: str | None = None) -> list[Problem]:
    """Each pod of the read before the load that is not Running, and each watched container not ready.

    Left out: a pod being deleted, a load generator worker (the trial's setup waited for its rollout, and
    `problems` judges it at the end), and a pod that has ended (`ENDED`, e.g. evicted earlier: its
    replacement is judged). `namespace` as for `problems`.
    """
    found: list[Problem] = []
    for pod in _pods(before, "before the load").values():
        phase = (pod.get("status") or {}).get("phase")
        if _meta(pod).get("deletionTimestamp") or _is_worker(pod) or phase in ENDED:
            continue
        found += _end_state(pod)
    return [_in(problem, namespace) for problem in found]


def _in(problem: Problem, namespace: str | None) -> Problem:
    """The problem of a pod of `namespace`, named NS/POD in its message; unchanged without a namespace."""
    if namespace is None:
        return problem
    # Every message names the pod as `pod NAME` once (below).
    message = problem.message.replace(f"pod {problem.pod}", f"pod {namespace}/{problem.pod}", 1)
    return dataclasses.replace(problem, namespace=namespace, message=message)


def _problems(before: str, after: str) -> list[Problem]:
    first, last = _pods(before, "before the load"), _pods(after, "after the load")
    leaving = {key for key, pod in first.items() if _meta(pod).get("deletionTimestamp")}
    # A pod that had already ended (e.g. an earlier eviction left it Failed) is not this trial's fault; one
    # not Running yet fails the trial before its load (`not_ready_before`), unless it is a worker.
    broken = {key for key, pod in first.items() if (pod.get("status") or {}).get("phase") in ENDED}
    found: list[Problem] = []
    for key, pod in last.items():
        if key in first and key not in leaving:
            found += [p for p in _restarts(first[key], pod) if not _worker_quit(pod, p)]
    for key, pod in first.items():
        if key not in last and key not in leaving:
            found.append(Problem(kind="gone", pod=_name(pod), message=f"pod {_name(pod)} is gone"))
    for key, pod in last.items():
        if key not in first:
            found.append(
                Problem(
                    kind="new", pod=_name(pod), message=f"pod {_name(pod)} is new (started during the trial)"
                )
            )
    for key, pod in last.items():
        if key not in leaving and key not in broken:
            found += [p for p in _end_state(pod) if not _worker_quit(pod, p)]
    return found


def _worker_quit(pod: Mapping[str, Any], problem: Problem) -> bool:
    """A load generator worker that exited 0 when its master quit at the end of the load, as it does
    (locust runners.py: the master sends `quit`; `testbed.kube.manifests` WORKER_NAME), restarted once or
    not ready yet: the trial's end, not a fault."""
    if not _is_worker(pod):
        return False
    if problem.kind == "restarted":
        # Once only: `lastState` holds the last termination alone (k8s.io/api v0.35.7 core/v1/types.go
        # `ContainerStatus.LastTerminationState`), so a crash followed by the quit (2 restarts) reads exit 0.
        return problem.details.get("restarts") == 1 and problem.details.get("exit_code") == 0
    return problem.kind == "not-ready"


def _is_worker(pod: Mapping[str, Any]) -> bool:
    """A pod of the load generator workers' Deployment (`testbed.kube.manifests` WORKER_NAME)."""
    return _name(pod).startswith(f"{WORKER_NAME}-")


def summary(found: Sequence[Problem]) -> str:
    """One line: the first problem, and how many more."""
    if not found:
        return "no problem"
    more = f" (and {len(found) - 1} more)" if len(found) > 1 else ""
    return found[0].message + more


def _pods(text: str, when: str) -> dict[str, dict[str, Any]]:
    """The pods of a `v1` `List` by uid (a pod recreated under the same name is another pod)."""
    try:
        document = json.loads(text)
    except ValueError:
        first = (text.strip().splitlines() or ["nothing"])[0][:200]
        raise TestbedError(f"the pods read {when} are not JSON (kubectl printed {first!r})") from None
    if not isinstance(document, dict) or not isinstance(document.get("items"), list):
        raise TestbedError(f"the pods read {when} are not a v1 List of Pods")
    pods: dict[str, dict[str, Any]] = {}
    for pod in document["items"]:
        meta = pod.get("metadata") or {}
        pods[str(meta.get("uid") or meta.get("name"))] = pod
    return pods


def _meta(pod: Mapping[str, Any]) -> dict[str, Any]:
    return dict(pod.get("metadata") or {})


def _name(pod: Mapping[str, Any]) -> str:
    return str(_meta(pod).get("name", "?"))


def _statuses(pod: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """Every container's status by name: the containers, and the init containers that are sidecars."""
    status = pod.get("status") or {}
    sidecars = {
        c.get("name")
        for c in (pod.get("spec") or {}).get("initContainers") or []
        if c.get("restartPolicy") == RESTART_ALWAYS
    }
    found = {s["name"]: s for s in status.get("containerStatuses") or [] if "name" in s}
    for s in status.get("initContainerStatuses") or []:
        if "name" in s:
            # A one-shot init container's restarts count too (it ran again); its readiness does not.
            found[s["name"]] = s | {"_sidecar": s["name"] in sidecars}
    return found


def _is_watched(status: Mapping[str, Any]) -> bool:
    """Whether it should be ready at the end: a container, or an init container that is a sidecar."""
    return bool(status.get("_sidecar", True))


def _restarts(before: Mapping[str, Any], after: Mapping[str, Any]) -> list[Problem]:
    found = []
    earlier = _statuses(before)
    for name, status in _statuses(after).items():
        grown = int(status.get("restartCount", 0)) - int(earlier.get(name, {}).get("restartCount", 0))
        if grown <= 0:
            continue
        ended = ((status.get("lastState") or {}).get("terminated")) or {}
        details: dict[str, Any] = {
            "restarts": grown,
            "exit_code": ended.get("exitCode"),
            "signal": _signal(ended.get("signal")),
            "reason": ended.get("reason"),
            "finished_at": ended.get("finishedAt"),
        }
        how = [str(ended["reason"])] if ended.get("reason") else []
        if ended.get("exitCode") is not None:
            how.append(f"exit code {ended['exitCode']}")
        if details["signal"]:
            how.append(f"signal {details['signal']}")
        if ended.get("finishedAt"):
            how.append(f"at {ended['finishedAt']}")
        last = f" (last: {', '.join(how)})" if how else ""
        found.append(
            Problem(
                kind="restarted",
                pod=_name(after),
                container=name,
                message=f"container {name} of pod {_name(after)} restarted {grown} time(s){last}",
                details=details,
            )
        )
    return found


def _signal(number: Any) -> str | None:
    """`signal` is omitted when 0 (omitempty): a name if the number is one, else the number."""
    if not number:
        return None
    try:
        return signal.Signals(int(number)).name
    except ValueError:
        return str(number)


def _end_state(pod: Mapping[str, Any]) -> list[Problem]:
    """At the end: the pod being deleted or not Running, and each of its containers that is not ready."""
    name, status = _name(pod), pod.get("status") or {}
    if _meta(pod).get("deletionTimestamp"):
        return [Problem(kind="deleting", pod=name, message=f"pod {name} is being deleted")]
    phase = status.get("phase")
    if phase != RUNNING:
        why = f" ({status['reason']})" if status.get("reason") else ""
        return [
            Problem(
                kind="not-running",
                pod=name,
                message=f"pod {name} is {phase or 'in no phase'}{why}, not {RUNNING}",
                details={"phase": phase, "reason": status.get("reason")},
            )
        ]
    found = []
    for container, cs in _statuses(pod).items():
        if not _is_watched(cs) or cs.get("ready"):
            continue
        state = cs.get("state") or {}
        waiting = (state.get("waiting") or {}).get("reason")
        ended = (state.get("terminated") or {}).get("reason")
        reason = waiting or ended
        found.append(
            Problem(
                kind="not-ready",
                pod=name,
                container=container,
                message=f"container {container} of pod {name} is not ready"
                + (f" ({reason})" if reason else ""),
                details={"state": next(iter(state), None), "reason": reason},
            )
        )
    return found
