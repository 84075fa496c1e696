"""Cilium on Kubernetes, with and without WireGuard: `kube` plans its install and verification steps;
`evidence` parses `cilium status` and the agents' debuginfo. May import the shared leaves, `testbed.spec`, the
Kubernetes vocabulary (`testbed.kube.actions`, `manifests`, `images`) and `testbed.meshes` common modules.
"""
