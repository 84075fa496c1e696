"""A damaged trial result is skipped with one warning, listed in the reports, and never touched.

The run directories are written as `testbed run` writes them, from real HdrHistograms
(`testbed/bench/report.py`); one trial's result.json is then damaged the ways a disk, an editor or an older
tool damages it.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from testbed.bench.report import trial_result, write_run
from testbed.reporting import analysis
from testbed.reporting.compare import compare
from tests.conftest import run_testbed

DAMAGED = "envoy/100/trial-2/result.json"


def _run(tmp_path: Path, name: str, medians: dict[str, float], *, trials: int = 3, seed: int = 1) -> Path:
    rng = np.random.default_rng(seed)
    cells = {
        (mesh, 100.0): [
            trial_result(rng, mesh=mesh, rate=100.0, trial=i + 1, requests=500, median_us=median, sigma=0.3)
            for i in range(trials)
        ]
        for mesh, median in medians.items()
    }
    return write_run(tmp_path / name, cells)


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _edit(change: Callable[[dict[str, Any]], None]) -> Callable[[Path], None]:
    """Damage that leaves valid JSON: the result read, changed and written back."""

    def damage(path: Path) -> None:
        result = json.loads(path.read_text())
        change(result)
        path.write_text(json.dumps(result))

    return damage


def _truncate(keep: float) -> Callable[[Path], None]:
    def damage(path: Path) -> None:
        data = path.read_bytes()
        path.write_bytes(data[: int(len(data) * keep)])

    return damage


#: How a result.json is damaged, and the reason the warning must give.
DAMAGE: dict[str, tuple[Callable[[Path], None], str]] = {
    "emptied": (_truncate(0.0), "not valid JSON (Expecting value: line 1 column 1)"),
    "cut in half": (_truncate(0.5), "not valid JSON ("),
    "an array": (lambda p: p.write_text("[1, 2]"), "not a JSON object (a JSON array)"),
    "wrong schema": (
        _edit(lambda r: r.update(schema="testbed.other/2")),
        "schema is 'testbed.other/2', not 'testbed.load/1' or 'testbed.load/2'",
    ),
    "no schema": (
        _edit(lambda r: r.pop("schema")),
        "no schema (expected 'testbed.load/1' or 'testbed.load/2')",
    ),
    "no histogram": (_edit(lambda r: r["hdr"].pop("service")), "missing field(s) hdr.service"),
    "no mesh, no p99": (
        _edit(lambda r: (r.pop("mesh"), r["latency_us"]["service"].pop("p99"))),
        "missing field(s) mesh, latency_us.service.p99",
    ),
    "rate a string": (_edit(lambda r: r.update(rate="fast")), "wrong type: rate is a JSON string"),
    "histogram garbage": (
        _edit(lambda r: r["hdr"].update(service="HISTFAAAAB")),
        "a histogram cannot be decoded (",
    ),
    "resources unreadable": (
        _edit(lambda r: r["resources"]["components"]["app"].pop("vcpu")),
        "unreadable field (KeyError: 'vcpu')",
    ),
}


def _one_warning(stderr: str, path: Path, reason: str) -> None:
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    assert lines[0].startswith(f"testbed: warning: skipped {path}: {reason}"), lines[0]
    assert "Traceback" not in stderr


@pytest.mark.parametrize("how", DAMAGE, ids=list(DAMAGE))
def test_load_run_skips_a_damaged_result_with_one_warning(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], how: str
) -> None:
    damage, reason = DAMAGE[how]
    run = _run(tmp_path, "r", {"none": 1000, "envoy": 1500})
    damage(run / DAMAGED)
    before = _digest(run / DAMAGED)
    loaded = analysis.load_run(run)
    _one_warning(capsys.readouterr().err, run / DAMAGED, reason)
    assert [s.path for s in loaded.skipped] == [DAMAGED] and loaded.skipped[0].reason.startswith(reason)
    assert sorted(loaded.trials["path"]) == [
        "envoy/100/trial-1", "envoy/100/trial-3", "none/100/trial-1", "none/100/trial-2", "none/100/trial-3",
    ]  # fmt: skip
    assert _digest(run / DAMAGED) == before


def test_report_skips_lists_and_leaves_the_damaged_file(tmp_path: Path) -> None:
    run = _run(tmp_path, "r", {"none": 1000, "envoy": 1500})
    DAMAGE["cut in half"][0](run / DAMAGED)
    before = _digest(run / DAMAGED)
    proc = run_testbed("report", str(run))
    assert proc.returncode == 0, proc.stderr
    _one_warning(proc.stderr, run / DAMAGED, "not valid JSON (")
    summary = json.loads((run / "summary.json").read_text())
    assert summary["schema"] == "testbed.summary/1"
    [skipped] = summary["skipped_results"]
    assert skipped["path"] == DAMAGED and skipped["reason"].startswith("not valid JSON (")
    assert "1 trial result file(s) could not be read" in summary["warnings"][0]
    trials = {c["mesh"]: (c["valid_trials"], c["trials"]) for c in summary["cells"]}
    assert trials == {"none": (3, 3), "envoy": (2, 2)}
    assert summary["cells"][1]["overhead"]  # the rest is reported in full
    md = (run / "report.md").read_text()
    assert "| envoy | 100 | 2/2 |" in md and "| none | 100 | 3/3 |" in md
    assert "## Unreadable results (left out)" in md and f"- `{DAMAGED}`: not valid JSON (" in md
    page = (run / "report.html").read_text()
    assert "<h2>Unreadable results (left out)</h2>" in page and f"<code>{DAMAGED}</code>" in page
    assert _digest(run / DAMAGED) == before
    assert sorted(p.name for p in (run / DAMAGED).parent.iterdir()) == ["result.json"]


def test_a_readable_run_lists_nothing_skipped(tmp_path: Path) -> None:
    run = _run(tmp_path, "r", {"none": 1000, "envoy": 1500})
    proc = run_testbed("report", str(run))
    assert proc.returncode == 0 and proc.stderr == "", proc.stderr
    assert json.loads((run / "summary.json").read_text())["skipped_results"] == []
    assert "Unreadable results" not in (run / "report.md").read_text()
    assert "Unreadable results" not in (run / "report.html").read_text()


def test_report_in_smp_format_skips_and_labels(tmp_path: Path) -> None:
    run = _run(tmp_path, "r", {"none": 1000, "envoy": 1500})
    DAMAGE["no histogram"][0](run / DAMAGED)
    before = _digest(run / DAMAGED)
    proc = run_testbed("report", str(run), "--format", "smp")
    assert proc.returncode == 0, proc.stderr
    _one_warning(proc.stderr, run / DAMAGED, "missing field(s) hdr.service")
    documents = json.loads((run / "smp.json").read_text())
    labels = {d["mesh"]["labels"]["testbed.mesh"]: d["result"]["labels"] for d in documents}
    assert labels["envoy"]["testbed.trials"] == "2" and labels["none"]["testbed.trials"] == "3"
    assert {lab["testbed.run_skipped_results"] for lab in labels.values()} == {"1"}
    assert _digest(run / DAMAGED) == before


def test_compare_skips_a_damaged_result_in_either_run(tmp_path: Path) -> None:
    old = _run(tmp_path, "old", {"none": 1000}, trials=5, seed=1)
    new = _run(tmp_path, "new", {"none": 1000}, trials=5, seed=2)
    broken = old / "none/100/trial-2/result.json"
    DAMAGE["wrong schema"][0](broken)
    before = _digest(broken)
    proc = run_testbed("compare", str(old), str(new))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    _one_warning(proc.stderr, broken, "schema is 'testbed.other/2'")
    # 4 trials left in OLD: shown, not gated.
    assert "not judged: 4 valid trials (need 5)" in proc.stdout
    assert "Unreadable results left out of OLD: none/100/trial-2/result.json (schema is" in proc.stdout
    assert "left out of NEW" not in proc.stdout
    assert _digest(broken) == before
    result = compare(old, new)
    assert [r.trials for r in result.rows] == [(4, 5)] * 3
    assert [s.path for s in result.skipped_old] == ["none/100/trial-2/result.json"] and not result.skipped_new


def test_nothing_readable_is_one_error_line(tmp_path: Path) -> None:
    run = _run(tmp_path, "r", {"none": 1000}, trials=2)
    files = sorted(run.glob("*/*/trial-*/result.json"))
    DAMAGE["emptied"][0](files[0])
    DAMAGE["wrong schema"][0](files[1])
    before = [_digest(f) for f in files]
    other = _run(tmp_path, "other", {"none": 1000})
    for args in (
        ("report", str(run)),
        ("report", str(run), "--format", "smp"),
        ("compare", str(other), str(run)),
    ):
        proc = run_testbed(*args)
        assert proc.returncode == 2, proc.stdout + proc.stderr
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1, proc.stderr
        assert lines[0].startswith(f"testbed: error: {run}: none of its 2 trial results is readable")
    assert [_digest(f) for f in files] == before
    assert not (run / "summary.json").exists() and not (run / "smp.json").exists()


@pytest.mark.parametrize("text", ["{", "[]", '{"schema": "testbed.load/1"}'])
def test_a_damaged_run_json_stays_one_error_line(tmp_path: Path, text: str) -> None:
    run = _run(tmp_path, "r", {"none": 1000})
    (run / "run.json").write_text(text)
    proc = run_testbed("report", str(run))
    assert proc.returncode == 2, proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and str(run / "run.json") in proc.stderr
