"""What went wrong with the pods during a trial (`testbed.kube.health`), from `kubectl get pods` fixtures."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from testbed.errors import TestbedError
from testbed.kube import health

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
