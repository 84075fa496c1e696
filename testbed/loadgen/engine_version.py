"""Locust's version without importing Locust (which would monkey-patch the caller with gevent)."""

from __future__ import annotations

from importlib.metadata import version


def locust_version() -> str:
    return version("locust")
