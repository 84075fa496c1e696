"""The local mesh's data plane: real Envoy sidecars with SPIFFE mTLS, modelled on Istio's sidecar mode.

`pki` issues the certificates, `bootstrap` plans each sidecar's static configuration (pure), `sidecar`
runs the processes and reads their evidence; `testbed.meshes.local` wires them around a topology.
Imports the shared leaves only (errors, proc).
"""
