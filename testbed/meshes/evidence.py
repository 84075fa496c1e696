"""Proof that a mesh on Kubernetes does its job, read from what the mesh's own tools print: pure functions.

What every mesh shares lives here: the `Check` type, the plaintext probe and the cross-node check, the
Prometheus text parser; each mesh's own commands and parsers sit beside it (`testbed.meshes.istio.evidence`,
`...linkerd.evidence`, `...cilium.evidence`). Each check takes the text one command printed (the `*_argv`
functions give the exact commands, every flag checked against the tool's source at its pinned version)
and returns a `Check`. `verify`
turns the checks into a trial's `mesh_evidence`; `require` stops the run when one failed, so that no
result is ever reported for a mesh that was not shown to encrypt and authenticate its traffic.

The formats, and the source file each was read from, are listed in tests/fixtures/mesh/README.md.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from testbed.errors import TestbedError

#: Where the testbed image's Python runs the plaintext probe: a namespace that no mesh enrols.
PROBE_NAMESPACE = "testbed-plain"
#: The Deployment in `PROBE_NAMESPACE` whose pod runs `PROBE_SCRIPT` (kept idle, like the load generator).
PROBE_DEPLOYMENT = "probe"
#: Seconds the probe waits for a plaintext answer; silence until then counts as refused.
PROBE_TIMEOUT_S = 5.0

#: Run inside the testbed image as `python -c PROBE_SCRIPT URL TIMEOUT`: one plaintext GET, one JSON line.
#: Proxies from the environment are ignored; every outcome, even a crash of the request, prints a line and
#: exits 0, so that `kubectl exec` fails only when the probe could not run at all.
PROBE_SCRIPT = """\
import http.client, json, sys, urllib.error, urllib.request
url, timeout = sys.argv[1], float(sys.argv[2])
result = {"probe": "plaintext", "url": url}
opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
try:
    with opener.open(url, timeout=timeout) as response:
        result.update(outcome="http", status=response.status)
except urllib.error.HTTPError as e:
    result.update(outcome="http", status=e.code)
except Exception as e:
    reason = e.reason if isinstance(e, urllib.error.URLError) else e
    if isinstance(reason, ConnectionRefusedError):
        outcome = "refused"
    elif isinstance(reason, http.client.RemoteDisconnected):
        outcome = "closed"
    elif isinstance(reason, (ConnectionResetError, BrokenPipeError)):
        outcome = "reset"
    elif isinstance(reason, TimeoutError):
        outcome = "timeout"
    elif isinstance(reason, http.client.HTTPException):
        outcome = "not_http"
    else:
        outcome = "error"
    result.update(outcome=outcome, error=f"{type(reason).__name__}: {reason}")
print(json.dumps(result))
"""

# Outcomes of the probe that show the plaintext request was turned away by the mesh.
REFUSED = {
    "reset": "the connection was reset",
    "closed": "the connection was closed without an answer",
    "timeout": "no answer came",
    "not_http": "the answer was not HTTP (a TLS-only listener)",
}
# How much of a tool's output a failed check quotes: enough to recognise it, short enough for one line.
_QUOTE = 160
ANSI = re.compile(r"\x1b\[[0-9;]*m")


@dataclass(frozen=True, kw_only=True)
class Check:
    """One verification: what was checked, whether it passed, what it found and where to look if not."""

    name: str
    passed: bool
    detail: str
    data: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """The check as JSON-ready data, for `mesh_evidence`."""
        return asdict(self)


def pods_argv(context: str, namespace: str) -> tuple[str, ...]:
    """The namespace's pods as JSON, for their nodes."""
    return ("kubectl", "--context", context, "get", "pods", "--namespace", namespace, "--output", "json")


def plaintext_probe_argv(
    context: str, url: str, *, namespace: str = PROBE_NAMESPACE, timeout_s: float = PROBE_TIMEOUT_S
) -> tuple[str, ...]:
    """One plaintext request to `url` from the probe pod of the un-meshed namespace.

    Aim it at a path that is no probe path: Linkerd authorizes the pods' probe paths for everyone
    (linkerd/linkerd2 edge-26.8.3 policy-controller/k8s/index/src/inbound/index.rs, probe routes;
    charts/linkerd-control-plane/values.yaml probeNetworks 0.0.0.0/0), so `/healthz` proves nothing there.
    """
    return (
        "kubectl", "--context", context, "--namespace", namespace, "exec", f"deploy/{PROBE_DEPLOYMENT}",
        "--", "python", "-c", PROBE_SCRIPT, url, f"{timeout_s:g}",
    )  # fmt: skip


def plaintext_refused(text: str, *, refusal_statuses: Iterable[int] = ()) -> Check:
    """A plaintext request from the un-meshed namespace (the line `PROBE_SCRIPT` printed) was refused.

    A reset, a close, silence or a non-HTTP answer is a refusal; so is an HTTP status in
    `refusal_statuses` (`LINKERD_REFUSAL_STATUSES` for Linkerd). Any other answer means the app was
    reached in plaintext. "Connection refused" fails too: nothing listening says nothing about the mesh.
    Not a Cilium check: WireGuard encrypts between nodes but authenticates no workload.
    """
    name = "plaintext-refused"
    result = probe_line(text)
    if result is None:
        return fail(
            name,
            f"no probe result line in the output {quote(text)}: did kubectl exec reach "
            f"deploy/{PROBE_DEPLOYMENT} in namespace {PROBE_NAMESPACE}?",
            {},
        )
    url = result.get("url", "?")
    outcome = result.get("outcome")
    data = {"probe": result}
    if outcome == "http":
        status = result.get("status")
        if status in set(refusal_statuses):
            return Check(
                name=name,
                passed=True,
                detail=f"plaintext GET {url} from an un-meshed pod was answered {status}: the mesh's "
                "policy refused a client without a mesh identity",
                data=data,
            )
        return fail(
            name,
            f"plaintext GET {url} from an un-meshed pod was answered HTTP {status}: the mesh accepts "
            "plaintext; enforce mTLS (Istio: PeerAuthentication STRICT; Linkerd: "
            "config.linkerd.io/proxy-require-identity-inbound-ports: the app port)",
            data,
        )
    if isinstance(outcome, str) and outcome in REFUSED:
        return Check(
            name=name,
            passed=True,
            detail=f"plaintext GET {url} from an un-meshed pod was refused: {REFUSED[outcome]} "
            f"({result.get('error', '')})",
            data=data,
        )
    if outcome == "refused":
        return fail(
            name,
            f"plaintext GET {url} from an un-meshed pod: connection refused, so nothing listens there and "
            "the mesh was never asked; check the URL and that the app is running",
            data,
        )
    return fail(
        name,
        f"plaintext GET {url} from an un-meshed pod failed before reaching the mesh: "
        f"{result.get('error', outcome)}; check the URL (DNS name, port)",
        data,
    )


def cross_node(text: str, *, edges: Sequence[tuple[str, str]]) -> Check:
    """Every call's caller and callee run on different nodes (`kubectl get pods -o json`).

    `edges` are (caller, callee) Deployments, the load generator's call to the entry included. Only
    traffic between nodes goes through WireGuard, and a hop between nodes is what a mesh adds latency to
    in production; pods are matched by their `app` label (testbed/kube/manifests.py). `data["edges"]`
    gives each call's node pair, for the checks that look for encrypted traffic between those nodes.
    """
    name = "cross-node"
    try:
        listing = json.loads(text)
    except json.JSONDecodeError as e:
        return fail(name, f"the pod list is not JSON ({e.msg}): {quote(text)}", {})
    items = listing.get("items", []) if isinstance(listing, dict) else []
    nodes: dict[str, list[str]] = {}
    for pod in items:
        meta, spec, status = pod.get("metadata", {}), pod.get("spec", {}), pod.get("status", {})
        if status.get("phase") != "Running" or meta.get("deletionTimestamp") or not spec.get("nodeName"):
            continue
        nodes.setdefault(meta.get("labels", {}).get("app", ""), []).append(spec["nodeName"])
    data: dict[str, Any] = {"nodes": {app: sorted(n) for app, n in nodes.items() if app}, "edges": []}
    if not edges:
        return fail(name, "no calls to check (the topology's call graph is empty)", data)
    absent = [a for a in dict.fromkeys(a for edge in edges for a in edge) if a not in nodes]
    if absent:
        return fail(name, f"no running pod of {', '.join(absent)} (kubectl get pods -o wide shows why)", data)
    same: list[str] = []
    for caller, callee in edges:
        # One pair per pod pair: normally one pod each; during a rollout every pair must cross too.
        for caller_node in sorted(set(nodes[caller])):
            for callee_node in sorted(set(nodes[callee])):
                pair = {"caller_node": caller_node, "callee_node": callee_node}
                data["edges"].append({"caller": caller, "callee": callee, **pair})
                if caller_node == callee_node:
                    same.append(f"{caller} -> {callee} on {caller_node}")
    if same:
        return fail(
            name,
            f"{len(same)} call(s) never leave their node: {', '.join(same)} (check the workers' "
            "testbed.io/role labels and the pods' nodeSelector)",
            data,
        )
    hops = ", ".join(
        f"{e['caller']} -> {e['callee']} ({e['caller_node']} -> {e['callee_node']})" for e in data["edges"]
    )
    return Check(name=name, passed=True, detail=f"every call crosses nodes: {hops}", data=data)


# --- The evidence ----------------------------------------------------------------------------------


def verify(mesh: str, checks: Sequence[Check]) -> dict[str, Any]:
    """A trial's `mesh_evidence`: the mesh, whether its encryption was shown to work, and every check."""
    return {
        "mesh": mesh,
        "encrypted": bool(checks) and all(c.passed for c in checks),
        "checks": [c.to_dict() for c in checks],
    }


def require(mesh: str, checks: Sequence[Check]) -> None:
    """Raise a one-line `TestbedError` naming every failed check; silence when all passed."""
    if not checks:
        problems = "no verification was run"
    else:
        problems = "; ".join(f"{c.name}: {c.detail}" for c in checks if not c.passed)
    if problems:
        raise TestbedError(
            f"the {mesh} mesh could not be verified: {problems}; "
            "the run stops rather than report an unverified mesh"
        )


# --- Parsing -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Sample:
    pod: str
    name: str
    labels: Mapping[str, str]
    value: float


_SAMPLE = re.compile(
    r"^(?P<name>[a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(?P<labels>.*)\})?\s+(?P<value>\S+)(?:\s+-?\d+)?$"
)
_LABEL = re.compile(r'\s*(?P<key>[a-zA-Z_][a-zA-Z0-9_]*)="(?P<value>(?:[^"\\]|\\.)*)"\s*(?:,|$)')
_UNESCAPE = {"\\\\": "\\", '\\"': '"', "\\n": "\n"}


def prometheus(text: str, *, pod_header: re.Pattern[str]) -> list[Sample]:
    """The samples of Prometheus text (several pods' worth), each with the pod whose header precedes it."""
    samples = []
    pod = ""
    for raw in text.splitlines():
        line = raw.strip()
        header = pod_header.match(line)
        if header:
            pod = header[1]
            continue
        if not line or line.startswith("#"):
            continue
        match = _SAMPLE.match(line)
        if not match:
            continue
        labels = _labels(match["labels"] or "")
        try:
            value = float(match["value"])
        except ValueError:
            continue
        if labels is not None:
            samples.append(Sample(pod, match["name"], labels, value))
    return samples


def reported(
    samples: Sequence[Sample], metric: str, reporter: str, namespace_label: str, namespace: str
) -> list[Sample]:
    """The non-zero samples of an Istio `metric` from `reporter` whose `namespace_label` is `namespace`."""
    return [
        s
        for s in samples
        if s.name == metric
        and s.labels.get("reporter") == reporter
        and s.labels.get(namespace_label) == namespace
        and s.value > 0
    ]


def _labels(text: str) -> dict[str, str] | None:
    labels = {}
    pos = 0
    while pos < len(text):
        match = _LABEL.match(text, pos)
        if not match:
            return None  # not a label set we understand: skip the sample rather than misread it
        labels[match["key"]] = re.sub(r"\\[\\\"n]", lambda m: _UNESCAPE[m[0]], match["value"])
        pos = match.end()
    return labels


def probe_line(text: str) -> dict[str, Any] | None:
    for line in reversed(text.splitlines()):
        if line.startswith('{"probe": "plaintext"'):
            try:
                result = json.loads(line)
            except json.JSONDecodeError:
                return None
            return result if isinstance(result, dict) else None
    return None


def fail(name: str, detail: str, data: dict[str, Any]) -> Check:
    return Check(name=name, passed=False, detail=detail, data=data)


def counts(counts: Mapping[str, int], limit: int = 6) -> str:
    items = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
    text = ", ".join(f"{k} {v}" for k, v in items[:limit])
    return text + (f" and {len(items) - limit} more" if len(items) > limit else "")


def quote(text: str) -> str:
    flat = " ".join(text.split())
    if not flat:
        return "(empty)"
    return repr(flat if len(flat) <= _QUOTE else flat[:_QUOTE] + "...")
