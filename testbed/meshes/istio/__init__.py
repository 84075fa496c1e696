"""Istio on Kubernetes, sidecar and ambient (with an optional waypoint).

`kube` plans its install, enrolment and verification steps; `evidence` parses what istioctl and ztunnel print.
May import the shared leaves, `testbed.spec`, the Kubernetes vocabulary (`testbed.kube.actions`, `manifests`,
`images`) and the common modules of `testbed.meshes`; never the planner or a platform.
"""
