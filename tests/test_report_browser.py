"""The HTML report in a real browser: Debian's Chromium, headless, driven by Playwright (no download).

It must render every plot with no console error, offline (the report is opened from a file with the
network of the page blocked), which is how a user opens a report attached to a CI run.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from testbed.bench.report import trial_result, write_run
from tests.conftest import run_testbed

CHROMIUM = "/usr/bin/chromium"
# The flags this workplace's machines need (no GPU, no sandbox as root, no calls home on a closed network).
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def _chromium() -> str:
    if shutil.which(CHROMIUM) is None:
        if os.environ.get("CI"):
            pytest.fail(f"{CHROMIUM} is missing: .ci/run installs Debian's chromium package")
        pytest.skip(f"{CHROMIUM} is missing: apt-get install chromium")
    return CHROMIUM


@pytest.mark.slow
def test_report_renders_in_chromium(tmp_path: Path) -> None:
    from playwright.sync_api import sync_playwright

    rng = np.random.default_rng(1)
    cells = {
        (mesh, rate): [
            trial_result(rng, mesh=mesh, rate=rate, trial=i + 1, requests=3000, median_us=base + rate)
            for i in range(3)
        ]
        for mesh, base in (("none", 1000.0), ("envoy", 1600.0))
        for rate in (100.0, 200.0)
    }  # fmt: skip
    run = write_run(tmp_path / "run", cells)
    assert run_testbed("report", str(run)).returncode == 0
    page_path = run / "report.html"

    problems: list[str] = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=_chromium(), args=FLAGS, timeout=60_000)
        try:
            page = browser.new_page(viewport={"width": 1300, "height": 900})
            page.on(
                "console",
                lambda m: problems.append(f"console {m.type}: {m.text}") if m.type == "error" else None,
            )
            page.on("pageerror", lambda e: problems.append(f"page error: {e}"))
            # Offline: any request that leaves the file (a CDN, a font) is refused and would be an error.
            page.route(
                "http*://**", lambda route: (problems.append(f"network: {route.request.url}"), route.abort())
            )
            page.goto(page_path.as_uri())
            expected = page.locator(".plotly-graph-div").count()
            assert expected == 5  # spectrum at 100 and at 200 rps, overhead, by rate, resources
            page.wait_for_function(
                "[...document.querySelectorAll('.plotly-graph-div')].every("
                "d => d.querySelector('.main-svg') && d.querySelectorAll('.trace').length > 0)",
                timeout=30_000,
            )
            for div_id in ("spectrum-100", "spectrum-200", "overhead", "by-rate", "resources"):
                box = page.locator(f"#{div_id}").bounding_box()
                assert box is not None and box["width"] > 300 and box["height"] > 200, div_id
            # The warnings come before any figure.
            order = page.evaluate("[...document.querySelectorAll('h2')].map(h => h.textContent)")
            assert order.index("Summary") < order.index("Latency by percentile")
            page.screenshot(path=str(tmp_path / "report.png"), full_page=True)
        finally:
            browser.close()
    assert problems == []
    assert (tmp_path / "report.png").stat().st_size > 10_000
