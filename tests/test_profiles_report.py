"""Load profiles in the reports: per-interval series and segments pooled over trials, a spike's recovery.

The pure tests build `testbed.load/2` results shaped as the engine writes them (the issue 14 interface:
`profile`, `series.points` with per-interval HdrHistograms, `segments`), with latencies chosen per
interval so that the expected figures are known; the last test runs a short real spike.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from testbed import run as run_module
from testbed.bench.report import trial_result, write_run
from testbed.loadgen.profile import Profile
from testbed.loadgen.result import HISTOGRAMS, decode, encode, merge, new_histogram, summarize
from testbed.loadgen.schedule import due
from testbed.platforms.local import LocalPlatform
from testbed.reporting import analysis, series
from testbed.reporting.html import render
from testbed.reporting.report import markdown
from testbed.spec.scenario import load_scenario
from testbed.spec.topology import load_topology
from tests.conftest import run_testbed

#: A spike of 100 rps, 300 rps from 3 s to 5 s, 100 rps to 12 s.
SPIKE = Profile.spike(base_rps=100, multiple=3, at_s=3, burst_s=2, duration_s=12)


def _histogram(values: list[tuple[int, int]]) -> str:
    h = new_histogram()
    for value, count in values:
        if count:
            h.record_value(value, count)
    return encode(h)


def v2_result(
    profile: Profile,
    latency_at: Callable[[float], int],
    *,
    mesh: str = "none",
    trial: int = 1,
    empty: tuple[float, ...] = (),
    slow: dict[float, int] | None = None,
    invalid_segment: int | None = None,
) -> dict[str, Any]:
    """A `testbed.load/2` result: in each 1 s interval every request took `latency_at(start)` us (so that
    the interval's percentiles are that value) but `slow[start]` of them, which took 20 ms; intervals
    starting at `empty` completed nothing."""
    points, hdrs = [], []
    duration = profile.duration_s
    for k in range(math.ceil(duration)):
        start, end = float(k), min(k + 1.0, duration)
        sends = due(profile, start, end)
        n = 0 if start in empty else round(sends)
        value, outliers = latency_at(start), (slow or {}).get(start, 0)
        hdr = {
            "service": _histogram([(value, n - outliers), (20_000, outliers)]),
            "intended": _histogram([(value + 100, n - outliers), (20_100, outliers)]),
            "lateness": _histogram([(50, n)]),
        }
        hdrs.append((start, hdr))
        points.append(
            {
                "start_s": start,
                "end_s": end,
                "target_rps": sends / (end - start),
                "scheduled": round(sends),
                "sent": round(sends),
                "completed": n,
                "errors": 0,
                "achieved_rps": n / (end - start),
                "service": summarize(decode(hdr["service"])),
                "intended": summarize(decode(hdr["intended"])),
                "hdr": {"service": hdr["service"], "intended": hdr["intended"]},
            }
        )
    segments = []
    for i, ((start, end), segment) in enumerate(zip(profile.bounds(), profile.segments, strict=True)):
        inside = [h for t, h in hdrs if start <= t < end]
        merged = {name: encode(merge([h[name] for h in inside])) for name in HISTOGRAMS}
        completed = sum(p["completed"] for p in points if start <= p["start_s"] < end)
        bad = i == invalid_segment
        segments.append(
            {
                "label": segment.label,
                "start_s": start,
                "end_s": end,
                "start_rps": segment.start_rps,
                "end_rps": segment.end_rps,
                "scheduled": round(segment.total),
                "sent": round(segment.total),
                "completed": completed,
                "errors": 0,
                "achieved_rps": completed / (end - start),
                "cpu_percent": 30.0,
                "latency_us": {name: summarize(decode(merged[name])) for name in HISTOGRAMS},
                "hdr": merged,
                "valid": not bad,
                "invalid_reasons": ["the generator fell behind: send lateness p99 9 ms > 8 ms"]
                if bad
                else [],
            }
        )
    whole = {name: encode(merge([h[name] for _, h in hdrs])) for name in HISTOGRAMS}
    result = trial_result(
        np.random.default_rng(trial), mesh=mesh, rate=profile.peak_rps, trial=trial, requests=10,
        median_us=1000,
    )  # fmt: skip
    requests = sum(p["completed"] for p in points)
    result |= {
        "schema": "testbed.load/2",
        "duration_s": duration,
        "requests": requests,
        "scheduled": sum(p["scheduled"] for p in points),
        "achieved_rate": round(requests / duration, 2),
        "hdr": whole,
        "latency_us": {name: summarize(decode(whole[name])) for name in HISTOGRAMS},
        "profile": profile.to_dict(),
        "series": {"interval_s": 1.0, "points": points},
        "segments": segments,
    }
    if invalid_segment is not None:
        label = segments[invalid_segment]["label"]
        result["valid"] = False
        result["invalid_reasons"] = [f"{label}: {r}" for r in segments[invalid_segment]["invalid_reasons"]]
    return result


def _spike_latency(before: int, burst: int, after: list[int]) -> Callable[[float], int]:
    """`before` until 3 s, `burst` from 3 s to 5 s, then `after[k]` in the interval 5 + k."""
    return lambda t: before if t < 3 else burst if t < 5 else after[int(t) - 5]


def _value(us: int) -> int:
    """What a histogram reports for a value: the highest equivalent value of its bucket."""
    return int(decode(_histogram([(us, 1)])).get_value_at_percentile(99.0))


# --- pooling -----------------------------------------------------------------------------------------------


def test_pool_merges_the_histograms_of_each_interval_and_segment() -> None:
    fast = v2_result(SPIKE, lambda t: 1000, trial=1)
    slow = v2_result(SPIKE, lambda t: 4000, trial=2)
    pooled = series.pool([fast, slow])
    assert pooled["trials"] == 2 and pooled["interval_s"] == 1.0
    assert [p["start_s"] for p in pooled["points"]] == [float(k) for k in range(12)]
    third = pooled["points"][3]  # inside the burst: 300 rps per trial
    assert third["target_rps"] == pytest.approx(300.0) and third["completed"] == 600
    assert third["achieved_rps"] == pytest.approx(300.0)  # per trial, comparable with the target
    expected = summarize(merge([t["series"]["points"][3]["hdr"]["service"] for t in (fast, slow)]))
    assert third["service"] == expected
    # Merged, not averaged: half the requests took 4 ms, so the p99 is 4 ms, not the mean of 1 and 4.
    assert third["service"]["p99"] == _value(4000) and third["service"]["p50"] == _value(1000)
    before, burst, after = pooled["segments"]
    assert [s["label"] for s in pooled["segments"]] == ["before", "spike (300 rps)", "after"]
    assert (before["start_s"], before["end_s"], burst["start_rps"], after["end_s"]) == (0.0, 3.0, 300.0, 12.0)
    assert burst["completed"] == 2 * 600 and burst["achieved_rps"] == pytest.approx(300.0)
    assert burst["latency_us"]["service"]["count"] == 1200
    assert burst["latency_us"]["intended"]["p99"] == _value(4100)
    assert before["invalid_trials"] == 0 and before["cpu_percent_max"] == 30.0


def test_pool_marks_where_trials_were_invalid_and_refuses_mixed_profiles() -> None:
    bad = v2_result(SPIKE, lambda t: 1000, invalid_segment=1)
    pooled = series.pool([bad, v2_result(SPIKE, lambda t: 1000, trial=2)])
    assert [s["invalid_trials"] for s in pooled["segments"]] == [0, 1, 0]
    assert pooled["segments"][1]["invalid_reasons"] == [
        "the generator fell behind: send lateness p99 9 ms > 8 ms"
    ]
    steps = v2_result(Profile.steps([(100, 6), (300, 6)]), lambda t: 1000)
    with pytest.raises(ValueError, match="different profiles"):
        series.pool([bad, steps])
    assert series.pool([steps])["recovery"] is None  # only a spike has one


def test_steps_series_shows_each_steps_rate() -> None:
    profile = Profile.steps([(50, 3), (150, 2), (100, 2.5)])
    pooled = series.pool([v2_result(profile, lambda t: 1000 + int(t) * 100)])
    assert [p["target_rps"] for p in pooled["points"]] == pytest.approx([50, 50, 50, 150, 150, 100, 100, 100])
    assert pooled["points"][-1]["end_s"] == 7.5  # the last interval is shorter, ending with the window
    assert [s["end_rps"] for s in pooled["segments"]] == [50, 150, 100]
    assert [s["latency_us"]["service"]["count"] for s in pooled["segments"]] == [150, 300, 250]
    assert pooled["segments"][1]["latency_us"]["service"]["p99"] == _value(1400)


# --- recovery ---------------------------------------------------------------------------------------------


def _recovery(before: int, burst: int, after: list[int], **kw: Any) -> dict[str, Any]:
    recovery = series.pool([v2_result(SPIKE, _spike_latency(before, burst, after), **kw)])["recovery"]
    assert recovery is not None
    return recovery


def test_recovery_is_the_first_of_three_intervals_back_within_ten_percent() -> None:
    r = _recovery(1000, 5000, [3000, 2000, 1050, 1090, 1000, 1000, 1000])
    assert r["pre_spike_p99_us"] == _value(1000) and r["threshold_us"] == pytest.approx(1.1 * _value(1000))
    assert r["burst_end_s"] == 5.0 and r["burst_p99_us"] == _value(5000)
    assert r["rose"] is True and r["peak_interval_p99_us"] == _value(5000)
    assert r["recovered_at_s"] == 7.0 and r["recovery_s"] == 2.0 and r["confirmed_intervals"] == 3
    assert r["reason"] is None
    assert r["per_trial_s"] == [2.0]


def test_one_interval_back_is_not_a_return() -> None:
    # Back at 6 s for one interval only, raised again at 7 s: the return counts from 8 s.
    r = _recovery(1000, 5000, [3000, 1000, 2000, 1000, 1000, 1000, 1000])
    assert r["recovery_s"] == 3.0


def test_the_rule_merges_three_intervals_so_one_noisy_second_does_not_hold_the_return() -> None:
    # 2 of the 100 requests at 6 s took 20 ms: that second's p99 is 20 ms, but over 5-7 s 2 of 300 are
    # under 1%, and the three seconds' p99 is the pre-spike one.
    r = _recovery(1000, 5000, [1000] * 7, slow={6.0: 2})
    assert r["recovery_s"] == 0.0 and r["window_p99_us"] == _value(1000) and r["window_samples"] == 300
    assert r["peak_interval_p99_us"] == _value(20_000)
    # 4 of them: over 1% of the three seconds, which are not back until 7 s.
    r = _recovery(1000, 5000, [1000] * 7, slow={6.0: 4})
    assert r["recovery_s"] == 2.0 and r["rose"] is True


def test_more_than_ten_percent_above_is_not_back_and_below_is() -> None:
    r = _recovery(1000, 5000, [1150, 1150, 1150, 500, 500, 500, 500])
    assert r["recovery_s"] == 3.0  # 15% above is still raised; half the reference is back


def test_no_return_within_the_window_is_none_with_the_reason() -> None:
    r = _recovery(1000, 5000, [3000, 3000, 3000, 3000, 3000, 1000, 3000])
    assert r["recovery_s"] is None and r["recovered_at_s"] is None
    assert "within 10% of the pre-spike" in r["reason"] and "7 s after the burst" in r["reason"]
    assert "not back within the window" in series.recovery_text(r)


def test_a_return_at_the_windows_end_counts_with_fewer_intervals_to_confirm_it() -> None:
    r = _recovery(1000, 5000, [3000, 3000, 3000, 3000, 3000, 1000, 1000])
    assert r["recovery_s"] == 5.0 and r["confirmed_intervals"] == 2
    assert "fewer intervals than the rule's" in series.recovery_text(r)


def test_an_interval_without_a_sample_is_a_stall_not_a_return() -> None:
    r = _recovery(1000, 5000, [1000, 1000, 1000, 1000, 1000, 1000, 1000], empty=(6.0,))
    assert r["recovery_s"] == 2.0  # 5 s is back, 6 s completed nothing, 7-9 s are back
    assert r["rose"] is True


def test_a_burst_that_lifts_nothing_recovers_at_once() -> None:
    r = _recovery(1000, 1000, [1000] * 7)
    assert r["recovery_s"] == 0.0 and r["rose"] is False
    assert "never lifted" in series.recovery_text(r)


def test_pooled_recovery_and_each_trials() -> None:
    quick = v2_result(SPIKE, _spike_latency(1000, 5000, [1000] * 7), trial=1)
    slow = v2_result(SPIKE, _spike_latency(1000, 5000, [4000, 4000, 4000, 4000, 1000, 1000, 1000]), trial=2)
    r = series.pool([quick, slow])["recovery"]
    assert r["per_trial_s"] == [0.0, 4.0]
    # Pooled, half of each raised interval is at 4 ms: the pooled p99 is raised until the slow trial is back.
    assert r["recovery_s"] == 4.0


def test_recovery_between_interval_bounds() -> None:
    """A burst ending mid-interval: the interval straddling its end is neither during nor after it."""
    profile = Profile.spike(base_rps=100, multiple=2, at_s=2.5, burst_s=2, duration_s=10)
    pooled = series.pool([v2_result(profile, lambda t: 1000 if t < 2 or t >= 5 else 3000)])
    r = pooled["recovery"]
    assert r["burst_end_s"] == 4.5 and r["recovered_at_s"] == 5.0 and r["recovery_s"] == 0.5


# --- the reports ------------------------------------------------------------------------------------------


def _profile_run(tmp_path: Path, profile: Profile) -> Path:
    cells = {
        ("none", profile.peak_rps): [
            v2_result(
                profile, _spike_latency(1000, 3000, [2000, 1000, 1000, 1000, 1000, 1000, 1000]), trial=i
            )
            for i in (1, 2, 3)
        ],
        ("envoy", profile.peak_rps): [
            v2_result(profile, _spike_latency(1500, 9000, [9000] * 7), mesh="envoy", trial=i)
            for i in (1, 2, 3)
        ],
    }
    return write_run(tmp_path / "run", cells, scenario="spike")


def test_summary_and_reports_show_the_burst_and_the_recovery(tmp_path: Path) -> None:
    summary = analysis.summary(analysis.load_run(_profile_run(tmp_path, SPIKE)))
    none, envoy = summary["cells"]
    assert none["over_time"]["profile"]["arg"] == SPIKE.to_arg() and none["over_time"]["trials"] == 3
    assert none["over_time"]["recovery"]["recovery_s"] == 1.0
    assert envoy["over_time"]["recovery"]["recovery_s"] is None
    json.dumps(summary)  # summary.json
    text = markdown(summary)
    section = text[text.index("## Load over time") : text.index("## Resources")]
    assert f"Profile `{SPIKE.to_arg()}`" in section
    burst_ms = f"{_value(3000) / 1000:.3f}"
    assert f"| spike (300 rps) | 3 | 5 | 300 | 300.0 | {burst_ms} | {burst_ms} |" in section
    assert "Spike recovery: back 1 s after the burst ended" in section
    assert "Spike recovery: not back within the window" in section
    page = render(summary)
    assert 'id="over-time-300"' in page and "<h2>Load over time</h2>" in page
    assert "p99 back: none" in page  # the recovery marked on the figure
    assert "envoy: not back within the window" in page


def test_constant_profiles_and_old_results_have_no_over_time_section(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    old = {
        ("none", 100.0): [trial_result(rng, mesh="none", rate=100.0, trial=1, requests=100, median_us=900)]
    }
    summary = analysis.summary(analysis.load_run(write_run(tmp_path / "old", old)))
    assert summary["cells"][0]["over_time"] is None  # testbed.load/1: no series
    assert "Load over time" not in markdown(summary) and "over-time" not in render(summary)
    constant = {("none", 100.0): [v2_result(Profile.constant(100, 4), lambda t: 1000)]}
    summary = analysis.summary(analysis.load_run(write_run(tmp_path / "constant", constant)))
    over_time = summary["cells"][0]["over_time"]
    # Kept in summary.json, not drawn.
    assert over_time["profile"]["kind"] == "constant" and len(over_time["points"]) == 4
    assert "Load over time" not in markdown(summary) and "over-time" not in render(summary)


def test_a_damaged_series_leaves_the_other_figures(tmp_path: Path) -> None:
    result = v2_result(SPIKE, lambda t: 1000)
    result["series"]["points"][4]["hdr"]["service"] = "not a histogram"
    summary = analysis.summary(analysis.load_run(write_run(tmp_path / "run", {("none", 300.0): [result]})))
    cell = summary["cells"][0]
    assert cell["latency_us"]["p50"] > 0 and "unavailable" in cell["over_time"]
    assert "no series:" in markdown(summary)


# --- run.json and --dry-run -------------------------------------------------------------------------------


def test_run_json_serializes_the_profile_and_the_capacity(tmp_path: Path) -> None:
    topology = load_topology("shop")
    spike = load_scenario("spike")
    options = run_module.RunOptions(
        platform=LocalPlatform(), meshes=("none",), scenario=spike, topology=topology, out=tmp_path
    )
    meta = json.loads(json.dumps(run_module._meta(options, "r", 3)))
    assert meta["scenario"]["profile"] == json.loads(json.dumps(spike.profile.to_dict()))  # type: ignore[union-attr]
    assert Profile.from_dict(meta["scenario"]["profile"]) == spike.profile
    assert meta["scenario"]["profile_kind"] == "spike" and meta["scenario"]["capacity"] is None
    path = tmp_path / "cap.toml"
    path.write_text(
        'profile = "capacity"\nslo_p99_ms = 5\nduration_s = 2\nwarmup_s = 1\n[capacity]\nmax_rps = 900\n'
    )
    options = run_module.RunOptions(
        platform=LocalPlatform(),
        meshes=("none",),
        scenario=load_scenario(path),
        topology=topology,
        out=tmp_path,
    )
    meta = json.loads(json.dumps(run_module._meta(options, "r", 3)))
    assert meta["scenario"]["capacity"]["slo_p99_ms"] == 5 and meta["scenario"]["capacity"]["max_rps"] == 900
    assert meta["scenario"]["profile"] is None and meta["scenario"]["profile_kind"] == "capacity"


@pytest.mark.parametrize("name", ["steps", "ramp", "spike"])
def test_shipped_profile_scenarios_fit_the_local_platform(name: str) -> None:
    scenario = load_scenario(name)
    assert scenario.profile is not None and scenario.profile.kind == name
    assert scenario.duration_s <= 30  # each trial's window
    assert scenario.profile.peak_rps <= 200  # shop + Envoy sidecars carry about 200 rps on 2 cores
    assert scenario.trials >= 3  # pooled per interval, with each trial's spread
    proc = run_testbed("run", "--mesh", "none,envoy", "--scenario", name, "--dry-run")
    assert proc.returncode == 0, proc.stderr
    assert f"scenario {name}: profile {scenario.profile.to_arg()} (peak" in proc.stdout
    assert "rates " not in proc.stdout.splitlines()[1]


# --- a real spike -----------------------------------------------------------------------------------------


def test_a_real_spike_run_reports_the_burst_and_the_recovery(tmp_path: Path) -> None:
    scenario = tmp_path / "tiny-spike.toml"
    scenario.write_text(
        'profile = "spike"\n'
        "spike = { base_rps = 100, multiple = 3, at_s = 3, burst_s = 2, duration_s = 10 }\n"
        "warmup_s = 1\ntrials = 1\ncooldown_s = 0\nmax_lateness_ms = 8\n"
    )
    proc = run_testbed(
        "run", "--platform", "local", "--mesh", "none", "--scenario", str(scenario), "--out", str(tmp_path),
        "--run-id", "spike", timeout=240,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    run_dir = tmp_path / "spike"
    meta = json.loads((run_dir / "run.json").read_text())
    assert meta["scenario"]["profile"]["arg"] == "spike:base=100,multiple=3,at=3,burst=2,duration=10"
    result = json.loads((run_dir / "none" / "300" / "trial-1" / "result.json").read_text())
    assert result["schema"] == "testbed.load/2" and result["valid"], result["invalid_reasons"]
    summary = json.loads((run_dir / "summary.json").read_text())
    over_time = summary["cells"][0]["over_time"]
    targets = [p["target_rps"] for p in over_time["points"]]
    assert targets == pytest.approx([100, 100, 100, 300, 300, 100, 100, 100, 100, 100])
    burst = over_time["segments"][1]
    assert burst["label"] == "spike (300 rps)" and burst["achieved_rps"] == pytest.approx(300, rel=0.05)
    recovery = over_time["recovery"]
    assert recovery["burst_end_s"] == 5.0
    assert recovery["recovery_s"] is not None or "consecutive intervals" in recovery["reason"]
    report = (run_dir / "report.md").read_text()
    assert "## Load over time" in report and "| spike (300 rps) | 3 | 5 | 300 |" in report
    assert "Spike recovery: back " in report or "Spike recovery: not back within the window" in report
    assert 'id="over-time-300"' in (run_dir / "report.html").read_text()
