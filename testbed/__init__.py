"""An open testbed that measures what a service mesh costs."""

from __future__ import annotations

__version__ = "0.1.0"
