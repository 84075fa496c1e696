"""Where the testbed's own files are: the checkout with `scenarios/`, `manifests/` and the Dockerfile, and the
datasets shipped inside the package (`testbed/data/`), read as TOML.

`pip install -e .` (what the nox sessions do) leaves the package in its checkout, which is then found
beside it. A plain `pip install .` copies only the package: the checkout is then the current directory
(run `testbed` from it) or `$TESTBED_HOME`. Found once, at import: a command line process runs in one place.
"""

from __future__ import annotations

import os
import tomllib
from importlib import resources
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import Any

from testbed.errors import ConfigError

ENV_HOME = "TESTBED_HOME"
#: The package's parent: the checkout itself after `pip install -e .`.
_BESIDE_PACKAGE = Path(__file__).resolve().parent.parent


def is_checkout(path: Path) -> bool:
    """`path` holds the testbed's scenarios and pins (the Dockerfile is checked where it is needed)."""
    return (path / "manifests" / "versions.toml").is_file() and (path / "scenarios").is_dir()


def find_root() -> Path | None:
    """`$TESTBED_HOME`, else the package's own checkout, else the current directory: the first checkout."""
    home = os.environ.get(ENV_HOME)
    candidates = [Path(home)] if home else [_BESIDE_PACKAGE, Path.cwd()]
    return next((c.resolve() for c in candidates if is_checkout(c)), None)


_FOUND = find_root()
#: The checkout; when none is found, the package's parent, so that a missing file is named by its path.
ROOT = _FOUND or _BESIDE_PACKAGE


def hint() -> str:
    """What to add to a "file not found" error when no checkout was found."""
    if _FOUND is not None:
        return ""
    where = f"${ENV_HOME} ({os.environ[ENV_HOME]})" if os.environ.get(ENV_HOME) else "the current directory"
    return (
        f" (no testbed checkout in {where}: run testbed from the folder with scenarios/ and manifests/, "
        f"or set {ENV_HOME} to it)"
    )


def packaged(name: str) -> Traversable:
    """A dataset shipped inside the package (`testbed/data/NAME`): found after any install."""
    return resources.files("testbed").joinpath("data", name)


def read_toml(source: Traversable | Path, what: str) -> dict[str, Any]:
    """A TOML file's tables; a `ConfigError` naming the file when it is missing or not valid TOML."""
    if not source.is_file():
        raise ConfigError(f"{source}: {what} file not found")
    try:
        return tomllib.loads(source.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{source}: not valid TOML: {e}") from None
