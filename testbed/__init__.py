"""An open testbed that measures what a service mesh costs.

The folders follow a run (README, "Architecture"): `spec` (what a run is), `sut` (the system under test),
`platforms` (where it runs), `meshes` (what sits between the services), `kube` (the Kubernetes plan and its
tools), `loadgen` (the load engine) and `reporting` (what is made of results); `run` is the workflow and
`cli` the command line. The shared leaves at the top (`errors`, `proc`, `ports`, `paths`, `resources`)
import nothing else of the package. tests/test_imports.py checks the direction.
"""

from __future__ import annotations

__version__ = "0.1.0"
