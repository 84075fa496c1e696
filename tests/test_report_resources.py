"""How the reports present resources per platform: memory labels, warnings, the node overhead, the method.

Run directories are synthetic (`testbed/bench/report.py`), then given the `resources` that each platform
writes: `source`/`memory_source` as `testbed.resources.Sampler.window` (local, old results without them) and
`testbed.kube.metrics` (kind's cgroups, existing's kubelet) write them.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest

from testbed.bench.report import trial_result, write_run
from testbed.kube import metrics
from testbed.platforms.existing import MIN_WINDOW_S, ExistingPlatform
from testbed.reporting import analysis
from testbed.reporting.report import markdown, write_report

FIXTURE = Path(__file__).parent / "fixtures" / "kubelet-metrics-resource.txt"


def _run(tmp_path: Path, platform: str, edit: Callable[[dict[str, Any]], None] | None = None) -> Path:
    """Three trials each of `none` and `envoy` at 100 rps on `platform`, each result passed through `edit`."""
    rng = np.random.default_rng(1)
    cells = {
        (mesh, 100.0): [
            trial_result(rng, mesh=mesh, rate=100.0, trial=i + 1, requests=500, median_us=m, sigma=0.1)
            for i in range(3)
        ]
        for mesh, m in (("none", 1000.0), ("envoy", 1500.0))
    }
    run = write_run(tmp_path / platform, cells)
    meta = json.loads((run / "run.json").read_text())
    meta["platform"] = platform
    (run / "run.json").write_text(json.dumps(meta))
    for path in run.glob("*/*/trial-*/result.json"):
        result = json.loads(path.read_text())
        result["platform"] = platform
        if edit is not None:
            edit(result)
        path.write_text(json.dumps(result))
    return run


def _kind(result: dict[str, Any]) -> None:
    resources = result["resources"]
    resources["source"], resources["memory_source"] = metrics.CGROUP_SOURCE, metrics.MEMORY_SOURCE
    resources["components"][metrics.NODE_OVERHEAD] = {
        "cpu_seconds": 0.5,
        "vcpu": 0.1,
        "peak_rss_mb": 900.0 if result["mesh"] == "envoy" else 400.0,  # the page cache of loaded images
        "processes": 4,
    }
    resources["components"][metrics.KERNEL] = {"cpu_seconds": -0.05, "vcpu": -0.01, "peak_rss_mb": 0.0,
                                               "processes": 0}  # fmt: skip
    resources["warnings"], resources["reads"] = [], {"start_offset_s": [0.1, 0.3], "end_offset_s": [0.0, 0.2]}


def _existing(result: dict[str, Any]) -> None:
    result["resources"]["source"] = metrics.SOURCE
    result["resources"]["memory_source"] = metrics.KUBELET_MEMORY_SOURCE


def _local(result: dict[str, Any]) -> None:
    result["resources"]["source"] = "psutil"  # as `Sampler.window` writes it: no memory_source


def _old_local(result: dict[str, Any]) -> None:
    del result["resources"]["source"]  # local results from before `source` and `memory_source`


def _report(run: Path) -> tuple[dict[str, Any], str, str]:
    write_report(run)
    return (
        json.loads((run / "summary.json").read_text()),
        (run / "report.md").read_text(),
        (run / "report.html").read_text(),
    )


@pytest.mark.parametrize(
    ("platform", "edit", "label", "memory"),
    [
        ("local", _local, "peak RSS MB", analysis.LOCAL_MEMORY_SOURCE),
        ("local", _old_local, "peak RSS MB", analysis.LOCAL_MEMORY_SOURCE),
        ("kind", _kind, "working set MB", metrics.MEMORY_SOURCE),
        ("existing", _existing, "working set MB", metrics.KUBELET_MEMORY_SOURCE),
    ],
)
def test_the_memory_column_says_what_each_platform_measured(
    tmp_path: Path, platform: str, edit: Callable[[dict[str, Any]], None], label: str, memory: str
) -> None:
    summary, md, page = _report(_run(tmp_path, platform, edit))
    sources = summary["resource_sources"]
    assert sources["platform"] == platform and sources["memory"] == [memory]
    assert sources["memory_label"] == label
    assert f"| vCPU per 1k rps | {label} |" in md and f"<th>{label}</th>" in page
    resources = md[md.index("## Resources") :].split("\n## ")[0]
    method = page[page.index("<h2>Resources</h2>") : page.index("<h2>Published claims")]
    method += page[page.index("<h2>Method</h2>") :]
    assert memory.split(" (", maxsplit=1)[0] in resources
    if platform != "local":
        assert "peak RSS" not in resources + method and "peak resident" not in resources + method
        assert sources["cpu"] == [metrics.CGROUP_SOURCE if platform == "kind" else metrics.SOURCE]


def test_resource_warnings_reach_every_report_counted_per_mesh(tmp_path: Path) -> None:
    def warned(result: dict[str, Any]) -> None:
        _existing(result)
        if result["mesh"] != "envoy" or result["trial"] == 3:
            return
        result["resources"]["warnings"] = [
            f"a node's cgroups were read +{result['trial'] * 0.7:.2f} s from the window's start: "
            "its figures cover a shifted interval",
            "container 'istio-proxy' of pod testbed/a-1 restarted between the scrapes",
        ]
        result["resources"]["reads"] = {
            "start_offset_s": [0.1, result["trial"] * 0.7],
            "end_offset_s": [-0.3, 0.1],
        }

    summary, md, page = _report(_run(tmp_path, "existing", warned))
    line = next(w for w in summary["warnings"] if w.startswith("envoy:"))
    assert "resource figures of 2 of 3 trials carry 4 warning(s)" in line
    assert (
        "a node's cgroups were read N s from the window's start: its figures cover a shifted interval (2x)"
        in line
    )
    assert "'istio-proxy' of pod testbed/a-1 restarted between the scrapes (2x)" in line
    assert "worst read offsets from the window's edges: start +1.40 s, end -0.30 s" in line
    assert not any(w.startswith("none:") for w in summary["warnings"])
    assert line in md and line.replace("'", "&#x27;") in page
    rolled = summary["resource_warnings"]
    assert rolled["envoy"]["trials_with_warnings"] == 2 and rolled["none"]["trials_with_warnings"] == 0
    assert rolled["envoy"]["worst_read_offset_s"] == {"start": 1.4, "end": -0.3}


def test_existing_warns_about_windows_shorter_than_cadvisors_sampling() -> None:
    platform = ExistingPlatform(context="lab")
    deployment = SimpleNamespace(mesh="none", plan=SimpleNamespace(namespace="testbed"))
    scrape = {"node-a": FIXTURE.read_text()}

    def warnings(seconds: float) -> list[str]:
        result = platform.window_resources(deployment, (1000.0, scrape), (1000.0 + seconds, scrape), {})  # type: ignore[arg-type]
        return [w for w in result["warnings"] if "measured window" in w]

    (short,) = warnings(10.0)
    assert "the measured window was 10.0 s, under 30 s" in short and "cAdvisor" in short
    assert warnings(MIN_WINDOW_S) == []


def test_the_mesh_memory_cost_leaves_out_the_node_overhead(tmp_path: Path) -> None:
    summary, md, page = _report(_run(tmp_path, "kind", _kind))
    envoy = next(c for c in summary["cells"] if c["mesh"] == "envoy")
    # The sidecars' 300 MB only: the node overhead's 500 MB more (page cache) is shown apart.
    assert envoy["resource_overhead"]["mb"] == pytest.approx(300.0)
    assert envoy["resource_overhead"]["node_overhead_mb"] == pytest.approx(500.0)
    assert envoy["resource_overhead"]["vcpu_per_krps"] == pytest.approx(3.0)
    assert "+300.0 MB (node-overhead, not counted: +500.0 MB)" in md
    assert "node-overhead +500.0, not counted" in page
    assert "kind load" in md and "kind load" in page


def test_the_kernel_remainder_is_explained_where_it_is_shown(tmp_path: Path) -> None:
    md, page = _report(_run(tmp_path, "kind", _kind))[1:]
    assert "| none | 100 | kernel-unattributed | 0 | -0.010 |" in md
    (footnote,) = [line for line in md.splitlines() if line.startswith("Note: kernel-unattributed is")]
    for words in ("softirq", "wg-crypt", "dockerd", "docker exec and kubectl", "tick", "slightly negative"):
        assert words in footnote and words in page
    local = markdown(analysis.summary(analysis.load_run(_run(tmp_path, "local"))))
    assert "wg-crypt" not in local and "Note: " not in local


@pytest.mark.parametrize(("platform", "block"), [("local", False), ("kind", True), ("existing", True)])
def test_the_method_says_how_the_trials_were_ordered(tmp_path: Path, platform: str, block: bool) -> None:
    page = _report(_run(tmp_path, platform))[2]
    method = page[page.index("<h2>Method</h2>") :]
    assert ("alternated trial by trial" in method) is not block
    assert ("the trials of one mesh run as a block" in method) is block
    if block:
        assert "shows up as overhead" in method
