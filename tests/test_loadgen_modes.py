"""Closed loop (`--loop closed --users N`) and `--new-connection` against the calibration server."""

from __future__ import annotations

import json
import urllib.request
from collections.abc import Callable
from pathlib import Path

import pytest

from testbed.errors import ConfigError, UsageError
from testbed.loadgen.config import LoadConfig
from testbed.loadgen.engine import users_of_share
from testbed.loadgen.result import ShareResult, build_result, encode, new_histogram, record, verdict
from testbed.reporting.analysis import _problems
from testbed.spec.scenario import CLOSED_LOOP_RATE, parse_scenario
from testbed.spec.trials import Trial, load_argv, load_config
from tests.conftest import NullServer, load_result, run_testbed
from tests.test_loadgen_cli import assert_one_line_error

DELAY_MS = 20.0


def accepted_connections(server: NullServer) -> int:
    """Connections the null server accepted so far, less the one that asks."""
    counter = server.url + "_testbed/connections"  # http:// on loopback
    with urllib.request.urlopen(counter, timeout=5) as response:  # noqa: S310
        return int(response.read()) - 1


def closed(tmp_path: Path, server: NullServer, users: int, *extra: str) -> dict[str, object]:
    proc = run_testbed(
        "load", server.url, "--loop", "closed", "--users", str(users), "--duration", "3", "--warmup", "1",
        *extra, "--out", str(tmp_path),
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "closed loop (publisher's method)" in proc.stderr  # the one-line summary says so
    return load_result(tmp_path)


@pytest.mark.parametrize(("users", "processes"), [(8, 1), (6, 2)])
def test_closed_loop_achieves_users_over_latency(
    users: int, processes: int, tmp_path: Path, null_server: Callable[..., NullServer]
) -> None:
    server = null_server("--delay-ms", str(DELAY_MS))
    result = closed(tmp_path, server, users, "--processes", str(processes))
    expected = users / (DELAY_MS / 1000)
    assert result["achieved_rate"] == pytest.approx(expected, rel=0.15), result["achieved_rate"]
    service = result["latency_us"]["service"]  # type: ignore[index]
    assert service["p50"] == pytest.approx(DELAY_MS * 1000, rel=0.15)
    assert service["count"] == result["requests"]  # exact merge across processes
    assert result["load_model"] == {"loop": "closed", "users": users, "new_connection": False}
    for field in ("rate", "scheduled", "arrival"):
        assert result[field] is None and field in result["null_reasons"]  # type: ignore[operator]
    for name in ("intended", "lateness"):
        assert result["latency_us"][name] is None and result["hdr"][name] is None  # type: ignore[index]
        assert f"latency_us.{name}" in result["null_reasons"]  # type: ignore[operator]
    assert result["loadgen"]["users_per_process"] == [  # type: ignore[index]
        users_of_share(users, k, processes) for k in range(processes)
    ]
    assert result["valid"], result["invalid_reasons"]
    assert accepted_connections(server) == users + 1  # one keep-alive connection per user, + preflight


def test_new_connection_opens_one_connection_per_request(
    tmp_path: Path, null_server: Callable[..., NullServer]
) -> None:
    server = null_server("--delay-ms", "1")
    keep = closed(tmp_path / "keep", server, 2)
    before = accepted_connections(server)
    fresh = closed(tmp_path / "fresh", server, 2, "--new-connection")
    opened = accepted_connections(server) - before - 1  # less the preflight's
    assert fresh["load_model"]["new_connection"] is True  # type: ignore[index]
    assert "a new connection per request" in verdict(fresh)
    # Every request of the warm-up, window and drain had its own connection: more than the window's.
    assert opened >= int(fresh["requests"])  # type: ignore[call-overload]
    assert opened <= int(fresh["requests"]) * 1.6  # type: ignore[call-overload]
    # The handshake is timed: the median request takes longer than over a kept connection.
    keep_p50 = keep["latency_us"]["service"]["p50"]  # type: ignore[index]
    fresh_p50 = fresh["latency_us"]["service"]["p50"]  # type: ignore[index]
    assert fresh_p50 > keep_p50 + 20, (keep_p50, fresh_p50)


def test_open_loop_new_connection(tmp_path: Path, null_server: Callable[..., NullServer]) -> None:
    server = null_server()
    proc = run_testbed(
        "load", server.url, "--rate", "100", "--duration", "1", "--warmup", "0.5", "--new-connection",
        "--out", str(tmp_path),
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    result = load_result(tmp_path)
    assert result["load_model"]["loop"] == "open" and result["load_model"]["new_connection"]
    assert result["latency_us"]["intended"]["count"] == result["requests"] == 100
    assert 150 <= accepted_connections(server) - 1 <= 151  # every send of warm-up and window, + preflight


@pytest.mark.parametrize(
    ("args", "fragments"),
    [
        (["--loop", "closed", "--users", "4", "--rate", "10"], ["--rate does not apply to --loop closed"]),
        (["--loop", "closed", "--users", "4", "--connections", "2"], ["--connections does not apply"]),
        (["--loop", "closed"], ["--loop closed needs --users N"]),
        (["--rate", "10", "--users", "3"], ["--users 3 applies to --loop closed only"]),
        (["--loop", "closed", "--users", "1", "--processes", "2"], ["fewer than --processes 2"]),
        (["--loop", "half"], ["--loop must be one of open, closed"]),
        ([], ["--rate is required"]),
    ],
)
def test_bad_mode_flags_are_one_line_errors(args: list[str], fragments: list[str]) -> None:
    proc = run_testbed("load", "http://127.0.0.1:1/", "--duration", "1", *args, "--out", "-")
    assert_one_line_error(proc, *fragments)


def _share(closed_loop: bool) -> ShareResult:
    service = new_histogram()
    record(service, 0.001)
    hdr = {
        "service": encode(service),
        "intended": encode(new_histogram()),
        "lateness": encode(new_histogram()),
    }
    return ShareResult(
        share=0, scheduled=0 if closed_loop else 1, sent=1, completed=1, errors=0, error_kinds={}, hdr=hdr,
        cpu_percent=1.0, window_s=1.0,
    )  # fmt: skip


def test_closed_loop_validity_and_the_reporting_reads_it() -> None:
    config = LoadConfig(url="http://127.0.0.1:1/", loop="closed", users=2, duration_s=1, warmup_s=0)
    result = build_result(config, [_share(True)], started_at="x", locust_version="x")
    # No lateness or target-rate rule in closed loop (the open loop's would fail on an empty schedule).
    assert result["valid"], result["invalid_reasons"]
    assert verdict(result) == "valid; closed loop (publisher's method), 2 users"
    result |= {"mesh": "none"}
    assert _problems(json.loads(json.dumps(result))) is None
    # Errors still invalidate a closed-loop trial.
    bad = ShareResult(**{**_share(True).__dict__, "errors": 1, "error_kinds": {"HTTP 503": 1}})
    assert not build_result(config, [bad], started_at="x", locust_version="x")["valid"]
    # An open-loop result with a null intended histogram is still damaged.
    open_result = build_result(
        LoadConfig(url="http://127.0.0.1:1/", rate=1, duration_s=1, warmup_s=0),
        [_share(False)], started_at="x", locust_version="x",
    )  # fmt: skip
    assert open_result["load_model"]["loop"] == "open" and verdict(open_result) == "valid"
    open_result["hdr"]["intended"] = None
    assert "hdr.intended" in str(_problems(open_result | {"mesh": "none"}))


def test_users_split_across_processes_add_up() -> None:
    for users in range(1, 12):
        for shares in range(1, users + 1):
            parts = [users_of_share(users, k, shares) for k in range(shares)]
            assert sum(parts) == users and min(parts) >= 1 and max(parts) - min(parts) <= 1


BASE = {"duration_s": 2, "warmup_s": 1, "trials": 1}


def test_scenario_keys_reach_the_load_command(tmp_path: Path) -> None:
    scenario = parse_scenario(BASE | {"loop": "closed", "users": 32, "new_connection": True}, path=tmp_path)
    assert scenario.rates == (CLOSED_LOOP_RATE,)
    config = load_config(scenario, Trial(mesh="none", rate=CLOSED_LOOP_RATE, index=1), "http://x:8080/")
    assert (config.loop, config.users, config.new_connection, config.rate) == ("closed", 32, True, 0.0)
    argv = load_argv(config)
    assert argv[:6] == ["load", "http://x:8080/", "--loop", "closed", "--users", "32"]
    assert "--new-connection" in argv and "--rate" not in argv and "--connections" not in argv
    # The argv parses back into the same configuration (what the platforms run).
    from testbed.cli import build_parser

    args = build_parser().parse_args([*argv, "--out", "-"])
    assert (args.loop, args.users, args.new_connection, args.rate) == ("closed", 32, True, None)
    # Open loop: unchanged command line, plus --new-connection when asked.
    open_scenario = parse_scenario(BASE | {"rates": [100], "new_connection": True}, path=tmp_path)
    open_argv = load_argv(load_config(open_scenario, Trial(mesh="none", rate=100, index=1), "http://x/"))
    assert (
        open_argv[2:4] == ["--rate", "100"] and "--new-connection" in open_argv and "--loop" not in open_argv
    )


@pytest.mark.parametrize(
    ("data", "fragment"),
    [
        ({"loop": "closed"}, "users: must be positive"),
        ({"loop": "closed", "users": 4, "rates": [100]}, "rates: does not apply"),
        ({"loop": "closed", "users": 4, "connections": 2}, "connections: does not apply"),
        ({"loop": "closed", "users": 2, "processes": 3}, "processes: must not exceed users"),
        ({"loop": "sideways", "rates": [1]}, "loop: must be one of open, closed"),
        ({"rates": [1], "users": 4}, 'users: applies to loop = "closed" only'),
        ({"rates": [1], "new_connection": "yes"}, "new_connection: has the wrong type str"),
        ({"rates": [1], "users": True}, "users: has the wrong type bool"),
    ],
)
def test_bad_scenario_mode_keys(data: dict[str, object], fragment: str, tmp_path: Path) -> None:
    path = tmp_path / "s.toml"
    with pytest.raises(ConfigError) as info:
        parse_scenario(BASE | data, path=path)
    assert str(info.value).startswith(f"{path}: ") and fragment in str(info.value)


def test_config_round_trips_through_json() -> None:
    config = LoadConfig(
        url="http://x/", loop="closed", users=3, new_connection=True, duration_s=1, warmup_s=0
    )
    assert LoadConfig.from_json(config.to_json()) == config
    with pytest.raises(UsageError, match="--rate does not apply"):
        LoadConfig(url="http://x/", loop="closed", users=3, rate=5, duration_s=1, warmup_s=0)
