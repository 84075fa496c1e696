"""Proof that Linkerd does its job on Kubernetes, read from `linkerd diagnostics proxy-metrics` and
`linkerd check --proxy`: pure functions. The formats and their sources: tests/fixtures/mesh/README.md.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Sequence
from typing import Any

from testbed.meshes.evidence import ANSI, Check, counts, fail, prometheus, quote

#: Linkerd answers an unauthenticated request that the app port's authenticated-only policy denies with a
#: 403 (linkerd2-proxy release/v2.366.0 linkerd/app/inbound/src/http/server.rs: HttpRouteUnauthorized ->
#: permission_denied); Envoy and ztunnel refuse plaintext at the connection instead.
LINKERD_REFUSAL_STATUSES = frozenset({403})
# linkerd check's glyphs (escaped: they look like other letters).
_PASSED, _WARNED, _FAILED = "\u221a", "\u203c", "\u00d7"
_GLYPHS = (_PASSED, _WARNED, _FAILED)


def linkerd_metrics_argv(context: str, namespace: str, deployment: str) -> tuple[str, ...]:
    """The linkerd-proxy metrics of a deployment's pods.

    linkerd/linkerd2 edge-26.8.3 cli/cmd/metrics.go (`diagnostics proxy-metrics`, `--namespace`);
    `--context`: cli/cmd/root.go.
    """
    return (
        "linkerd", "--context", context, "diagnostics", "proxy-metrics",
        "--namespace", namespace, f"deploy/{deployment}",
    )  # fmt: skip


def linkerd_check_argv(context: str, namespace: str, *, wait_s: int) -> tuple[str, ...]:
    """Linkerd's own data-plane checks (it exits 1 when one fails: parse its stdout all the same).

    linkerd/linkerd2 edge-26.8.3 cli/cmd/check.go (`--proxy`, `--namespace`, table output by default;
    `--wait`, a Go duration, default 300s, how long failing checks are retried): `wait_s` must end before
    the step's own timeout, or the step is killed before linkerd prints which check failed.
    """
    return (
        "linkerd", "--context", context, "check", "--proxy", "--namespace", namespace, "--wait", f"{wait_s}s",
    )  # fmt: skip


def linkerd_proxy_tls(text: str, *, namespace: str) -> Check:
    """The linkerd-proxies sent every request and connection to `namespace` over mTLS, and sent some.

    Reads the outbound `request_total` and `tcp_open_total` series whose endpoint is in `namespace`
    (dst_namespace): tls="true" with a server_id naming the destination's service account, never
    tls="no_identity" (linkerd2-proxy release/v2.366.0 linkerd/app/core/src/transport/labels.rs).
    A pod header followed by no sample means that the admin port answered without metrics: the CLI
    prints the body of the port-forwarded GET /metrics whatever its status (linkerd/linkerd2 edge-26.8.3
    pkg/k8s/metrics.go getResponse), and a 403 of the proxy's policy has an empty body (linkerd2-proxy
    linkerd/app/core/src/errors/respond.rs), while a proxy's own metrics are never empty.
    """
    name = "linkerd-proxy-tls"
    errors = [
        line[len("# ERROR") :].lstrip(": ").strip()
        for line in text.splitlines()
        if line.startswith("# ERROR")
    ]
    samples = prometheus(text, pod_header=_LINKERD_POD)
    pods = sorted({s.pod for s in samples if s.pod} | set(_LINKERD_POD.findall(text)))
    app = [
        s
        for s in samples
        if s.name in ("request_total", "tcp_open_total")
        and s.labels.get("direction") == "outbound"
        and s.labels.get("dst_namespace") == namespace
        and s.value > 0
    ]
    requests: Counter[str] = Counter()
    untrusted: Counter[str] = Counter()
    wrong_identity: set[str] = set()
    for s in app:
        dst = s.labels.get("dst_deployment") or s.labels.get("authority", "?")
        tls = s.labels.get("tls", "missing")
        what = "requests" if s.name == "request_total" else "connections"
        if tls != "true":
            reason = s.labels.get("no_tls_reason")
            untrusted[f"{what} to {dst} (tls={tls}{', ' + reason if reason else ''})"] += int(s.value)
            continue
        account = s.labels.get("dst_serviceaccount")
        server_id = s.labels.get("server_id", "")
        if account and not server_id.startswith(f"{account}.{namespace}.serviceaccount.identity."):
            wrong_identity.add(f"{dst} proved {server_id or 'no identity'}")
        if s.name == "request_total":
            requests[dst] += int(s.value)
    data = {
        "namespace": namespace,
        "pods": pods,
        "tls_requests_by_destination": dict(requests),
        "not_tls": dict(untrusted),
    }
    sampled = {s.pod for s in samples}
    silent = [pod for pod in pods if pod not in sampled]
    unread = _linkerd_unread(errors, silent, namespace)
    if unread is not None:
        return fail(name, unread, data | {"refused_metrics": silent})
    if not pods:
        return fail(
            name,
            f"no linkerd-proxy answered (output {quote(text)}): is namespace {namespace} annotated "
            "linkerd.io/inject: enabled, and were its pods restarted after?",
            data,
        )
    if untrusted:
        return fail(
            name,
            f"linkerd-proxies sent traffic to namespace {namespace} without mTLS: {counts(untrusted)}; "
            "is the destination meshed (linkerd -n NS check --proxy)?",
            data,
        )
    if wrong_identity:
        return fail(
            name, f"a destination proved the wrong identity: {', '.join(sorted(wrong_identity))}", data
        )
    if not requests:
        return fail(
            name,
            f"no outbound requests to namespace {namespace} in the metrics of {', '.join(pods)}: query the "
            "callers' proxies (load generator, services with downstreams), after traffic",
            data,
        )
    return Check(
        name=name,
        passed=True,
        detail=f"{sum(requests.values())} outbound requests to namespace {namespace}, all tls=true with the "
        f"destination's identity: {counts(requests)}",
        data=data,
    )


def _linkerd_unread(errors: Sequence[str], silent: Sequence[str], namespace: str) -> str | None:
    """Why some proxies' metrics could not be read: the CLI's `# ERROR` lines, or pods that answered none."""
    if errors:
        return f"linkerd could not read the proxy metrics: {'; '.join(errors)}"
    if silent:
        # `linkerd diagnostics policy -n NS po/POD PORT`: linkerd/linkerd2 edge-26.8.3 cli/cmd/policy.go.
        return (
            f"the admin port (4191) of {', '.join(silent)} refused the metrics request (the answer held no "
            "metrics: a 403 with an empty body when the inbound policy of the pod covers the admin port, "
            "e.g. config.linkerd.io/default-inbound-policy: all-authenticated); check with "
            f"`linkerd diagnostics policy -n {namespace} po/POD 4191`"
        )
    return None


def linkerd_check_proxy(text: str) -> Check:
    """`linkerd check --proxy` ran to its end without a failed check; warnings are kept as data.

    Glyphs and layout: linkerd/linkerd2 edge-26.8.3 pkg/healthcheck/healthcheck_output.go (okStatus
    U+221A, warnStatus U+203C, failStatus U+00D7, each followed by a space and the check; four-space
    indented error and hint lines; "Status check results are " and a glyph at the end).
    """
    name = "linkerd-check-proxy"
    results: list[dict[str, Any]] = []
    category = ""
    final = None
    lines = ANSI.sub("", text).splitlines()
    for i, line in enumerate(lines):
        if line.startswith("Status check results are "):
            final = line.removeprefix("Status check results are ").strip()
        elif line[:1] in _GLYPHS and line[1:2] == " ":
            results.append({"category": category, "status": line[0], "check": line[2:], "message": []})
        elif line.startswith("    ") and results:
            results[-1]["message"].append(line.strip())
        elif i + 1 < len(lines) and line and set(lines[i + 1]) == {"-"}:
            category = line
    for result in results:
        result["message"] = " ".join(m for m in result["message"] if not m.startswith("see https://"))
    failed = [r for r in results if r["status"] == _FAILED]
    warned = [r for r in results if r["status"] == _WARNED]
    data = {"checks": len(results), "failed": failed, "warnings": warned}
    if failed:
        first = failed[0]
        return fail(
            name,
            f"linkerd check --proxy failed {len(failed)} check(s), first: {first['category']}: "
            f"{first['check']}: {first['message']}",
            data,
        )
    if final != _PASSED or not results:
        return fail(
            name,
            f"linkerd check --proxy did not finish (no final 'Status check results are {_PASSED}' line): "
            f"{quote(text)}",
            data,
        )
    warnings = f", {len(warned)} warning(s): {'; '.join(w['check'] for w in warned)}" if warned else ""
    return Check(
        name=name,
        passed=True,
        detail=f"linkerd check --proxy: {len(results)} checks passed{warnings}",
        data=data,
    )


# linkerd prints "#\n# POD NAME (i of n)\n#\n" before each pod's metrics (cli/cmd/metrics.go).
_LINKERD_POD = re.compile(r"^# POD (\S+) \(\d+ of \d+\)$", re.MULTILINE)
