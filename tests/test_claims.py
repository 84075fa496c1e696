"""The published-claims dataset: it loads, covers every published figure once, and bad files fail early."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from testbed.errors import ConfigError, UsageError
from testbed.reporting.claims import (
    MESH_EQUIVALENTS,
    MESHES,
    METRIC_UNITS,
    METRICS,
    Claim,
    claims_for,
    default_claims_path,
    load_claims,
)

# Figures per source in /work/shared/reference/published-claims.md (one claim per figure).
EXPECTED_COUNTS = {
    "istio-docs-1.24": 6,  # sidecar / waypoint / ztunnel x (vCPU, MB)
    "istio-docs-1.22": 3,  # ambient p90, p99; sidecar vCPU
    "istio-docs-1.20": 2,  # p90, p99
    "istio-docs-1.12": 4,  # p90, p99, vCPU, MB
    "istio-blog-2019": 2,  # p50, p99
    "linkerd-blog-2021-05": 8,  # p50 at 3 rates x 2 meshes, proxy memory x 2
    "linkerd-blog-2021-11": 6,  # p50 at 2 rates x 2 meshes, proxy memory x 2
    "livewyer-2024": 6,  # p50, p99 x 3 meshes
    "livewyer-2024b": 4,  # p50, p99 x (ambient, sidecar)
    "arxiv-2411.02267": 4,  # percent latency increase x 4 meshes
    "socc-2023-meshinsight": 2,  # latency %, vCPU %
}

VALID = """
[[claim]]
id = "x-p99"
source_id = "x"
source = "X docs"
url = "https://example.org/x"
url_checked = false
published = "2024-05"
mesh = "istio"
mesh_version = "1.0"
metric = "added_p99_ms"
value = 1
loadgen = "fortio"
platform = "kind"
topology = "client -> server"
second_hand = false
"""


@pytest.fixture(scope="module")
def claims() -> tuple[Claim, ...]:
    return load_claims()


def by_id(claims: tuple[Claim, ...]) -> dict[str, Claim]:
    return {c.id: c for c in claims}


def find(
    claims: tuple[Claim, ...], source_id: str, mesh: str, metric: str, rate: float | None = None
) -> Claim:
    found = [
        c
        for c in claims
        if c.source_id == source_id
        and c.mesh == mesh
        and c.metric == metric
        and (rate is None or c.rate_rps == rate)
    ]
    assert len(found) == 1, found
    return found[0]


def test_packaged_file_loads_and_ids_are_unique(claims: tuple[Claim, ...]) -> None:
    assert default_claims_path().is_file()
    assert len(claims) == sum(EXPECTED_COUNTS.values())
    assert len({c.id for c in claims}) == len(claims)
    assert load_claims(Path(str(default_claims_path()))) == claims


def test_every_published_figure_is_one_claim(claims: tuple[Claim, ...]) -> None:
    assert Counter(c.source_id for c in claims) == EXPECTED_COUNTS
    # No two claims of one source say the same thing (mesh, metric, rate).
    keys = [(c.source_id, c.mesh, c.mesh_version, c.metric, c.rate_rps) for c in claims]
    assert len(set(keys)) == len(keys)


@pytest.mark.parametrize(
    ("key", "value"),
    [
        (("istio-docs-1.24", "istio", "proxy_vcpu_per_krps", 1000.0), 0.20),
        (("istio-docs-1.24", "istio-waypoint", "proxy_vcpu_per_krps", 1000.0), 0.25),
        (("istio-docs-1.24", "istio-ambient", "proxy_mb", 1000.0), 12.0),
        (("istio-docs-1.22", "istio-ambient", "added_p90_ms", 1000.0), 0.17),
        (("istio-docs-1.22", "istio", "proxy_vcpu_per_krps", None), 0.5),
        (("istio-docs-1.20", "istio", "added_p90_ms", 1000.0), 0.228),
        (("istio-docs-1.20", "istio", "added_p99_ms", 1000.0), 0.298),
        (("istio-docs-1.12", "istio", "added_p99_ms", 1000.0), 2.7),
        (("istio-docs-1.12", "istio", "proxy_mb_per_krps", None), 40.0),
        (("istio-blog-2019", "istio", "added_p99_ms", 1000.0), 10.0),
        (("linkerd-blog-2021-05", "linkerd", "added_p50_ms", 2000.0), 9.0),
        (("linkerd-blog-2021-05", "istio", "added_p50_ms", 20.0), 20.0),
        (("linkerd-blog-2021-05", "istio", "proxy_mb", 2000.0), 154.6),
        (("linkerd-blog-2021-11", "linkerd", "proxy_mb", 2000.0), 26.3),
        (("linkerd-blog-2021-11", "istio", "added_p50_ms", 2000.0), 17.0),
        (("livewyer-2024", "cilium", "added_p99_ms", None), 95.2),
        (("livewyer-2024", "linkerd", "added_p50_ms", None), 14.7),
        (("livewyer-2024b", "istio-ambient", "added_p50_ms", None), 24.0),
        (("livewyer-2024b", "istio", "added_p99_ms", None), 45.1),
        (("arxiv-2411.02267", "istio", "added_latency_pct", 3200.0), 166.0),
        (("socc-2023-meshinsight", "istio", "added_latency_pct", None), 269.0),
        (("socc-2023-meshinsight", "istio", "added_vcpu_pct", None), 163.0),
    ],
)
def test_values_copied_from_the_reference(
    claims: tuple[Claim, ...], key: tuple[str, str, str, float | None], value: float
) -> None:
    assert find(claims, *key).value == value


def test_istio_1_20_sidecar_p99(claims: tuple[Claim, ...]) -> None:
    claim = by_id(claims)["istio-1.20-sidecar-p99"]
    assert (claim.value, claim.unit, claim.proxies_per_request, claim.connections) == (0.298, "ms", 2, "2-64")


def test_arxiv_figures_are_flagged_second_hand_and_nothing_else_is(claims: tuple[Claim, ...]) -> None:
    arxiv = [c for c in claims if c.source_id == "arxiv-2411.02267"]
    assert {c.mesh for c in arxiv} == {"istio", "istio-ambient", "linkerd", "cilium"}
    assert all(c.second_hand and c.percentile == "unknown" for c in arxiv)
    assert all(not c.second_hand for c in claims if c.source_id != "arxiv-2411.02267")
    assert arxiv[0].url == "https://arxiv.org/abs/2411.02267"


def test_fields_are_consistent(claims: tuple[Claim, ...]) -> None:
    for c in claims:
        assert c.mesh in MESHES and c.metric in METRICS and c.unit == METRIC_UNITS[c.metric]
        assert (c.percentile is not None) == (c.metric == "added_latency_pct"), c.id
        assert c.url.startswith("https://"), c.id
    livewyer = [c for c in claims if c.source_id.startswith("livewyer")]
    assert all(c.open_loop is False and c.rate_rps is None and c.connections == "32" for c in livewyer)
    linkerd_blogs = [c for c in claims if c.source_id.startswith("linkerd-blog")]
    assert all(c.publisher_bias and "Buoyant" in c.publisher_bias for c in linkerd_blogs)


def test_claims_for_maps_testbed_meshes(claims: tuple[Claim, ...]) -> None:
    assert claims_for("envoy", claims) == claims_for("istio", claims)
    assert {c.mesh for c in claims_for("envoy", claims)} == {"istio"}
    assert len(claims_for("istio-ambient", claims)) == 7
    assert len(claims_for("istio-waypoint", claims)) == 2
    assert claims_for("none", claims) == []
    assert set(MESH_EQUIVALENTS.values()) == set(MESHES)
    assert claims_for("cilium") == claims_for("cilium", claims)  # default: the packaged file
    with pytest.raises(UsageError, match="unknown mesh 'consul'"):
        claims_for("consul", claims)


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "claims.toml"
    path.write_text(text)
    return path


def test_minimal_valid_file(tmp_path: Path) -> None:
    (claim,) = load_claims(write(tmp_path, VALID))
    assert claim.value == 1.0 and isinstance(claim.value, float)
    assert claim.rate_rps is None and claim.open_loop is None and claim.publisher_bias is None


@pytest.mark.parametrize(
    ("old", "new", "message"),
    [
        ('loadgen = "fortio"', 'loadgen = "fortio"\ncolour = "red"', r"claim 'x-p99': colour: unknown field"),
        ('platform = "kind"\n', "", r"claim 'x-p99': platform: missing"),
        ('mesh = "istio"', 'mesh = "consul"', r"claim 'x-p99': mesh: unknown mesh 'consul'"),
        ('metric = "added_p99_ms"', 'metric = "added_p95_ms"', r"claim 'x-p99': metric: unknown metric"),
        ("value = 1", 'value = "1 ms"', r"claim 'x-p99': value: must be a finite number"),
        ("url_checked = false", 'url_checked = "no"', r"claim 'x-p99': url_checked: must be true or false"),
        ('published = "2024-05"', 'published = "May 2024"', r"claim 'x-p99': published: must be YYYY"),
        ('url = "https://example.org/x"', 'url = "example.org"', r"claim 'x-p99': url: must be an http"),
        (
            "value = 1",
            "value = 1\npercentile = 'p99'",
            r"claim 'x-p99': percentile: only for added_latency_pct",
        ),
        (
            'metric = "added_p99_ms"',
            'metric = "added_latency_pct"',
            r"claim 'x-p99': percentile: missing",
        ),
        ("value = 1", "value = 1\nrate_rps = 0", r"claim 'x-p99': rate_rps: must be positive"),
        ("value = 1", "value = 1\nconnections = 'many'", r"claim 'x-p99': connections: must look like"),
        (
            "value = 1",
            "value = 1\nproxies_per_request = true",
            r"claim 'x-p99': proxies_per_request: must be",
        ),
        ('id = "x-p99"\n', "", r"claim #1: id: missing"),
        ('id = "x-p99"', 'id = "X P99"', r"claim 'X P99': id: must be a slug"),
    ],
)
def test_bad_field_names_claim_and_field(tmp_path: Path, old: str, new: str, message: str) -> None:
    assert old in VALID
    with pytest.raises(ConfigError, match=message):
        load_claims(write(tmp_path, VALID.replace(old, new, 1)))


def test_duplicate_id(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"claim 'x-p99': id: duplicate \(also claim #1\)"):
        load_claims(write(tmp_path, VALID + VALID))


def test_one_source_one_url(tmp_path: Path) -> None:
    second = VALID.replace('"x-p99"', '"x-p50"').replace("https://example.org/x", "https://example.org/y")
    with pytest.raises(ConfigError, match=r"claim 'x-p50': url: differs from claim 'x-p99'"):
        load_claims(write(tmp_path, VALID + second))


def test_bad_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="claims file not found"):
        load_claims(tmp_path / "missing.toml")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_claims(write(tmp_path, "[[claim]\n"))
    with pytest.raises(ConfigError, match="no \\[\\[claim\\]\\] tables"):
        load_claims(write(tmp_path, "# nothing\n"))
    with pytest.raises(ConfigError, match="sources: unknown top-level key"):
        load_claims(write(tmp_path, VALID + "\n[sources]\nx = 1\n"))
    with pytest.raises(ConfigError, match="claim #1: not a table"):
        load_claims(write(tmp_path, "claim = [1]\n"))
