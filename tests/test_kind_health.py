"""What went wrong with the pods during a trial (`testbed.kube.health`), from `kubectl get pods` fixtures."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from testbed.errors import TestbedError
from testbed.kube import health
from testbed.kube.manifests import WORKER_NAME, loadgen_workers

PODS = Path(__file__).parent / "fixtures" / "kind-trial-pods"


def read(name: str) -> str:
    return (PODS / f"{name}.json").read_text()


@pytest.mark.parametrize(
    ("before", "after"),
    [
        ("none", "none"),
        ("linkerd", "linkerd"),  # a Completed linkerd-init is not ready, and that is fine
        ("none-loadgen-oomkilled", "none-loadgen-oomkilled"),  # restarts from before the trial
        ("none-old-worker-terminating", "none"),  # the previous trial's worker, already going
    ],
)
def test_a_trial_where_nothing_happened_has_no_problem(before: str, after: str) -> None:
    assert health.problems(read(before), read(after)) == []
    assert health.summary([]) == "no problem"


def test_a_restart_says_which_container_how_many_times_and_how_it_ended() -> None:
    found = health.problems(read("none"), read("none-loadgen-oomkilled"))
    assert [p.to_json() for p in found] == [
        {
            "kind": "restarted",
            "pod": "loadgen-66b8f4c9d7-gvzgc",
            "container": "loadgen",
            "message": "container loadgen of pod loadgen-66b8f4c9d7-gvzgc restarted 1 time(s) "
            "(last: OOMKilled, exit code 137, at 2026-12-03T12:04:17Z)",
            "restarts": 1,
            "exit_code": 137,
            "signal": None,
            "reason": "OOMKilled",
            "finished_at": "2026-12-03T12:04:17Z",
        }
    ]
    assert health.summary(found) == found[0].message


def test_a_replaced_pod_is_gone_new_and_not_ready() -> None:
    found = health.problems(read("none"), read("none-pricing-replaced"))
    assert [(p.kind, p.pod, p.container) for p in found] == [
        ("gone", "pricing-6d4b9c7f5b-q5jn6", None),
        ("new", "pricing-6d4b9c7f5b-x7k2m", None),
        ("not-ready", "pricing-6d4b9c7f5b-x7k2m", "app"),
    ]
    assert health.summary(found) == "pod pricing-6d4b9c7f5b-q5jn6 is gone (and 2 more)"


def test_a_native_sidecar_restart_and_back_off_are_seen_in_the_init_container_statuses() -> None:
    """Linkerd's proxy is an init container with restartPolicy Always: not in containerStatuses."""
    found = health.problems(read("linkerd"), read("linkerd-proxy-crashloop"))
    assert [(p.kind, p.pod, p.container) for p in found] == [
        ("restarted", "frontend-7c9d8b6f4d-qgv6d", "linkerd-proxy"),
        ("not-ready", "frontend-7c9d8b6f4d-qgv6d", "linkerd-proxy"),
    ]
    assert found[0].details["restarts"] == 2 and found[0].details["reason"] == "Error"
    assert found[1].message.endswith("is not ready (CrashLoopBackOff)")


def test_the_worker_of_this_trial_being_deleted_is_a_problem_but_not_the_last_trials() -> None:
    """Terminating before the load: not this trial's. Terminating only after it: deleted during the trial."""
    assert health.problems(read("none-old-worker-terminating"), read("none-old-worker-terminating")) == []
    found = health.problems(read("none"), read("none-old-worker-terminating"))
    assert [(p.kind, p.pod) for p in found] == [
        ("new", "loadgen-worker-5b7d9c6f4-p2xvn"),
        ("deleting", "loadgen-worker-5b7d9c6f4-p2xvn"),
    ]


def test_a_pod_not_running_at_the_end_is_a_problem() -> None:
    document = json.loads(read("none"))
    document["items"][0]["status"] |= {"phase": "Failed", "reason": "Evicted"}
    found = health.problems(read("none"), json.dumps(document))
    assert [p.message for p in found] == ["pod frontend-7c9d8b6f4d-qgv6d is Failed (Evicted), not Running"]


def test_a_signal_is_named() -> None:
    document = json.loads(read("none-loadgen-oomkilled"))
    terminated = document["items"][4]["status"]["containerStatuses"][0]["lastState"]["terminated"]
    terminated |= {"signal": 9, "reason": "Error"}
    (found,) = health.problems(read("none"), json.dumps(document))
    assert found.details["signal"] == "SIGKILL"
    assert "(last: Error, exit code 137, signal SIGKILL, at 2026-12-03T12:04:17Z)" in found.message


@pytest.mark.parametrize(
    ("text", "message"),
    [("error: You must be logged in", "are not JSON"), ('{"kind": "Status"}', "are not a v1 List of Pods")],
)
def test_output_that_is_not_a_list_of_pods_is_an_error(text: str, message: str) -> None:
    with pytest.raises(TestbedError, match=f"the pods read after the load {message}"):
        health.problems(read("none"), text)


def _with_pod(name: str, edit: dict[str, object], *, base: str = "none", rename: str = "") -> str:
    """The `base` fixture with pod `name` changed (status fields merged), and renamed if asked."""
    document = json.loads(read(base))
    for pod in document["items"]:
        if pod["metadata"]["name"] == name:
            if rename:
                pod["metadata"]["name"] = rename
            pod["status"] = pod["status"] | edit
    return json.dumps(document)


def test_a_load_generator_worker_that_exited_0_when_its_master_quit_is_no_problem() -> None:
    """Workers exit 0 when the master quits at the load's end (locust runners.py); they are restarted."""
    worker = "loadgen-worker-5d8f7c9b6d-x2x8z"
    before = _with_pod("loadgen-66b8f4c9d7-gvzgc", {}, rename=worker)
    running = json.loads(before)
    [pod] = [p for p in running["items"] if p["metadata"]["name"] == worker]
    status = pod["status"]["containerStatuses"][0]
    quit_ = status | {
        "restartCount": status.get("restartCount", 0) + 1,
        "ready": False,
        "lastState": {"terminated": {"exitCode": 0, "reason": "Completed"}},
    }
    after = _with_pod("loadgen-66b8f4c9d7-gvzgc", {"containerStatuses": [quit_]}, rename=worker)
    assert health.problems(before, after) == []
    # A worker that crashed (exit code 1) is a problem all the same.
    crashed = quit_ | {"lastState": {"terminated": {"exitCode": 1, "reason": "Error"}}}
    after = _with_pod("loadgen-66b8f4c9d7-gvzgc", {"containerStatuses": [crashed]}, rename=worker)
    assert [p.kind for p in health.problems(before, after)] == ["restarted"]
    # One that crashed and then quit: 2 restarts, the last exit 0 (`lastState` holds only the last one).
    twice = quit_ | {"restartCount": status.get("restartCount", 0) + 2}
    after = _with_pod("loadgen-66b8f4c9d7-gvzgc", {"containerStatuses": [twice]}, rename=worker)
    (found,) = health.problems(before, after)
    assert (found.kind, found.details["restarts"], found.details["exit_code"]) == ("restarted", 2, 0)


def test_the_terminating_worker_fixture_is_shaped_as_the_manifest_makes_it() -> None:
    """Its container name and grace period are those of `testbed.kube.manifests.loadgen_workers`."""
    deployment = next(o for o in loadgen_workers(1, image="testbed:0") if o["kind"] == "Deployment")
    pod_spec = deployment["spec"]["template"]["spec"]
    (pod,) = [
        p
        for p in json.loads(read("none-old-worker-terminating"))["items"]
        if p["metadata"]["name"].startswith(f"{WORKER_NAME}-")
    ]
    assert [c["name"] for c in pod["status"]["containerStatuses"]] == [
        c["name"] for c in pod_spec["containers"]
    ]
    assert pod["metadata"]["deletionGracePeriodSeconds"] == pod_spec["terminationGracePeriodSeconds"]


def test_a_pod_already_failed_before_the_trial_is_not_the_trials_fault() -> None:
    evicted = {"phase": "Failed", "reason": "Evicted"}
    stale = _with_pod("pricing-6d4b9c7f5b-q5jn6", evicted)
    assert health.problems(stale, stale) == []
    # One that fails during the trial is.
    assert [p.kind for p in health.problems(read("none"), stale)] == ["not-running"]


def test_a_pod_not_yet_running_before_the_trial_is_judged_at_its_end() -> None:
    """Only a pod that has ended (Failed, Succeeded) is left out: a Pending one must be Running at the end."""
    pending = _with_pod("pricing-6d4b9c7f5b-q5jn6", {"phase": "Pending"})
    assert [p.message for p in health.problems(pending, pending)] == [
        "pod pricing-6d4b9c7f5b-q5jn6 is Pending, not Running"
    ]
    assert health.problems(pending, read("none")) == []  # Running and ready by the end


def test_the_read_before_the_load_is_judged_for_readiness() -> None:
    """On kind the trials share the pods: one still recovering from the last trial is not measured."""
    assert health.not_ready_before(read("none")) == []
    assert health.not_ready_before(read("linkerd")) == []  # a Completed one-shot init container is fine
    # A replacement still starting: Pending, or Running with its container not ready yet.
    pending = _with_pod("pricing-6d4b9c7f5b-q5jn6", {"phase": "Pending"})
    assert [(p.kind, p.pod) for p in health.not_ready_before(pending)] == [
        ("not-running", "pricing-6d4b9c7f5b-q5jn6")
    ]
    assert [(p.kind, p.pod, p.container) for p in health.not_ready_before(read("none-pricing-replaced"))] == [
        ("not-ready", "pricing-6d4b9c7f5b-x7k2m", "app")
    ]
    crashloop = health.not_ready_before(read("linkerd-proxy-crashloop"))
    assert [p.message for p in crashloop] == [
        "container linkerd-proxy of pod frontend-7c9d8b6f4d-qgv6d is not ready (CrashLoopBackOff)"
    ]
    # Left out: a pod that has ended (an earlier eviction), one being deleted, a load generator worker.
    evicted = {"phase": "Failed", "reason": "Evicted"}
    assert health.not_ready_before(_with_pod("pricing-6d4b9c7f5b-q5jn6", evicted)) == []
    assert health.not_ready_before(_with_pod("pricing-6d4b9c7f5b-q5jn6", {"phase": "Succeeded"})) == []
    assert health.not_ready_before(read("none-old-worker-terminating")) == []
    worker = _with_pod(
        "pricing-6d4b9c7f5b-q5jn6", {"phase": "Pending"}, rename=f"{WORKER_NAME}-5d8f7c9b6d-x2x8z"
    )
    assert health.not_ready_before(worker) == []
    # A mesh's pod is named NS/POD.
    document = json.loads(read("mesh-istio-system"))
    document["items"][0]["status"]["containerStatuses"][0]["ready"] = False
    (found,) = health.not_ready_before(json.dumps(document), namespace="istio-system")
    assert found.namespace == "istio-system" and f"pod istio-system/{found.pod} is not ready" in found.message


def test_a_mesh_pod_outside_the_app_namespace_is_named_with_its_namespace() -> None:
    """ztunnel (istio-system) restarted: the problem names istio-system/POD and carries the namespace."""
    before = read("mesh-istio-system")
    document = json.loads(before)
    [ztunnel] = [p for p in document["items"] if p["metadata"]["name"] == "ztunnel-d2q7x"]
    ztunnel["status"]["containerStatuses"][0] |= {
        "restartCount": 1,
        "lastState": {"terminated": {"exitCode": 137, "reason": "OOMKilled"}},
    }
    (found,) = health.problems(before, json.dumps(document), namespace="istio-system")
    assert found.message == (
        "container istio-proxy of pod istio-system/ztunnel-d2q7x restarted 1 time(s) "
        "(last: OOMKilled, exit code 137)"
    )
    assert found.to_json()["namespace"] == "istio-system" and found.pod == "ztunnel-d2q7x"
    # The app namespace's problems keep their shape: no namespace.
    (app,) = health.problems(read("none"), read("none-loadgen-oomkilled"))
    assert "namespace" not in app.to_json() and "pod loadgen-" in app.message


def test_only_not_ready_problems_may_be_read_again() -> None:
    not_ready = health.problems(read("none"), read("none-pricing-replaced"))
    assert not health.only_not_ready(not_ready)  # gone and new too
    assert health.only_not_ready([p for p in not_ready if p.kind == "not-ready"])
    assert not health.only_not_ready([])
    evicted = _with_pod("pricing-6d4b9c7f5b-q5jn6", {"phase": "Failed", "reason": "Evicted"})
    assert not health.only_not_ready(health.problems(read("none"), evicted))
