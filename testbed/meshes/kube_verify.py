"""The verification steps every mesh on Kubernetes shares: a short load, the plaintext probe, pod placement.

A mesh's `verify_steps` puts these around its own (`istio/kube.py`, `linkerd/`, `cilium/`); its
`evidence` reads their output with `testbed.meshes.evidence`. Every check step keeps what it printed in
`work/<mesh>/verify/`, and a non-zero exit of a check is judged by the check, not raised
(`Step.may_fail`): the run stops with the check's own explanation (`evidence.require`).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path

from testbed.kube import manifests as m
from testbed.kube.actions import ROLLOUT_TIMEOUT, ROLLOUT_TIMEOUT_S, Action, MeshContext, Step, WriteFile
from testbed.meshes import evidence
from testbed.meshes.evidence import Check
from testbed.meshes.kube_resources import probe_objects

#: The verification load: enough requests through every hop for the proxies' counters, short enough to
#: be no benchmark (its result is not recorded as a trial).
LOAD_RATE = 20
LOAD_DURATION_S = 3
#: What `kubectl exec` of the load adds to its length (pod lookup, the start of Python and Locust).
LOAD_TIMEOUT_S = 120.0
CHECK_TIMEOUT_S = 60.0

LOAD = "a short load through every hop (20 rps for 3 s): every request answered, and traffic for the checks"
PROBE = "a plaintext GET of the entry service from the un-meshed probe pod: the mesh must refuse it"
PODS = "the app namespace's pods and their nodes: every call must cross nodes"


def verify_dir(ctx: MeshContext) -> Path:
    """Where the verification commands' output is kept (`work/<mesh>/verify/`)."""
    return ctx.workdir / "verify"


def check_step(ctx: MeshContext, description: str, argv: tuple[str, ...], file: str) -> Step:
    """A command whose stdout a check reads, kept in `verify/<file>`, whatever its exit status."""
    return Step(
        description=description,
        argv=argv,
        timeout_s=CHECK_TIMEOUT_S,
        output=verify_dir(ctx) / file,
        may_fail=True,
    )


def load(ctx: MeshContext) -> Step:
    """The verification load from the loadgen pod (its sidecar, if any, included), as a trial runs it."""
    return Step(
        description=LOAD,
        argv=(
            *ctx.kubectl,
            # As in testbed.kube.trial.trial_plan: kubectl v0.35.7 pkg/cmd/exec/exec.go, -c named because a
            # mesh may add a sidecar; `testbed load` flags from testbed/cli.py.
            "exec",
            f"deploy/{m.LOADGEN_NAME}",
            "-n",
            ctx.namespace,
            "-c",
            m.LOADGEN_NAME,
            "--",
            "testbed",
            "--quiet",
            "load",
            ctx.target_url,
            "--rate",
            str(LOAD_RATE),
            "--duration",
            str(LOAD_DURATION_S),
            "--warmup",
            "0",
            "--out",
            "-",
        ),
        timeout_s=LOAD_TIMEOUT_S,
        output=verify_dir(ctx) / "load.json",
        may_fail=True,
    )


def load_check(text: str) -> Check:
    """The verification load got an answer to every request: the mesh carries the app's traffic."""
    name = "verification-load"
    try:
        result = json.loads(text)
    except ValueError:
        first = (text.strip().splitlines() or ["nothing"])[0][:160]
        return Check(
            name=name,
            passed=False,
            detail=f"the verification load printed no result JSON (it printed {first!r}): "
            "see verify/load.json and the loadgen pod's log",
            data={},
        )
    if not isinstance(result, dict):
        return Check(name=name, passed=False, detail="the verification load printed no JSON object", data={})
    requests, errors = int(result.get("requests", 0)), int(result.get("errors", 0))
    data = {"requests": requests, "errors": errors, "error_kinds": result.get("error_kinds", {})}
    if requests == 0 or errors:
        kinds = ", ".join(f"{k} {v}" for k, v in sorted(data["error_kinds"].items())) or "none recorded"
        return Check(
            name=name,
            passed=False,
            detail=f"{errors} of {requests} requests of the verification load failed ({kinds}): the mesh "
            "does not carry the app's traffic (are all pods ready? see verify/load.json)",
            data=data,
        )
    return Check(
        name=name, passed=True, detail=f"all {requests} requests of the verification load answered", data=data
    )


def probe_actions(ctx: MeshContext) -> list[Action]:
    """The un-meshed namespace and its idle probe pod, applied and rolled out (failures are raised)."""
    path = ctx.workdir / "probe.yaml"
    k = ctx.kubectl
    return [
        WriteFile(
            description=f"the un-meshed namespace {evidence.PROBE_NAMESPACE} with an idle probe pod "
            "(the testbed image) on the load generator's worker",
            path=path,
            text=m.to_yaml(probe_objects(ctx.image)),
        ),
        # -f: kubectl v0.35.7 pkg/cmd/apply/apply.go (cli-runtime pkg/genericclioptions/filename_flags.go).
        Step(description="apply the probe", argv=(*k, "apply", "-f", str(path)), timeout_s=120.0),
        Step(
            description="wait until the probe is rolled out and ready",
            # kubectl v0.35.7 pkg/cmd/rollout/rollout_status.go.
            argv=(
                *k,
                "rollout",
                "status",
                f"deploy/{evidence.PROBE_DEPLOYMENT}",
                "-n",
                evidence.PROBE_NAMESPACE,
                "--timeout",
                ROLLOUT_TIMEOUT,
            ),
            timeout_s=ROLLOUT_TIMEOUT_S,
        ),
    ]


# The kubectl flags of `evidence`'s commands, kubectl v0.35.7: --context and --namespace from cli-runtime
# v0.35.6 pkg/genericclioptions/config_flags.go (flagContext, flagNamespace); `exec` and its --container
# from pkg/cmd/exec/exec.go and pkg/cmd/util/helpers.go AddContainerVarFlags; `get --output` from
# pkg/cmd/get/get_flags.go (PrintFlags).


def probe(ctx: MeshContext) -> Step:
    """The plaintext request: `/` of the entry service is no probe path (`evidence.plaintext_probe_argv`)."""
    return check_step(ctx, PROBE, evidence.plaintext_probe_argv(ctx.context, ctx.target_url), "probe.txt")


def pods(ctx: MeshContext) -> Step:
    return check_step(ctx, PODS, evidence.pods_argv(ctx.context, ctx.namespace), "pods.json")


def edges(ctx: MeshContext) -> list[tuple[str, str]]:
    """Every call as (caller, callee) Deployments: the load generator's to the entry, then each service's."""
    return list(ctx.edges)


def cross_node(outputs: Mapping[str, str], ctx: MeshContext) -> Check:
    """Every call of the topology crosses nodes; `data["edges"]` has each call's node pair."""
    return evidence.cross_node(outputs.get(PODS, ""), edges=edges(ctx))
