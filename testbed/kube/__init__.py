"""The Kubernetes plan and its tools: the plan's vocabulary (`actions`), the manifests (`manifests`), the kind
cluster configuration (`kindconfig`), a cluster's phases (`cluster`), one trial's steps (`trial`), the plan as
text for `--dry-run` (`render`), what went wrong with the pods during a trial (`health`), kubelet and
cgroup figures (`metrics`), the Docker layer (`docker`), the images and their archives (`images`), and the
pinned CLI downloads (`tools`). Everything here is pure data
except `docker`, `images` and `tools`, which do I/O through `testbed.proc` or python-on-whales.

The vocabulary and tools (`actions`, `manifests`, `metrics`, `docker`, `images`, `tools`) may import the
shared leaves, `testbed.loadgen` and `testbed.spec`; the meshes import them. The planner (`cluster`,
`trial`, `render`, `kindconfig`) asks the meshes for their steps, so it may import `testbed.meshes` too;
no mesh imports the planner.
"""
