"""Shared fixtures: real processes on loopback, and a check that none is left behind."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest

REPO = Path(__file__).resolve().parent.parent


def cli_argv(*args: str) -> list[str]:
    return [sys.executable, "-m", "testbed", "--quiet", *args]


def run_testbed(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """The CLI as a user runs it: a separate process (Locust monkey-patches whatever imports it)."""
    return subprocess.run(cli_argv(*args), capture_output=True, text=True, timeout=timeout, check=False)


def load_result(directory: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((directory / "result.json").read_text())
    return data


class NullServer:
    """`python -m testbed.sut.nullserver` in a child process; `url` once it listens."""

    def __init__(self, *args: str) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "testbed.sut.nullserver", "--port", "0", *args],
            stdout=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        assert line.startswith("listening on "), line
        self.address = line.split()[-1]
        self.url = f"http://{self.address}/"

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=10)
        if self.process.stdout is not None:
            self.process.stdout.close()


@pytest.fixture
def null_server() -> Iterator[Callable[..., NullServer]]:
    servers: list[NullServer] = []

    def start(*args: str) -> NullServer:
        servers.append(NullServer(*args))
        return servers[-1]

    yield start
    for server in servers:
        server.stop()


def descendants() -> list[psutil.Process]:
    return psutil.Process(os.getpid()).children(recursive=True)


def engine_processes() -> list[psutil.Process]:
    """Every process on the machine that runs the testbed's engine or a sidecar started by a test."""
    found = []
    for p in psutil.process_iter(["cmdline"]):
        cmdline = " ".join(p.info["cmdline"] or [])
        if "testbed.loadgen.worker" in cmdline or "-m testbed load" in cmdline.replace("--quiet ", ""):
            found.append(p)
    return found
