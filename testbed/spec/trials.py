"""The plan of a run: which trials, in which order. Pure data, tested without running anything."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import PurePosixPath

from testbed.loadgen.config import LoadConfig, ValidityLimits
from testbed.spec.scenario import Scenario


@dataclass(frozen=True, kw_only=True)
class Trial:
    """One measurement: a mesh at a rate, the k-th time."""

    mesh: str
    rate: float
    index: int  # 1-based

    @property
    def path(self) -> PurePosixPath:
        """Where its result goes inside the run directory: `<mesh>/<rate>/trial-<k>`."""
        return PurePosixPath(self.mesh, f"{self.rate:g}", f"trial-{self.index}")


def plan_trials(scenario: Scenario, meshes: tuple[str, ...], *, by_mesh: bool = False) -> tuple[Trial, ...]:
    """Rate by rate, trial by trial, the meshes alternated (none, envoy, none, envoy...): drift on the
    machine during a run then affects every mesh alike instead of biasing whichever ran last.

    `by_mesh` runs all of one mesh's trials before the next mesh's, for platforms where a mesh is a whole
    cluster (kind): one cluster at a time fits a CI runner, at the price of that protection against drift
    (the report's spread across trials still shows drift within a mesh)."""
    if by_mesh:
        return tuple(
            Trial(mesh=mesh, rate=rate, index=k)
            for mesh in meshes
            for rate in scenario.rates
            for k in range(1, scenario.trials + 1)
        )
    return tuple(
        Trial(mesh=mesh, rate=rate, index=k)
        for rate in scenario.rates
        for k in range(1, scenario.trials + 1)
        for mesh in meshes
    )


def load_config(scenario: Scenario, trial: Trial, target_url: str) -> LoadConfig:
    """The `testbed load` configuration of a trial."""
    return LoadConfig(
        url=target_url,
        rate=0.0 if scenario.loop == "closed" else trial.rate,  # closed loop: the users set the load
        duration_s=scenario.duration_s,
        warmup_s=scenario.warmup_s,
        connections=scenario.connections,
        processes=scenario.processes,
        arrival=scenario.arrival,
        loop=scenario.loop,
        users=scenario.users,
        new_connection=scenario.new_connection,
        # steps/ramp/spike: the trial's rate slot is the profile's peak and the window its length.
        profile=scenario.profile,
        seed=trial.index,
        limits=ValidityLimits(max_lateness_p99_ms=scenario.max_lateness_ms),
    )


def load_argv(config: LoadConfig) -> list[str]:
    """The same trial as a `testbed load` command line (what runs next to the services, or in a pod)."""
    if config.loop == "closed":  # `testbed load` refuses the open loop's --rate, --connections, --arrival
        argv = ["load", config.url, "--loop", "closed", "--users", str(config.users)]
        argv += ["--duration", f"{config.duration_s:g}", "--warmup", f"{config.warmup_s:g}"]
        argv += ["--processes", str(config.processes), "--seed", str(config.seed)]
    else:
        if config.profile is not None:  # it sets the rate and the window (`testbed load` checks they agree)
            argv = ["load", config.url, "--profile", config.profile.to_arg()]
        else:
            argv = ["load", config.url, "--rate", f"{config.rate:g}", "--duration", f"{config.duration_s:g}"]
        argv += ["--warmup", f"{config.warmup_s:g}", "--connections", str(config.connections)]
        argv += ["--processes", str(config.processes), "--arrival", config.arrival]
        argv += ["--seed", str(config.seed)]
    if config.new_connection:
        argv += ["--new-connection"]
    argv += ["--timeout", f"{config.timeout_s:g}"]
    if config.tail_s:
        argv += ["--tail", f"{config.tail_s:g}"]
    argv += ["--max-error-rate", f"{config.limits.max_error_fraction:g}"]
    argv += ["--max-lateness-ms", f"{config.limits.max_lateness_p99_ms:g}"]
    argv += ["--method", config.method]
    if config.body_bytes:
        argv += ["--body-bytes", str(config.body_bytes)]
    for name, value in config.headers:
        argv += ["--header", f"{name}: {value}"]
    return argv
