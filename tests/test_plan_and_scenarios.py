"""Pure planning: scenario files, the order of trials, the load command of a trial."""

from __future__ import annotations

from pathlib import Path

import pytest

from testbed.errors import ConfigError
from testbed.spec.scenario import available_scenarios, load_scenario
from testbed.spec.trials import load_argv, load_config, plan_trials


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "s.toml"
    path.write_text(text)
    return path


def test_shipped_scenarios_load() -> None:
    steady = load_scenario("steady")
    assert steady.rates == (100.0, 200.0) and steady.trials == 5
    smoke = load_scenario("smoke")
    assert smoke.trials == 1 and smoke.duration_s <= 5
    hop = load_scenario("hop")
    assert hop.rates == (500.0,) and hop.trials >= 3
    assert set(available_scenarios()) >= {"steady", "smoke", "hop"}
    # bench-local (2 meshes) must end within 5 minutes on 2 cores with its set-up (about 1 minute):
    # 20 trials, each with about 2 s of start-up and tear-down around its warm-up and window.
    trials = len(steady.rates) * steady.trials * 2
    assert trials * (steady.warmup_s + steady.duration_s + steady.cooldown_s + 2.0) <= 4 * 60 - 20


def test_plan_alternates_meshes_trial_by_trial(tmp_path: Path) -> None:
    scenario = load_scenario(
        write(tmp_path, "rates = [200, 1000]\nduration_s = 5\nwarmup_s = 1\ntrials = 2\n")
    )
    plan = plan_trials(scenario, ("none", "envoy"))
    assert [(t.mesh, t.rate, t.index) for t in plan] == [
        ("none", 200, 1), ("envoy", 200, 1), ("none", 200, 2), ("envoy", 200, 2),
        ("none", 1000, 1), ("envoy", 1000, 1), ("none", 1000, 2), ("envoy", 1000, 2),
    ]  # fmt: skip
    assert str(plan[1].path) == "envoy/200/trial-1"


def test_plan_by_mesh_runs_one_cluster_at_a_time(tmp_path: Path) -> None:
    """On kind a mesh is a cluster: all its trials run in one block, so one cluster is up at a time."""
    scenario = load_scenario(
        write(tmp_path, "rates = [200, 1000]\nduration_s = 5\nwarmup_s = 1\ntrials = 2\n")
    )
    plan = plan_trials(scenario, ("none", "istio"), by_mesh=True)
    assert [(t.mesh, t.rate, t.index) for t in plan] == [
        ("none", 200, 1), ("none", 200, 2), ("none", 1000, 1), ("none", 1000, 2),
        ("istio", 200, 1), ("istio", 200, 2), ("istio", 1000, 1), ("istio", 1000, 2),
    ]  # fmt: skip


def test_load_command_of_a_trial(tmp_path: Path) -> None:
    scenario = load_scenario(write(tmp_path, "rates = [250]\nduration_s = 10\nwarmup_s = 3\ntrials = 1\n"))
    trial = plan_trials(scenario, ("none",))[0]
    argv = load_argv(load_config(scenario, trial, "http://127.0.0.1:8080/"))
    assert argv == [
        "load", "http://127.0.0.1:8080/", "--rate", "250", "--duration", "10", "--warmup", "3",
        "--connections", "16", "--processes", "1", "--arrival", "uniform", "--seed", "1",
        "--timeout", "10", "--max-error-rate", "0.01", "--max-lateness-ms", "2", "--method", "GET",
    ]  # fmt: skip


@pytest.mark.parametrize(
    ("text", "field"),
    [
        ("duration_s = 5\nwarmup_s = 1\ntrials = 1\n", "rates: missing"),
        ("rates = []\nduration_s = 5\nwarmup_s = 1\ntrials = 1\n", "rates: must be a non-empty list"),
        ("rates = [-1]\nduration_s = 5\nwarmup_s = 1\ntrials = 1\n", "rates: must be a non-empty list"),
        ("rates = [1]\nduration_s = 0\nwarmup_s = 1\ntrials = 1\n", "duration_s: must be positive"),
        ("rates = [1]\nduration_s = 5\nwarmup_s = -1\ntrials = 1\n", "warmup_s: must be zero or positive"),
        ("rates = [1]\nduration_s = 5\nwarmup_s = 1\ntrials = 0\n", "trials: must be positive"),
        ("rates = [1]\nduration_s = '5'\nwarmup_s = 1\ntrials = 1\n", "duration_s: has the wrong type"),
        ("rates = [1]\nduration_s = 5\nwarmup_s = 1\ntrials = 1\nrate = 3\n", "rate: unknown key"),
        ("rates = [1]\nduration_s = 5\nwarmup_s = 1\ntrials = 1\narrival = 'x'\n", "arrival: must be one of"),
        ("rates = [1\n", "not valid TOML"),
    ],
)
def test_bad_scenario_names_file_and_field(tmp_path: Path, text: str, field: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_scenario(path)
    assert str(path) in info.value.message
    assert field in info.value.message


def test_unknown_scenario_lists_the_known_ones() -> None:
    with pytest.raises(ConfigError, match=r"known: .*smoke.*steady"):
        load_scenario("nope")
