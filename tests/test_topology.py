"""Topology files: the default one loads, and every kind of mistake is one line naming file and field."""

from __future__ import annotations

from pathlib import Path

import pytest

from testbed.errors import ConfigError
from testbed.spec.topology import TOPOLOGIES_DIR, Service, available_topologies, call_depths, load_topology

VALID = """
name = "t"
entry = "a"
[services.a]
calls = ["b"]
[services.b]
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "t.toml"
    path.write_text(text)
    return path


def test_shop_is_the_documented_default() -> None:
    shop = load_topology("shop")
    assert shop.name == "shop"
    assert shop.entry == "frontend"
    assert shop.source == TOPOLOGIES_DIR / "shop.toml"
    frontend = shop.service("frontend")
    assert frontend.calls == ("catalog", "pricing")
    assert frontend.call_mode == "parallel"
    assert shop.service("catalog").calls == ("inventory",)
    assert "shop" in available_topologies()


def test_single_service_topology_for_the_per_hop_cost() -> None:
    single = load_topology("single")
    assert single.entry == "echo"
    assert single.service("echo").calls == () and single.service("echo").work_us == 0


def test_startup_order_puts_every_callee_before_its_callers() -> None:
    shop = load_topology("shop")
    order = [s.name for s in shop.startup_order()]
    assert sorted(order) == sorted(shop.names)
    for service in shop.services:
        for callee in service.calls:
            assert order.index(callee) < order.index(service.name)


def test_defaults_and_explicit_paths(tmp_path: Path) -> None:
    path = write(tmp_path, VALID)
    for given in (path, str(path)):
        topology = load_topology(given)
        assert topology.source == path
        assert topology.service("b") == Service(name="b")
    assert [s.name for s in topology.startup_order()] == ["b", "a"]


def test_name_defaults_to_the_file_name(tmp_path: Path) -> None:
    path = write(tmp_path, VALID.replace('name = "t"', ""))
    assert load_topology(path).name == "t"


@pytest.mark.parametrize(
    ("text", "field", "problem"),
    [
        (VALID + "nmae = 1\n", "services.b.nmae", "unknown key"),
        ('naem = "x"\n' + VALID, "naem", "unknown key"),
        (VALID + "payload = 1\n", "services.b.payload", "unknown key"),
        (VALID + 'payload_bytes = "big"\n', "services.b.payload_bytes", "must be an integer, not a string"),
        (VALID + "payload_bytes = 1.5\n", "services.b.payload_bytes", "must be an integer, not a float"),
        (VALID + "work_us = true\n", "services.b.work_us", "must be an integer, not a boolean"),
        (VALID + "work_us = -1\n", "services.b.work_us", "must be >= 0"),
        (VALID + "payload_bytes = -5\n", "services.b.payload_bytes", "must be >= 0"),
        (VALID + "call_timeout_ms = 0\n", "services.b.call_timeout_ms", "must be >= 1"),
        (VALID + 'work = "nap"\n', "services.b.work", "must be one of 'busy', 'sleep'"),
        (VALID + 'work = "sleep"\nwork_us = 500\n', "services.b.work_us", "whole milliseconds"),
        (VALID + 'call_mode = "random"\n', "services.b.call_mode", "must be one of"),
        (VALID + 'calls = "a"\n', "services.b.calls", "must be a list"),
        (VALID.replace('calls = ["b"]', 'calls = ["b", "foo"]'), "services.a.calls", "unknown service 'foo'"),
        (VALID.replace('calls = ["b"]', 'calls = ["b", "b"]'), "services.a.calls", "'b' is listed twice"),
        (VALID + 'calls = ["a"]\n', "services.b.calls", "cycle a -> b -> a"),
        (VALID.replace('calls = ["b"]', 'calls = ["a"]'), "services.a.calls", "cycle a -> a"),
        (VALID.replace('entry = "a"', 'entry = "z"'), "entry", "unknown service 'z'"),
        (VALID.replace('entry = "a"', "entry = 3"), "entry", "must be a string"),
        (VALID.replace('entry = "a"', ""), "entry", "missing"),
        ('name = "t"\nentry = "a"\n', "services", "missing"),
        ('entry = "a"\nservices = 3\n', "services", "must be a table"),
        (VALID + "[services.c]\n", "services.c", "not reachable from entry 'a'"),
        (VALID + "[services.Big_One]\n", "services.Big_One", "lowercase letters"),
        (VALID.replace("[services.b]", "[services]\nb = 1"), "services.b", "must be a table"),
    ],
)
def test_mistakes_are_one_line_naming_file_and_field(
    tmp_path: Path, text: str, field: str, problem: str
) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as caught:
        load_topology(path)
    message = caught.value.message
    assert message.startswith(f"{path}: {field}: "), message
    assert problem in message
    assert "\n" not in message


def test_path_is_shown_relative_to_the_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "scenarios").mkdir()
    path = tmp_path / "scenarios" / "x.toml"
    path.write_text(VALID.replace('calls = ["b"]', 'calls = ["foo"]'))
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError, match=r"^scenarios/x\.toml: services\.a\.calls: unknown service 'foo'$"):
        load_topology(path)


def test_invalid_toml_names_the_file(tmp_path: Path) -> None:
    path = write(tmp_path, "entry = \n")
    with pytest.raises(ConfigError, match=r"t\.toml: not valid TOML: .*line 1"):
        load_topology(path)


def test_unknown_name_lists_the_known_ones(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"unknown topology 'nope' \(known: .*shop"):
        load_topology("nope")
    with pytest.raises(ConfigError, match="topology file not found"):
        load_topology(tmp_path / "missing.toml")


# --- call depths: where each service runs on Kubernetes -----------------------------------------------


def test_call_depths_of_the_shipped_topologies() -> None:
    assert call_depths(load_topology("shop")) == {"frontend": 0, "catalog": 1, "pricing": 1, "inventory": 2}
    assert call_depths(load_topology("single")) == {"echo": 0}


def test_a_service_reached_at_depths_of_one_parity_gets_the_shortest(tmp_path: Path) -> None:
    # d at depth 1 (a -> d) and 3 (a -> b -> c -> d): both odd, so one worker serves every call to it.
    path = write(
        tmp_path,
        'entry = "a"\n[services.a]\ncalls = ["b", "d"]\n[services.b]\ncalls = ["c"]\n'
        '[services.c]\ncalls = ["d"]\n[services.d]\n',
    )
    assert call_depths(load_topology(path)) == {"d": 1, "c": 2, "b": 1, "a": 0}


def test_a_service_reached_at_an_even_and_an_odd_depth_is_named(tmp_path: Path) -> None:
    # e is at depth 2 (a -> b -> e) and 3 (a -> c -> d -> e): whichever worker it is on, one call stays put.
    path = write(
        tmp_path,
        'entry = "a"\n[services.a]\ncalls = ["b", "c"]\n[services.b]\ncalls = ["e"]\n'
        '[services.c]\ncalls = ["d"]\n[services.d]\ncalls = ["e"]\n[services.e]\n',
    )
    topology = load_topology(path)  # valid: only placement across two workers cannot take it
    with pytest.raises(ConfigError) as caught:
        call_depths(topology)
    message = caught.value.message
    assert message.startswith(f"{path}: services.e: reached at depth 2 (a -> b -> e) and at depth 3 ")
    assert "(a -> c -> d -> e)" in message
    assert "\n" not in message
