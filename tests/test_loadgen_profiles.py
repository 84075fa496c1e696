"""Open-loop load profiles (steps, ramp, spike): the schedule, the configuration, the /2 result, and real
trials against the calibration server whose per-second series and per-segment histograms show the shape."""

from __future__ import annotations

import itertools
import json
import math
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from testbed.errors import UsageError
from testbed.loadgen.config import LoadConfig
from testbed.loadgen.profile import Profile, parse_arg
from testbed.loadgen.result import (
    CLOSED_NULLS,
    ShareResult,
    build_result,
    decode,
    encode,
    new_histogram,
    record,
)
from testbed.loadgen.schedule import due, intended_offsets, intervals, phase, profile_offsets
from testbed.reporting.analysis import _problems
from testbed.spec.scenario import parse_scenario
from testbed.spec.trials import Trial, load_argv, load_config
from tests.conftest import NullServer, load_result, run_testbed
from tests.test_loadgen_cli import assert_one_line_error

URL = "http://127.0.0.1:9/"
PROFILES = {
    "steps": "steps:50@3,150@3,80@2.5",
    "ramp up": "ramp:from=20,to=220,duration=5",
    "ramp down": "ramp:from=300,to=10,duration=4",
    "spike": "spike:base=40,multiple=4,at=2,burst=1.5,duration=6",
}


# --- the schedule (pure) ---------------------------------------------------------------------------


@pytest.mark.parametrize("arrival", ["uniform", "poisson"])
@pytest.mark.parametrize(("shares", "warmup_s", "tail_s"), [(1, 1.0, 0.0), (3, 0.5, 1.5), (2, 0.0, 0.7)])
def test_a_constant_profile_gives_exactly_the_constant_schedule(
    arrival: str, shares: int, warmup_s: float, tail_s: float
) -> None:
    total_s = warmup_s + 2.0 + tail_s
    for share in range(shares):
        new = list(
            profile_offsets(
                Profile.constant(333.0, 2.0),
                warmup_s=warmup_s,
                total_s=total_s,
                arrival=arrival,  # type: ignore[arg-type]
                share=share,
                shares=shares,
                seed=5,
            )
        )
        old = list(
            intended_offsets(
                rate=333.0,
                total_s=total_s,
                arrival=arrival,  # type: ignore[arg-type]
                share=share,
                shares=shares,
                seed=5,
            )
        )
        assert new == old and len(new) > 100


def _by_segment(profile: Profile, offsets: list[float], warmup_s: float) -> Counter[int | None]:
    return Counter(profile.segment_at(x - warmup_s) for x in offsets)


@pytest.mark.parametrize("name", PROFILES)
@pytest.mark.parametrize("warmup_s", [0.0, 1.0])
def test_uniform_counts_per_segment_are_the_rate_integral_within_one(name: str, warmup_s: float) -> None:
    profile = parse_arg(PROFILES[name])
    tail_s = 1.0
    total_s = warmup_s + profile.duration_s + tail_s
    whole = list(profile_offsets(profile, warmup_s=warmup_s, total_s=total_s, arrival="uniform"))
    assert whole == sorted(whole) and whole[0] == 0.0
    counts = _by_segment(profile, whole, warmup_s)
    for index, segment in enumerate(profile.segments):
        assert abs(counts[index] - segment.total) <= 1, (segment, counts[index])
    # Warm-up at the first rate, tail at the last: outside the window, segment_at is None.
    outside = counts[None]
    expected = warmup_s * profile.first_rps + tail_s * profile.last_rps
    assert abs(outside - expected) <= 2, (outside, expected)
    # Shares take every n-th slot of the same schedule: together, exactly the whole.
    parts = [
        list(
            profile_offsets(profile, warmup_s=warmup_s, total_s=total_s, arrival="uniform", share=k, shares=3)
        )
        for k in range(3)
    ]
    assert sorted(itertools.chain(*parts)) == whole


def test_uniform_sends_follow_the_rate_within_a_ramp() -> None:
    profile = parse_arg("ramp:from=10,to=110,duration=10")
    offsets = list(profile_offsets(profile, warmup_s=1.0, total_s=11.0, arrival="uniform"))
    per_second = Counter(int(x - 1.0) for x in offsets if x >= 1.0)
    # The rate at the middle of second k is 15 + 10 k: each second holds that many sends, within one.
    for k in range(10):
        assert abs(per_second[k] - (15 + 10 * k)) <= 1, (k, per_second[k])
    # And the gaps shrink as the rate grows: the sends are spread within each second, not bunched.
    gaps = [b - a for a, b in itertools.pairwise(offsets[10:])]
    assert all(later <= earlier + 1e-12 for earlier, later in itertools.pairwise(gaps))


@pytest.mark.parametrize("name", PROFILES)
def test_poisson_profiles_have_the_rate_per_segment_and_are_reproducible(name: str) -> None:
    profile = parse_arg(PROFILES[name])
    # Scaled up so that each segment's count is large (sd = sqrt(mean)).
    scaled = Profile(
        kind=profile.kind,
        segments=tuple(
            type(s)(
                label=s.label, duration_s=s.duration_s * 4, start_rps=s.start_rps * 5, end_rps=s.end_rps * 5
            )
            for s in profile.segments
        ),
    )

    def run(share: int, shares: int, seed: int = 3) -> list[float]:
        return list(
            profile_offsets(
                scaled,
                warmup_s=1.0,
                total_s=1.0 + scaled.duration_s,
                arrival="poisson",
                share=share,
                shares=shares,
                seed=seed,
            )
        )

    both = sorted(run(0, 2) + run(1, 2))
    counts = _by_segment(scaled, both, 1.0)
    for index, segment in enumerate(scaled.segments):
        assert abs(counts[index] - segment.total) < 5 * math.sqrt(segment.total), (segment, counts[index])
    assert run(0, 2) == run(0, 2)  # seeded
    assert run(0, 2) != run(1, 2)[: len(run(0, 2))] and run(0, 2, seed=4) != run(0, 2)
    # Exponential gaps within a held segment (coefficient of variation near 1), not a uniform grid.
    if scaled.kind == "steps":
        start, end = 1.0 + scaled.bounds()[1][0], 1.0 + scaled.bounds()[1][1]
        inside = [x for x in both if start <= x < end]
        gaps = [b - a for a, b in itertools.pairwise(inside)]
        mean = sum(gaps) / len(gaps)
        sd = (sum((g - mean) ** 2 for g in gaps) / len(gaps)) ** 0.5
        assert 0.85 < sd / mean < 1.15


def test_due_and_the_intervals_of_the_window() -> None:
    ramp = parse_arg("ramp:from=10,to=110,duration=10")
    assert due(ramp, 0, 10) == pytest.approx(600.0)
    assert due(ramp, 0, 1) == pytest.approx(15.0) and due(ramp, 9, 10) == pytest.approx(105.0)
    spike = parse_arg("spike:base=40,multiple=4,at=2,burst=1.5,duration=6")
    assert due(spike, 3, 4) == pytest.approx(0.5 * 160 + 0.5 * 40)  # half burst, half base
    assert intervals(6.0, 1.0) == [(float(k), float(k + 1)) for k in range(6)]
    assert intervals(2.5, 1.0)[-1] == (2.0, 2.5) and len(intervals(2.5, 1.0)) == 3
    assert intervals(0.4, 1.0) == [(0.0, 0.4)]


def test_phase_of_profile_offsets_matches_the_window() -> None:
    profile = parse_arg(PROFILES["steps"])
    offsets = list(
        profile_offsets(profile, warmup_s=1.0, total_s=2.0 + profile.duration_s, arrival="uniform")
    )
    window = [x for x in offsets if phase(x, warmup_s=1.0, duration_s=profile.duration_s) == "window"]
    assert abs(len(window) - profile.total) <= 1


# --- the configuration --------------------------------------------------------------------------------


def test_a_profile_round_trips_exactly_through_its_one_word_form() -> None:
    # `:g` kept six digits: a worker would have run 100.123 rps for 100.123456789 (and failed the check).
    odd = Profile.steps([(100.123456789, 2.0), (1 / 3, 3.0)])
    assert parse_arg(odd.to_arg()) == odd
    assert Profile.steps([(100, 5), (200, 5)]).to_arg() == "steps:100@5,200@5"  # short numbers stay short
    config = LoadConfig(url=URL, rate=odd.peak_rps, duration_s=odd.duration_s, warmup_s=1, profile=odd)
    assert LoadConfig.from_json(config.to_json()) == config
    assert json.loads(config.to_json())["profile"] == odd.to_arg()
    assert (
        LoadConfig.from_json(LoadConfig(url=URL, rate=5, duration_s=1, warmup_s=0).to_json()).profile is None
    )


@pytest.mark.parametrize(
    ("overrides", "fragment"),
    [
        ({"rate": 100.0}, "--rate 100 does not match --profile steps:50@3,150@3, whose peak is 150 rps"),
        ({"duration_s": 5.0}, "--duration 5 does not match --profile steps:50@3,150@3, which lasts 6 s"),
        ({"loop": "closed", "users": 2, "rate": 0.0}, "open-loop rate over time: not with --loop closed"),
    ],
)
def test_a_profile_that_disagrees_with_the_config_is_refused(
    overrides: dict[str, Any], fragment: str
) -> None:
    values: dict[str, Any] = {"url": URL, "rate": 150.0, "duration_s": 6.0, "warmup_s": 1.0}
    with pytest.raises(UsageError) as info:
        LoadConfig(**(values | overrides), profile=parse_arg("steps:50@3,150@3"))
    assert fragment in info.value.message and "\n" not in info.value.message


@pytest.mark.parametrize(
    ("args", "fragments"),
    [
        (["--profile", "steps:50@3", "--rate", "10"], ["--rate 10 does not match", "peak is 50 rps"]),
        (["--profile", "steps:50@3", "--duration", "9"], ["--duration 9 does not match", "lasts 3 s"]),
        (["--profile", "waves:1"], ["--profile 'waves:1'", "KIND one of constant, steps, ramp, spike"]),
        (["--profile", "steps:50@3", "--loop", "closed", "--users", "2"], ["not with --loop closed"]),
        (["--rate", "10"], ["--duration is required", "--profile"]),
    ],
)
def test_bad_profile_flags_are_one_line_errors(args: list[str], fragments: list[str]) -> None:
    proc = run_testbed("load", "http://127.0.0.1:1/", *args, "--out", "-")
    assert_one_line_error(proc, *fragments)


def _scenario(tmp_path: Path, **data: Any) -> Any:
    return parse_scenario({"warmup_s": 1, "trials": 1} | data, path=tmp_path / "s.toml")


def test_a_scenario_profile_reaches_the_load_command(tmp_path: Path) -> None:
    scenario = _scenario(
        tmp_path,
        profile="spike",
        spike={"base_rps": 40, "multiple": 4, "at_s": 2, "burst_s": 1, "duration_s": 5},
    )
    config = load_config(scenario, Trial(mesh="none", rate=scenario.rates[0], index=2), "http://x:8080/")
    assert config.profile == scenario.profile and (config.rate, config.duration_s) == (160.0, 5.0)
    argv = load_argv(config)
    assert argv[:4] == [
        "load",
        "http://x:8080/",
        "--profile",
        "spike:base=40,multiple=4,at=2,burst=1,duration=5",
    ]
    assert "--rate" not in argv and "--duration" not in argv
    from testbed.cli import build_parser

    args = build_parser().parse_args([*argv, "--out", "-"])
    assert parse_arg(args.profile) == config.profile and args.rate is None and args.duration is None
    # A constant scenario keeps its command line as it was (the kind golden plans do not move).
    constant = _scenario(tmp_path, rates=[100], duration_s=2)
    plain = load_argv(load_config(constant, Trial(mesh="none", rate=100, index=1), "http://x/"))
    assert plain[2:6] == ["--rate", "100", "--duration", "2"] and "--profile" not in plain


# --- the /2 result (pure) --------------------------------------------------------------------------


def _hdr(values_us: list[int], names: tuple[str, ...]) -> dict[str, str]:
    out = {}
    for name in names:
        h = new_histogram()
        for v in values_us:
            record(h, (v if name != "lateness" else 50) / 1e6)
        out[name] = encode(h)
    return out


def _counts(n: int, *, scheduled: int | None = None, errors: int = 0) -> dict[str, int]:
    return {"scheduled": n if scheduled is None else scheduled, "sent": n, "completed": n, "errors": errors}


ALL = ("service", "intended", "lateness")


def _share(index: int, per_segment: list[tuple[int, int]], cpu: tuple[float, float]) -> ShareResult:
    """A share of `steps:50@3,150@3`: (completed, latency us) per segment, one series point a second."""
    series = []
    for (n, us), seconds in zip(per_segment, (range(3), range(3, 6)), strict=True):
        for _ in seconds:
            series.append(_counts(n // 3) | {"hdr": _hdr([us] * (n // 3), ("service", "intended"))})
    segments = [
        _counts(n) | {"connection_waits": 0, "cpu_percent": c, "hdr": _hdr([us] * n, ALL)}
        for (n, us), c in zip(per_segment, cpu, strict=True)
    ]
    total = sum(n for n, _ in per_segment)
    return ShareResult(
        share=index,
        **_counts(total),
        error_kinds={},
        hdr=_hdr([us for n, us in per_segment for _ in range(n)], ALL),
        cpu_percent=max(cpu),
        window_s=6.0,
        series=series,
        segments=segments,
    )


def test_the_result_merges_series_and_segments_exactly_and_judges_each_segment() -> None:
    profile = parse_arg("steps:50@3,150@3")
    config = LoadConfig(url=URL, rate=150, duration_s=6, warmup_s=1, profile=profile)
    shares = [
        _share(0, [(75, 1000), (225, 2000)], (5.0, 20.0)),
        _share(1, [(75, 1000), (225, 4000)], (4.0, 30.0)),
    ]
    result = json.loads(json.dumps(build_result(config, shares, started_at="t", locust_version="x")))
    assert result["schema"] == "testbed.load/2" and result["rate"] == 150.0
    assert result["profile"] == profile.to_dict() and result["valid"], result["invalid_reasons"]
    points = result["series"]["points"]
    assert result["series"]["interval_s"] == 1.0 and len(points) == 6
    assert [p["target_rps"] for p in points] == [50.0] * 3 + [150.0] * 3
    assert [p["completed"] for p in points] == [50] * 3 + [150] * 3  # both shares' points added
    assert [p["achieved_rps"] for p in points] == [50.0] * 3 + [150.0] * 3
    assert decode(points[4]["hdr"]["service"]).get_total_count() == 150 == points[4]["service"]["count"]
    assert (
        points[4]["service"]["p50"] == 2000 and 3990 <= points[4]["service"]["max"] <= 4010
    )  # merged, not averaged
    first, second = result["segments"]
    assert (first["label"], first["start_s"], first["end_s"], first["completed"]) == (
        "step 1 (50 rps)",
        0.0,
        3.0,
        150,
    )
    assert (second["start_rps"], second["end_rps"], second["achieved_rps"]) == (150.0, 150.0, 150.0)
    assert second["cpu_percent"] == 30.0  # the busiest process
    assert set(second["latency_us"]) == set(second["hdr"]) == set(ALL)
    assert decode(second["hdr"]["service"]).get_total_count() == 450
    # One segment short of its rate: it is invalid, named; the trial is invalid with it.
    short = _share(1, [(75, 1000), (150, 4000)], (4.0, 30.0))
    short = ShareResult(**{**short.__dict__, "scheduled": 300, "segments": [
        {**short.segments[0]}, {**short.segments[1], "scheduled": 225},
    ]})  # fmt: skip
    bad = build_result(config, [shares[0], short], started_at="t", locust_version="x")
    assert bad["segments"][0]["valid"] and not bad["segments"][1]["valid"]
    reason = bad["segments"][1]["invalid_reasons"][0]
    # The target is the segment's own rate, and the achieved rate is over the segment's 3 s.
    assert "achieved rate 125.0 rps is under 97% of the target 150 rps (375 of 450 scheduled" in reason
    assert not bad["valid"] and f"step 2 (150 rps): {reason}" in bad["invalid_reasons"]
    # The window's own message names the profile's mean, never the peak as if it were constant.
    assert "of the target 100.0 rps on average (steps:50@3,150@3)" in bad["invalid_reasons"][0]
    # A generator over its CPU limit in one segment only: that segment is what makes the trial invalid.
    hot = build_result(
        config, [_share(0, [(75, 1000), (225, 2000)], (5.0, 95.0))], started_at="t", locust_version="x"
    )
    assert not hot["segments"][1]["valid"] and "CPU was 95%" in hot["segments"][1]["invalid_reasons"][0]
    assert any(r.startswith("step 2 (150 rps): the generator's CPU") for r in hot["invalid_reasons"])
    assert _problems(result | {"mesh": "none"}) is None


def test_a_constant_trial_has_one_segment_and_its_reasons_once() -> None:
    config = LoadConfig(url=URL, rate=100, duration_s=2, warmup_s=0)
    series = [_counts(100) | {"hdr": _hdr([900] * 100, ("service", "intended"))} for _ in range(2)]
    share = ShareResult(
        share=0, **_counts(200, scheduled=250), error_kinds={}, hdr=_hdr([900] * 200, ALL), cpu_percent=5.0,
        window_s=2.0, series=series,
    )  # fmt: skip
    result = build_result(config, [share], started_at="t", locust_version="x")
    assert (
        result["profile"]["kind"] == "constant" and result["profile"]["arg"] == "constant:rate=100,duration=2"
    )
    (segment,) = result["segments"]
    assert segment["completed"] == 200 and segment["scheduled"] == 250 and not segment["valid"]
    assert len(result["invalid_reasons"]) == 1  # the window's reason, not repeated for its one segment
    assert "of the target 100 rps (200 of 250" in result["invalid_reasons"][0]
    assert [p["target_rps"] for p in result["series"]["points"]] == [100.0, 100.0]


def test_closed_loop_has_a_series_without_a_schedule_and_no_segments() -> None:
    config = LoadConfig(url=URL, loop="closed", users=2, duration_s=2, warmup_s=0)
    series = [
        _counts(10, scheduled=0) | {"hdr": _hdr([5000] * 10, ("service", "intended"))} for _ in range(2)
    ]
    share = ShareResult(
        share=0, **_counts(20, scheduled=0), error_kinds={}, hdr=_hdr([5000] * 20, ALL), cpu_percent=5.0,
        window_s=2.0, series=series, users=2,
    )  # fmt: skip
    result = build_result(config, [share], started_at="t", locust_version="x")
    assert result["valid"], result["invalid_reasons"]
    assert result["profile"] is None and "profile" in result["null_reasons"] and "profile" in CLOSED_NULLS
    assert result["segments"] == []
    point = result["series"]["points"][1]
    assert point["target_rps"] is None and point["scheduled"] is None and point["intended"] is None
    assert point["hdr"]["intended"] is None and point["completed"] == 10 and point["achieved_rps"] == 10.0
    assert _problems(json.loads(json.dumps(result)) | {"mesh": "none"}) is None


def test_the_analysis_reads_version_1_and_2_results() -> None:
    config = LoadConfig(url=URL, rate=100, duration_s=1, warmup_s=0)
    share = ShareResult(
        share=0, **_counts(100), error_kinds={}, hdr=_hdr([900] * 100, ALL), cpu_percent=5.0, window_s=1.0
    )
    new = build_result(config, [share], started_at="t", locust_version="x") | {"mesh": "none"}
    old = {k: v for k, v in new.items() if k not in ("profile", "series", "segments")} | {
        "schema": "testbed.load/1"
    }
    assert _problems(new) is None and _problems(old) is None
    assert "not 'testbed.load/1' or 'testbed.load/2'" in str(_problems(new | {"schema": "testbed.load/3"}))


# --- real trials against the calibration server ---------------------------------------------------


def _run(tmp_path: Path, argv: list[str]) -> dict[str, Any]:
    proc = run_testbed(*argv, "--max-lateness-ms", "50", "--out", str(tmp_path), timeout=60)
    assert proc.returncode == 0, proc.stderr
    return load_result(tmp_path)


def _check_series(result: dict[str, Any], profile: Profile) -> list[dict[str, Any]]:
    """Every point's target is the profile's mean rate over it and the achieved rate is within 10% of
    it, except where a segment boundary falls inside the interval; the points add up to the window."""
    points: list[dict[str, Any]] = result["series"]["points"]
    assert [(p["start_s"], p["end_s"]) for p in points] == intervals(profile.duration_s, 1.0)
    edges = [end for _, end in profile.bounds()[:-1]]
    for p in points:
        assert p["target_rps"] == pytest.approx(
            due(profile, p["start_s"], p["end_s"]) / (p["end_s"] - p["start_s"]), abs=1e-3
        )
        assert p["errors"] == 0 and p["service"]["count"] == p["completed"] == p["intended"]["count"]
        boundary = any(p["start_s"] < e < p["end_s"] for e in edges)
        if not boundary:
            assert p["achieved_rps"] == pytest.approx(p["target_rps"], rel=0.10), p
    assert sum(p["completed"] for p in points) == result["requests"]
    assert sum(p["scheduled"] for p in points) == result["scheduled"]
    return points


def test_a_steps_trial_records_one_histogram_per_step_and_each_steps_rate_per_second(
    tmp_path: Path, null_server: Callable[..., NullServer]
) -> None:
    """Run the way `testbed run` runs a trial: the scenario's profile through `load_argv`."""
    server = null_server()
    scenario = _scenario(
        tmp_path, profile="steps", steps=[{"rate": 50, "duration_s": 3}, {"rate": 150, "duration_s": 3}]
    )
    argv = load_argv(load_config(scenario, Trial(mesh="none", rate=150, index=1), server.url))
    result = _run(tmp_path, argv)
    profile = parse_arg("steps:50@3,150@3")
    assert result["profile"] == profile.to_dict() and result["rate"] == 150.0
    segments = result["segments"]
    assert [s["label"] for s in segments] == ["step 1 (50 rps)", "step 2 (150 rps)"]
    for segment, rate in zip(segments, (50, 150), strict=True):
        assert segment["completed"] == pytest.approx(rate * 3, rel=0.03), segment
        assert segment["scheduled"] == pytest.approx(rate * 3, abs=1)
        assert decode(segment["hdr"]["service"]).get_total_count() == segment["completed"]
        assert segment["latency_us"]["service"]["count"] == segment["completed"]
        assert 0 < segment["cpu_percent"] < 100
    assert sum(s["completed"] for s in segments) == result["requests"]
    # The per-step histograms add up to the window's exactly.
    window = new_histogram()
    for s in segments:
        window.add(decode(s["hdr"]["service"]))
    assert window.get_total_count() == result["latency_us"]["service"]["count"]
    assert window.get_value_at_percentile(99) == result["latency_us"]["service"]["p99"]
    points = _check_series(result, profile)
    assert [p["target_rps"] for p in points] == [50.0] * 3 + [150.0] * 3
    assert result["valid"] == all(s["valid"] for s in segments)


def test_a_spike_shows_in_the_series(tmp_path: Path, null_server: Callable[..., NullServer]) -> None:
    server = null_server()
    profile = parse_arg("spike:base=40,multiple=4,at=2,burst=1,duration=5")
    result = _run(tmp_path, ["load", server.url, "--profile", profile.to_arg(), "--warmup", "1"])
    points = _check_series(result, profile)
    rates = [p["achieved_rps"] for p in points]
    base = [r for k, r in enumerate(rates) if k != 2]
    assert rates[2] >= 3 * max(base), rates  # the burst second at 4 x base
    assert [s["label"] for s in result["segments"]] == ["before", "spike (160 rps)", "after"]
    assert result["segments"][1]["completed"] == pytest.approx(160, rel=0.03)


def test_a_ramp_rises_linearly_second_by_second_across_processes(
    tmp_path: Path, null_server: Callable[..., NullServer]
) -> None:
    server = null_server()
    profile = parse_arg("ramp:from=20,to=120,duration=5")
    argv = ["load", server.url, "--profile", profile.to_arg(), "--warmup", "1", "--processes", "2"]
    result = _run(tmp_path, argv)
    points = _check_series(result, profile)
    assert [p["target_rps"] for p in points] == [30.0, 50.0, 70.0, 90.0, 110.0]
    assert result["loadgen"]["processes"] == 2
    (segment,) = result["segments"]
    assert segment["completed"] == result["requests"] == pytest.approx(350, rel=0.03)


def test_the_engine_files_requests_by_interval_and_segment_and_seals_what_it_passed() -> None:
    """`_Share._bucket_at` on a spike whose burst starts mid-second: the buckets split at both edges."""
    from testbed.loadgen import engine

    share = object.__new__(engine._Share)  # only the attribution's state, no session or clock
    profile = parse_arg("spike:base=10,multiple=3,at=1.5,burst=1,duration=4")
    share.grid = intervals(profile.duration_s, 1.0)
    share.segment_starts = [start for start, _ in profile.bounds()]
    share.buckets, share.bucket, share.next_edge = {}, None, -math.inf
    first = share._bucket_at(0.0)
    first.in_flight = 1  # a request still out: not sealed when the schedule moves on
    keys = [
        (b.interval, b.segment) for b in (share._bucket_at(w) for w in (0.99, 1.0, 1.49, 1.5, 2.0, 2.5, 3.9))
    ]
    assert keys == [(0, 0), (1, 0), (1, 0), (1, 1), (2, 1), (2, 2), (3, 2)]
    assert first.passed and not first.encoded and first.hists  # waits for its request
    record(first.hists[engine.SERVICE], 0.001)
    first.in_flight = 0
    first.seal()
    middle = share.buckets[(1, 1)]
    assert middle.passed and middle.encoded and not middle.hists  # nothing out: sealed on leaving it
    assert first.histogram(engine.SERVICE).get_total_count() == 1  # sealed, still readable
    merged = decode(engine._merge_buckets(list(share.buckets.values()), engine.SERVICE))
    assert merged.get_total_count() == 1
