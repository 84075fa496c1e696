"""Linkerd on Kubernetes: `kube` plans its install, enrolment and verification steps; `certs` makes its trust
anchor and issuer; `evidence` parses what its CLI prints. May import the shared leaves, `testbed.spec`, the
Kubernetes vocabulary (`testbed.kube.actions`, `manifests`, `images`) and `testbed.meshes` common modules.
"""
