"""What a run is, before anything starts: the scenario (load profile and trial counts), the topology (the
demo services and who calls whom), the trial plan (which mesh at which rate, in which order) and the pinned
versions of every external tool and image (`manifests/versions.toml`).

Pure reading and validation of the files in `scenarios/` and `manifests/`. May import the shared leaves
(`testbed.errors`, `paths`, ...) and `testbed.loadgen.config` (a trial's load is a `LoadConfig`); nothing
else.
"""
